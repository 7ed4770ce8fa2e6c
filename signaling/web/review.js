// Shared by the review pages (/recordings, /playback/{id}): the reviewer's token, JSON calls
// with it, the sign-in notice, and formatting.
//
// The token comes from `?token=` (a link the school's or help desk's backend made, with the
// `can_review` grant: agents and admins have it by default). It is sent as a bearer token, and
// as `?token=` on media URLs, which a <video> cannot send headers for.

export const $ = (id) => document.getElementById(id);

export const token = new URLSearchParams(location.search).get('token');

/** A review page's URL that keeps the token. */
export function withToken(path) {
  return token ? `${path}?${new URLSearchParams({ token })}` : path;
}

/** Thrown when the server wants a (better) token: the page shows the sign-in notice. */
export class SignInNeeded extends Error {}

/** GETs a review API's JSON; a 401/403 becomes SignInNeeded, another error an Error. */
export async function api(path) {
  const res = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401 || res.status === 403) throw new SignInNeeded(body.error?.message ?? `HTTP ${res.status}`);
  if (!res.ok) throw new Error(body.error?.message ?? `HTTP ${res.status}`);
  return body;
}

export function setStatus(text, kind = '') {
  const status = $('status');
  status.textContent = text;
  status.dataset.kind = kind;
}

/**
 * Shows the sign-in notice instead of the page, with why. In dev mode (the server hands out
 * dev tokens) it offers to review as a dev-mode agent, since anyone may be one there.
 */
export async function showSignIn(why) {
  $('sign-in').hidden = false;
  $('sign-in-why').textContent = why;
  setStatus('Not signed in', 'error');
  const probe = await fetch('/api/dev-token?room=recordings&identity=reviewer&role=agent&name=Reviewer');
  if (!probe.ok) return;
  const { token: devToken } = await probe.json();
  const button = $('dev-sign-in');
  button.hidden = false;
  button.addEventListener('click', () => {
    location.search = new URLSearchParams({ token: devToken }).toString();
  });
}

/** 75 s → "1:15"; 3725 s → "1:02:05". */
export function formatTime(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const [h, m, s] = [Math.floor(total / 3600), Math.floor(total / 60) % 60, total % 60];
  const mmss = `${String(m).padStart(h ? 2 : 1, '0')}:${String(s).padStart(2, '0')}`;
  return h ? `${h}:${mmss}` : mmss;
}

export function formatBytes(bytes) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit && value < 10 ? 1 : 0)} ${units[unit]}`;
}
