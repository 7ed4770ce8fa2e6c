// Weak-network helpers shared by weak-network.test.js and weak-network-report.js: a student
// who starts on the top layer of a clean link, impairing one participant's link through the
// server's test-only impairment layer, and measuring what the student actually saw and heard,
// from the browser's own stats.

import { joinClass, waitForMedia } from './harness.js';

/**
 * A student joins `room` through the class page, shows every video large (see
 * `showVideosLarge`), and on the clean link climbs to the teacher's top layer (up to 30 s; the
 * teacher's encoder ramps up too). `media` is what `waitForMedia` saw, for the caller to judge.
 * `refuse` lists what the student's browser leaves out of its answers (see `refuseInAnswers`).
 * @returns {Promise<{page: any, identity: string, media: any}>}
 */
export async function joinStudentOnTop(browser, baseUrl, { room, name, refuse = [] }) {
  const initScript = refuse.length > 0 ? `(${refuseInAnswers})(${JSON.stringify(refuse)})` : undefined;
  const page = await joinClass(browser, baseUrl, { room, name, role: 'student', initScript });
  await showVideosLarge(page);
  const identity = await page.evaluate(() => window.aulaRoom.localParticipant.identity);
  const media = await waitForMedia(page, 20_000);
  if (media.ok) await waitForHeight(page, (h) => h >= 700, 30_000);
  return { page, identity, media };
}

/**
 * Runs in a page (see `joinStudentOnTop`'s `refuse`): the browser's answers to the SFU leave
 * out video FEC (`'ulpfec'`), audio RED (`'red'`) or NACK feedback (`'nack'`), as a browser
 * without them would answer, so that a test can compare a student with and without either.
 */
function refuseInAnswers(refuse) {
  const set = RTCPeerConnection.prototype.setLocalDescription;
  RTCPeerConnection.prototype.setLocalDescription = function (description) {
    if (description?.type !== 'answer') return set.call(this, description);
    let lines = description.sdp.split('\r\n');
    if (refuse.includes('nack')) lines = lines.filter((l) => !/^a=rtcp-fb:\d+ nack$/.test(l));
    const codecs = [['ulpfec', /a=rtpmap:(\d+) ulpfec\/90000/, 'm=video'], ['red', /a=rtpmap:(\d+) red\/48000\/2/, 'm=audio']];
    for (const [name, rtpmap, mline] of codecs) {
      const pt = refuse.includes(name) && description.sdp.match(rtpmap)?.[1];
      if (!pt) continue;
      lines = lines
        .filter((l) => !l.startsWith(`a=rtpmap:${pt} `) && !l.startsWith(`a=fmtp:${pt} `) && !l.startsWith(`a=rtcp-fb:${pt} `))
        .map((l) => (l.startsWith(mline) ? l.split(' ').filter((t, i) => i < 3 || t !== pt).join(' ') : l));
    }
    return set.call(this, { type: 'answer', sdp: lines.join('\r\n') });
  };
}

/**
 * Impairs the link between the SFU and one participant (POST /test/impairment; the server must
 * run with `[dev] test_impairment = true`). `loss` is a fraction, `rateKbps` caps the downlink.
 * With no impairment fields it clears the impairment.
 */
export async function impair(baseUrl, { room, identity, loss, rateKbps, delayMs }) {
  const body = { room, identity };
  if (loss !== undefined) body.loss = loss;
  if (rateKbps !== undefined) body.rate_kbps = rateKbps;
  if (delayMs !== undefined) body.delay_ms = delayMs;
  const res = await fetch(`${baseUrl}/test/impairment`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`impairment refused: HTTP ${res.status} ${await res.text()}`);
}

/**
 * Shows every remote video at 1280x720 CSS pixels, so that the size the SDK reports never
 * limits the layer and only the network decides.
 */
export async function showVideosLarge(page) {
  await page.addStyleTag({ content: 'video { width: 1280px !important; height: 720px !important; }' });
}

/**
 * Watches the page's received video and audio for `ms` (sampling every 100 ms, in the page)
 * and returns what a viewer would judge:
 * - `freezeShare`: share of the time the video was frozen (the browser's own freeze
 *   detection: `totalFreezesDuration`), `longestStallMs`: the longest time without a newly
 *   decoded frame (sampling resolution 100 ms) and when it began (`longestStallSince`, wall
 *   clock, to find it in the server's log), `fps`, `heights`: the decoded frame height
 *   at each sample, `kbps`: video bitrate received; `nacks`, `packetsLost` (Chromium gives no
 *   FEC counts for video: the server's `aula_fec_packets_sent_total` says what was sent),
 *   `plis` sent and `keyframes` decoded (a stall the browser gave up on ends in a keyframe),
 *   `framesDropped`;
 * - `concealment`: share of audio samples the decoder had to invent (`concealedSamples` /
 *   `totalSamplesReceived`), `audioKbps`, `audioFecPackets`: audio FEC received (Chromium's
 *   `fecPacketsReceived`, which counts Opus frames that carried in-band FEC).
 */
export function watch(page, ms) {
  return page.evaluate(async (ms) => {
    const read = async () => {
      let video = null;
      let audio = null;
      (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
        if (r.type !== 'inbound-rtp') return;
        if (r.kind === 'video' && (!video || (r.framesDecoded ?? 0) > (video.framesDecoded ?? 0))) video = r;
        if (r.kind === 'audio' && (!audio || (r.totalSamplesReceived ?? 0) > (audio.totalSamplesReceived ?? 0))) audio = r;
      });
      return { at: performance.now(), video: video ?? {}, audio: audio ?? {} };
    };
    const first = await read();
    const heights = [];
    let last = first;
    let lastNewFrameAt = first.at;
    let longestStallMs = 0;
    let longestStallSince = null;
    while (performance.now() - first.at < ms) {
      await new Promise((ok) => setTimeout(ok, 100));
      const now = await read();
      if ((now.video.framesDecoded ?? 0) > (last.video.framesDecoded ?? 0)) lastNewFrameAt = now.at;
      if (now.at - lastNewFrameAt > longestStallMs) {
        longestStallMs = now.at - lastNewFrameAt;
        longestStallSince = new Date(Date.now() - longestStallMs).toISOString();
      }
      heights.push(now.video.frameHeight ?? 0);
      last = now;
    }
    const seconds = (last.at - first.at) / 1000;
    const delta = (kind, field) => (last[kind][field] ?? 0) - (first[kind][field] ?? 0);
    const samples = delta('audio', 'totalSamplesReceived');
    return {
      seconds,
      freezeShare: delta('video', 'totalFreezesDuration') / seconds,
      freezeCount: delta('video', 'freezeCount'),
      longestStallMs: Math.round(longestStallMs),
      longestStallSince,
      fps: delta('video', 'framesDecoded') / seconds,
      heights,
      kbps: (delta('video', 'bytesReceived') * 8) / seconds / 1000,
      nacks: delta('video', 'nackCount'),
      packetsLost: delta('video', 'packetsLost'),
      plis: delta('video', 'pliCount'),
      keyframes: delta('video', 'keyFramesDecoded'),
      framesDropped: delta('video', 'framesDropped'),
      concealment: samples > 0 ? delta('audio', 'concealedSamples') / samples : 1,
      audioKbps: (delta('audio', 'bytesReceived') * 8) / seconds / 1000,
      audioFecPackets: delta('audio', 'fecPacketsReceived'),
      audioCodec: last.audio.codecId ?? null,
    };
  }, ms);
}

/** The decoded height of the received video now (0 before the first frame). */
export async function frameHeight(page) {
  return page.evaluate(async () => {
    let height = 0;
    (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') height = Math.max(height, r.frameHeight ?? 0);
    });
    return height;
  });
}

/** Waits up to `ms` until `frameHeight(page)` satisfies `ok`; returns the wait in ms, or null. */
export async function waitForHeight(page, ok, ms) {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (ok(await frameHeight(page))) return Date.now() - start;
    await new Promise((done) => setTimeout(done, 200));
  }
  return null;
}

/** The median of a list of numbers. */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
}

/** Totals of the server's counters whose names start with one of `prefixes` (from /metrics). */
export async function serverCounters(baseUrl, prefixes) {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const totals = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const [name, value] = line.split(/\s+/);
    const prefix = prefixes.find((p) => name?.startsWith(p));
    if (prefix) totals[prefix] = (totals[prefix] ?? 0) + Number(value);
  }
  return totals;
}
