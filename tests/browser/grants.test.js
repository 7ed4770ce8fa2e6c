// End-to-end: a track's label cannot bypass its grant (issue 11, item 4).
//
// Grants are checked on the source a `publish_offer` announces, so a publisher that could lie
// about its tracks would get past them: a token allowed only the microphone published the fake
// camera by announcing it as `microphone`, and a student watching decoded it. Here a second
// Chromium page speaks the protocol itself over a raw WebSocket (the SDK always tells the truth)
// and offers the fake camera, or microphone, under every label and under none. The server must
// refuse the lie with `track_mismatch` (a label the token lacks with `forbidden`), forward
// nothing of an unannounced track the token may not send, and still accept the same client's
// truthful offer, which the watcher then receives: so the watcher's "nothing" is not the
// harness seeing nothing.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { aulaCli, joinClass, poll, startServerAndBrowser, stopServerAndBrowser } from './harness.js';

/** First media may take a while on a loaded 2-core CI machine: ICE, DTLS, keyframe, decode. */
const MEDIA_DEADLINE_MS = 20_000;
/** How long the watcher is watched for media that must not come, after the offers. */
const WATCH_MS = 5_000;
/** Every source a track can be announced as (TrackSource in signaling/protocol/src/lib.rs). */
const LABELS = ['camera', 'microphone', 'screen_share', 'screen_share_audio'];

/**
 * A token for `room` signed with the dev keys by `aula token`, the documented way to override a
 * role's grants: a student who may publish only `sources` (comma-separated) and subscribes to
 * nothing (so the server never offers it a subscribe connection it would have to answer).
 */
async function restrictedToken(room, identity, sources) {
  const { stdout } = await aulaCli([
    'token', '--room', room, '--identity', identity, '--role', 'student',
    '--can-publish', 'true', '--sources', sources, '--can-subscribe', 'false',
  ]);
  return stdout.trim();
}

/**
 * Runs in the raw client's page: joins with `token` over a WebSocket of its own and installs
 * `window.raw.publish(kind, source)`, which offers one more sending track of Chromium's fake
 * `kind` ('audio' or 'video') announced as `source` (null: not announced at all) and returns
 * 'answered' (the answer is applied, media flows) or the error code the server refused it with.
 * Until an offer is answered each offer goes on a fresh RTCPeerConnection (the server drops its
 * side of a refused first offer); after that, offers renegotiate the answered one. Candidates
 * trickle both ways as the SDK's do, ours once the answer came. Resolves to the participant sid.
 */
async function installRawClient(token) {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  const inbox = [];
  let wake = () => {};
  const send = (msg) => ws.send(JSON.stringify(msg));
  /** Takes the first message of one of `types` from the inbox, waiting up to 10 s for it. */
  const next = async (types) => {
    const deadline = performance.now() + 10_000;
    for (;;) {
      const i = inbox.findIndex((m) => types.includes(m.type));
      if (i >= 0) return inbox.splice(i, 1)[0];
      const left = deadline - performance.now();
      if (left <= 0) return { type: 'timeout', code: `no ${types.join(' or ')} within 10 s` };
      await new Promise((ok) => {
        wake = ok;
        setTimeout(ok, left);
      });
    }
  };
  const raw = { pc: null, answered: false, remoteCandidates: [], localCandidates: [] };
  window.raw = raw;
  ws.addEventListener('message', (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === 'candidate' && msg.target === 'publish') {
      if (raw.answered) raw.pc.addIceCandidate(msg.candidate).catch(() => {});
      else raw.remoteCandidates.push(msg.candidate);
      return;
    }
    inbox.push(msg);
    wake();
  });
  await new Promise((ok, fail) => {
    ws.addEventListener('open', ok);
    ws.addEventListener('error', () => fail(new Error('the WebSocket did not open')));
  });
  send({ type: 'join', version: 1, token });
  const joined = await next(['joined', 'error', 'timeout']);
  if (joined.type !== 'joined') throw new Error(`join refused: ${JSON.stringify(joined)}`);

  raw.publish = async (kind, source) => {
    const stream = await navigator.mediaDevices.getUserMedia({ [kind]: true });
    const [track] = stream.getTracks();
    if (!raw.answered) {
      raw.pc?.close();
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      raw.pc = pc;
      raw.remoteCandidates = [];
      raw.localCandidates = [];
      pc.addEventListener('icecandidate', (e) => {
        // Chrome ends gathering with an empty candidate; the protocol has no end-of-candidates.
        if (!e.candidate?.candidate || raw.pc !== pc) return;
        const msg = { type: 'candidate', target: 'publish', candidate: e.candidate.toJSON() };
        if (raw.answered) send(msg);
        else raw.localCandidates.push(msg);
      });
    }
    const pc = raw.pc;
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    // The server answers in order: whatever came before this pong answers earlier messages.
    send({ type: 'ping' });
    await next(['pong']);
    inbox.length = 0;
    send({
      type: 'publish_offer',
      sdp: pc.localDescription.sdp,
      tracks: source === null ? [] : [{ track_id: track.id, source }],
    });
    const reply = await next(['publish_answer', 'error']);
    if (reply.type !== 'publish_answer') {
      track.stop();
      // The tests refuse only first offers, whose connection the next offer replaces.
      if (raw.answered) await pc.setLocalDescription({ type: 'rollback' });
      return reply.code;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
    raw.answered = true;
    for (const candidate of raw.remoteCandidates.splice(0)) await pc.addIceCandidate(candidate);
    for (const msg of raw.localCandidates.splice(0)) send(msg);
    return 'answered';
  };
  return joined.participant.sid;
}

/**
 * Opens the raw client (see `installRawClient`) in a new page of `browser`, on the server's
 * origin: http://127.0.0.1 is a secure context, so getUserMedia gets Chromium's fake devices.
 */
async function rawClient(browser, url, token) {
  const page = await browser.newPage();
  page.aulaErrors = [];
  page.on('pageerror', (err) => page.aulaErrors.push(err.message));
  await page.goto(`${url}/healthz`);
  const sid = await page.evaluate(installRawClient, token);
  return {
    page,
    sid,
    /** Offers one more `kind` track announced as `source` (null: unannounced); see above. */
    publish: (kind, source) => page.evaluate(([k, s]) => window.raw.publish(k, s), [kind, source]),
    /** RTP packets the raw client has sent of each kind, so far. */
    sent: () => page.evaluate(async () => {
      const sent = { audio: 0, video: 0 };
      (await window.raw.pc?.getStats())?.forEach((r) => {
        if (r.type === 'outbound-rtp') sent[r.kind] += r.packetsSent ?? 0;
      });
      return sent;
    }),
  };
}

/**
 * What `watcher` (a class page) gets of participant `sid`: the tracks the room announced for it
 * ('kind source'), and the video frames decoded and audio packets received on the watcher's
 * subscribe connection. `sid` is the only publisher in the room, so all of that is its.
 */
function received(watcher, sid) {
  return watcher.evaluate(async (sid) => {
    const room = window.aulaRoom;
    const tracks = (room.participants.get(sid)?.tracks ?? []).map((t) => `${t.kind} ${t.source}`);
    let videoFrames = 0;
    let audioPackets = 0;
    (await room.subscriber.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') videoFrames += r.framesDecoded ?? 0;
      if (r.kind === 'audio') audioPackets += r.packetsReceived ?? 0;
    });
    return { tracks, videoFrames, audioPackets };
  }, sid);
}

/**
 * Watches for `ms` whether media of `sid` reaches `watcher` (see `received`); returns early once
 * some did (a track announced alone does not end the watch, so that a failure shows whether the
 * watcher got its media too).
 */
async function watchForNothing(watcher, sid, ms) {
  let last;
  await poll(async () => {
    last = await received(watcher, sid);
    return last.videoFrames > 0 || last.audioPackets > 0;
  }, ms);
  return last;
}

describe('a grant and a track\'s label', { timeout: 150_000 }, () => {
  let server;
  let browser;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser());
  });

  after(() => stopServerAndBrowser({ server, browser }));

  /** A student watching `room` through the class page, and the raw client joined with `token`. */
  async function watcherAndRaw(room, token) {
    const watcher = await joinClass(browser, server.url, { room, name: 'Watcher', role: 'student' });
    const raw = await rawClient(browser, server.url, token);
    await watcher.waitForFunction((sid) => window.aulaRoom.participants.has(sid), raw.sid, { timeout: 10_000 });
    return { watcher, raw };
  }

  it('a microphone-only token gets no video forwarded under any label, and its microphone is', { timeout: 60_000 }, async () => {
    const room = `mic-only-${process.pid}`;
    const { watcher, raw } = await watcherAndRaw(room, await restrictedToken(room, 'mic-only', 'microphone'));

    // The camera under each label, then unannounced (the server takes unannounced video for a
    // camera, which this token may not send); then what reaches the watcher. Checked together,
    // so that a failure shows what the watcher got of an offer answered by mistake.
    const offers = {};
    for (const label of LABELS) offers[label] = await raw.publish('video', label);
    offers.unannounced = await raw.publish('video', null);
    const watched = await watchForNothing(watcher, raw.sid, WATCH_MS);
    assert.deepEqual({ offers, watched }, {
      offers: {
        camera: 'forbidden',
        microphone: 'track_mismatch', // the label the grant allows, on video: the bypass of item 4
        screen_share: 'forbidden',
        screen_share_audio: 'forbidden',
        unannounced: 'answered',
      },
      watched: { tracks: [], videoFrames: 0, audioPackets: 0 },
    }, `the camera offered under each label, and what the watcher got within ${WATCH_MS} ms\n${server.logTail()}`);

    // The control: the same client's microphone, announced as such, is answered and heard.
    assert.equal(await raw.publish('audio', 'microphone'), 'answered');
    const heard = await poll(async () => {
      const r = await received(watcher, raw.sid);
      return r.audioPackets > 0 ? r : null;
    }, MEDIA_DEADLINE_MS);
    assert.ok(heard, `the watcher receives the microphone within ${MEDIA_DEADLINE_MS} ms\n${server.logTail()}`);
    // By now the camera has long been sent to the server on the same connection; still nothing
    // of it reached the watcher.
    const sent = await raw.sent();
    const now = await received(watcher, raw.sid);
    console.log(`# mic-only: sent ${JSON.stringify(sent)} packets; the watcher got ${JSON.stringify(now)}`);
    assert.ok(sent.video > 0, `the raw client sent its camera: ${JSON.stringify(sent)}`);
    assert.deepEqual(now.tracks, ['audio microphone']);
    assert.equal(now.videoFrames, 0, 'video frames decoded by the watcher');
    assert.deepEqual([...watcher.aulaErrors, ...raw.page.aulaErrors], []);
    await raw.page.close();
    await watcher.close();
  });

  it('a camera-only token gets no audio forwarded under any label, and its camera is', { timeout: 60_000 }, async () => {
    const room = `camera-only-${process.pid}`;
    const { watcher, raw } = await watcherAndRaw(room, await restrictedToken(room, 'camera-only', 'camera'));

    // The microphone under each label, then unannounced (taken for a microphone, which this
    // token may not send); then what reaches the watcher.
    const offers = {};
    for (const label of LABELS) offers[label] = await raw.publish('audio', label);
    offers.unannounced = await raw.publish('audio', null);
    const watched = await watchForNothing(watcher, raw.sid, WATCH_MS);
    assert.deepEqual({ offers, watched }, {
      offers: {
        camera: 'track_mismatch', // the label the grant allows, on audio
        microphone: 'forbidden',
        screen_share: 'forbidden',
        screen_share_audio: 'forbidden',
        unannounced: 'answered',
      },
      watched: { tracks: [], videoFrames: 0, audioPackets: 0 },
    }, `the microphone offered under each label, and what the watcher got within ${WATCH_MS} ms\n${server.logTail()}`);

    // The control: the same client's camera, announced as such, is answered and decoded.
    assert.equal(await raw.publish('video', 'camera'), 'answered');
    const seen = await poll(async () => {
      const r = await received(watcher, raw.sid);
      return r.videoFrames > 0 ? r : null;
    }, MEDIA_DEADLINE_MS);
    assert.ok(seen, `the watcher decodes the camera within ${MEDIA_DEADLINE_MS} ms\n${server.logTail()}`);
    const sent = await raw.sent();
    const now = await received(watcher, raw.sid);
    console.log(`# camera-only: sent ${JSON.stringify(sent)} packets; the watcher got ${JSON.stringify(now)}`);
    assert.ok(sent.audio > 0, `the raw client sent its microphone: ${JSON.stringify(sent)}`);
    assert.deepEqual(now.tracks, ['video camera']);
    assert.equal(now.audioPackets, 0, 'audio packets received by the watcher');
    assert.deepEqual([...watcher.aulaErrors, ...raw.page.aulaErrors], []);
    await raw.page.close();
    await watcher.close();
  });
});
