// The live-class page (/class): join form, the teacher's camera and shared screen, the other
// participants' tiles, media controls, and the class-ended view. Moderation (class-moderation.js),
// the student's hand and stage invitation (class-stage.js), chat (class-chat.js) and connection
// quality (class-quality.js) are their own modules.
//
// `/class?room=R` shows a join form that asks this server for a dev token (dev mode only);
// `/class?token=T` joins straight away with a token minted elsewhere (`aula token`, or a school's
// own backend). `/class?room=R&region=G` asks for a dev token naming the participant's region, so
// that in a cluster the room's origin places its media on a node of that region (its signaling
// stays with the origin). Teachers publish camera and microphone on joining; students receive,
// and publish only once invited on stage (or, joining already on stage, once they say so: see
// class-stage.js). What a participant receives is the server's decision. In dev mode a tab
// keeps its identity for the room across reloads (tabJoin), so that a reloaded student comes
// back where it was.
//
// A lost connection is the SDK's business: it resumes a dropped WebSocket, and joins the class
// again by itself when the session was lost (its media path failed, or the server no longer kept
// it); the page says "Reconnecting…" meanwhile and, once rejoined, rebuilds the class from the
// SDK's state (we are a new participant then). Only a session the SDK gave up on (after a minute)
// or the server ended asks for a click ("Join again").
//
// The page keeps `window.aulaRoom` pointing at the SDK's Room so tests can read its stats.

import * as Aula from '/sdk/aula.js';
import { initChat } from '/web/class-chat.js';
import { initModeration } from '/web/class-moderation.js';
import { watchQuality } from '/web/class-quality.js';
import { initStage } from '/web/class-stage.js';
import { $, clearNotice, devIdentity, setStatus, showNotice, showRecording } from '/web/class-ui.js';

const params = new URLSearchParams(location.search);

/** Tiles by participant sid; each holds a camera <video> and a name label. */
const tiles = new Map();
/** Screen-share tiles on the stage, by track sid. */
const screens = new Map();

/**
 * How long a participant's media may stop before its tile says "reconnecting…". The server says
 * so as soon as the participant's WebSocket drops (`participant_state`), but a dead network can
 * keep a WebSocket looking open for a while; the media stopping shows it sooner.
 */
const MEDIA_STALL_MS = 2000;

/** What the ended view says for the server's `left` reasons (see moderation.rs). */
const ENDINGS = {
  left: ['You left the class', ''],
  'class ended': ['The class has ended', 'The teacher ended the class. Thank you for joining.'],
  'removed by a moderator': ['You were removed from the class', 'A teacher or assistant removed you.'],
};

function show(section) {
  for (const id of ['join-form', 'classroom', 'ended']) $(id).hidden = id !== section;
  $('controls').hidden = section !== 'classroom';
}

async function main() {
  const token = params.get('token');
  if (token) return joinWith(token);
  const form = $('join-form');
  form.room.value = params.get('room') || 'demo';
  // A reloaded tab offers to join again as who it was (see tabJoin).
  const last = tabJoin();
  form.name.value = (last?.room === form.room.value ? last.name : null) ?? localStorage.getItem('aula.name') ?? '';
  if (last?.room === form.room.value) form.role.value = last.role;
  show('join-form');
  setStatus('Enter your name to join.');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const name = form.name.value.trim();
      localStorage.setItem('aula.name', name);
      const room = form.room.value.trim();
      const region = params.get('region');
      const kept = new URLSearchParams({ room });
      if (region !== null) kept.set('region', region);
      history.replaceState(null, '', `?${kept}`);
      const token = await fetchDevToken(room, name, form.role.value, region);
      $('dev-mode').hidden = false;
      await joinWith(token);
    } catch (err) {
      setStatus(err.message, 'error');
    } finally {
      button.disabled = false;
    }
  });
}

/**
 * What this tab last joined with in dev mode ({room, name, role, identity}), kept in
 * sessionStorage: a reload of the tab joins again as the same identity, so the server gives it
 * back its place (the stage, a raised hand) as it does to a lost session; another tab is another
 * person.
 */
function tabJoin() {
  try {
    return JSON.parse(sessionStorage.getItem('aula.join'));
  } catch {
    return null;
  }
}

/**
 * Asks the server for a development token, with the participant's `region` unless null;
 * production servers refuse, and say so.
 */
async function fetchDevToken(room, name, role, region) {
  // The identity only has to be unique in the room; two tabs with the same name are two people,
  // but a tab that joins again with the same room, name and role is the same one.
  const last = tabJoin();
  const same = last?.room === room && last.name === name && last.role === role;
  const identity = same ? last.identity : devIdentity(name, 'guest');
  sessionStorage.setItem('aula.join', JSON.stringify({ room, name, role, identity }));
  const query = new URLSearchParams({ room, identity, role, name });
  if (region !== null) query.set('region', region);
  const res = await fetch(`/api/dev-token?${query}`);
  if (res.status === 404) {
    throw new Error('This server does not hand out tokens here. Open the class link your school sent you.');
  }
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error(`Could not get a token: ${body.error?.message ?? `HTTP ${res.status}`}`);
  }
  return (await res.json()).token;
}

async function joinWith(token) {
  setStatus('Connecting…');
  let room;
  try {
    room = await Aula.connect(location.origin, token);
  } catch (err) {
    show('join-form');
    if (err.code === 'room_locked') {
      setStatus('This class is locked: the teacher is not letting anyone else in right now. Try again later.', 'error');
    } else {
      setStatus(`Could not join: ${err.message}`, 'error');
    }
    return;
  }
  window.aulaRoom = room;
  const me = room.localParticipant;
  $('room-name').textContent = `Class: ${room.name}`;
  document.title = `Aula · ${room.name}`;
  show('classroom');

  tileFor(me, true);
  for (const p of room.participants.values()) tileFor(p);
  wireRoomEvents(room);
  wireControls(room);
  watchMedia(room);
  const media = { publish: () => publishCameraAndMic(room), stop: () => stopCameraAndMic(room) };
  initModeration(room);
  initStage(room, media);
  initChat(room);
  watchQuality(room);
  setStatus(`Connected as ${me.name} (${me.role}) in ${room.name}.`, 'ok');

  if (me.role === 'teacher') {
    $('screen').hidden = false;
    try {
      await media.publish();
      setStatus(`Live: ${me.name} (teacher) in ${room.name}.`, 'ok');
    } catch (err) {
      setStatus(`Cannot share camera/microphone: ${err.message}`, 'error');
    }
  }
}

/** Publishes camera and microphone, shows the self-view and the buttons to mute them. */
async function publishCameraAndMic(room) {
  await room.publish({ camera: true, microphone: true, simulcast: true });
  attachVideo(tiles.get(room.localParticipant.sid), room.localTracks.get('camera').track, 'local', true);
  for (const [id, label] of [['mic', 'Mute mic'], ['camera', 'Stop camera']]) {
    $(id).hidden = false;
    $(id).textContent = label;
    $(id).setAttribute('aria-pressed', 'false');
  }
  markLocalMuted('camera', false);
  markLocalMuted('microphone', false);
}

/** Stops camera and microphone (the server has already stopped forwarding them). */
async function stopCameraAndMic(room) {
  $('mic').hidden = true;
  $('camera').hidden = true;
  const tile = tiles.get(room.localParticipant.sid);
  if (tile) detachVideo(tile);
  // The server refuses the offer that removes them ('forbidden': we may no longer publish), but
  // the SDK has stopped the tracks by then, which is what matters here.
  await room.unpublish('camera').catch(() => {});
  await room.unpublish('microphone').catch(() => {});
}

function markLocalMuted(source, muted) {
  const tile = tiles.get(window.aulaRoom.localParticipant.sid);
  tile?.root.classList.toggle(source === 'camera' ? 'camera-off' : 'mic-off', muted);
}

/** Our own tile again after a rejoin (a new sid), with the camera the SDK published again. */
function rebuildClassroom(room) {
  for (const sid of [...tiles.keys()]) removeTile(sid);
  for (const sid of [...screens.keys()]) removeScreen(sid);
  $('audio').replaceChildren();
  tileFor(room.localParticipant, true);
  for (const p of room.participants.values()) tileFor(p);
  const camera = room.localTracks.get('camera');
  if (camera) attachVideo(tiles.get(room.localParticipant.sid), camera.track, 'local', true);
  markLocalMuted('camera', Boolean(camera?.muted));
  markLocalMuted('microphone', Boolean(room.localTracks.get('microphone')?.muted));
}

function wireRoomEvents(room) {
  const connected = () => `Connected as ${room.localParticipant.name} (${room.localParticipant.role}) in ${room.name}.`;
  let reconnecting = false;
  room.addEventListener('reconnecting', () => {
    reconnecting = true;
    setStatus('Reconnecting… Your connection was lost; trying to get back into the class.', 'error');
    showNotice('reconnecting', 'Reconnecting… you will be back in the class by yourself as soon as the network lets you.', { kind: 'warn' });
  });
  const back = (text) => {
    reconnecting = false;
    clearNotice('reconnecting');
    setStatus(text, 'ok');
  };
  room.addEventListener('reconnected', () => back(connected()));
  room.addEventListener('rejoined', () => {
    rebuildClassroom(room);
    back(`Back in the class: ${connected()}`);
  });
  // After a rejoin the server may refuse what we published (a student no longer on stage).
  room.addEventListener('localTrackUnpublished', (e) => {
    const { source, message } = e.detail;
    if (source === 'camera' || source === 'microphone') {
      $(source === 'camera' ? 'camera' : 'mic').hidden = true;
      const tile = tiles.get(room.localParticipant.sid);
      if (source === 'camera' && tile) detachVideo(tile);
      setStatus(`Your ${source} is off: ${message}`);
    }
  });
  room.addEventListener('participantJoined', (e) => tileFor(e.detail.participant));
  room.addEventListener('participantLeft', (e) => {
    const { participant } = e.detail;
    removeTile(participant.sid);
    if (participant.role === 'teacher') {
      setStatus(`${participant.name} (teacher) left the class.`);
      showNotice('teacher-left', `${participant.name}, the teacher, left the class.`, { kind: 'warn' });
    } else {
      setStatus(`${participant.name} left the class.`);
    }
  });
  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    if (msg.type === 'participant_state') setReconnecting(msg.participant_sid, 'connection', msg.state === 'reconnecting');
    if (msg.type === 'recording') showRecording(room);
  });
  room.addEventListener('trackSubscribed', (e) => {
    const { track, stream, info, participant } = e.detail;
    if (info.kind === 'audio') return playAudio(info.sid, stream);
    if (info.source === 'screen_share') return showScreen(info, participant, stream);
    const tile = tileFor(participant);
    attachVideo(tile, track, info.sid);
    tile.root.classList.toggle('camera-off', info.muted);
    if (participant.role === 'teacher') clearNotice('teacher-left');
  });
  room.addEventListener('trackUnsubscribed', (e) => {
    const { info, participant } = e.detail;
    document.querySelector(`audio[data-track-sid="${info.sid}"]`)?.remove();
    if (info.source === 'screen_share') return removeScreen(info.sid);
    const tile = tiles.get(participant.sid);
    if (tile && tile.video.dataset.trackSid === info.sid) detachVideo(tile);
  });
  room.addEventListener('trackMuted', (e) => {
    const { info, participant, muted } = e.detail;
    const tile = tiles.get(participant.sid);
    if (!tile) return;
    if (info.source === 'camera') tile.root.classList.toggle('camera-off', muted);
    if (info.source === 'microphone') tile.root.classList.toggle('mic-off', muted);
  });
  // A moderator muted one of our tracks: the button now offers to unmute it.
  room.addEventListener('localTrackMuted', (e) => {
    const { source, muted } = e.detail;
    if (source !== 'microphone' && source !== 'camera') return;
    setMuteButton(source, muted);
    markLocalMuted(source, muted);
    if (muted) setStatus(`A moderator muted your ${source === 'microphone' ? 'microphone' : 'camera'}.`);
  });
  room.addEventListener('connectionState', (e) => {
    const { target, state } = e.detail;
    if (state === 'failed' || state === 'disconnected') {
      setStatus(`Reconnecting… The media connection (${target}) is ${state}; check your network.`, 'error');
    } else if (state === 'connected' && !reconnecting) {
      setStatus(connected(), 'ok');
    }
  });
  room.addEventListener('error', (e) => setStatus(`Server: ${e.detail.message} (${e.detail.code})`, 'error'));
  room.addEventListener('disconnected', (e) => {
    for (const sid of [...tiles.keys()]) removeTile(sid);
    for (const sid of [...screens.keys()]) removeScreen(sid);
    $('audio').replaceChildren();
    $('notices').replaceChildren();
    $('end-dialog').close();
    const { reason } = e.detail;
    const [title, text] = ENDINGS[reason] ?? ['You were disconnected', `Reason: ${reason}`];
    $('ended-title').textContent = title;
    $('ended-reason').textContent = text;
    show('ended');
    setStatus(reason === 'class ended' ? 'The class has ended.' : 'Disconnected.');
  });
}

/** Labels the mute button of `source` ('microphone' or 'camera') for its state. */
function setMuteButton(source, muted) {
  const [button, onLabel, offLabel] = source === 'microphone'
    ? [$('mic'), 'Mute mic', 'Unmute mic']
    : [$('camera'), 'Stop camera', 'Start camera'];
  button.setAttribute('aria-pressed', String(muted));
  button.textContent = muted ? offLabel : onLabel;
}

function wireControls(room) {
  for (const [button, source] of [[$('mic'), 'microphone'], [$('camera'), 'camera']]) {
    button.onclick = () => {
      const muted = button.getAttribute('aria-pressed') !== 'true';
      room.setMuted(source, muted);
      setMuteButton(source, muted);
      markLocalMuted(source, muted);
    };
  }

  const screen = $('screen');
  const screenOff = () => {
    screen.setAttribute('aria-pressed', 'false');
    screen.textContent = 'Share screen';
    document.querySelector('.tile.screen-preview')?.remove();
  };
  room.addEventListener('localTrackUnpublished', (e) => {
    if (e.detail.source === 'screen_share') screenOff();
  });
  screen.onclick = async () => {
    if (room.localTracks.has('screen_share')) {
      await room.unpublish('screen_share');
      return screenOff();
    }
    try {
      await room.publish({ screen: true });
      const { track } = room.localTracks.get('screen_share');
      track.addEventListener('ended', screenOff);
      screen.setAttribute('aria-pressed', 'true');
      screen.textContent = 'Stop sharing';
      showScreenPreview(track);
    } catch (err) {
      setStatus(`Screen sharing failed: ${err.message}`, 'error');
    }
  };

  $('leave').onclick = () => room.leave();
  $('rejoin').onclick = () => location.reload();
  $('sound').onclick = async () => {
    for (const audio of $('audio').querySelectorAll('audio')) await audio.play().catch(() => {});
    $('sound').hidden = true;
  };
}

/** The tile of `participant`, created on first use. Teachers go in the focus area. */
function tileFor(participant, isLocal = false) {
  let tile = tiles.get(participant.sid);
  if (tile) return tile;
  const root = document.createElement('figure');
  root.className = `tile ${participant.role}`;
  root.dataset.participantSid = participant.sid;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound plays through the participant's <audio> element
  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  avatar.textContent = initials(participant.name);
  const label = document.createElement('figcaption');
  label.textContent = `${participant.name}${isLocal ? ' (you)' : ''}`;
  if (participant.role !== 'student') {
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = participant.role === 'teacher' ? 'Teacher' : 'Assistant';
    label.append(' ', badge);
  }
  const state = document.createElement('p');
  state.className = 'tile-state';
  state.textContent = 'Reconnecting…';
  state.hidden = true;
  root.append(avatar, video, label, state);
  root.classList.add('no-video');
  if (isLocal) root.classList.add('local');
  tile = { root, video, state, reconnecting: new Set() };
  tiles.set(participant.sid, tile);
  if (participant.role === 'teacher') {
    $('teachers').prepend(root);
    $('waiting').hidden = true;
  } else {
    $('grid').append(root);
  }
  return tile;
}

/**
 * Marks a participant's tile "reconnecting…" while its connection is down (`connection`, as the
 * server says) or its media has stopped (`media`, as seen here): either is enough.
 */
function setReconnecting(sid, reason, on) {
  const tile = tiles.get(sid);
  if (!tile) return;
  if (on) tile.reconnecting.add(reason);
  else tile.reconnecting.delete(reason);
  tile.root.classList.toggle('reconnecting', tile.reconnecting.size > 0);
  tile.state.hidden = tile.reconnecting.size === 0;
}

/**
 * Once a second, how long ago each participant's media last arrived: a participant none of
 * whose tracks got a packet for MEDIA_STALL_MS is shown reconnecting. Tracks that never got
 * one yet say nothing.
 */
function watchMedia(room) {
  const timer = setInterval(async () => {
    const silentFor = new Map(); // MediaStreamTrack id -> ms since its last packet
    try {
      (await room.subscriber.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.lastPacketReceivedTimestamp) silentFor.set(r.trackIdentifier, r.timestamp - r.lastPacketReceivedTimestamp);
      });
    } catch {
      return; // the connection closed meanwhile
    }
    for (const participant of room.participants.values()) {
      const silences = participant.tracks
        .map((t) => silentFor.get(room.remoteTracks.get(t.sid)?.track.id))
        .filter((ms) => ms !== undefined);
      setReconnecting(participant.sid, 'media', silences.length > 0 && Math.min(...silences) > MEDIA_STALL_MS);
    }
  }, 1000);
  room.addEventListener('disconnected', () => clearInterval(timer));
}

function removeTile(sid) {
  tiles.get(sid)?.root.remove();
  tiles.delete(sid);
  $('waiting').hidden = $('teachers').querySelector('.tile.teacher') !== null;
}

/** Shows `track` in `tile`; `sid` lets `trackUnsubscribed` find it (a self-view mirrors). */
function attachVideo(tile, track, sid, mirror = false) {
  tile.video.srcObject = new MediaStream([track]);
  tile.video.dataset.trackSid = sid;
  tile.video.classList.toggle('mirror', mirror);
  tile.root.classList.remove('no-video');
}

function detachVideo(tile) {
  tile.video.srcObject = null;
  delete tile.video.dataset.trackSid;
  tile.root.classList.add('no-video');
}

/** A labelled screen tile: `stream` (remote) or `track` (our own, previewed). */
function screenTile(className, label, srcObject) {
  const root = document.createElement('figure');
  root.className = `tile ${className}`;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  video.srcObject = srcObject;
  const caption = document.createElement('figcaption');
  caption.textContent = label;
  root.append(video, caption);
  return root;
}

function showScreen(info, participant, stream) {
  const root = screenTile('screen', `${participant.name}'s screen`, stream);
  root.dataset.trackSid = info.sid;
  screens.get(info.sid)?.remove();
  screens.set(info.sid, root);
  $('stage').append(root);
  $('stage').hidden = false;
}

function removeScreen(sid) {
  screens.get(sid)?.remove();
  screens.delete(sid);
  $('stage').hidden = screens.size === 0;
}

/** The sharer sees what it shares, small, next to its own camera. */
function showScreenPreview(track) {
  $('teachers').append(screenTile('screen-preview', 'Your screen (preview)', new MediaStream([track])));
}

/** Plays a remote audio track; browsers that block autoplay get a "Turn on sound" button. */
function playAudio(sid, stream) {
  const audio = document.createElement('audio');
  audio.dataset.trackSid = sid;
  audio.srcObject = stream;
  $('audio').append(audio);
  audio.play().catch(() => {
    $('sound').hidden = false;
  });
}

function initials(name) {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('') || '?';
}

main();
