// Connection quality: the server's word (excellent, good or poor, from loss, jitter and round
// trip; sent to each participant about itself and to staff about everyone), shown as a badge.
// Our own badge is the worse of the server's level and the level of the loss and round trip
// this browser measures on what it receives (the same thresholds): the server's figures for a
// participant who only receives miss that loss today, and a student on a lossy link must be
// told. The tooltip gives the measured figures.

import { $, clearNotice, showNotice } from '/web/class-ui.js';

/** What each level means, after the server's thresholds (sfu/src/quality.rs). */
const MEANING = {
  excellent: 'under 2 % loss, 30 ms jitter and 300 ms round trip',
  good: 'under 8 % loss, 100 ms jitter and 700 ms round trip',
  poor: 'over 8 % loss, 100 ms jitter or 700 ms round trip',
};

/** Fills `el` as a badge for `level`, with `detail` (or what the level means) as its tooltip. */
export function qualityBadge(el, level, detail = '') {
  el.className = `quality ${level}`;
  el.dataset.quality = level;
  el.title = detail || `${level}: ${MEANING[level]}`;
}

/** How often our own loss and round trip are measured. */
const STATS_INTERVAL_MS = 2000;
/** Fewer packets than this in an interval say nothing about loss. */
const MIN_PACKETS = 50;
const LEVELS = ['poor', 'good', 'excellent'];

/** The level of measured figures, by the server's thresholds (jitter left to the server). */
function levelOf(loss, rtt) {
  if (loss >= 0.08 || rtt >= 0.7) return 'poor';
  if (loss >= 0.02 || rtt >= 0.3) return 'good';
  return 'excellent';
}

/**
 * Videos the server paused because our connection cannot take them (its `stream_state`
 * events: too little bandwidth for even the lowest layer, or so much loss that only audio gets
 * through). Their tiles say so instead of passing a frozen frame off as live, and while any
 * is paused a notice tells the student the class goes on as audio.
 */
function watchPausedVideo(room) {
  const paused = new Set();
  const render = () => {
    for (const el of document.querySelectorAll('.tile.link-paused')) el.classList.remove('link-paused');
    for (const sid of paused) {
      document.querySelector(`[data-track-sid="${sid}"]`)?.closest('.tile')?.classList.add('link-paused');
    }
    if (paused.size === 0) return clearNotice('audio-only');
    showNotice('audio-only', 'Your connection is very weak: audio only. The video comes back by itself when the connection improves.', { kind: 'warn' });
  };
  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    if (msg.type !== 'stream_state') return;
    if (msg.state === 'paused') paused.add(msg.track_sid);
    else paused.delete(msg.track_sid);
    render();
  });
  // A tile shown later (the track arrives after its pause) is marked too.
  room.addEventListener('trackSubscribed', () => setTimeout(render));
  room.addEventListener('trackUnpublished', (e) => {
    paused.delete(e.detail.info.sid);
    render();
  });
  // A new participant's subscriptions start afresh.
  room.addEventListener('rejoined', () => {
    paused.clear();
    render();
  });
}

export function watchQuality(room) {
  watchPausedVideo(room);
  const badge = $('my-quality');
  let serverLevel = null;
  let measuredLevel = null;
  let measured = '';
  let shown = null;
  const render = () => {
    const levels = [serverLevel, measuredLevel].filter(Boolean);
    if (levels.length === 0) return;
    const level = LEVELS[Math.min(...levels.map((l) => LEVELS.indexOf(l)))];
    badge.hidden = false;
    badge.textContent = `Connection: ${level}`;
    qualityBadge(badge, level, `${level}: ${MEANING[level]}${measured ? `. ${measured}` : ''}`);
    if (level === shown) return;
    shown = level;
    if (level !== 'poor') return clearNotice('poor-connection');
    const text = room.localTracks.size > 0
      ? 'Your connection is poor: the class may see and hear you badly. Closer to the Wi-Fi, or fewer downloads, helps.'
      : 'Your connection is poor: video lowered to save your audio.';
    showNotice('poor-connection', text, { kind: 'warn' });
  };

  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    // Our sid now: a rejoin makes us a new participant.
    if (msg.type !== 'connection_quality' || msg.participant_sid !== room.localParticipant.sid) return;
    serverLevel = msg.quality;
    render();
  });

  let last = null; // {received, lost} of the previous sample
  const timer = setInterval(async () => {
    let rtt = null;
    let received = 0;
    let lost = 0;
    try {
      (await room.subscriber.getStats()).forEach((r) => {
        if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime !== undefined) rtt = r.currentRoundTripTime;
        if (r.type === 'inbound-rtp') {
          received += r.packetsReceived ?? 0;
          lost += Math.max(0, r.packetsLost ?? 0);
        }
      });
    } catch {
      return; // closed meanwhile
    }
    const parts = [];
    let loss = 0;
    const packets = last ? received + lost - last.received - last.lost : 0;
    if (packets >= MIN_PACKETS) {
      loss = (lost - last.lost) / packets;
      parts.push(`${(loss * 100).toFixed(1)} % loss`);
    }
    if (rtt !== null) parts.push(`${Math.round(rtt * 1000)} ms round trip`);
    last = { received, lost };
    measuredLevel = packets >= MIN_PACKETS || rtt !== null ? levelOf(loss, rtt ?? 0) : null;
    measured = parts.length ? `Measured here: ${parts.join(', ')}` : '';
    render();
  }, STATS_INTERVAL_MS);
  room.addEventListener('disconnected', () => clearInterval(timer));
}
