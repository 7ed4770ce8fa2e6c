// End-to-end: a recorded class played back on /playback/{id} (issue 13, item 5).
//
// A teacher on the class page publishes Chromium's fake camera and microphone and shares its
// (fake) screen; the admin API starts recording the room; a student joins, stays ~8 s and
// leaves; the admin API stops the recording, and the server exports it. A reviewer opens
// /playback/{id}: without a token the page asks to sign in (in dev mode it offers a test
// agent's token), then every file plays, one seek puts every element at the same point of the
// shared timeline, and the QoS timeline shows samples and the join and leave markers, which
// seek when clicked. The review API's refusals (no token, a student's token, a path out of
// the recording) are checked over HTTP. A screenshot at 1280x720 goes to AULA_SCREENSHOT_DIR
// (docs/screenshots to update the README's), or the temp directory.
//
// The server runs in a temporary working directory, so its ./recordings goes away with it.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { joinClass, launchBrowser, startServer } from './harness.js';

const SHOTS = resolve(process.env.AULA_SCREENSHOT_DIR ?? tmpdir());
/** The dev keys (`ApiKeys::dev()`), as the admin API's HTTP Basic credentials. */
const DEV_ADMIN = `Basic ${Buffer.from('devkey:devsecret-change-me-in-production-0123456789').toString('base64')}`;
/** How long the student is in the recorded class. */
const RECORDED_MS = 8_000;
/** The bound on how far a seek may land from where it was asked to. */
const SEEK_TOLERANCE_S = 0.2;

describe('playback of a recorded class', () => {
  let work;
  let server;
  let browser;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'aula-playback-'));
    server = await startServer({ cwd: work });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function admin(method, path) {
    const res = await fetch(`${server.url}${path}`, { method, headers: { Authorization: DEV_ADMIN } });
    const body = await res.json().catch(() => null);
    assert.ok(res.ok, `${method} ${path}: HTTP ${res.status} ${JSON.stringify(body)}`);
    return body;
  }

  /** Records a class: the teacher (camera, microphone, screen) throughout, a student for a while. */
  async function recordClass() {
    const room = 'biology-101';
    const teacher = await joinClass(browser, server.url, { room, name: 'Ms Rivera', role: 'teacher' });
    await teacher.waitForFunction(() => /^Live:/.test(document.getElementById('status').textContent), null, { timeout: 20_000 });
    await teacher.getByRole('button', { name: 'Share screen' }).click();
    await teacher.locator('.tile.screen-preview').waitFor({ timeout: 10_000 });
    const { recording_id: id } = await admin('POST', `/api/admin/rooms/${room}/recording`);
    const student = await joinClass(browser, server.url, { room, name: 'Ben', role: 'student' });
    await sleep(RECORDED_MS);
    // Through the button: a closed tab would be held for its reconnect window first.
    await student.getByRole('button', { name: 'Leave', exact: true }).click();
    // The leave reaches the server and its timeline before the recording stops.
    await sleep(1_500);
    await student.close();
    await admin('DELETE', `/api/admin/rooms/${room}/recording`);
    await teacher.close();
    return id;
  }

  /** Waits until the server has exported recording `id` (it does when the recording stops). */
  async function exported(id) {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { recording } = await admin('GET', `/api/admin/recordings/${id}`);
      if (recording.state === 'ready') return;
      assert.notEqual(recording.state, 'failed', `export failed: ${recording.error}`);
      assert.ok(Date.now() < deadline, `not exported within 60 s (state ${recording.state})`);
      await sleep(500);
    }
  }

  it('plays every file in sync, seeks all together, and shows the QoS timeline', { timeout: 180_000 }, async () => {
    const id = await recordClass();
    await exported(id);

    // The review API wants a reviewer, and serves only the export's files.
    const noToken = await fetch(`${server.url}/api/recordings`);
    assert.equal(noToken.status, 401);
    assert.equal((await noToken.json()).error.code, 'unauthorized');
    const studentToken = (await (await fetch(`${server.url}/api/dev-token?room=r&identity=s&role=student`)).json()).token;
    const student = await fetch(`${server.url}/api/recordings`, { headers: { Authorization: `Bearer ${studentToken}` } });
    assert.equal(student.status, 403);
    const { export: manifest } = await admin('GET', `/api/recordings/${id}`);
    const webm = manifest.files.find((f) => f.format === 'webm');
    const ranged = await fetch(`${server.url}/api/recordings/${id}/files/${webm.path}`, { headers: { Authorization: DEV_ADMIN, Range: 'bytes=0-99' } });
    assert.equal(ranged.status, 206, 'a Range request gets part of the file');
    assert.equal(ranged.headers.get('content-type'), 'video/webm');
    assert.equal((await ranged.arrayBuffer()).byteLength, 100);
    for (const name of ['..%2Frecording.json', 'recording.json', 'qos.jsonl']) {
      const res = await fetch(`${server.url}/api/recordings/${id}/files/${name}`, { headers: { Authorization: DEV_ADMIN } });
      assert.equal(res.status, 404, `files/${name} is not served`);
    }

    const page = await browser.newPage();
    await page.setViewportSize({ width: 1280, height: 720 });
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));

    // Without a token: a sign-in notice; dev mode offers a test agent.
    await page.goto(`${server.url}/playback/${id}`);
    await page.getByRole('heading', { name: 'Sign in to review this recording' }).waitFor({ timeout: 10_000 });
    await page.getByRole('button', { name: 'Dev mode: review as a test agent' }).click();
    await page.locator('#player:not([hidden])').waitFor({ timeout: 10_000 });

    const elements = () => page.evaluate(() => [...document.querySelectorAll('#player video, #player audio')].map((el) => ({
      kind: el.tagName.toLowerCase(),
      offsetS: Number(el.dataset.offsetMs) / 1000,
      durationS: Number(el.dataset.durationMs) / 1000,
      currentTime: el.currentTime,
      readyState: el.readyState,
      seeking: el.seeking,
      videoWidth: el.videoWidth ?? 0,
      error: el.error?.message ?? null,
    })));
    await page.waitForFunction(() => [...document.querySelectorAll('#player video, #player audio')].every((el) => el.readyState >= 1), null, { timeout: 15_000 });
    const loaded = await elements();
    assert.equal(loaded.length, manifest.files.length, 'one element per exported file');
    assert.ok(loaded.filter((e) => e.kind === 'video').length >= 2, `the teacher's camera and screen: ${JSON.stringify(loaded)}`);

    // Play: every video advances and shows pictures.
    await page.getByRole('button', { name: 'Play', exact: true }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('#player video')].every((v) => v.currentTime > 1 && v.videoWidth > 0), null, { timeout: 15_000 })
      .catch(async () => assert.fail(`videos did not play: ${JSON.stringify(await elements())}`));
    await page.getByRole('button', { name: 'Pause', exact: true }).click();

    // One seek bar moves them all: at 5 s of the shared timeline, each file is 5 s less its
    // offset into itself.
    await page.locator('#seek').fill('5');
    await page.waitForFunction(() => [...document.querySelectorAll('#player video, #player audio')].every((el) => !el.seeking && el.readyState >= 2), null, { timeout: 10_000 });
    for (const e of await elements()) {
      const expected = Math.min(Math.max(5 - e.offsetS, 0), e.durationS);
      assert.ok(Math.abs(e.currentTime - expected) <= SEEK_TOLERANCE_S,
        `${e.kind} at offset ${e.offsetS} s: currentTime ${e.currentTime}, expected ${expected} (±${SEEK_TOLERANCE_S})`);
    }

    // The QoS timeline: sample lines in the charts, and the student's join and leave markers.
    assert.ok(await page.locator('#charts path.series').count() > 0, 'charts with samples');
    assert.ok(await page.getByRole('img', { name: 'Bitrate over time' }).isVisible());
    const joinMarker = page.locator('.marker[data-event="join"]').first();
    await joinMarker.waitFor();
    await page.locator('.marker[data-event="leave"]').first().waitFor();
    assert.match(await joinMarker.getAttribute('aria-label'), /join · Ben \(student\)/);

    // A marker seeks there: every element moves to the join's moment.
    const atFive = (await elements())[0].currentTime;
    await joinMarker.click();
    await page.waitForFunction(() => [...document.querySelectorAll('#player video, #player audio')].every((el) => !el.seeking), null, { timeout: 10_000 });
    const joinedAtS = Number(await page.locator('#seek').inputValue());
    assert.ok(joinedAtS > 0 && joinedAtS < 5, `the join is early in the recording: ${joinedAtS} s`);
    const atJoin = await elements();
    assert.notEqual(atJoin[0].currentTime, atFive);
    for (const e of atJoin) {
      const expected = Math.min(Math.max(joinedAtS - e.offsetS, 0), e.durationS);
      assert.ok(Math.abs(e.currentTime - expected) <= SEEK_TOLERANCE_S + 0.05, `${e.kind} after the marker: ${e.currentTime}, expected ${expected}`);
    }

    // A screenshot mid-recording, paused on a frame.
    await page.locator('#seek').fill('4');
    await page.evaluate(() => document.querySelector('main').scrollTo(0, 0));
    await page.waitForTimeout(800);
    mkdirSync(SHOTS, { recursive: true });
    const path = join(SHOTS, 'playback-1280x720.png');
    await page.screenshot({ path });
    console.log(`# screenshot: ${path}`);

    // The list links to the playback.
    await page.getByRole('link', { name: 'All recordings' }).click();
    await page.getByRole('link', { name: /^Play the recording of biology-101/ }).waitFor({ timeout: 10_000 });
    assert.deepEqual(errors, []);
  });
});
