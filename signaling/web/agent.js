// /agent: the support console. An agent goes on or off duty with topics, languages and a
// capacity, sees the learners waiting (`support_queue`) and its own sessions, and in a session
// sees the learner's screen large and camera small, the learner's connection (the server's
// `connection_quality` and the loss and round trip the learner's page measures), talks
// (microphone on from the start, camera at a click), chats, transfers by skill, or ends it.
//
// With a capacity above one, several sessions run at once; one is shown, and the others are on
// hold: their learner is not heard and the agent's microphone is muted for them.

import * as Aula from '/sdk/aula.js';
import { $, Chat, LANGUAGES, LINK_TOPIC, TOPICS, clock, connectLobby, playAudio, setStatus, showRecording, showVideo, wireSoundButton } from '/web/desk.js';

let lobby = null;
let onDuty = false;
/** The last `support_queue`, and when it came (the waits tick on from there). */
let queue = { waiting: [], at: 0 };
/** Session id → {assigned, room, learnerSid, quality, link, linkAt, tracks: Map(source → track)}. */
const sessions = new Map();
let shownId = null;
const chat = new Chat($('chat-form'), $('chat-log'));

const shown = () => sessions.get(shownId) ?? null;
const learnerName = (s) => s.assigned.peer_name || s.assigned.peer_identity;
const checked = (form, name) => [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);

// --- Duty ---

function dutyMessage(form) {
  return { type: 'go_on_duty', skills: [...checked(form, 'topic'), ...checked(form, 'language')], capacity: Number(form.capacity.value) };
}

$('duty-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  if (checked(form, 'topic').length === 0) return setStatus('Pick at least one topic.', 'error');
  $('duty').disabled = true;
  try {
    lobby ??= await connectLobby('support-desk', form.name.value.trim(), 'agent', onDeskEvent);
    form.name.readOnly = true; // the lobby connection carries the name
    onDuty = !onDuty;
    lobby.send(onDuty ? dutyMessage(form) : { type: 'go_off_duty' });
    showDuty();
  } catch (err) {
    setStatus(err.message, 'error');
  }
  $('duty').disabled = false;
});

// Changes while on duty apply at once: going on duty again updates skills and capacity.
$('duty-form').addEventListener('change', (e) => {
  if (!onDuty || e.target.name === 'name' || !e.target.form.checkValidity()) return;
  if (checked(e.target.form, 'topic').length === 0) return setStatus('Pick at least one topic.', 'error');
  lobby.send(dutyMessage(e.target.form));
  showDuty();
});

function showDuty() {
  const form = $('duty-form');
  $('duty').textContent = onDuty ? 'Go off duty' : 'Go on duty';
  $('duty').classList.toggle('danger', onDuty);
  $('duty').classList.toggle('primary', !onDuty);
  const topics = checked(form, 'topic').map((t) => TOPICS[t]).join(', ');
  const languages = checked(form, 'language').map((l) => LANGUAGES[l]).join(', ') || 'any language';
  $('duty-state').textContent = onDuty
    ? `On duty: ${topics}; ${languages}; up to ${form.capacity.value} at once.`
    : 'Off duty: no new learners (sessions under way go on).';
  if (!shown()) setStatus(onDuty ? 'On duty. Waiting for learners…' : 'Off duty.');
}

// --- The desk: queue, assignments, ends ---

function onDeskEvent(msg) {
  switch (msg.type) {
    case 'support_queue':
      queue = { waiting: msg.waiting, at: performance.now() };
      showQueue();
      break;
    case 'support_assigned':
      openSession(msg).catch((err) => setStatus(err.message, 'error'));
      break;
    case 'support_ended': {
      const session = sessions.get(msg.session_id);
      if (!session) break;
      closeSession(msg.session_id);
      setStatus(msg.reason === 'transferred'
        ? `${learnerName(session)} was handed to a colleague.`
        : `Session with ${learnerName(session)} ended.`);
      break;
    }
    default:
      break;
  }
}

function showQueue() {
  const since = (performance.now() - queue.at) / 1000;
  $('queue-count').textContent = queue.waiting.length;
  $('queue-empty').hidden = queue.waiting.length > 0;
  $('queue').replaceChildren(...queue.waiting.map((w) => {
    const item = document.createElement('li');
    const name = document.createElement('strong');
    name.textContent = w.name;
    item.append(name, ` · ${TOPICS[w.topic] ?? w.topic} · ${LANGUAGES[w.language] ?? w.language} · waiting ${clock(w.waited_secs + since)}`);
    return item;
  }));
}
setInterval(showQueue, 1000);

// --- Sessions ---

async function openSession(assigned) {
  const room = await Aula.connect(location.origin, assigned.token);
  const session = { assigned, room, learnerSid: null, quality: null, link: null, linkAt: 0, tracks: new Map() };
  const learner = () => [...room.participants.values()].find((p) => p.role === 'learner');
  sessions.set(assigned.session_id, session);
  room.addEventListener('trackSubscribed', (e) => {
    const { track, info } = e.detail;
    if (track.kind === 'audio') {
      const audio = playAudio($('audio'), e.detail);
      audio.dataset.session = assigned.session_id;
      audio.muted = shownId !== assigned.session_id;
    } else {
      session.tracks.set(info.source, track);
    }
    if (shownId === assigned.session_id) showSession();
  });
  room.addEventListener('trackUnsubscribed', (e) => {
    const info = e.detail.info;
    if (session.tracks.get(info?.source) === e.detail.track) session.tracks.delete(info.source);
    document.querySelector(`#audio [data-track="${info?.sid}"]`)?.remove();
    if (shownId === assigned.session_id) showSession();
  });
  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    const sid = learner()?.sid;
    if (msg.type === 'recording') {
      if (shownId === assigned.session_id) showRecording(room);
      return;
    }
    if (msg.type === 'connection_quality' && msg.participant_sid === sid) session.quality = msg.quality;
    else if (msg.type === 'data' && msg.topic === LINK_TOPIC && msg.from === sid) {
      session.link = JSON.parse(msg.payload);
      session.linkAt = performance.now();
    } else return;
    if (shownId === assigned.session_id) showLink();
  });
  room.addEventListener('disconnected', () => {
    if (sessions.has(assigned.session_id)) closeSession(assigned.session_id);
  });
  // The learner hears the agent from the start; a new session is shown unless one already is.
  await startMicrophone(session);
  if (!shown()) showSession(assigned.session_id);
  else setStatus(`${learnerName(session)} is waiting in your sessions list.`);
  showSessions();
}

/** Publishes the microphone, saying on the page why if it cannot. */
async function startMicrophone(session) {
  $('mic').disabled = true;
  try {
    await session.room.publish({ microphone: true });
    session.room.setMuted('microphone', shownId !== null && shownId !== session.assigned.session_id);
  } catch (err) {
    setStatus(`Cannot use your microphone: ${err.message}`, 'error');
  }
  $('mic').disabled = false;
  if (shown() === session) showControls();
}

/** Shows session `id` (or the one shown) and puts every other session on hold. */
function showSession(id = shownId) {
  const previous = shown();
  shownId = id;
  const session = shown();
  window.aulaSession = session?.room;
  if (previous && previous !== session) previous.room.setMuted('microphone', true);
  if (session && previous !== session) {
    session.room.setMuted('microphone', false);
    chat.attach(session.room);
  }
  for (const audio of $('audio').querySelectorAll('audio')) audio.muted = audio.dataset.session !== id;
  $('session').hidden = !session;
  $('controls').hidden = !session;
  // The badge is the shown session's: another session may be recorded or not.
  showRecording(session?.room ?? null);
  if (!session) return;
  const name = learnerName(session);
  const { topic, language } = session.assigned;
  $('learner-name').textContent = name;
  $('learner-request').textContent = `${TOPICS[topic] ?? topic} · ${LANGUAGES[language] ?? (language || 'language not given')}`;
  $('screen-label').textContent = `${name}'s screen`;
  $('camera-label').textContent = `${name}'s camera`;
  showVideo($('learner-screen'), session.tracks.get('screen_share') ?? null);
  showVideo($('learner-camera'), session.tracks.get('camera') ?? null);
  showLink();
  showControls();
  showSessions();
  setStatus(`Helping ${name}.`, 'ok');
}

const QUALITY_WORDS = { excellent: 'Excellent', good: 'Good', poor: 'Poor' };
const percent = (x) => (x == null ? '–' : `${x.toFixed(1)} %`);

/** The learner's connection: the server's level, and the figures its page last reported. */
function showLink() {
  const session = shown();
  if (!session) return;
  const level = session.quality ?? session.link?.quality ?? null;
  $('quality').dataset.level = level ?? 'unknown';
  $('quality').textContent = `Connection: ${level ? QUALITY_WORDS[level] : 'measuring…'}`;
  const link = session.link;
  if (!link) {
    $('link-stats').textContent = 'waiting for the learner\'s figures';
    return;
  }
  const age = Math.round((performance.now() - session.linkAt) / 1000);
  $('link-stats').textContent = `loss receiving ${percent(link.down_loss)}, sending ${percent(link.up_loss)} · RTT ${link.rtt_ms == null ? '–' : `${Math.round(link.rtt_ms)} ms`} · jitter ${Math.round(link.jitter_ms ?? 0)} ms · ${age < 2 ? 'now' : `${age} s ago`}`;
}
setInterval(showLink, 1000);

function showSessions() {
  $('no-sessions').hidden = sessions.size > 0;
  $('sessions').replaceChildren(...[...sessions].map(([id, s]) => {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = `${learnerName(s)} · ${TOPICS[s.assigned.topic] ?? s.assigned.topic}`;
    if (id === shownId) button.setAttribute('aria-current', 'true');
    else button.setAttribute('aria-label', `Show ${learnerName(s)} (on hold)`);
    button.addEventListener('click', () => showSession(id));
    item.append(button);
    return item;
  }));
}

/** The microphone and camera buttons and the self-view follow what the shown session publishes. */
function showControls() {
  const room = shown()?.room;
  const mic = room?.localTracks.get('microphone');
  $('mic').textContent = !mic ? 'Turn on microphone' : mic.muted ? 'Unmute microphone' : 'Mute microphone';
  const camera = room?.localTracks.get('camera')?.track ?? null;
  $('camera').textContent = camera ? 'Turn off camera' : 'Turn on camera';
  $('self-view').hidden = !camera;
  showVideo($('self-view'), camera);
}

function closeSession(id) {
  const session = sessions.get(id);
  sessions.delete(id);
  session.room.leave().catch(() => {});
  for (const audio of $('audio').querySelectorAll(`audio[data-session="${id}"]`)) audio.remove();
  if (shownId === id) {
    chat.attach(null);
    shownId = null;
    // The next session under way, if any, is shown; otherwise the console's lists.
    showSession(sessions.keys().next().value ?? null);
  }
  showSessions();
  if (sessions.size === 0) $('sound').hidden = true;
}

// --- Controls of the shown session ---

$('mic').addEventListener('click', () => {
  const session = shown();
  const mic = session?.room.localTracks.get('microphone');
  if (!mic) return session && startMicrophone(session);
  session.room.setMuted('microphone', !mic.muted);
  showControls();
});

$('camera').addEventListener('click', async () => {
  const room = shown()?.room;
  if (!room) return;
  $('camera').disabled = true;
  try {
    if (room.localTracks.has('camera')) await room.unpublish('camera');
    else await room.publish({ camera: true });
  } catch (err) {
    setStatus(`Camera: ${err.message}`, 'error');
  }
  $('camera').disabled = false;
  showControls();
});

$('transfer').addEventListener('click', () => {
  if (shownId) lobby.send({ type: 'transfer_session', session_id: shownId, skill: $('transfer-skill').value });
});

$('end').addEventListener('click', () => {
  if (shownId) lobby.send({ type: 'end_support_session', session_id: shownId });
});

wireSoundButton();
showDuty();
setStatus('Go on duty to receive learners.');
