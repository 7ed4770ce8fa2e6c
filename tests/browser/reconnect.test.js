// End-to-end reconnect in headless Chromium: a student's WebSocket drops (as on a network
// change); the SDK resumes the same participant, the server restarts ICE, and the teacher's
// video keeps decoding; the teacher never sees the student leave. And a student whose media
// path failed for good (the server ends its session with "peer connection failed") is back in
// the class by itself, as a new participant, decoding the teacher, without any click; the page
// said "Reconnecting…" meanwhile (issues 14 and 16). A student on stage whose media path failed
// comes back on stage, publishing again, without a click; one who reloads the page joins again
// on stage and is offered to turn camera and microphone back on (issue 16, item 6).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  framesDecoded, recordReconnecting, sessionEnded, startServerAndBrowser, stopServerAndBrowser, teacherAndStudent,
  waitForFramesDecoded,
} from './harness.js';
import { impair } from './weaknet.js';

/**
 * A teacher and a student, Ana, in `room`: she raised her hand, the teacher invited her on
 * stage, she accepted, and the teacher decodes her camera. Returns both pages, her row in the
 * teacher's list of people, and her sid and identity.
 */
async function studentOnStage(browser, baseUrl, room) {
  const { teacher, student } = await teacherAndStudent(browser, baseUrl, { room, studentName: 'Ana' });
  await student.getByRole('button', { name: 'Raise hand' }).click();
  const hand = teacher.locator('#hands li', { hasText: 'Ana' });
  await hand.getByRole('button', { name: 'Invite to stage' }).click({ timeout: 10_000 });
  await student.getByRole('button', { name: 'Accept' }).click({ timeout: 10_000 });
  const anaRow = teacher.locator('#people li', { hasText: 'Ana' });
  await anaRow.getByText('on stage').waitFor({ timeout: 10_000 });
  await teacher.waitForFunction(() => [...document.querySelectorAll('#grid .tile.student video')].some((v) => v.videoWidth > 0),
    null, { timeout: 20_000 });
  const { sid, identity } = await student.evaluate(() => window.aulaRoom.localParticipant);
  return { teacher, student, anaRow, sid, identity };
}

describe('reconnect', () => {
  let server;
  let browser;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser({ testImpairment: true }));
  });

  after(() => stopServerAndBrowser({ server, browser }));

  it('a dropped student resumes as the same participant and keeps receiving', { timeout: 60_000 }, async () => {
    const { teacher, student } = await teacherAndStudent(browser, server.url, { room: 'resume' });
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
    await waitForFramesDecoded(student, (await framesDecoded(student)) + 10, { timeout: 15_000 });
    // The student is still in the teacher's room, and the session still works.
    assert.deepEqual(await teacher.evaluate(() => window.aulaLeft), []);
    assert.ok(await teacher.evaluate((s) => window.aulaRoom.participants.has(s), sid));
    assert.equal(await sessionEnded(student), null);
    assert.deepEqual(student.aulaErrors, []);
  });

  it('a student whose media path failed joins again by itself and decodes the teacher', { timeout: 120_000 }, async () => {
    const room = 'media-failed';
    const { teacher, student } = await teacherAndStudent(browser, server.url, { room });
    const { sid, identity } = await student.evaluate(() => window.aulaRoom.localParticipant);
    // Everything the page's status line says from now on, and the SDK's events.
    await recordReconnecting(student);

    // All of the student's media is lost, both ways, and stays lost: the server gives up on its
    // connection (ICE disconnected, then failed: about half a minute) and ends its session.
    await impair(server.url, { room, identity, loss: 1 });
    await student.waitForFunction(() => window.aulaEvents.some((e) => e.type === 'rejoined' || e.type === 'disconnected'),
      null, { timeout: 60_000, polling: 200 });
    const events = await student.evaluate(() => window.aulaEvents);
    assert.deepEqual(events.map((e) => e.type), ['reconnecting', 'rejoined'], JSON.stringify(events));
    assert.equal(events[0].reason, 'peer connection failed');
    assert.equal(events[1].previousSid, sid);
    const newSid = events[1].sid;
    assert.ok(newSid && newSid !== sid, `a new participant: ${newSid}`);
    assert.equal(await student.evaluate(() => window.aulaRoom.localParticipant.sid), newSid);

    // Back decoding the teacher's video on the new connection, in the teacher's tile.
    await waitForFramesDecoded(student, 10, { timeout: 20_000 });
    await student.waitForFunction(() => document.querySelector('.tile.teacher video')?.srcObject instanceof MediaStream,
      null, { timeout: 10_000 });
    // No click was needed: the class is shown, not the ended view, and the page said so.
    assert.equal(await sessionEnded(student), null);
    assert.equal(await student.isVisible('#classroom'), true);
    assert.equal(await student.isVisible('#ended'), false);
    const statuses = await student.evaluate(() => window.aulaStatuses);
    assert.ok(statuses.some((text) => /Reconnecting/.test(text)), `the page said reconnecting: ${JSON.stringify(statuses)}`);
    assert.match(await student.textContent('#status'), /Back in the class|Connected as/);
    assert.equal(await student.locator('.notice[data-key="reconnecting"]').count(), 0);
    // The teacher's room has the new participant, not the old one.
    await teacher.waitForFunction(([oldSid, s]) => window.aulaRoom.participants.has(s) && !window.aulaRoom.participants.has(oldSid),
      [sid, newSid], { timeout: 10_000 });
    await impair(server.url, { room, identity });
    assert.deepEqual(student.aulaErrors, []);
  });

  it('a student on stage whose media path failed is back on stage, publishing, by itself', { timeout: 120_000 }, async () => {
    const room = 'stage-failed';
    // Invited from the hand queue, accepted: the teacher sees her on stage and decodes her camera.
    const { teacher, student, anaRow, sid, identity } = await studentOnStage(browser, server.url, room);
    await recordReconnecting(student);
    await student.evaluate(() => {
      window.aulaRefused = [];
      window.aulaRoom.addEventListener('localTrackUnpublished', (e) => window.aulaRefused.push(e.detail));
    });

    // Her media path fails for good: the server ends her session, the SDK joins again.
    await impair(server.url, { room, identity, loss: 1 });
    await student.waitForFunction(() => window.aulaEvents.some((e) => e.type === 'rejoined' || e.type === 'disconnected'),
      null, { timeout: 60_000, polling: 200 });
    const events = await student.evaluate(() => window.aulaEvents);
    assert.deepEqual(events.map((e) => e.type), ['reconnecting', 'rejoined'], JSON.stringify(events));
    const newSid = events[1].sid;
    assert.ok(newSid && newSid !== sid, `a new participant: ${newSid}`);

    // Back on stage without a click: her permissions say so, her camera and microphone were
    // published again (not refused), and the teacher sees her on stage and decodes her camera.
    assert.equal(await student.evaluate(() => window.aulaRoom.permissions.can_publish), true);
    await student.waitForFunction(() => ['camera', 'microphone'].every((s) => window.aulaRoom.localTracks.get(s)?.sid),
      null, { timeout: 20_000, polling: 100 });
    assert.deepEqual(await student.evaluate(() => window.aulaRefused), []);
    await teacher.waitForFunction((s) => window.aulaRoom.participants.has(s), newSid, { timeout: 10_000 });
    await anaRow.getByText('on stage').waitFor({ timeout: 10_000 });
    await teacher.waitForFunction((s) => document.querySelector(`[data-participant-sid="${s}"] video`)?.videoWidth > 0,
      newSid, { timeout: 20_000, polling: 100 });
    // Her "Raise hand" stays hidden (she is on stage), and the teacher's queue is empty.
    assert.equal(await student.getByRole('button', { name: 'Raise hand' }).isVisible(), false);
    assert.equal(await teacher.locator('#hands li').count(), 0);
    await impair(server.url, { room, identity });
    assert.deepEqual(student.aulaErrors, []);
  });

  it('a student on stage who reloads the page is back on stage and turns her camera on again', { timeout: 120_000 }, async () => {
    const room = 'stage-reload';
    const { teacher, student, anaRow, sid, identity } = await studentOnStage(browser, server.url, room);

    // She reloads the tab: the join form knows who she was, and she joins again.
    await student.reload();
    assert.equal(await student.inputValue('input[name="name"]'), 'Ana');
    assert.equal(await student.isChecked('input[name="role"][value="student"]'), true);
    await student.getByRole('button', { name: 'Join', exact: true }).click();
    await student.waitForFunction(() => window.aulaRoom?.localParticipant, null, { timeout: 10_000 });
    const again = await student.evaluate(() => window.aulaRoom.localParticipant);
    assert.equal(again.identity, identity);
    assert.notEqual(again.sid, sid);

    // Back on stage by the server's word, publishing nothing yet: the page offers to turn her
    // camera and microphone on (no "Raise hand": she is on stage); she clicks it.
    assert.equal(await student.evaluate(() => window.aulaRoom.permissions.can_publish), true);
    const turnOn = student.getByRole('button', { name: 'Turn on camera and microphone' });
    await turnOn.waitFor({ timeout: 10_000 });
    assert.match(await student.textContent('.notice[data-key="invited"]'), /You are on stage/);
    assert.equal(await student.getByRole('button', { name: 'Raise hand' }).isVisible(), false);
    await turnOn.click();
    await student.waitForFunction(() => ['camera', 'microphone'].every((s) => window.aulaRoom.localTracks.get(s)?.sid),
      null, { timeout: 20_000, polling: 100 });
    assert.equal(await student.locator('.notice[data-key="invited"]').count(), 0);
    // The controls of a student on stage.
    assert.equal(await student.getByRole('button', { name: 'Mute mic' }).isVisible(), true);
    assert.equal(await student.getByRole('button', { name: 'Stop camera' }).isVisible(), true);

    // The teacher has the new participant, not the old one, on stage, and decodes her camera.
    await teacher.waitForFunction(([oldSid, s]) => window.aulaRoom.participants.has(s) && !window.aulaRoom.participants.has(oldSid),
      [sid, again.sid], { timeout: 10_000 });
    await anaRow.getByText('on stage').waitFor({ timeout: 10_000 });
    await teacher.waitForFunction((s) => document.querySelector(`[data-participant-sid="${s}"] video`)?.videoWidth > 0,
      again.sid, { timeout: 20_000, polling: 100 });
    assert.equal(await teacher.locator('#hands li').count(), 0);
    assert.deepEqual(student.aulaErrors, []);
  });
});
