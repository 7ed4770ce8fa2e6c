// Small DOM helpers shared by the class page's modules (showRecording also by the support desk's).

export const $ = (id) => document.getElementById(id);

/** The one-line status in the header; `kind` is 'info', 'ok' or 'error'. */
export function setStatus(text, kind = 'info') {
  $('status').textContent = text;
  $('status').dataset.kind = kind;
}

/** A `<button type="button">` labelled `label` that runs `onClick`. */
export function button(label, onClick, className = '') {
  const el = document.createElement('button');
  el.type = 'button';
  el.textContent = label;
  if (className) el.className = className;
  el.addEventListener('click', onClick);
  return el;
}

/**
 * Shows the notice `key` above the class (replacing an earlier one with the same key): a line
 * of text and, optionally, buttons. Notices are for what needs the person's attention (an
 * invitation to the stage, a poor connection, the teacher leaving); the status line is for the
 * rest.
 * @param {{kind?: 'info'|'warn', buttons?: [string, () => void][]}} options
 */
export function showNotice(key, text, { kind = 'info', buttons = [] } = {}) {
  const notice = document.createElement('div');
  notice.className = `notice ${kind}`;
  notice.dataset.key = key;
  notice.setAttribute('role', buttons.length ? 'alertdialog' : 'status');
  const p = document.createElement('p');
  p.textContent = text;
  notice.append(p, ...buttons.map(([label, onClick], i) => button(label, onClick, i === 0 ? 'primary-small' : '')));
  if (buttons.length) notice.setAttribute('aria-label', text);
  const old = noticeFor(key);
  if (old) old.replaceWith(notice);
  else $('notices').append(notice);
}

export function clearNotice(key) {
  noticeFor(key)?.remove();
}

function noticeFor(key) {
  return $('notices').querySelector(`[data-key="${key}"]`);
}

/** Runs `render` once after the current task, however often it is asked for meanwhile. */
export function batched(render) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      render();
    });
  };
}

/**
 * The header's "● Recording" badge (#recording): shown while `room` (or null: no room) is
 * being recorded, with who started it as its tooltip.
 */
export function showRecording(room) {
  const recording = room?.recording;
  $('recording').hidden = recording?.state !== 'recording';
  if (recording) $('recording').title = `This room is being recorded. Started by ${starterName(room, recording.started_by)}.`;
}

/** `started_by` is an identity, or `admin` / `auto` when no participant started it. */
function starterName(room, startedBy) {
  if (startedBy === 'admin') return 'an administrator';
  if (startedBy === 'auto') return 'the server (it records every such room)';
  const people = [room.localParticipant, ...room.participants.values()];
  return people.find((p) => p?.identity === startedBy)?.name ?? startedBy;
}

/**
 * A dev-mode identity from a display name: its letters and digits, else `fallback`, and eight
 * random hex digits so that two people of one name differ. Not `crypto.randomUUID`: that exists
 * only in secure contexts (https or localhost), and a student or learner on a second computer
 * opens the page over plain http on the LAN.
 */
export function devIdentity(name, fallback) {
  const base = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || fallback;
  const suffix = Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, '0')).join('');
  return `${base}-${suffix}`;
}
