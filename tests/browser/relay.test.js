// End-to-end: one class over two nodes of a cluster (issue 14), in headless Chromium.
//
// A real Redis holds the cluster's directory; two `aula serve` processes on loopback are its
// nodes, each with its own SFU: the origin eu-1 (region "eu") and the relay asia-1 (region
// "asia"), linked over QUIC with certificates of a cluster CA made here with `aula cluster`.
// A teacher joins the class page on the origin and publishes the fake camera (three simulcast
// layers) and microphone. Three students join the class page on the origin too, with
// `&region=asia`: their dev tokens name region asia, so the origin places their media on the
// relay (their signaling stays with the origin). Every student must decode the teacher's video
// and audio, from the relay's UDP port; the origin→relay link must carry one copy of the
// teacher's tracks, not one per student: the byte counters of the link's two ends agree within
// 10 % of one student's share of the relay's UDP egress, and while the students play the top
// layer the link carries what the teacher sends (every layer, once), under two shares.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  adminRequest, joinClass, launchBrowser, sessionEnded,
  startClusterNodes, startRedis, waitForMedia,
} from './harness.js';
import { frameHeight, showVideosLarge, waitForHeight, watch } from './weaknet.js';

/** First media may take a while on a loaded 2-core machine: placement, ICE, DTLS, keyframe, decode. */
const MEDIA_DEADLINE_MS = 30_000;
/** How long each student's received media is watched for its frame rate and audio. */
const WATCH_MS = 4_000;
/** The least camera frame rate a student must decode (Chromium's fake camera sends 20 fps). */
const MIN_FPS = 10;
/** The most audio a student's decoder may have had to invent while watched. */
const MAX_CONCEALMENT = 0.05;
const ORIGIN = { id: 'eu-1', region: 'eu' };
const RELAY = { id: 'asia-1', region: 'asia' };

/** The sum of a metric's samples in the server's /metrics whose labels contain `labels`. */
async function metric(url, name, labels = '') {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200, `${url}/metrics`);
  return (await res.text()).split('\n')
    .filter((line) => (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) && line.includes(labels))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

/** The local and remote ports of the page's subscribe connection's selected candidate pair (null before one). */
function subscriberPorts(page) {
  return page.evaluate(async () => {
    const stats = await window.aulaRoom.subscriber.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    if (!pair) return null;
    return { local: stats.get(pair.localCandidateId)?.port, remote: stats.get(pair.remoteCandidateId)?.port };
  });
}

describe('a class over two nodes', { timeout: 240_000 }, () => {
  let redis;
  let certs;
  let origin;
  let relay;
  let browser;
  let teacher;
  const students = [];
  const room = `relay-${process.pid}`;
  const logs = () => `--- origin ${ORIGIN.id} log ---\n${origin?.logTail()}\n--- relay ${RELAY.id} log ---\n${relay?.logTail()}`;

  before(async () => {
    redis = await startRedis();
    certs = mkdtempSync(join(tmpdir(), 'aula-relay-certs-'));
    [origin, relay] = await startClusterNodes([ORIGIN, RELAY], redis.url, certs);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await relay?.stop();
    await origin?.stop();
    await redis?.stop();
    if (certs) rmSync(certs, { recursive: true, force: true });
  });

  it('has both nodes in the directory', { timeout: 20_000 }, async () => {
    // The origin places students from its own copy of the directory, so wait for both nodes there.
    const deadline = Date.now() + 15_000;
    let view;
    for (;;) {
      view = await adminRequest(origin.url, 'GET', '/api/admin/nodes');
      const ids = view.nodes.filter((n) => n.relay_addr).map((n) => n.id).sort();
      if (ids.join() === [RELAY.id, ORIGIN.id].sort().join()) break;
      assert.ok(Date.now() < deadline, `both nodes with a relay link in the origin's directory within 15 s: ${JSON.stringify(view)}\n${logs()}`);
      await sleep(200);
    }
    assert.equal(view.mode, 'cluster');
    assert.equal(view.node_id, ORIGIN.id);
    assert.equal((await adminRequest(relay.url, 'GET', '/api/admin/nodes')).node_id, RELAY.id);
    // One more refresh (refresh_secs = 1), as the Rust relay test does.
    await sleep(1_500);
  });

  it('the origin\'s dev token carries a region, and refuses a bad one', { timeout: 10_000 }, async () => {
    const token = async (region) => fetch(`${origin.url}/api/dev-token?${new URLSearchParams({ room, identity: 'probe', role: 'student', region })}`);
    const good = await token(RELAY.region);
    assert.equal(good.status, 200);
    const claims = JSON.parse(Buffer.from((await good.json()).token.split('.')[1], 'base64url'));
    assert.equal(claims.region, RELAY.region);
    // Empty, blank, a control character, longer than an id may be (128 bytes).
    for (const bad of ['', ' ', 'as\nia', 'r'.repeat(129)]) {
      const res = await token(bad);
      assert.equal(res.status, 400, JSON.stringify(bad));
      assert.equal((await res.json()).error.code, 'bad_request');
    }
  });

  it('students placed on the relay decode the teacher\'s camera and microphone from the relay', { timeout: 120_000 }, async () => {
    teacher = await joinClass(browser, origin.url, { room, name: 'Ms Tanaka', role: 'teacher' });
    await teacher.waitForFunction(() => /^Live:/.test(document.getElementById('status').textContent), null, { timeout: 20_000 });
    // The camera goes out as three simulcast layers, all of which the link carries.
    const rids = await teacher.evaluate(async () => {
      const deadline = performance.now() + 10_000;
      for (;;) {
        const found = [];
        (await window.aulaRoom.publisher.getStats()).forEach((r) => {
          if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid) found.push(r.rid);
        });
        if (found.length >= 3 || performance.now() > deadline) return found.sort();
        await new Promise((ok) => setTimeout(ok, 100));
      }
    });
    assert.deepEqual(rids, ['f', 'h', 'q']);

    for (const n of [1, 2, 3]) {
      students.push(await joinClass(browser, origin.url, { room, name: `Learner ${n}`, role: 'student', region: RELAY.region }));
    }
    const results = await Promise.all(students.map((page) => waitForMedia(page, MEDIA_DEADLINE_MS)));
    for (const [i, r] of results.entries()) {
      assert.ok(r.ok, `learner ${i + 1} decodes video and receives audio within ${MEDIA_DEADLINE_MS} ms: ${JSON.stringify(r)}\n${logs()}`);
    }
    // Each student's media connection is to the relay's media port, not the origin's.
    for (const [i, page] of students.entries()) {
      const pair = await subscriberPorts(page);
      assert.equal(pair?.remote, relay.udpPort, `learner ${i + 1}'s subscribe connection goes to the relay's UDP port ${relay.udpPort} (origin's: ${origin.udpPort}): ${JSON.stringify(pair)}`);
    }
    for (const page of students) {
      await page.waitForFunction(() => document.querySelector('.tile.teacher video')?.currentTime > 1, null, { timeout: 10_000 });
    }
    const shot = join(process.env.AULA_SCREENSHOT_DIR ?? tmpdir(), 'aula-relay-student.png');
    await students[0].screenshot({ path: shot });
    console.log(`# screenshot: ${shot}`);
  });

  it('the students play the teacher\'s top layer, and the link carries one copy of the teacher\'s tracks', { timeout: 90_000 }, async () => {
    // Every student shows the teacher large, so each takes the top layer from the relay's SFU:
    // then a student's share is the top layer and the audio, and one copy on the link is every
    // layer and the audio: about 1.5 times that with Chromium's fake camera (720p, 360p and
    // 180p layers, the top one at about 800 kbit/s).
    for (const page of students) await showVideosLarge(page);
    for (const [i, page] of students.entries()) {
      const waited = await waitForHeight(page, (h) => h >= 700, 30_000);
      assert.ok(waited !== null, `learner ${i + 1} climbs to the teacher's 720p layer within 30 s (at ${await frameHeight(page)}p)\n${logs()}`);
    }
    const counters = async () => {
      const [sent, received, relayEgress, originEgress, teacherSent] = await Promise.all([
        metric(origin.url, 'aula_relay_bytes_sent_total', `peer="${RELAY.id}"`),
        metric(relay.url, 'aula_relay_bytes_received_total', `peer="${ORIGIN.id}"`),
        metric(relay.url, 'aula_udp_bytes_sent_total'),
        metric(origin.url, 'aula_udp_bytes_sent_total'),
        teacher.evaluate(async () => {
          let bytes = 0;
          (await window.aulaRoom.publisher.getStats()).forEach((r) => {
            if (r.type === 'outbound-rtp') bytes += (r.bytesSent ?? 0) + (r.headerBytesSent ?? 0);
          });
          return bytes;
        }),
      ]);
      return { sent, received, relayEgress, originEgress, teacherSent };
    };
    const before = await counters();
    const seen = await Promise.all(students.map((page) => watch(page, WATCH_MS)));
    const now = await counters();
    for (const [i, s] of seen.entries()) {
      console.log(`# learner ${i + 1} via the relay: ${s.fps.toFixed(1)} fps at ${s.heights.at(-1)}p, ${s.kbps.toFixed(0)} kbit/s video, ${(s.concealment * 100).toFixed(2)} % audio concealed, ${s.audioKbps.toFixed(0)} kbit/s audio`);
      assert.ok(s.fps > MIN_FPS, `learner ${i + 1}: ${s.fps.toFixed(1)} fps\n${logs()}`);
      assert.ok(s.audioKbps > 0, `learner ${i + 1}: no audio received while watched`);
      assert.ok(s.concealment < MAX_CONCEALMENT, `learner ${i + 1}: ${(s.concealment * 100).toFixed(2)} % of audio concealed`);
    }
    for (const page of [teacher, ...students]) {
      assert.equal(await sessionEnded(page), null);
      assert.deepEqual(page.aulaErrors, []);
    }

    const share = now.relayEgress / 3;
    const steady = Object.fromEntries(Object.keys(now).map((k) => [k, now[k] - before[k]]));
    const steadyShare = steady.relayEgress / 3;
    console.log(`# since the start: origin sent ${now.sent} B over the link, relay received ${now.received} B; relay UDP egress ${now.relayEgress} B (one student's share ${Math.round(share)} B, link/share ${(now.sent / share).toFixed(2)}); origin UDP egress ${now.originEgress} B`);
    console.log(`# over ${WATCH_MS} ms on the top layer: link ${steady.sent} B, one student's share ${Math.round(steadyShare)} B (link/share ${(steady.sent / steadyShare).toFixed(2)}), the teacher sent ${steady.teacherSent} B (link/teacher ${(steady.sent / steady.teacherSent).toFixed(2)})`);
    assert.ok(now.received > 0, `nothing came over the link\n${logs()}`);
    // The students' media left from the relay, not the origin.
    assert.ok(share > 100_000, `the relay sent ${now.relayEgress} B to the students`);
    assert.ok(now.originEgress < 0.1 * share, `the origin sent ${now.originEgress} B over UDP, the relay ${Math.round(share)} B per student`);
    assert.ok(Math.abs(now.sent - now.received) < 0.1 * share, `the link's ends disagree: origin sent ${now.sent} B, relay received ${now.received} B (10 % of a share: ${Math.round(0.1 * share)} B)`);
    // One copy: every packet the teacher sends (all three layers, once), not one per student.
    // Over the window, on the top layer, that is about 1.5 students' shares; one copy per
    // student would be 3. (Since the start the ratio varies, 1.25 to 1.85 in test runs: the
    // link carries every layer from the first packet while the students start on lower layers,
    // so it is not asserted on.)
    assert.ok(steady.sent < 2 * steadyShare, `on the top layer the link carried ${steady.sent} B, more than one copy (${Math.round(steadyShare)} B per student)`);
    const perTeacher = steady.sent / steady.teacherSent;
    assert.ok(perTeacher > 0.75 && perTeacher < 1.25, `the link carried ${steady.sent} B while the teacher sent ${steady.teacherSent} B: not one copy of every layer`);
  });

  it('when every student watches the teacher small, the link carries only the small layers', { timeout: 90_000 }, async () => {
    // Each student shows the teacher as a thumbnail: the relay's students take the 180p layer,
    // the relay asks the origin for the layers up to one above (180p and 360p), and the 720p
    // layer, most of the teacher's bytes, stays off the long link.
    for (const page of students) {
      await page.addStyleTag({ content: 'video { width: 160px !important; height: 90px !important; }' });
    }
    for (const [i, page] of students.entries()) {
      const waited = await waitForHeight(page, (h) => h > 0 && h <= 200, 30_000);
      assert.ok(waited !== null, `learner ${i + 1} goes down to the 180p layer within 30 s (at ${await frameHeight(page)}p)\n${logs()}`);
    }
    // The demand travels up the link within a housekeeping round; give it a second.
    await sleep(2_000);
    const linkAndTeacher = () => Promise.all([
      metric(origin.url, 'aula_relay_bytes_sent_total', `peer="${RELAY.id}"`),
      teacher.evaluate(async () => {
        let bytes = 0;
        (await window.aulaRoom.publisher.getStats()).forEach((r) => {
          if (r.type === 'outbound-rtp') bytes += (r.bytesSent ?? 0) + (r.headerBytesSent ?? 0);
        });
        return bytes;
      }),
    ]);
    const [linkBefore, teacherBefore] = await linkAndTeacher();
    const seen = await Promise.all(students.map((page) => watch(page, WATCH_MS)));
    const [linkAfter, teacherAfter] = await linkAndTeacher();
    for (const [i, s] of seen.entries()) {
      assert.ok(s.fps > MIN_FPS, `learner ${i + 1} keeps playing the small picture: ${s.fps.toFixed(1)} fps`);
    }
    const link = linkAfter - linkBefore;
    const sent = teacherAfter - teacherBefore;
    console.log(`# over ${WATCH_MS} ms on the small layer: link ${link} B, the teacher sent ${sent} B (link/teacher ${(link / sent).toFixed(2)})`);
    assert.ok(link < 0.6 * sent, `the link carried ${link} B of the teacher's ${sent} B: the 720p layer too`);
  });
});
