// /support: a learner asks for help, waits in line (or cancels), talks with an agent in a
// private room while sharing screen, camera and microphone, then rates the session or asks again.
// See desk.js for how the desk and the private room fit together.

import * as Aula from '/sdk/aula.js';
import { $, Chat, LINK_TOPIC, connectLobby, initials, playAudio, setStatus, showRecording, showVideo, wireSoundButton } from '/web/desk.js';

/** How often the page tells the agent how its link is doing. */
const LINK_REPORT_MS = 2000;

let lobby = null;
/** The private room's SDK Room, and the `support_assigned` event that opened it. */
let session = null;
let assignment = null;
/** The session the "Good" / "Bad" buttons rate. */
let toRate = null;
/** Our connection quality as the server last told us (`connection_quality`), relayed to the agent. */
let ownQuality = null;
let linkTimer = null;
const chat = new Chat($('chat-form'), $('chat-log'));

/** One of the page's views: the form, the line, the session, or after it. */
function show(view) {
  for (const id of ['start-form', 'waiting', 'session', 'after']) $(id).hidden = id !== view;
  $('controls').hidden = view !== 'session';
}

$('start-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  const button = form.querySelector('button');
  button.disabled = true;
  try {
    lobby ??= await connectLobby('support-lobby', form.name.value.trim(), 'learner', onDeskEvent);
    form.name.readOnly = true; // the lobby connection carries the name
    lobby.send({ type: 'request_help', topic: form.topic.value, language: form.language.value });
    $('position').textContent = 'Asking for help…';
    $('wait').textContent = '';
    show('waiting');
    setStatus('Waiting for an agent.');
  } catch (err) {
    setStatus(err.message, 'error');
  }
  button.disabled = false;
});

function onDeskEvent(msg) {
  switch (msg.type) {
    case 'support_queued':
      if (session) {
        // A transfer: the learner stays in the room until the next agent joins it.
        setStatus('Your agent is handing you to a colleague; please stay…');
        break;
      }
      $('position').textContent = msg.position === 1 ? 'You are next in line.' : `You are number ${msg.position} in line.`;
      $('wait').textContent = msg.estimated_wait_secs == null
        ? 'No agent for this topic is on duty yet; you keep your place.'
        : `Estimated wait: about ${Math.max(1, Math.round(msg.estimated_wait_secs / 60))} min.`;
      break;
    case 'support_assigned':
      openSession(msg).catch((err) => setStatus(err.message, 'error'));
      break;
    case 'support_ended':
      if (msg.session_id === assignment?.session_id) closeSession('Session ended', true);
      break;
    default:
      break;
  }
}

$('cancel').addEventListener('click', () => {
  lobby.send({ type: 'cancel_help' });
  closeSession('You cancelled your request', false);
  setStatus('Request cancelled.');
});

async function openSession(msg) {
  const sameRoom = session && assignment?.session_id === msg.session_id;
  assignment = msg;
  showAgent();
  if (sameRoom) return setStatus(`Now with ${agentName()}.`, 'ok'); // transferred in the same room
  const room = await Aula.connect(location.origin, msg.token);
  session = room;
  window.aulaSession = room;
  room.addEventListener('trackSubscribed', (e) => {
    const { track, info } = e.detail;
    if (track.kind === 'audio') playAudio($('audio'), e.detail);
    else if (info.source === 'camera') showVideo($('agent-tile'), track);
  });
  room.addEventListener('trackUnsubscribed', (e) => {
    if (e.detail.info?.source === 'camera') showVideo($('agent-tile'), null);
    document.querySelector(`#audio [data-track="${e.detail.info?.sid}"]`)?.remove();
  });
  room.addEventListener('serverEvent', (e) => {
    if (e.detail.type === 'connection_quality' && e.detail.participant_sid === room.localParticipant.sid) ownQuality = e.detail.quality;
    if (e.detail.type === 'recording') showRecording(room);
  });
  room.addEventListener('disconnected', () => {
    if (session === room) closeSession('Session ended', true);
  });
  chat.attach(room);
  showOwnMedia();
  show('session');
  setStatus(`Connected with ${agentName()}. Share your screen so they can see the problem.`, 'ok');
  let previous = null;
  linkTimer = setInterval(async () => { previous = await reportLink(room, previous); }, LINK_REPORT_MS);
}

const agentName = () => assignment.peer_name || assignment.peer_identity;

function showAgent() {
  $('agent-label').textContent = `${agentName()} (agent)`;
  $('agent-initials').textContent = initials(agentName());
}

/**
 * Sends the agent what this browser measures of its own link, as a data message: loss of what
 * the server sends us (from our received packets), loss of what we send (the server's receiver
 * reports), the round trip to the server and jitter, with the server's word for our quality.
 * The agent is diagnosing exactly this link. Returns the counters the next report's loss needs.
 */
async function reportLink(room, previous) {
  const counts = { received: 0, lost: 0 };
  let rttMs = null;
  let jitterMs = 0;
  let upLoss = null;
  (await room.subscriber.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp') {
      counts.received += r.packetsReceived ?? 0;
      counts.lost += r.packetsLost ?? 0;
      jitterMs = Math.max(jitterMs, (r.jitter ?? 0) * 1000);
    }
    if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime != null) rttMs = r.currentRoundTripTime * 1000;
  });
  (await room.publisher?.getStats())?.forEach((r) => {
    if (r.type === 'remote-inbound-rtp' && r.fractionLost != null) upLoss = Math.max(upLoss ?? 0, r.fractionLost * 100);
  });
  const got = counts.received - (previous?.received ?? 0);
  const lost = counts.lost - (previous?.lost ?? 0);
  const report = {
    quality: ownQuality,
    down_loss: got + lost > 0 ? (100 * Math.max(0, lost)) / (got + lost) : null,
    up_loss: upLoss,
    rtt_ms: rttMs,
    jitter_ms: jitterMs,
  };
  if (session === room) room.send({ type: 'data', topic: LINK_TOPIC, payload: JSON.stringify(report) });
  return counts;
}

/** The toggles say what a click does, and our own screen and camera show small. */
function showOwnMedia() {
  const local = session?.localTracks ?? new Map();
  const mic = local.get('microphone');
  $('mic').textContent = !mic ? 'Turn on microphone' : mic.muted ? 'Unmute microphone' : 'Mute microphone';
  $('camera').textContent = local.has('camera') ? 'Stop camera' : 'Share camera';
  $('screen').textContent = local.has('screen_share') ? 'Stop sharing' : 'Share screen';
  for (const [id, source] of [['own-screen', 'screen_share'], ['own-camera', 'camera']]) {
    const track = local.get(source)?.track ?? null;
    $(id).hidden = !track;
    showVideo($(id), track);
  }
}

/** Publishes or stops `source`, saying on the page why if it cannot. */
async function toggle(button, source) {
  const room = session;
  if (!room) return;
  button.disabled = true;
  try {
    if (room.localTracks.has(source)) await room.unpublish(source);
    else await room.publish({ [source === 'screen_share' ? 'screen' : source]: true });
  } catch (err) {
    setStatus(`${button.textContent}: ${err.message}`, 'error');
  }
  button.disabled = false;
  showOwnMedia();
}

$('screen').addEventListener('click', (e) => toggle(e.target, 'screen_share'));
$('camera').addEventListener('click', (e) => toggle(e.target, 'camera'));
$('mic').addEventListener('click', (e) => {
  const mic = session?.localTracks.get('microphone');
  if (!mic) return toggle(e.target, 'microphone');
  session.setMuted('microphone', !mic.muted);
  showOwnMedia();
});
$('end').addEventListener('click', () => {
  if (assignment) lobby.send({ type: 'end_support_session', session_id: assignment.session_id });
});
wireSoundButton();

/** Leaves the private room, if any, and shows what comes after: rating it, asking again. */
function closeSession(title, rateable) {
  const ending = session;
  session = null;
  clearInterval(linkTimer);
  ending?.leave().catch(() => {});
  chat.attach(null);
  showRecording(null);
  toRate = rateable ? assignment?.session_id : null;
  assignment = null;
  ownQuality = null;
  $('audio').replaceChildren();
  showVideo($('agent-tile'), null);
  $('sound').hidden = true;
  $('after-title').textContent = title;
  $('rating').hidden = !toRate;
  $('rating-question').textContent = 'Did this session help you?';
  for (const id of ['rate-good', 'rate-bad']) $(id).hidden = false;
  show('after');
  if (ending) setStatus('Session ended.');
}

for (const [id, good] of [['rate-good', true], ['rate-bad', false]]) {
  $(id).addEventListener('click', () => {
    if (!toRate) return;
    lobby.send({ type: 'rate_support_session', session_id: toRate, good });
    toRate = null;
    $('rating-question').textContent = 'Thank you for your feedback.';
    for (const button of ['rate-good', 'rate-bad']) $(button).hidden = true;
  });
}

$('again').addEventListener('click', () => {
  show('start-form');
  setStatus('Tell us what you need help with.');
  $('start-form').querySelector('button').focus();
});

show('start-form');
setStatus('Tell us what you need help with.');
