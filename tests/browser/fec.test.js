// Video FEC (issue 16): the SFU sends a student on a lossy link ULPFEC in RED, and Chromium
// rebuilds lost packets from it without asking for them again.
//
// Two students watch the teacher over the same 10 % loss, and neither browser may ask for a
// resend (their answers leave out NACK feedback), so only FEC can repair a loss before the
// next keyframe. One student's browser also leaves out ULPFEC, as a browser without it would:
// side by side, the one with FEC must see far more of the video. On a clean link no FEC is sent.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { joinClass, launchBrowser, startServer } from './harness.js';
import { impair, joinStudentOnTop, serverCounters, watch } from './weaknet.js';

const FEC = 'aula_fec_packets_sent_total';

describe('video FEC', { timeout: 180_000 }, () => {
  let server;
  let browser;
  const room = `fec-${process.pid}`;

  before(async () => {
    server = await startServer({ testImpairment: true });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('rebuilds lost video packets where the browser asks for no resends', { timeout: 150_000 }, async () => {
    const teacher = await joinClass(browser, server.url, { room, name: 'Ms Rivera', role: 'teacher' });
    await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('camera')?.sid, null, { timeout: 15_000 });
    const withFec = await joinStudentOnTop(browser, server.url, { room, name: 'Ana', refuse: ['nack'] });
    const without = await joinStudentOnTop(browser, server.url, { room, name: 'Ben', refuse: ['nack', 'ulpfec'] });
    assert.ok(withFec.media.ok && without.media.ok, 'both students get media on a clean link');

    const clean = await serverCounters(server.url, [FEC]);
    await new Promise((ok) => setTimeout(ok, 3_000));
    assert.equal((await serverCounters(server.url, [FEC]))[FEC], clean[FEC], 'no FEC on a clean link');

    for (const student of [withFec, without]) await impair(server.url, { room, identity: student.identity, loss: 0.1 });
    // The SFU measures the loss and turns FEC on within a few seconds.
    await new Promise((ok) => setTimeout(ok, 5_000));
    const before = await serverCounters(server.url, [FEC]);
    const [seenWith, seenWithout] = await Promise.all([watch(withFec.page, 20_000), watch(without.page, 20_000)]);
    const sent = (await serverCounters(server.url, [FEC]))[FEC] - before[FEC];
    const brief = (s) => JSON.stringify({ frozen: s.freezeShare, fps: s.fps, nacks: s.nacks, lost: s.packetsLost });
    console.log(`10 % loss, no NACK: with FEC ${brief(seenWith)}, without ${brief(seenWithout)}, FEC packets sent ${sent}`);
    assert.ok(sent > 0, 'FEC packets were sent on the lossy link');
    assert.equal(seenWith.nacks + seenWithout.nacks, 0, 'neither browser asked for a resend');
    assert.ok(seenWith.fps > 2 * seenWithout.fps, `with FEC ${seenWith.fps.toFixed(1)} fps, without ${seenWithout.fps.toFixed(1)} fps`);
    // Frames decoded, not Chromium's freeze share: at 1-2 fps its freeze detection, relative
    // to the recent frame interval, calls little of a frame-starved video frozen.
    assert.ok(seenWith.fps > 5, `with FEC the video keeps playing: ${seenWith.fps.toFixed(1)} fps`);
  });
});
