// /recordings: every recording on the server, newest first, each with a link to its playback.

import { $, SignInNeeded, api, formatBytes, formatTime, setStatus, showSignIn, withToken } from '/web/review.js';

function cell(row, text) {
  const td = row.insertCell();
  td.textContent = text;
  return td;
}

async function main() {
  let recordings;
  try {
    ({ recordings } = await api('/api/recordings'));
  } catch (err) {
    if (err instanceof SignInNeeded) return showSignIn(err.message);
    return setStatus(`Could not list the recordings: ${err.message}`, 'error');
  }
  $('list').hidden = false;
  $('empty').hidden = recordings.length > 0;
  for (const r of recordings) {
    const row = $('rows').insertRow();
    cell(row, r.room);
    cell(row, r.participants.map((p) => p.name).join(', ') || '—');
    const started = new Date(r.started_at_unix_ms);
    const time = document.createElement('time');
    time.dateTime = started.toISOString();
    time.textContent = started.toLocaleString();
    row.insertCell().append(time);
    cell(row, r.duration_ms == null ? '—' : formatTime(r.duration_ms));
    cell(row, formatBytes(r.size_bytes));
    cell(row, r.state).dataset.state = r.state;
    const link = document.createElement('a');
    link.href = withToken(`/playback/${encodeURIComponent(r.id)}`);
    link.textContent = 'Play';
    link.setAttribute('aria-label', `Play the recording of ${r.room} from ${started.toLocaleString()}`);
    row.insertCell().append(link);
  }
  setStatus(`${recordings.length} recording${recordings.length === 1 ? '' : 's'}`, 'ok');
}

main();
