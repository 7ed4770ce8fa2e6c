// Aula browser SDK: reception quality while the room is recorded. Reads the subscribe
// connection's getStats() every 5 s and sends the difference as `client_stats` (frame rate,
// freezes, largest frame, concealed audio, loss, RTT, jitter), which the server writes into the
// recording's QoS timeline (see "Recording" in aula.js's header).
//
// Part of the SDK whose entry point is aula.js; see its header for the API.

import { MAX_RENDERED_DIMENSION } from './protocol.js';

/**
 * How often `client_stats` goes out while the room is recorded: the protocol's
 * CLIENT_STATS_INTERVAL_SECS (the server refuses more than about one every 4 s).
 */
const CLIENT_STATS_INTERVAL_MS = 5_000;

/**
 * Sends `client_stats` every CLIENT_STATS_INTERVAL_MS between `start` and `stop`, each the
 * difference between two getStats() snapshots of the subscribe connection. The next report is
 * scheduled only once the previous one is out, so a slow getStats() never makes two close
 * together.
 */
export class ClientStats {
  #pc;
  #send;
  #timer = null;
  /** The counters of the last report (or of `start`), by stats id; null while stopped. */
  #previous = null;
  #previousAt = 0;
  /** Bumped by start and stop, so that a getStats() in flight when they ran is discarded. */
  #generation = 0;

  /**
   * @param {() => RTCPeerConnection} pc the subscribe connection
   * @param {(msg: object) => void} send sends a protocol message
   */
  constructor(pc, send) {
    this.#pc = pc;
    this.#send = send;
  }

  /** Starts reporting from now (a new recording: counters before it are not its business). */
  async start() {
    if (this.#previous) return;
    const generation = ++this.#generation;
    const counters = await this.#counters();
    if (generation !== this.#generation) return;
    this.#previous = counters;
    this.#previousAt = performance.now();
    this.#timer = setTimeout(() => this.#report(generation), CLIENT_STATS_INTERVAL_MS);
  }

  stop() {
    this.#generation++;
    clearTimeout(this.#timer);
    this.#previous = null;
  }

  async #report(generation) {
    const counters = await this.#counters();
    if (generation !== this.#generation) return;
    const now = performance.now();
    const stats = summarize(this.#previous, counters, (now - this.#previousAt) / 1000);
    this.#previous = counters;
    this.#previousAt = now;
    if (Object.keys(stats).length > 0) this.#send({ type: 'client_stats', ...stats });
    this.#timer = setTimeout(() => this.#report(generation), CLIENT_STATS_INTERVAL_MS);
  }

  /** The inbound streams' and the selected candidate pair's figures, by stats id. */
  async #counters() {
    const pc = this.#pc();
    const reports = new Map();
    if (pc.connectionState === 'closed') return reports;
    (await pc.getStats().catch(() => new Map())).forEach((r) => reports.set(r.id, r));
    return reports;
  }
}

/**
 * A `client_stats` message's fields (as in the protocol's ClientStats) from two getStats()
 * snapshots `secs` apart; a figure that cannot be known is left out.
 */
function summarize(before, after, secs) {
  const delta = (r, field) => (r[field] ?? 0) - (before.get(r.id)?.[field] ?? 0);
  const stats = {};
  const fps = [];
  let freezes = 0;
  let freezeSecs = 0;
  let largest = null;
  let concealed = 0;
  let samples = 0;
  let lost = 0;
  let received = 0;
  let jitter = null;
  let pairId = null;
  for (const r of after.values()) {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
    if (r.type !== 'inbound-rtp') continue;
    const packets = delta(r, 'packetsReceived');
    lost += delta(r, 'packetsLost');
    received += packets;
    // Only streams that are flowing: a video the server paused (not shown on the page) is not
    // frozen, and its stale jitter says nothing about this interval.
    if (packets <= 0) continue;
    jitter = Math.max(jitter ?? 0, (r.jitter ?? 0) * 1000);
    if (r.kind === 'video') {
      if (r.framesDecoded != null && secs > 0) fps.push(delta(r, 'framesDecoded') / secs);
      else if (r.framesPerSecond != null) fps.push(r.framesPerSecond);
      freezes += delta(r, 'freezeCount');
      freezeSecs += delta(r, 'totalFreezesDuration');
      if (r.frameWidth && r.frameHeight && r.frameWidth * r.frameHeight > (largest?.frameWidth ?? 0) * (largest?.frameHeight ?? 0)) largest = r;
    } else if (r.kind === 'audio') {
      concealed += delta(r, 'concealedSamples');
      samples += delta(r, 'totalSamplesReceived');
    }
  }
  // Clamped to what the server accepts (ClientStats::validate): a counter reset must not get
  // the whole report refused.
  const clamp = (x, max) => Math.min(max, Math.max(0, x));
  const round = (x, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
  if (fps.length) {
    stats.fps = round(clamp(fps.reduce((a, b) => a + b) / fps.length, 240));
    stats.freezes = Math.round(clamp(freezes, 1000));
    stats.freeze_ms = Math.round(clamp(freezeSecs * 1000, 600_000));
  }
  if (largest) {
    stats.frame_width = Math.min(largest.frameWidth, MAX_RENDERED_DIMENSION);
    stats.frame_height = Math.min(largest.frameHeight, MAX_RENDERED_DIMENSION);
  }
  if (samples > 0) stats.audio_concealed_ratio = round(clamp(concealed / samples, 1), 4);
  if (lost + received > 0) stats.packet_loss = round(clamp(lost / (lost + received), 1), 4);
  const rtt = after.get(pairId)?.currentRoundTripTime;
  if (rtt != null) stats.rtt_ms = round(clamp(rtt * 1000, 60_000));
  if (jitter != null) stats.jitter_ms = round(clamp(jitter, 60_000));
  return stats;
}
