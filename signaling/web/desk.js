// What the support desk pages share: /support (a learner asks for help, support.js) and /agent
// (an agent on duty, agent.js).
//
// Both sides first join a lobby room over the ordinary protocol (`support-lobby` for learners,
// `support-desk` for agents) with a dev token, and talk to the desk there: `request_help` or
// `go_on_duty`. When the server pairs them it sends each a `support_assigned` event with a
// token for a private room; the page joins that room with a second connection. A support session
// is a conversation: the agent's microphone is on from the start and its camera can be turned
// on; the learner hears (and sees) the agent, and shares screen, camera and microphone for the
// agent. `window.aulaLobby` and `window.aulaSession` point at the SDK rooms so tests can inspect
// them (on /agent, `aulaSession` is the session shown).

import * as Aula from '/sdk/aula.js';
import { devIdentity } from '/web/class-ui.js';

// The recording badge is the class page's: same header, same event.
export { showRecording } from '/web/class-ui.js';

export const $ = (id) => document.getElementById(id);

/** What a learner can ask about, and in which language; agents pick theirs from the same lists. */
export const TOPICS = { audio: 'Audio', video: 'Video', billing: 'Billing' };
export const LANGUAGES = { en: 'English', zh: '中文', es: 'Español' };

/** Data topic on which the learner's page reports its measured link to the agent every 2 s. */
export const LINK_TOPIC = 'aula.link';

export function setStatus(text, kind = 'info') {
  $('status').textContent = text;
  $('status').dataset.kind = kind;
}

/** Joins the desk's lobby room; errors and a lost connection show in the status line. */
export async function connectLobby(room, name, role, onDeskEvent) {
  const lobby = await Aula.connect(location.origin, await devToken(room, name, role));
  window.aulaLobby = lobby;
  lobby.addEventListener('serverEvent', (e) => onDeskEvent(e.detail));
  lobby.addEventListener('error', (e) => setStatus(e.detail.message, 'error'));
  lobby.addEventListener('disconnected', (e) => setStatus(`Disconnected from the help desk: ${e.detail.reason}. Reload the page.`, 'error'));
  return lobby;
}

async function devToken(room, name, role) {
  const identity = devIdentity(name, role);
  const res = await fetch(`/api/dev-token?${new URLSearchParams({ room, identity, role, name })}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error?.message ?? `token request failed (${res.status})`);
  return body.token;
}

/** "0:42", "12:05". */
export function clock(secs) {
  const s = Math.max(0, Math.floor(secs));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export const initials = (name) => name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('') || '?';

/**
 * Shows `track` in the tile `figure` (a <figure class="tile"> with a <video>), or the tile's
 * placeholder when `track` is null. The SDK sees the <video> and asks the server for a layer
 * of the size it is shown at.
 */
export function showVideo(figure, track) {
  const video = figure.querySelector('video');
  figure.classList.toggle('empty', !track);
  if (!track) {
    video.srcObject = null;
    return;
  }
  if (video.srcObject?.getVideoTracks()[0] !== track) video.srcObject = new MediaStream([track]);
}

/**
 * Plays a remote audio track in a hidden <audio> inside `container`. Browsers that block
 * autoplay with sound get the "Turn on sound" button, which plays every one of them.
 */
export function playAudio(container, { track, info }) {
  const audio = document.createElement('audio');
  audio.autoplay = true;
  audio.srcObject = new MediaStream([track]);
  audio.dataset.track = info.sid;
  audio.dataset.source = info.source;
  container.append(audio);
  audio.play().catch(() => { $('sound').hidden = false; });
  return audio;
}

export function wireSoundButton() {
  $('sound').addEventListener('click', async () => {
    for (const audio of document.querySelectorAll('#audio audio')) await audio.play().catch(() => {});
    $('sound').hidden = true;
  });
}

/**
 * The chat of a support session: lines the room relays (the server echoes ours back as the
 * receipt, so a line shows once it was delivered), and a form to send one.
 */
export class Chat {
  #room = null;
  #onEvent = (e) => { if (e.detail.type === 'chat') this.#append(e.detail); };

  constructor(form, log) {
    this.form = form;
    this.log = log;
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = form.text.value.trim();
      if (!text || !this.#room) return;
      this.#room.send({ type: 'chat', text });
      form.text.value = '';
    });
  }

  /** Shows `room`'s chat (and only it) from now on. */
  attach(room) {
    this.#room?.removeEventListener('serverEvent', this.#onEvent);
    this.#room = room;
    this.log.replaceChildren();
    room?.addEventListener('serverEvent', this.#onEvent);
  }

  #append({ from, name, text }) {
    const line = document.createElement('li');
    const who = document.createElement('strong');
    who.textContent = from === this.#room.localParticipant?.sid ? 'You' : name;
    line.append(who, `: ${text}`);
    this.log.append(line);
    line.scrollIntoView({ block: 'nearest' });
  }
}
