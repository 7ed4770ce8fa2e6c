// End-to-end: recordings played back on /playback/{id} (issue 13, item 5).
//
// A class: a teacher on the class page publishes Chromium's fake camera and microphone and
// shares its (fake) screen; the admin API starts recording the room; a student joins, stays
// ~8 s and leaves; the admin API stops the recording, and the server exports it. A reviewer
// opens /playback/{id}: without a token the page asks to sign in (in dev mode it offers a test
// agent's token), then every file plays, one seek puts every element at the same point of the
// shared timeline, and the QoS timeline shows samples and the join and leave markers, which
// seek when clicked. The review API's refusals (no token, a student's token, a path out of
// the recording) are checked over HTTP.
//
// A support session: the learner shares screen and camera, the agent talks with its camera
// on; played back, the learner's screen is the large picture, the cameras small, and all play
// and seek together. Its screenshot at 1280x720 goes to AULA_SCREENSHOT_DIR (docs/screenshots
// to update the README's), or the temp directory.
//
// The server runs in a temporary working directory, so its ./recordings goes away with it.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEV_ADMIN, adminRequest, joinClass, launchBrowser, startServer } from './harness.js';

const SHOTS = resolve(process.env.AULA_SCREENSHOT_DIR ?? tmpdir());
/** How long the student is in the recorded class. */
const RECORDED_MS = 8_000;
/** The issue's bound on how far a seek may land from where it was asked to. */
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

  const admin = (method, path) => adminRequest(server.url, method, path);

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

  /**
   * Records a support session: the learner's screen and camera, the agent's microphone and
   * camera, for a while; the learner ends it.
   */
  async function recordSupport() {
    const open = async (path) => {
      const page = await browser.newPage();
      await page.goto(`${server.url}${path}`);
      return page;
    };
    const button = (page, name) => page.getByRole('button', { name, exact: true });
    const agent = await open('/agent');
    await agent.getByLabel('Your name').fill('Sam');
    await button(agent, 'Go on duty').click();
    await button(agent, 'Go off duty').waitFor({ timeout: 10_000 });
    const learner = await open('/support');
    await learner.getByLabel('Your name').fill('Ana');
    await learner.getByLabel('Topic').selectOption('video');
    await button(learner, 'Ask for help').click();
    for (const page of [agent, learner]) {
      await page.waitForFunction(() => window.aulaSession?.localParticipant, null, { timeout: 20_000 });
    }
    // The session's private room, as the learner's page joined it (the lobbies, support-desk and
    // support-lobby, are rooms too: picking by prefix from the room list was a coin toss).
    const room = await learner.evaluate(() => window.aulaSession.name);
    const { recording_id: id } = await admin('POST', `/api/admin/rooms/${room}/recording`);
    await button(learner, 'Share screen').click();
    await button(learner, 'Stop sharing').waitFor({ timeout: 15_000 });
    await button(learner, 'Share camera').click();
    await button(learner, 'Stop camera').waitFor({ timeout: 15_000 });
    await button(agent, 'Turn on camera').click();
    await button(agent, 'Turn off camera').waitFor({ timeout: 15_000 });
    await sleep(RECORDED_MS);
    await button(learner, 'End').click();
    await sleep(1_500);
    // The recording ended with the room if the session's end emptied it; else stop it.
    const res = await fetch(`${server.url}/api/admin/rooms/${room}/recording`, { method: 'DELETE', headers: { Authorization: DEV_ADMIN } });
    assert.ok(res.ok || res.status === 409 || res.status === 404, `stopping: HTTP ${res.status}`);
    await learner.close();
    await agent.close();
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

  /** A new reviewer's page at 1280x720 that collects its uncaught errors in `page.errors`. */
  async function reviewerPage() {
    const page = await browser.newPage();
    await page.setViewportSize({ width: 1280, height: 720 });
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(err.message));
    return page;
  }

  /** What the page's media elements say, with where each file sits on the timeline. */
  const elements = (page) => page.evaluate(() => [...document.querySelectorAll('#player video, #player audio')].map((el) => ({
    kind: el.tagName.toLowerCase(),
    offsetS: Number(el.dataset.offsetMs) / 1000,
    durationS: Number(el.dataset.durationMs) / 1000,
    currentTime: el.currentTime,
    readyState: el.readyState,
    videoWidth: el.videoWidth ?? 0,
    error: el.error?.message ?? null,
  })));

  /** Asserts every element sits at `atS` of the shared timeline, less its file's offset. */
  async function allAt(page, atS, tolerance = SEEK_TOLERANCE_S) {
    await page.waitForFunction(() => [...document.querySelectorAll('#player video, #player audio')].every((el) => !el.seeking && el.readyState >= 2), null, { timeout: 10_000 });
    for (const e of await elements(page)) {
      const expected = Math.min(Math.max(atS - e.offsetS, 0), e.durationS);
      assert.ok(Math.abs(e.currentTime - expected) <= tolerance,
        `${e.kind} at offset ${e.offsetS} s: currentTime ${e.currentTime}, expected ${expected} (±${tolerance}) at ${atS} s`);
    }
  }

  /** Every file of the export gets an element, the videos play, and a seek to 5 s moves all. */
  async function playsAndSeeks(page, manifest) {
    // Every element is there (not just those created so far) and has its metadata.
    await page.waitForFunction((count) => {
      const media = [...document.querySelectorAll('#player video, #player audio')];
      return media.length === count && media.every((el) => el.readyState >= 1);
    }, manifest.files.length, { timeout: 15_000 });
    const loaded = await elements(page);
    assert.equal(loaded.length, manifest.files.length, 'one element per exported file');
    assert.ok(loaded.filter((e) => e.kind === 'video').length >= 2, `two videos at least: ${JSON.stringify(loaded)}`);
    console.log(`# files: ${loaded.map((e) => `${e.kind} at ${e.offsetS} s for ${e.durationS} s`).join(', ')}`);

    await page.getByRole('button', { name: 'Play', exact: true }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('#player video')].every((v) => v.currentTime > 1 && v.videoWidth > 0), null, { timeout: 15_000 })
      .catch(async () => assert.fail(`videos did not play: ${JSON.stringify(await elements(page))}`));
    await page.getByRole('button', { name: 'Pause', exact: true }).click();

    await page.locator('#seek').fill('5');
    await allAt(page, 5);
    assert.ok(await page.locator('#charts path.series').count() > 0, 'charts with samples');
    assert.ok(await page.getByRole('img', { name: 'Bitrate over time' }).isVisible());
  }

  it('a recorded class plays in sync, seeks all together, and shows its QoS timeline', { timeout: 180_000 }, async () => {
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

    // Without a token: a sign-in notice; dev mode offers a test agent.
    const page = await reviewerPage();
    await page.goto(`${server.url}/playback/${id}`);
    await page.getByRole('heading', { name: 'Sign in to review this recording' }).waitFor({ timeout: 10_000 });
    await page.getByRole('button', { name: 'Dev mode: review as a test agent' }).click();
    await page.locator('#player:not([hidden])').waitFor({ timeout: 10_000 });
    await playsAndSeeks(page, manifest);

    // The student's join and leave are markers; the join's seeks there.
    const joinMarker = page.locator('.marker[data-event="join"]').first();
    await joinMarker.waitFor();
    await page.locator('.marker[data-event="leave"]').first().waitFor();
    assert.match(await joinMarker.getAttribute('aria-label'), /join · Ben \(student\)/);
    await joinMarker.click();
    const joinedAtS = Number(await page.locator('#seek').inputValue());
    assert.ok(joinedAtS > 0 && joinedAtS < 5, `the join is early in the recording: ${joinedAtS} s`);
    // The seek bar shows a tenth of a second: allow for its rounding.
    await allAt(page, joinedAtS, SEEK_TOLERANCE_S + 0.05);

    // The list links to the playback.
    await page.getByRole('link', { name: 'All recordings' }).click();
    await page.getByRole('link', { name: /^Play the recording of biology-101/ }).waitFor({ timeout: 10_000 });
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  it('a recorded support session shows the learner\'s screen large and the cameras small', { timeout: 180_000 }, async () => {
    const id = await recordSupport();
    await exported(id);
    const { export: manifest } = await admin('GET', `/api/recordings/${id}`);
    const { token } = await (await fetch(`${server.url}/api/dev-token?room=desk&identity=qa&role=agent`)).json();
    const page = await reviewerPage();
    await page.goto(`${server.url}/playback/${id}?token=${token}`);
    await page.locator('#player:not([hidden])').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('#main-tile figcaption').textContent(), 'Ana (learner) · screen');
    const side = await page.locator('#side-tiles figcaption').allTextContents();
    assert.deepEqual(side.toSorted(), ['Ana (learner) · camera', 'Sam (agent) · camera']);
    await playsAndSeeks(page, manifest);
    await page.locator('.marker[data-event="leave"]').first().waitFor();

    // A screenshot mid-session, paused on a frame.
    await page.locator('#seek').fill('4');
    await page.evaluate(() => document.querySelector('main').scrollTo(0, 0));
    await page.waitForTimeout(800);
    mkdirSync(SHOTS, { recursive: true });
    const path = join(SHOTS, 'playback-1280x720.png');
    await page.screenshot({ path });
    console.log(`# screenshot: ${path}`);
    assert.deepEqual(page.errors, []);
  });
});
