// Weak networks (issue 5): a student's link is impaired between the SFU and the browser (the
// server's test-only impairment layer: loss, a rate cap), and the student must keep hearing
// the teacher and keep seeing the board. Judged from the student's own WebRTC stats.
//
// One teacher (camera in three simulcast layers, microphone) and one student, in order:
// 10 % loss, then a 500 kbit/s cap, then the cap lifted, then a 300 kbit/s cap, then the
// 500 kbit/s cap again while the student climbs back, then 30 % loss, then 70 % loss.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { joinClass, launchBrowser, startServer } from './harness.js';
import { impair, joinStudentOnTop, median, serverCounters, waitForHeight, watch } from './weaknet.js';

const COUNTERS = ['aula_nacks_received_total', 'aula_feedback_nacks_total', 'aula_probe_bytes_total', 'aula_retransmissions_total', 'aula_nack_stale_total', 'aula_plis_received_total', 'aula_plis_sent_total'];

describe('weak networks', { timeout: 420_000 }, () => {
  let server;
  let browser;
  let student;
  let identity;
  /** The decoded height of the teacher's top layer, learnt on the clean link. */
  let top;
  const room = `weak-${process.pid}`;

  before(async () => {
    server = await startServer({ testImpairment: true });
    browser = await launchBrowser();
    const teacher = await joinClass(browser, server.url, { room, name: 'Ms Rivera', role: 'teacher' });
    await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('camera')?.sid, null, { timeout: 15_000 });
    const joined = await joinStudentOnTop(browser, server.url, { room, name: 'Sam' });
    ({ page: student, identity } = joined);
    assert.ok(joined.media.ok, `the student gets media on a clean link: ${JSON.stringify(joined.media)}`);
    top = (await watch(student, 1_000)).heights.at(-1);
    assert.ok(top >= 240, `the top layer is decoded on a clean link: ${top}p`);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('at 10 % loss the video is frozen under 1 % of the time, the audio is barely concealed and lost video is resent', { timeout: 100_000 }, async () => {
    const before = await serverCounters(server.url, COUNTERS);
    await impair(server.url, { room, identity, loss: 0.1 });
    // The SFU notices the loss within a few seconds and moves the student to a layer with
    // fewer packets per frame; the steady state after that is what is judged, over a minute:
    // Chromium counts a gap of about 200 ms as a freeze, and over 20 s a single one is 1 % of
    // the time (this session's runs saw 0-1 such freezes per 40 s).
    await new Promise((ok) => setTimeout(ok, 5_000));
    const seen = await watch(student, 60_000);
    await impair(server.url, { room, identity });
    const after = await serverCounters(server.url, COUNTERS);
    console.log('10 % loss:', JSON.stringify({ ...seen, heights: undefined }));
    console.log('server:', JSON.stringify(Object.fromEntries(COUNTERS.map((c) => [c, after[c] - before[c]]))));
    assert.ok(seen.fps > 10, `video keeps playing: ${seen.fps.toFixed(1)} fps`);
    assert.ok(seen.freezeShare < 0.01, `frozen ${(seen.freezeShare * 100).toFixed(2)} % of the time`);
    assert.ok(seen.longestStallMs < 1_000, `no stall over 1 s: ${seen.longestStallMs} ms`);
    assert.ok(seen.concealment < 0.02, `${(seen.concealment * 100).toFixed(2)} % of audio concealed`);
    assert.ok(seen.nacks > 0, 'lost video packets were asked for again (NACK)');
    assert.ok(after.aula_retransmissions_total > before.aula_retransmissions_total, 'and the SFU resent them');
    // The loss hits the browser's NACKs too; its TWCC feedback is the second request.
    assert.ok(after.aula_feedback_nacks_total > before.aula_feedback_nacks_total, 'losses the transport-wide feedback reported were resent too');
  });

  it('at 500 kbit/s the student gets a layer that fits with audio intact, then climbs back', { timeout: 90_000 }, async () => {
    // From a steady state: back on the top layer after the loss phase. (The next test brings
    // the cap while the student is probing its way up.)
    const recoveredAfter = await waitForHeight(student, (h) => h >= top, 20_000);
    assert.notEqual(recoveredAfter, null, `back on the top layer (${top}p) within 20 s of the loss ending`);
    const before = await serverCounters(server.url, COUNTERS);
    await impair(server.url, { room, identity, rateKbps: 500 });
    // Which layer fits depends on what the teacher's encoder spends on each. With Chromium's
    // fake camera the middle layer and the audio come to about 480 kbit/s: that fits, but not
    // with the margin an upgrade's probe checks, so the student settles on the low layer.
    const switchedAfter = await waitForHeight(student, (h) => h > 0 && h < top, 10_000);
    assert.notEqual(switchedAfter, null, `switched below the top layer (${top}p) within 10 s`);
    const seen = await watch(student, 15_000);
    console.log(`500 kbit/s (switched after ${switchedAfter} ms):`, JSON.stringify({ ...seen, heights: undefined }));
    const after = await serverCounters(server.url, COUNTERS);
    console.log('server:', JSON.stringify(Object.fromEntries(COUNTERS.map((c) => [c, after[c] - before[c]]))));
    assert.ok(median(seen.heights) < top, `mostly below the top layer: median ${median(seen.heights)}p`);
    assert.ok(seen.longestStallMs < 1_000, `no freeze over 1 s after the switch: ${seen.longestStallMs} ms`);
    assert.ok(seen.kbps + seen.audioKbps < 500, `within the cap: ${seen.kbps.toFixed(0)} + ${seen.audioKbps.toFixed(0)} kbit/s`);
    assert.ok(seen.concealment < 0.02, `audio intact: ${(seen.concealment * 100).toFixed(2)} % concealed`);

    await impair(server.url, { room, identity });
    const climbedAfter = await waitForHeight(student, (h) => h >= top, 15_000);
    console.log(`cap lifted: back on ${top}p after ${climbedAfter} ms`);
    assert.notEqual(climbedAfter, null, `back on the top layer (${top}p) within 15 s`);
  });

  it('at a 300 kbit/s cap the picture is steady, not stop-start, and the audio whole', { timeout: 60_000 }, async () => {
    // The lowest layer (~150 kbit/s) and the audio with its redundancy (~100) fit; the video
    // must settle there rather than pause and resume.
    await impair(server.url, { room, identity, rateKbps: 300 });
    await new Promise((ok) => setTimeout(ok, 3_000));
    const seen = await watch(student, 15_000);
    await impair(server.url, { room, identity });
    console.log('300 kbit/s cap:', JSON.stringify({ ...seen, heights: undefined }));
    assert.ok(seen.fps > 5, `the teacher's camera keeps playing: ${seen.fps.toFixed(1)} fps`);
    assert.ok(seen.longestStallMs < 1_000, `no gap over 1 s: the longest was ${seen.longestStallMs} ms`);
    assert.ok(seen.concealment < 0.02, `audio intact: ${(seen.concealment * 100).toFixed(2)} % concealed`);
  });

  it('a cap that comes while the student is climbing back is followed without a long stall', { timeout: 60_000 }, async () => {
    // Down to a layer that fits, then the cap lifts and the student climbs back, probing the
    // path before each upgrade; the cap comes again during that climb. The probe's copies and
    // the resends are in the feedback, so the path is measured as what it carries.
    await impair(server.url, { room, identity, rateKbps: 500 });
    const switchedAfter = await waitForHeight(student, (h) => h > 0 && h < top, 10_000);
    assert.notEqual(switchedAfter, null, `switched below the top layer (${top}p) within 10 s`);
    await new Promise((ok) => setTimeout(ok, 3_000));
    await impair(server.url, { room, identity });
    // The cap comes back as soon as the student is probing (it starts within about 2 s of the
    // lift; a fixed 2 s wait sometimes came before it, and then the cap met no climb).
    const lifted = await serverCounters(server.url, COUNTERS);
    let capped = lifted;
    for (let i = 0; i < 60 && capped.aula_probe_bytes_total === lifted.aula_probe_bytes_total; i++) {
      await new Promise((ok) => setTimeout(ok, 100));
      capped = await serverCounters(server.url, COUNTERS);
    }
    await impair(server.url, { room, identity, rateKbps: 500 });
    const seen = await watch(student, 10_000);
    await impair(server.url, { room, identity });
    console.log('cap during the climb:', JSON.stringify({ ...seen, heights: [...new Set(seen.heights)] }));
    assert.ok(capped.aula_probe_bytes_total > lifted.aula_probe_bytes_total, 'the student was probing its way back up within 6 s of the lift, when the cap came');
    assert.ok(seen.longestStallMs < 1_000, `no freeze over 1 s: ${seen.longestStallMs} ms`);
    // Under the cap the allocator may give the middle layer at half the frame rate (frame rate
    // goes before resolution: 10 fps of the fake camera's 20) rather than the small one at full.
    assert.ok(seen.fps > 8, `video keeps playing: ${seen.fps.toFixed(1)} fps`);
    assert.ok(seen.concealment < 0.02, `audio intact: ${(seen.concealment * 100).toFixed(2)} % concealed`);
  });

  // The goal: under 2 % over 40 s. Five 40 s runs of the release server at 30 % loss
  // froze 0, 0.74, 0, 0 and 0 % of the time (one freeze of 0.3 s is about 0.75 %).
  it('at 30 % loss the video keeps playing, frozen under 2 % of the time over 40 s, and the audio stays continuous', { timeout: 90_000 }, async () => {
    const before = await serverCounters(server.url, ['aula_fec_packets_sent_total']);
    await impair(server.url, { room, identity, loss: 0.3 });
    // The loss is measured, the layer and the FEC follow within a few seconds.
    await new Promise((ok) => setTimeout(ok, 5_000));
    const seen = await watch(student, 40_000);
    await impair(server.url, { room, identity });
    const after = await serverCounters(server.url, ['aula_fec_packets_sent_total']);
    console.log('30 % loss:', JSON.stringify({ ...seen, heights: undefined }));
    assert.ok(after.aula_fec_packets_sent_total > before.aula_fec_packets_sent_total, 'the video was protected by FEC');
    assert.ok(seen.fps > 5, `video keeps playing: ${seen.fps.toFixed(1)} fps`);
    assert.ok(seen.freezeShare < 0.02, `frozen ${(seen.freezeShare * 100).toFixed(2)} % of the time`);
    assert.ok(seen.audioKbps > 10, `audio keeps arriving: ${seen.audioKbps.toFixed(0)} kbit/s`);
    assert.ok(seen.concealment < 0.1, `${(seen.concealment * 100).toFixed(1)} % of audio concealed`);
  });

  it('at 70 % loss the student stays connected, hears the teacher, and is told the video is paused', { timeout: 90_000 }, async () => {
    const states = await student.evaluate(() => {
      window.seenStates = [];
      window.aulaRoom.addEventListener('connectionState', (e) => window.seenStates.push(`${e.detail.target}:${e.detail.state}`));
      window.aulaRoom.addEventListener('disconnected', () => window.seenStates.push('session:disconnected'));
      window.aulaRoom.addEventListener('rejoined', () => window.seenStates.push('session:rejoined'));
      return window.seenStates;
    });
    assert.deepEqual(states, []);
    await impair(server.url, { room, identity, loss: 0.7 });
    // The server measures the loss within a few seconds and keeps the link for the audio.
    const notice = student.getByText(/very weak: audio only/);
    await notice.waitFor({ timeout: 10_000 });
    await student.locator('.tile.teacher.link-paused').waitFor({ timeout: 5_000 });
    const seen = await watch(student, 20_000);
    console.log('70 % loss:', JSON.stringify({ ...seen, heights: undefined }));
    await impair(server.url, { room, identity });
    assert.ok(seen.audioKbps > 10, `audio keeps arriving: ${seen.audioKbps.toFixed(0)} kbit/s`);
    assert.ok(seen.concealment < 0.1, `under 10 % of the audio concealed: ${(seen.concealment * 100).toFixed(1)} %`);

    // The loss goes: the video comes back, the notice goes, and the session was never lost.
    await notice.waitFor({ state: 'detached', timeout: 20_000 });
    const back = await watch(student, 3_000);
    assert.ok(back.fps > 10, `video back: ${back.fps.toFixed(1)} fps`);
    const after = await student.evaluate(() => window.seenStates);
    console.log('connection states during and after the loss:', JSON.stringify(after));
    assert.ok(!after.some((s) => s.endsWith(':failed') || s.startsWith('session:')), `the student stayed connected: ${JSON.stringify(after)}`);
  });
});
