// End-to-end: running a class from the class page, as the people in it would (issue 12, items
// 1-3 and 6). Every action is a click on a visible button, found by its text; the SDK is only
// read (its stats and state), never called.
//
// A teacher and two students (Ana, Ben) join through the form. Ana raises her hand, the teacher
// sees it in the queue (and sees it go when she lowers it herself), invites her, she accepts and
// publishes, Ben decodes her camera; the teacher mutes her, then takes her off the stage, and her
// camera and microphone stop. Chat goes both ways. The teacher revokes an assistant's moderation
// and gives it back. A locked class refuses a new student with a message on the page, and lets
// them in once unlocked; ending the class shows every student the class-ended view. A student on
// a lossy link is told its connection is poor. On the way, screenshots of the teacher's and a
// student's view at 1280x720 and 390x844 are saved to AULA_SCREENSHOT_DIR (docs/screenshots to
// update the README's), or the temp directory, and at both sizes nothing is cut off.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { joinClass, sessionEnded, startServerAndBrowser, stopServerAndBrowser, waitForMedia } from './harness.js';
import { impair } from './weaknet.js';

/** First media may take a while on a loaded 2-core machine: ICE, DTLS, keyframe, decode. */
const MEDIA_DEADLINE_MS = 20_000;
/** A click's effect on another page: one server round trip, plus rendering. */
const UI_DEADLINE_MS = 5_000;

const SHOTS = resolve(process.env.AULA_SCREENSHOT_DIR ?? tmpdir());

/** Frames `page` has decoded of `name`'s camera (0 while it has none). */
function framesOf(page, name) {
  return page.evaluate(async (name) => {
    const room = window.aulaRoom;
    const who = [...room.participants.values()].find((p) => p.name === name);
    const info = who?.tracks.find((t) => t.source === 'camera');
    const track = info && room.remoteTracks.get(info.sid)?.track;
    const receiver = track && room.subscriber.getReceivers().find((r) => r.track === track);
    if (!receiver) return 0;
    let frames = 0;
    (await receiver.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') frames += r.framesDecoded ?? 0;
    });
    return frames;
  }, name);
}

/**
 * Saves `page` as `name`-WxH.png at each size, running `check` (a layout assertion) at each
 * size too, then restores the test's usual size.
 */
async function screenshots(page, name, check = async () => {}) {
  mkdirSync(SHOTS, { recursive: true });
  for (const [width, height] of [[1280, 720], [390, 844]]) {
    await page.setViewportSize({ width, height });
    // Layout settles, and videos are resized and repainted.
    await page.waitForTimeout(800);
    const path = join(SHOTS, `class-${name}-${width}x${height}.png`);
    await page.screenshot({ path });
    console.log(`# screenshot: ${path}`);
    await check();
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

/** Asserts nothing on `page` sits under the controls bar or outside the window. */
async function assertNothingCutOff(page, selectors) {
  const problems = await page.evaluate((selectors) => {
    const bar = document.querySelector('#controls').getBoundingClientRect();
    const out = [];
    for (const selector of selectors) {
      for (const el of document.querySelectorAll(selector)) {
        const r = el.getBoundingClientRect();
        if (r.width === 0) continue;
        if (r.bottom > bar.top + 1 || r.right > innerWidth + 1) out.push(`${selector} ${JSON.stringify(r)} (bar top ${bar.top})`);
      }
    }
    return out;
  }, selectors);
  assert.deepEqual(problems, []);
}

describe('running a class from the class page', { timeout: 150_000 }, () => {
  let server;
  let browser;
  let teacher;
  let ana;
  let ben;
  const room = `classroom-${process.pid}`;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser());
  });

  after(() => stopServerAndBrowser({ server, browser }));

  it('students join through the form and hear the teacher without a second click', { timeout: 40_000 }, async () => {
    teacher = await joinClass(browser, server.url, { room, name: 'Teacher', role: 'teacher' });
    ana = await joinClass(browser, server.url, { room, name: 'Ana', role: 'student' });
    ben = await joinClass(browser, server.url, { room, name: 'Ben', role: 'student' });
    for (const page of [ana, ben]) {
      const media = await waitForMedia(page, MEDIA_DEADLINE_MS);
      assert.ok(media.ok, `a student receives the teacher: ${JSON.stringify(media)}\n${server.logTail()}`);
      // The click on Join was the gesture: the teacher's audio plays, with no "Turn on sound".
      await page.waitForFunction(() => {
        const audio = [...document.querySelectorAll('#audio audio')];
        return audio.length > 0 && audio.every((a) => !a.paused);
      }, null, { timeout: UI_DEADLINE_MS });
      assert.equal(await page.getByRole('button', { name: 'Turn on sound' }).isVisible(), false);
    }
    // Dev-mode joining is marked as such; the header names the class without CSS prefixes.
    assert.equal(await teacher.locator('#dev-mode').innerText(), 'Dev mode');
    assert.equal(await ana.locator('.bar').getByText(`Class: ${room}`).count(), 1);
  });

  it('a raised hand is invited on stage, published, muted, then taken off the stage', { timeout: 60_000 }, async () => {
    await ana.getByRole('button', { name: 'Raise hand' }).click();
    const hand = teacher.locator('#hands li', { hasText: 'Ana' });
    await hand.waitFor({ timeout: UI_DEADLINE_MS });
    // She lowers it herself: the teacher's queue empties. Then she raises it again.
    await ana.getByRole('button', { name: 'Lower hand' }).click({ timeout: UI_DEADLINE_MS });
    await hand.waitFor({ state: 'detached', timeout: UI_DEADLINE_MS });
    await teacher.getByText('No hands raised.').waitFor({ timeout: UI_DEADLINE_MS });
    assert.equal(await teacher.locator('#hands li').count(), 0, 'the queue is empty');
    await ana.getByRole('button', { name: 'Raise hand' }).click({ timeout: UI_DEADLINE_MS });
    await hand.waitFor({ timeout: UI_DEADLINE_MS });
    await ana.getByRole('button', { name: 'Lower hand' }).waitFor({ timeout: UI_DEADLINE_MS });

    await hand.getByRole('button', { name: 'Invite to stage' }).click();
    await hand.waitFor({ state: 'detached', timeout: UI_DEADLINE_MS });
    await ana.getByRole('button', { name: 'Accept' }).click({ timeout: UI_DEADLINE_MS });
    const anaRow = teacher.locator('#people li', { hasText: 'Ana' });
    await anaRow.getByText('on stage').waitFor({ timeout: 10_000 });
    await anaRow.getByText('mic on').waitFor({ timeout: UI_DEADLINE_MS });

    // Ben decodes Ana's camera, and her tile shows it.
    await ben.waitForFunction(() => [...document.querySelectorAll('#grid .tile.student video')].some((v) => v.videoWidth > 0), null, { timeout: MEDIA_DEADLINE_MS });
    const before = await framesOf(ben, 'Ana');
    await ben.waitForTimeout(1000);
    const after = await framesOf(ben, 'Ana');
    assert.ok(after > before, `Ben decodes Ana's camera: ${before} -> ${after} frames`);
    await ana.evaluate(() => {
      window.stageTracks = [...window.aulaRoom.localTracks.values()].map((l) => l.track);
    });

    // Screenshots while the class is in full swing: Ana on stage, the teacher sharing a screen,
    // Ben's hand raised, a line of chat.
    await ben.getByRole('button', { name: 'Raise hand' }).click();
    await teacher.locator('#hands li', { hasText: 'Ben' }).waitFor({ timeout: UI_DEADLINE_MS });
    await teacher.getByRole('button', { name: 'Share screen' }).click();
    await ben.waitForFunction(() => document.querySelector('#stage .tile.screen video')?.videoWidth > 0, null, { timeout: 15_000 });
    await teacher.locator('.tile.screen-preview').waitFor({ timeout: UI_DEADLINE_MS });
    await ben.getByLabel('Message').fill('Can you show the last slide again?');
    await ben.getByRole('button', { name: 'Send' }).click();
    await teacher.locator('#chat-log').getByText('Can you show the last slide again?').waitFor({ timeout: UI_DEADLINE_MS });
    // At desktop and at phone size, nothing is under the controls bar or off the side.
    await screenshots(teacher, 'teacher', () => assertNothingCutOff(teacher, ['#stage .tile', '.tile.screen-preview']));
    await screenshots(ben, 'student', () => assertNothingCutOff(ben, ['#stage .tile', '.tile.teacher']));
    await assertNothingCutOff(ben, ['#stage .tile', '.tile.teacher']);
    await teacher.getByRole('button', { name: 'Stop sharing' }).click();
    await teacher.locator('#hands li', { hasText: 'Ben' }).getByRole('button', { name: 'Dismiss' }).click();
    await ben.getByRole('button', { name: 'Raise hand' }).waitFor({ timeout: UI_DEADLINE_MS });

    // Muted by the teacher: Ana's page offers to unmute, Ben's shows her muted.
    await anaRow.getByRole('button', { name: 'Mute', exact: true }).click();
    await anaRow.getByText('muted', { exact: true }).waitFor({ timeout: UI_DEADLINE_MS });
    await ana.getByRole('button', { name: 'Unmute mic' }).waitFor({ timeout: UI_DEADLINE_MS });
    await ben.waitForFunction(() => [...document.querySelectorAll('#grid .tile.student')].some((t) => t.classList.contains('mic-off')), null, { timeout: UI_DEADLINE_MS });

    // Off the stage: Ana's camera and microphone stop, and nobody receives them any more.
    await anaRow.getByRole('button', { name: 'Remove from stage' }).click();
    await anaRow.getByText('on stage').waitFor({ state: 'detached', timeout: UI_DEADLINE_MS });
    await ana.waitForFunction(() => window.stageTracks.length === 2 && window.stageTracks.every((t) => t.readyState === 'ended'), null, { timeout: UI_DEADLINE_MS });
    for (const label of ['Unmute mic', 'Stop camera']) assert.equal(await ana.getByRole('button', { name: label }).count(), 0, label);
    await ben.waitForFunction(() => ![...document.querySelectorAll('#grid .tile.student')].some((t) => !t.classList.contains('no-video')), null, { timeout: UI_DEADLINE_MS });
    assert.equal(await framesOf(ben, 'Ana'), 0, 'Ben no longer receives Ana\'s camera');
    await ana.getByRole('button', { name: 'Raise hand' }).waitFor({ timeout: UI_DEADLINE_MS });
    assert.deepEqual([...ana.aulaErrors, ...ben.aulaErrors, ...teacher.aulaErrors], []);
  });

  it('chat arrives both ways', { timeout: 15_000 }, async () => {
    await ana.getByLabel('Message').fill('Is question 3 about fractions?');
    await ana.getByRole('button', { name: 'Send' }).click();
    await teacher.locator('#chat-log').getByText('Is question 3 about fractions?').waitFor({ timeout: UI_DEADLINE_MS });
    await teacher.getByLabel('Message').fill('Yes: simplify them first.');
    await teacher.getByRole('button', { name: 'Send' }).click();
    for (const page of [ana, ben]) {
      await page.locator('#chat-log li', { hasText: 'Teacher' }).getByText('Yes: simplify them first.').waitFor({ timeout: UI_DEADLINE_MS });
    }
  });

  it('the teacher revokes an assistant\'s moderation, then allows it again', { timeout: 20_000 }, async () => {
    const assistant = await joinClass(browser, server.url, { room, name: 'Assistant', role: 'assistant' });
    await assistant.getByRole('button', { name: 'Mute all students' }).waitFor({ timeout: UI_DEADLINE_MS });
    const row = teacher.locator('#people li', { hasText: 'Assistant' });
    await row.getByRole('button', { name: 'Revoke moderation' }).click({ timeout: UI_DEADLINE_MS });
    await assistant.getByRole('button', { name: 'Mute all students' }).waitFor({ state: 'hidden', timeout: UI_DEADLINE_MS });
    await row.getByText('not moderating').waitFor({ timeout: UI_DEADLINE_MS });

    // Given back: the assistant's moderation controls return, and the teacher's row says so.
    await row.getByRole('button', { name: 'Allow moderation' }).click({ timeout: UI_DEADLINE_MS });
    for (const name of ['Mute all students', 'Lock class']) {
      await assistant.getByRole('button', { name }).waitFor({ timeout: UI_DEADLINE_MS });
    }
    await assistant.locator('#people li', { hasText: 'Ana' }).getByRole('button', { name: 'Remove from class' }).waitFor({ timeout: UI_DEADLINE_MS });
    await row.getByText('not moderating').waitFor({ state: 'detached', timeout: UI_DEADLINE_MS });
    await row.getByRole('button', { name: 'Revoke moderation' }).waitFor({ timeout: UI_DEADLINE_MS });
    assert.deepEqual(assistant.aulaErrors, []);
    await assistant.getByRole('button', { name: 'Leave' }).click();
    await assistant.close();
  });

  it('a locked class refuses a new student, with a message on the page, and lets them in once unlocked', { timeout: 30_000 }, async () => {
    await teacher.getByRole('button', { name: 'Lock class' }).click();
    await teacher.getByRole('button', { name: 'Unlock class' }).waitFor({ timeout: UI_DEADLINE_MS });
    const late = await browser.newPage();
    late.aulaErrors = [];
    late.on('pageerror', (err) => late.aulaErrors.push(err.message));
    await late.goto(`${server.url}/class?room=${room}`);
    await late.getByLabel('Your name').fill('Late');
    await late.getByRole('button', { name: 'Join' }).click();
    await late.locator('#status').getByText(/class is locked/).waitFor({ timeout: UI_DEADLINE_MS });
    assert.ok(await late.getByRole('button', { name: 'Join' }).isVisible(), 'the form stays, to try again later');

    // Unlocked: the same student tries again and is in; the teacher's list shows them.
    await teacher.getByRole('button', { name: 'Unlock class' }).click();
    await teacher.getByRole('button', { name: 'Lock class' }).waitFor({ timeout: UI_DEADLINE_MS });
    await late.getByRole('button', { name: 'Join' }).click();
    await late.getByRole('button', { name: 'Leave' }).waitFor({ timeout: 10_000 });
    const lateRow = teacher.locator('#people li', { hasText: 'Late' });
    await lateRow.waitFor({ timeout: UI_DEADLINE_MS });
    await late.getByRole('button', { name: 'Leave' }).click();
    await lateRow.waitFor({ state: 'detached', timeout: UI_DEADLINE_MS });
    assert.deepEqual(late.aulaErrors, []);
    await late.close();
  });

  it('a declined invitation, "Mute all students" on a student back on stage, and "Remove from class"', { timeout: 45_000 }, async () => {
    // Ben declines: the teacher sees it on his row.
    await ben.getByRole('button', { name: 'Raise hand' }).click();
    const benHand = teacher.locator('#hands li', { hasText: 'Ben' });
    await benHand.getByRole('button', { name: 'Invite to stage' }).click({ timeout: UI_DEADLINE_MS });
    await ben.getByRole('button', { name: 'Decline' }).click({ timeout: UI_DEADLINE_MS });
    const benRow = teacher.locator('#people li', { hasText: 'Ben' });
    await benRow.getByText('declined').waitFor({ timeout: UI_DEADLINE_MS });
    assert.equal(await ben.getByRole('button', { name: 'Stop camera' }).count(), 0, 'Ben publishes nothing');

    // Ana is invited again after her removal, publishes again, and "Mute all students" mutes her.
    await ana.getByRole('button', { name: 'Raise hand' }).click();
    const anaHand = teacher.locator('#hands li', { hasText: 'Ana' });
    await anaHand.getByRole('button', { name: 'Invite to stage' }).click({ timeout: UI_DEADLINE_MS });
    await ana.getByRole('button', { name: 'Accept' }).click({ timeout: UI_DEADLINE_MS });
    const anaRow = teacher.locator('#people li', { hasText: 'Ana' });
    await anaRow.getByText('mic on').waitFor({ timeout: 10_000 });
    await teacher.getByRole('button', { name: 'Mute all students' }).click();
    await anaRow.getByText('muted', { exact: true }).waitFor({ timeout: UI_DEADLINE_MS });
    await ana.getByRole('button', { name: 'Unmute mic' }).waitFor({ timeout: UI_DEADLINE_MS });
    await anaRow.getByRole('button', { name: 'Remove from stage' }).click();
    await anaRow.getByText('on stage').waitFor({ state: 'detached', timeout: UI_DEADLINE_MS });

    // Removed from the class: Ben is told so, and leaves everyone's list.
    await benRow.getByRole('button', { name: 'Remove from class' }).click();
    await ben.getByRole('heading', { name: 'You were removed from the class' }).waitFor({ timeout: UI_DEADLINE_MS });
    await benRow.waitFor({ state: 'detached', timeout: UI_DEADLINE_MS });
    assert.deepEqual([...ana.aulaErrors, ...ben.aulaErrors, ...teacher.aulaErrors], []);
  });

  it('"End class" asks first, then shows every student the class-ended view', { timeout: 20_000 }, async () => {
    await teacher.getByRole('button', { name: 'End class' }).click();
    const dialog = teacher.getByRole('dialog', { name: 'End the class for everyone?' });
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden', timeout: UI_DEADLINE_MS });
    assert.equal(await sessionEnded(ana), null, 'cancelling ends nothing');

    await teacher.getByRole('button', { name: 'End class' }).click();
    await dialog.getByRole('button', { name: 'End class for everyone' }).click();
    for (const page of [ana, teacher]) {
      await page.getByRole('heading', { name: 'The class has ended' }).waitFor({ timeout: UI_DEADLINE_MS });
    }
    assert.deepEqual([...ana.aulaErrors, ...teacher.aulaErrors], []);
  });
});

describe('connection quality on the class page', { timeout: 60_000 }, () => {
  let server;
  let browser;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser({ testImpairment: true }));
  });

  after(() => stopServerAndBrowser({ server, browser }));

  it('a student on a lossy link is told so', { timeout: 50_000 }, async () => {
    const room = `quality-${process.pid}`;
    const teacher = await joinClass(browser, server.url, { room, name: 'Teacher', role: 'teacher' });
    const student = await joinClass(browser, server.url, { room, name: 'Student', role: 'student' });
    const media = await waitForMedia(student, MEDIA_DEADLINE_MS);
    assert.ok(media.ok, `the student receives the teacher first: ${JSON.stringify(media)}`);
    await student.locator('#my-quality').getByText('Connection: excellent').waitFor({ timeout: 10_000 });

    // 20 % loss both ways: well over the 8 % of "poor".
    const identity = await student.evaluate(() => window.aulaRoom.localParticipant.identity);
    await impair(server.url, { room, identity, loss: 0.2 });
    const notice = student.getByText('Your connection is poor: video lowered to save your audio.');
    await notice.waitFor({ timeout: 15_000 });
    await student.locator('#my-quality').getByText('Connection: poor').waitFor({ timeout: UI_DEADLINE_MS });
    // The server's level may come first; the browser's own figures follow within a measurement.
    await student.waitForFunction(() => /Measured here: \d+\.\d % loss/.test(document.getElementById('my-quality').title), null, { timeout: UI_DEADLINE_MS * 2 });
    // The teacher's list shows the server's level for the student, with the loss behind it.
    const badge = teacher.locator('#people li', { hasText: 'Student' }).locator('[data-quality="poor"]');
    await badge.waitFor({ timeout: 15_000 });
    assert.match(await badge.getAttribute('title'), /^poor: \d+(\.\d)? % loss/);

    await impair(server.url, { room, identity });
    await notice.waitFor({ state: 'detached', timeout: 20_000 });
    assert.deepEqual([...student.aulaErrors, ...teacher.aulaErrors], []);
  });
});
