// End-to-end: a learner connected straight to a room's origin node, which is killed (issue 14),
// in headless Chromium.
//
// A real Redis and two `aula serve` processes on loopback: eu-1 (region "eu") and asia-1
// (region "asia"), linked over QUIC. Ana opens the class page on eu-1 and joins first, so eu-1
// is the room's origin; the server tells her SDK that asia-1 is where she may go if eu-1 dies
// (`room.alternates`). The teacher opens the class page on asia-1, which carries its signaling
// to eu-1 and keeps its media; Ana decodes the teacher's camera and hears the microphone, and
// raises her hand. eu-1 is then killed (SIGKILL). Ana's page says "Reconnecting…", her SDK finds
// eu-1 refusing and joins again through asia-1 (which takes the room over) without a click; she
// decodes the teacher again (the teacher's page came back through its own node, asia-1), her
// hand is up again in the teacher's queue, and the page says she is back.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  adminRequest, framesDecoded, joinClass, launchBrowser, recordReconnecting, sessionEnded,
  startClusterNodes, startRedis, waitForFramesDecoded, waitForMedia,
} from './harness.js';

/** First media may take a while on a loaded 2-core machine: placement, ICE, DTLS, keyframe, decode. */
const MEDIA_DEADLINE_MS = 30_000;
/**
 * How long Ana may take to be back after the kill: the SDK's resume and rejoin delays, and
 * asia-1 waiting for eu-1's lease (3 s here) and directory entry (3 s) to lapse.
 */
const BACK_DEADLINE_MS = 30_000;
const ORIGIN = { id: 'eu-1', region: 'eu' };
const OTHER = { id: 'asia-1', region: 'asia' };

/** The WebSocket URL of the node serving HTTP at `url`, as the server names it. */
const wsUrl = (url) => `${url.replace(/^http/, 'ws')}/ws`;

describe('a learner whose node is killed', { timeout: 240_000 }, () => {
  let redis;
  let certs;
  let origin;
  let other;
  let browser;
  const room = `failover-${process.pid}`;
  const logs = () => `--- ${ORIGIN.id} log ---\n${origin?.logTail()}\n--- ${OTHER.id} log ---\n${other?.logTail()}`;

  before(async () => {
    redis = await startRedis();
    certs = mkdtempSync(join(tmpdir(), 'aula-failover-certs-'));
    [origin, other] = await startClusterNodes([ORIGIN, OTHER], redis.url, certs, { publicAddrs: true });
    browser = await launchBrowser();
    // Each node names the other from its own copy of the directory: wait for both there.
    for (const node of [origin, other]) {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const view = await adminRequest(node.url, 'GET', '/api/admin/nodes');
        if (view.nodes.filter((n) => n.relay_addr).length === 2) break;
        assert.ok(Date.now() < deadline, `both nodes in ${view.node_id}'s directory within 15 s: ${JSON.stringify(view)}\n${logs()}`);
        await sleep(200);
      }
    }
  });

  after(async () => {
    await browser?.close();
    await other?.stop();
    await origin?.stop();
    await redis?.stop();
    if (certs) rmSync(certs, { recursive: true, force: true });
  });

  it('comes back through the other node by itself and plays the teacher again', { timeout: 180_000 }, async () => {
    // Ana first, on eu-1: the room's origin.
    const ana = await joinClass(browser, origin.url, { room, name: 'Ana', role: 'student' });
    // The teacher on asia-1, carried to eu-1.
    const teacher = await joinClass(browser, other.url, { room, name: 'Ms Tanaka', role: 'teacher' });
    await teacher.waitForFunction(() => /^Live:/.test(document.getElementById('status').textContent), null, { timeout: 20_000 });
    const first = await waitForMedia(ana, MEDIA_DEADLINE_MS);
    assert.ok(first.ok, `Ana decodes the teacher's video and receives its audio: ${JSON.stringify(first)}\n${logs()}`);
    assert.deepEqual(await ana.evaluate(() => window.aulaRoom.alternates), [wsUrl(other.url)], 'eu-1 names asia-1 to Ana');
    assert.deepEqual(await teacher.evaluate(() => window.aulaRoom.alternates), [wsUrl(origin.url)],
      'asia-1 names its own alternates to the teacher it carries');

    // Her hand up, in the teacher's queue, and saved for the room's next origin (every 0.5 s).
    await ana.getByRole('button', { name: 'Raise hand' }).click();
    await teacher.locator('#hands li', { hasText: 'Ana' }).waitFor({ timeout: 10_000 });
    await sleep(1_500);
    const { sid } = await ana.evaluate(() => window.aulaRoom.localParticipant);
    await recordReconnecting(ana);

    // eu-1 dies outright.
    const killed = Date.now();
    await origin.kill();
    await ana.waitForFunction(() => window.aulaEvents.some((e) => e.type === 'rejoined' || e.type === 'disconnected'),
      null, { timeout: BACK_DEADLINE_MS, polling: 200 });
    const rejoinedAfter = Date.now() - killed;
    const events = await ana.evaluate(() => window.aulaEvents);
    assert.deepEqual(events.map((e) => e.type), ['reconnecting', 'rejoined'], JSON.stringify(events));
    assert.equal(events[1].previousSid, sid);
    const newSid = events[1].sid;
    assert.ok(newSid && newSid !== sid, `a new participant: ${newSid}`);

    // Playing the teacher again, on a new connection to asia-1, with no click.
    await waitForFramesDecoded(ana, 10, { timeout: BACK_DEADLINE_MS });
    const playingAfter = Date.now() - killed;
    await ana.waitForFunction(() => document.querySelector('.tile.teacher video')?.currentTime > 1, null, { timeout: 10_000 });
    const audio = await ana.evaluate(async () => {
      let samples = 0;
      (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') samples += r.totalSamplesReceived ?? 0;
      });
      return samples;
    });
    assert.ok(audio > 0, 'Ana hears the teacher again');
    const frames = await framesDecoded(ana);
    console.log(`# Ana joined again through ${OTHER.id} ${rejoinedAfter} ms after ${ORIGIN.id} was killed, decoded the teacher again after ${playingAfter} ms (${frames} frames, ${audio} audio samples by now)`);

    // The page said so, and is the class again.
    assert.equal(await sessionEnded(ana), null);
    assert.equal(await ana.isVisible('#classroom'), true);
    const statuses = await ana.evaluate(() => window.aulaStatuses);
    assert.ok(statuses.some((text) => /Reconnecting/.test(text)), `the page said reconnecting: ${JSON.stringify(statuses)}`);
    assert.match(await ana.textContent('#status'), /Back in the class|Connected as/);
    // Her hand is up again, in the teacher's queue (the teacher is back through asia-1 too).
    await teacher.waitForFunction((s) => window.aulaRoom.participants.has(s), newSid, { timeout: BACK_DEADLINE_MS });
    await teacher.locator('#hands li', { hasText: 'Ana' }).waitFor({ timeout: 10_000 });
    assert.equal(await sessionEnded(teacher), null);
    assert.deepEqual(ana.aulaErrors, []);
    assert.deepEqual(teacher.aulaErrors, []);
  });
});
