// The support desk pages: /support (a learner asks for help) and /agent (an agent on duty).
//
// Both sides first join a lobby room over the ordinary protocol (`support-lobby` for learners,
// `support-desk` for agents) with a dev token, and talk to the desk there: `request_help` or
// `go_on_duty`. When the server pairs them it sends each a `support_assigned` event with a
// token for a private room; the page joins that room with a second connection. A support session
// is a conversation: the agent's microphone is on from the start and its camera can be turned
// on; the learner hears (and sees) the agent, and shares screen and camera for the agent to see.
// `window.aulaLobby` and `window.aulaSession` point at the SDK rooms so tests can inspect them.

import * as Aula from '/sdk/aula.js';

const $ = (id) => document.getElementById(id);
const side = document.body.dataset.side; // 'learner' | 'agent'
let session = null;
let sessionId = null;

function setStatus(text, kind = 'info') {
  $('status').textContent = text;
  $('status').dataset.kind = kind;
}

async function devToken(room, name, role) {
  const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || role}-${randomSuffix()}`;
  const res = await fetch(`/api/dev-token?${new URLSearchParams({ room, identity, role, name })}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error?.message ?? `token request failed (${res.status})`);
  return body.token;
}

function minutes(secs) {
  return secs == null ? 'no agent for this topic is on duty yet' : `about ${Math.max(1, Math.round(secs / 60))} min`;
}

async function start(form) {
  const name = form.name.value.trim();
  const role = side === 'learner' ? 'learner' : 'agent';
  const lobby = await Aula.connect(location.origin, await devToken(side === 'learner' ? 'support-lobby' : 'support-desk', name, role));
  window.aulaLobby = lobby;
  lobby.addEventListener('serverEvent', (e) => onDeskEvent(e.detail));
  lobby.addEventListener('error', (e) => setStatus(e.detail.message, 'error'));
  lobby.addEventListener('disconnected', (e) => setStatus(`Disconnected: ${e.detail.reason}`, 'error'));
  if (side === 'learner') {
    lobby.send({ type: 'request_help', topic: form.topic.value, language: form.language.value });
    setStatus('Asking for help…');
  } else {
    const skills = form.skills.value.split(',').map((s) => s.trim()).filter(Boolean);
    lobby.send({ type: 'go_on_duty', skills, capacity: Number(form.capacity.value) });
    setStatus(`On duty (${skills.join(', ')}). Waiting for learners…`);
  }
  form.hidden = true;
}

function onDeskEvent(msg) {
  switch (msg.type) {
    case 'support_queued':
      setStatus(`You are number ${msg.position} in line: ${minutes(msg.estimated_wait_secs)}.`);
      break;
    case 'support_assigned':
      openSession(msg).catch((err) => setStatus(err.message, 'error'));
      break;
    case 'support_ended':
      if (msg.session_id === sessionId) closeSession(msg.reason === 'transferred' ? 'Transferred to a colleague.' : 'Session ended.');
      break;
    default:
      break;
  }
}

async function openSession(msg) {
  if (session && sessionId === msg.session_id) return; // a transfer re-assigns the same room
  sessionId = msg.session_id;
  session = await Aula.connect(location.origin, msg.token);
  window.aulaSession = session;
  session.addEventListener('trackSubscribed', (e) => addMedia(e.detail));
  session.addEventListener('trackUnsubscribed', (e) => document.querySelector(`[data-track="${e.detail.info?.sid}"]`)?.remove());
  session.addEventListener('disconnected', () => closeSession('Session ended.'));
  $('session').hidden = false;
  $('controls').hidden = false;
  setStatus(side === 'learner'
    ? `Connected with ${msg.peer_identity}. Share your screen so they can see the problem.`
    : `Helping ${msg.peer_identity} with ${msg.topic}.`);
  if (side === 'agent') {
    showAgentControls();
    await startMicrophone(session);
  }
}

/** Agent: publishes the microphone, saying on the page why if it cannot. */
async function startMicrophone(room) {
  $('mic').disabled = true;
  try {
    await room.publish({ microphone: true });
  } catch (err) {
    setStatus(`Cannot use your microphone: ${err.message}`, 'error');
  }
  $('mic').disabled = false;
  showAgentControls();
}

/** Agent: the microphone and camera buttons, and the camera's self-view, follow what is published. */
function showAgentControls() {
  const mic = session?.localTracks.get('microphone');
  $('mic').textContent = !mic ? 'Turn on microphone' : mic.muted ? 'Unmute microphone' : 'Mute microphone';
  const camera = session?.localTracks.get('camera');
  $('camera').textContent = camera ? 'Turn off camera' : 'Turn on camera';
  let self = document.querySelector('video[data-source="self"]');
  if (!camera) return self?.remove();
  if (!self) {
    self = document.createElement('video');
    self.autoplay = true;
    self.playsInline = true;
    self.muted = true;
    self.className = 'mirror';
    self.dataset.source = 'self';
    $('grid').prepend(self);
  }
  if (self.srcObject?.getVideoTracks()[0] !== camera.track) self.srcObject = new MediaStream([camera.track]);
}

function addMedia({ track, stream, info }) {
  const el = document.createElement(track.kind === 'video' ? 'video' : 'audio');
  el.autoplay = true;
  el.playsInline = true;
  el.muted = track.kind === 'video';
  el.srcObject = stream ?? new MediaStream([track]);
  el.dataset.track = info.sid;
  el.dataset.source = info.source;
  (track.kind === 'video' ? $('grid') : $('audio')).append(el);
  // Browsers that block autoplay with sound get a "Turn on sound" button.
  if (track.kind === 'audio') el.play().catch(() => { $('sound').hidden = false; });
}

function closeSession(text) {
  const ending = session;
  session = null;
  sessionId = null;
  ending?.leave().catch(() => {});
  $('grid').replaceChildren();
  $('audio').replaceChildren();
  $('controls').hidden = true;
  $('sound').hidden = true;
  setStatus(text);
}

function wireControls() {
  $('end').addEventListener('click', () => {
    if (sessionId) window.aulaLobby?.send({ type: 'end_support_session', session_id: sessionId });
  });
  $('sound').addEventListener('click', async () => {
    for (const audio of $('audio').querySelectorAll('audio')) await audio.play().catch(() => {});
    $('sound').hidden = true;
  });
  if (side === 'learner') {
    $('share-screen').addEventListener('click', () => session?.publish({ screen: true }).catch((err) => setStatus(err.message, 'error')));
    $('share-camera').addEventListener('click', () => session?.publish({ camera: true, microphone: true }).catch((err) => setStatus(err.message, 'error')));
  } else {
    $('mic').addEventListener('click', () => {
      const mic = session?.localTracks.get('microphone');
      if (!mic) return session && startMicrophone(session);
      session.setMuted('microphone', !mic.muted);
      showAgentControls();
    });
    $('camera').addEventListener('click', async () => {
      const room = session;
      if (!room) return;
      $('camera').disabled = true;
      try {
        if (room.localTracks.has('camera')) await room.unpublish('camera');
        else await room.publish({ camera: true });
      } catch (err) {
        setStatus(`Camera: ${err.message}`, 'error');
      }
      $('camera').disabled = false;
      showAgentControls();
    });
    $('transfer').addEventListener('click', () => {
      const skill = $('transfer-skill').value.trim();
      if (sessionId && skill) window.aulaLobby?.send({ type: 'transfer_session', session_id: sessionId, skill });
    });
  }
}

const form = $('start-form');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  form.querySelector('button').disabled = true;
  try {
    await start(form);
  } catch (err) {
    setStatus(err.message, 'error');
    form.querySelector('button').disabled = false;
  }
});
wireControls();
setStatus(side === 'learner' ? 'Tell us what you need help with.' : 'Go on duty to receive learners.');

/**
 * Eight random hex digits for a dev-mode identity. Not `crypto.randomUUID`: that exists only in
 * secure contexts (https or localhost), and a student on a second computer opens the page over
 * plain http on the LAN.
 */
function randomSuffix() {
  return Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, '0')).join('');
}
