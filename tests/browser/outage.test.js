// Outages (issue 16, item 6): a learner in a lift, a train tunnel or a Wi-Fi-to-mobile
// handover loses the network for a moment, or for a minute, and must be back in the class by
// itself. The student's media is cut with the server's test-only impairment (everything to and
// from its media connection lost); its WebSocket goes through a TCP proxy in this test, which
// closes it and refuses new connections for the outage, so the student has no network at all.

import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  framesDecoded, recordReconnecting, sessionEnded, startServerAndBrowser, stopServerAndBrowser, teacherAndStudent,
  waitForFramesDecoded,
} from './harness.js';
import { impair } from './weaknet.js';

/**
 * A TCP proxy on loopback to `target` (`host:port`): the student's page and WebSocket go
 * through it. `cut()` closes every connection through it and refuses new ones until
 * `restore()`.
 */
async function startProxy(target) {
  const [host, port] = [target.hostname, Number(target.port)];
  const open = new Set();
  let down = false;
  const server = createServer((client) => {
    if (down) return client.destroy();
    const upstream = connect(port, host);
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on('close', () => open.delete(socket));
      socket.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      down = true;
      for (const socket of open) socket.destroy();
    },
    restore() {
      down = false;
    },
    close: () => new Promise((ok) => {
      for (const socket of open) socket.destroy();
      server.close(ok);
    }),
  };
}

describe('outages', { timeout: 360_000 }, () => {
  let server;
  let proxy;
  let browser;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser({ testImpairment: true }));
    proxy = await startProxy(new URL(server.url));
  });

  after(async () => {
    await stopServerAndBrowser({ server, browser });
    await proxy?.close();
  });

  it('a student whose media is cut for 5 s gets the video back within 1 s of the path returning', { timeout: 90_000 }, async () => {
    const room = 'media-cut';
    const { student } = await teacherAndStudent(browser, server.url, { room });
    const identity = await student.evaluate(() => window.aulaRoom.localParticipant.identity);

    await impair(server.url, { room, identity, loss: 1 });
    await sleep(5_000);
    const frozenAt = await framesDecoded(student);
    await impair(server.url, { room, identity });
    const returned = Date.now();
    // A few new frames, not one: the picture is moving again.
    await waitForFramesDecoded(student, frozenAt + 2, { timeout: 10_000, polling: 50 });
    const backAfterMs = Date.now() - returned;
    console.log(`video back ${backAfterMs} ms after a 5 s media outage`);
    assert.ok(backAfterMs < 1_000, `video back within 1 s of the path returning, not ${backAfterMs} ms`);
    assert.equal(await sessionEnded(student), null);
    await student.close();
  });

  for (const seconds of [30, 60]) {
    it(`a student with no network for ${seconds} s is back in the class by itself, decoding the teacher`, { timeout: 180_000 }, async () => {
      const room = `outage-${seconds}`;
      const { teacher, student } = await teacherAndStudent(browser, server.url, { room, studentUrl: proxy.url });
      const identity = await student.evaluate(() => window.aulaRoom.localParticipant.identity);
      await recordReconnecting(student);

      // No network at all: the WebSocket closes and cannot reopen, and no media gets through.
      await impair(server.url, { room, identity, loss: 1 });
      proxy.cut();
      await student.locator('.notice[data-key="reconnecting"]').waitFor({ timeout: 10_000 });
      await sleep(seconds * 1000);
      // By now the server has given the student's seat up (its reconnect window is 15 s), and
      // the impairment went with the participant: there may be nothing left to clear.
      await impair(server.url, { room, identity }).catch((err) => assert.match(err.message, /HTTP 404/));
      proxy.restore();

      // Back in the class (resumed, or joined again), without any click...
      await student.waitForFunction(() => window.aulaEvents.some((e) => e.type === 'rejoined' || e.type === 'reconnected'),
        null, { timeout: 30_000, polling: 200 });
      // ... and decoding the teacher's video again, in the teacher's tile.
      await waitForFramesDecoded(student, (await framesDecoded(student)) + 10, { timeout: 20_000, polling: 200 });
      await student.waitForFunction(() => document.querySelector('.tile.teacher video')?.srcObject instanceof MediaStream,
        null, { timeout: 10_000 });
      const events = await student.evaluate(() => window.aulaEvents.map((e) => e.type));
      console.log(`after ${seconds} s without network:`, JSON.stringify(events));
      assert.equal(events[0], 'reconnecting', JSON.stringify(events));
      assert.ok(!events.includes('disconnected'), `the session never ended: ${JSON.stringify(events)}`);
      assert.equal(await sessionEnded(student), null);
      assert.equal(await student.isVisible('#classroom'), true);
      const statuses = await student.evaluate(() => window.aulaStatuses);
      assert.ok(statuses.some((text) => /Reconnecting/.test(text)), `the page said reconnecting: ${JSON.stringify(statuses)}`);
      assert.equal(await student.locator('.notice[data-key="reconnecting"]').count(), 0, 'the reconnecting notice is gone');
      // The teacher's room has the student again.
      await teacher.waitForFunction((who) => [...window.aulaRoom.participants.values()].some((p) => p.identity === who),
        identity, { timeout: 10_000 });
      await student.close();
      await teacher.close();
    });
  }
});
