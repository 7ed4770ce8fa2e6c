// The class chat: everyone who may send data (the default for every role) writes to the whole
// class. The server relays each line to everyone, the sender included, so a line appears here
// only once the server has accepted it.

import { $, setStatus } from '/web/class-ui.js';

export function initChat(room) {
  const form = $('chat-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = form.text.value.trim();
    if (!text) return;
    room.send({ type: 'chat', text });
    form.text.value = '';
  });
  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    if (msg.type === 'chat') addLine(msg, msg.from === room.localParticipant.sid);
  });
  room.addEventListener('error', (e) => {
    if (e.detail.code === 'rate_limited') setStatus('Too many messages at once: wait a moment, then send again.', 'error');
  });
}

function addLine({ name, text }, mine) {
  const log = $('chat-log');
  const line = document.createElement('li');
  if (mine) line.className = 'mine';
  const who = document.createElement('strong');
  who.textContent = mine ? 'You' : name;
  line.append(who, ' ', text);
  // Follow the conversation unless the reader scrolled up to read something older.
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(line);
  if (atBottom) log.scrollTop = log.scrollHeight;
}
