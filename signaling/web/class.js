// The live-class page (/class): join form, video grid, and the teacher's controls.
//
// `/class?room=R` shows a join form that asks this server for a dev token (dev mode only);
// `/class?token=T` joins straight away with a token minted elsewhere (`aula token`, or a school's
// own backend). Teachers publish camera and microphone on joining; students only receive.
// Which tracks a participant receives is the server's decision, not this page's.
//
// The page keeps `window.aulaRoom` pointing at the SDK's Room so tests can read its stats.

import * as Aula from '/sdk/aula.js';

const $ = (id) => document.getElementById(id);
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

function setStatus(text, kind = 'info') {
  $('status').textContent = text;
  $('status').dataset.kind = kind;
}

function show(section) {
  for (const id of ['join-form', 'classroom', 'ended']) $(id).hidden = id !== section;
  $('controls').hidden = section !== 'classroom';
}

async function main() {
  const token = params.get('token');
  if (token) return joinWith(token);
  const form = $('join-form');
  form.room.value = params.get('room') || 'demo';
  form.name.value = localStorage.getItem('aula.name') || '';
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
      history.replaceState(null, '', `?room=${encodeURIComponent(room)}`);
      await joinWith(await fetchDevToken(room, name, form.role.value));
    } catch (err) {
      setStatus(err.message, 'error');
    } finally {
      button.disabled = false;
    }
  });
}

/** Asks the server for a development token; production servers refuse, and say so. */
async function fetchDevToken(room, name, role) {
  // The identity only has to be unique in the room; two tabs with the same name are two people.
  const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'guest'}-${randomSuffix()}`;
  const query = new URLSearchParams({ room, identity, role, name });
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
    setStatus(`Could not join: ${err.message}`, 'error');
    return;
  }
  window.aulaRoom = room;
  const me = room.localParticipant;
  const isTeacher = me.role === 'teacher';
  $('room-name').textContent = room.name;
  document.title = `Aula · ${room.name}`;
  for (const el of document.querySelectorAll('[data-teacher]')) el.hidden = !isTeacher;
  show('classroom');

  tileFor(me, true);
  for (const p of room.participants.values()) tileFor(p);
  wireRoomEvents(room);
  wireControls(room);
  watchMedia(room);
  setStatus(`Connected as ${me.name} (${me.role}).`, 'ok');

  if (isTeacher) {
    try {
      await room.publish({ camera: true, microphone: true, simulcast: true });
      attachVideo(tiles.get(me.sid), room.localTracks.get('camera').track, 'local', true);
      setStatus(`Live: ${me.name} (teacher) in ${room.name}.`, 'ok');
    } catch (err) {
      setStatus(`Cannot share camera/microphone: ${err.message}`, 'error');
    }
  }
}

function wireRoomEvents(room) {
  room.addEventListener('participantJoined', (e) => tileFor(e.detail.participant));
  room.addEventListener('participantLeft', (e) => {
    const { participant } = e.detail;
    removeTile(participant.sid);
    setStatus(`${participant.name}${participant.role === 'teacher' ? ' (teacher)' : ''} left the class.`);
  });
  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    if (msg.type === 'participant_state') setReconnecting(msg.participant_sid, 'connection', msg.state === 'reconnecting');
  });
  room.addEventListener('trackSubscribed', (e) => {
    const { track, stream, info, participant } = e.detail;
    if (info.kind === 'audio') return playAudio(info.sid, stream);
    if (info.source === 'screen_share') return showScreen(info, participant, stream);
    const tile = tileFor(participant);
    attachVideo(tile, track, info.sid);
    tile.root.classList.toggle('camera-off', info.muted);
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
  room.addEventListener('connectionState', (e) => {
    const { target, state } = e.detail;
    if (state === 'failed' || state === 'disconnected') {
      setStatus(`Media connection (${target}) ${state}. Check your network.`, 'error');
    } else if (state === 'connected') {
      setStatus(`Connected as ${room.localParticipant.name} (${room.localParticipant.role}) in ${room.name}.`, 'ok');
    }
  });
  room.addEventListener('error', (e) => setStatus(`Server: ${e.detail.message} (${e.detail.code})`, 'error'));
  room.addEventListener('disconnected', (e) => {
    for (const sid of [...tiles.keys()]) removeTile(sid);
    for (const sid of [...screens.keys()]) removeScreen(sid);
    $('audio').replaceChildren();
    $('ended-reason').textContent = e.detail.reason === 'left' ? '' : `Reason: ${e.detail.reason}`;
    show('ended');
    setStatus('Disconnected.');
  });
}

function wireControls(room) {
  const toggle = (button, source, onLabel, offLabel) => {
    button.onclick = () => {
      const muted = button.getAttribute('aria-pressed') !== 'true';
      room.setMuted(source, muted);
      button.setAttribute('aria-pressed', String(muted));
      button.textContent = muted ? offLabel : onLabel;
      tiles.get(room.localParticipant.sid)?.root.classList.toggle(source === 'camera' ? 'camera-off' : 'mic-off', muted);
    };
  };
  toggle($('mic'), 'microphone', 'Mute mic', 'Unmute mic');
  toggle($('camera'), 'camera', 'Stop camera', 'Start camera');

  const screen = $('screen');
  const screenOff = () => {
    screen.setAttribute('aria-pressed', 'false');
    screen.textContent = 'Share screen';
  };
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

/** The tile of `participant`, created on first use. */
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
  if (participant.role === 'teacher') label.insertAdjacentHTML('beforeend', ' <span class="badge">Teacher</span>');
  const state = document.createElement('p');
  state.className = 'tile-state';
  state.textContent = 'Reconnecting…';
  state.hidden = true;
  root.append(avatar, video, label, state);
  root.classList.add('no-video');
  if (isLocal) root.classList.add('local');
  tile = { root, video, state, reconnecting: new Set() };
  tiles.set(participant.sid, tile);
  // Teachers first: students come to see them.
  if (participant.role === 'teacher') $('grid').prepend(root);
  else $('grid').append(root);
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

function showScreen(info, participant, stream) {
  const root = document.createElement('figure');
  root.className = 'tile screen';
  root.dataset.trackSid = info.sid;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  video.srcObject = stream;
  const label = document.createElement('figcaption');
  label.textContent = `${participant.name}'s screen`;
  root.append(video, label);
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

/**
 * Eight random hex digits for a dev-mode identity. Not `crypto.randomUUID`: that exists only in
 * secure contexts (https or localhost), and a student on a second computer opens the page over
 * plain http on the LAN.
 */
function randomSuffix() {
  return Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, '0')).join('');
}
