// End-to-end: what the class pages do while their room is recorded (issue 13, items 1 and 3).
//
// A teacher (fake camera and microphone) and a student join /class; the admin API starts
// recording the room. Both pages show the "● Recording" badge, saying who started it; the
// student's SDK sends `client_stats` by itself every 5 s, which the server writes into the
// recording's QoS timeline (`qos.jsonl`); once the admin API stops the recording the badge goes.
//
// The server runs in a temporary working directory, so its ./recordings goes away with it.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminRequest, joinClass, launchBrowser, startServer, waitForMedia } from './harness.js';

/** Long enough for the SDK's first report (5 s after the recording started) and a margin. */
const RECORDED_MS = 7_000;

describe('a recorded class', { timeout: 90_000 }, () => {
  let work;
  let server;
  let browser;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'aula-recording-'));
    server = await startServer({ cwd: work });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const admin = (method, path) => adminRequest(server.url, method, path);

  it('shows the recording badge and writes the browsers\' client_stats into qos.jsonl', async () => {
    const room = 'recorded-class';
    const teacher = await joinClass(browser, server.url, { room, name: 'Ms Rivera', role: 'teacher' });
    await teacher.waitForFunction(() => /^Live:/.test(document.getElementById('status').textContent), null, { timeout: 20_000 });
    const student = await joinClass(browser, server.url, { room, name: 'Ben', role: 'student' });
    const media = await waitForMedia(student, 15_000);
    assert.ok(media.ok, `the student decodes the teacher: ${JSON.stringify(media)}`);
    // Refusals of client_stats (bad_message, rate_limited) come back as the SDK's 'error' events.
    await student.evaluate(() => {
      window.aulaErrorCodes = [];
      window.aulaRoom.addEventListener('error', (e) => window.aulaErrorCodes.push(e.detail.code));
    });
    const pages = [teacher, student];
    for (const page of pages) assert.ok(await page.locator('#recording').isHidden(), 'no badge before recording');

    const { recording_id: id } = await admin('POST', `/api/admin/rooms/${room}/recording`);
    for (const page of pages) {
      const badge = page.getByText('● Recording');
      await badge.waitFor({ state: 'visible', timeout: 5_000 });
      assert.match(await badge.getAttribute('title'), /started by an administrator/i);
    }
    await sleep(RECORDED_MS);
    await admin('DELETE', `/api/admin/rooms/${room}/recording`);
    for (const page of pages) await page.locator('#recording').waitFor({ state: 'hidden', timeout: 5_000 });

    const studentSid = await student.evaluate(() => window.aulaRoom.localParticipant.sid);
    assert.deepEqual(await student.evaluate(() => window.aulaErrorCodes), []);
    const lines = readFileSync(join(work, 'recordings', id, 'qos.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const fromStudent = lines.filter((l) => l.kind === 'client_stats' && l.participant === studentSid);
    assert.ok(fromStudent.length >= 1, `a client_stats line from the student (${lines.length} lines)`);
    assert.ok(fromStudent.some((l) => l.fps > 0), `the student decodes frames: ${JSON.stringify(fromStudent)}`);
    assert.ok(fromStudent.every((l) => l.frame_width > 0 && l.frame_height > 0), 'the decoded size is reported');
    for (const page of pages) assert.deepEqual(page.aulaErrors, []);
    await student.close();
    await teacher.close();
  });
});
