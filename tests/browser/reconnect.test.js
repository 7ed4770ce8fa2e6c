// End-to-end reconnect in headless Chromium: a student's WebSocket drops (as on a network
// change); the SDK resumes the same participant, the server restarts ICE, and the teacher's
// video keeps decoding; the teacher never sees the student leave.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { joinClass, launchBrowser, sessionEnded, startServer, waitForMedia } from './harness.js';

/** Video frames the page's subscriber has decoded so far. */
function framesDecoded(page) {
  return page.evaluate(async () => {
    let frames = 0;
    (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
    });
    return frames;
  });
}

describe('reconnect', () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('a dropped student resumes as the same participant and keeps receiving', { timeout: 60_000 }, async () => {
    const teacher = await joinClass(browser, server.url, { room: 'resume', name: 'Teacher', role: 'teacher' });
    const student = await joinClass(browser, server.url, { room: 'resume', name: 'Student', role: 'student' });
    const media = await waitForMedia(student, 20_000);
    assert.ok(media.ok, `student receives the teacher first: ${JSON.stringify(media)}`);
    const sid = await student.evaluate(() => window.aulaRoom.localParticipant.sid);
    await teacher.evaluate(() => {
      window.aulaLeft = [];
      window.aulaRoom.addEventListener('participantLeft', (e) => window.aulaLeft.push(e.detail.participant.sid));
    });

    await student.evaluate(() => new Promise((resolve, reject) => {
      window.aulaRoom.addEventListener('reconnected', resolve, { once: true });
      window.aulaRoom.addEventListener('disconnected', (e) => reject(new Error(e.detail.reason)), { once: true });
      window.aulaRoom._dropConnection();
    }));
    assert.equal(await student.evaluate(() => window.aulaRoom.localParticipant.sid), sid);

    // Media keeps flowing after the ICE restart.
    const before = await framesDecoded(student);
    await student.waitForFunction(async (n) => {
      let frames = 0;
      (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
      });
      return frames > n + 10;
    }, before, { timeout: 15_000, polling: 100 });
    // The student is still in the teacher's room, and the session still works.
    assert.deepEqual(await teacher.evaluate(() => window.aulaLeft), []);
    assert.ok(await teacher.evaluate((s) => window.aulaRoom.participants.has(s), sid));
    assert.equal(await sessionEnded(student), null);
    assert.deepEqual(student.aulaErrors, []);
  });
});
