// Forward error correction (issue 16).
//
// Video: the SFU sends a student on a lossy link ULPFEC in RED, and Chromium rebuilds lost
// packets from it without asking for them again.
// Two students watch the teacher over the same 10 % loss, and neither browser may ask for a
// resend (their answers leave out NACK feedback), so only FEC can repair a loss before the
// next keyframe. One student's browser also leaves out ULPFEC, as a browser without it would:
// side by side, the one with FEC must see far more of the video. On a clean link no FEC is sent.
//
// Audio: a student whose browser has no RED gets no repeated frames from the SFU. The SFU's
// receiver reports tell the teacher's browser that student's loss, and the teacher's Opus
// encoder adds in-band FEC, which every listener then receives.

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

  it('asks the teacher for Opus in-band FEC for a lossy student whose browser has no RED', { timeout: 150_000 }, async () => {
    const room = `opus-fec-${process.pid}`;
    const teacher = await joinClass(browser, server.url, { room, name: 'Mr Okafor', role: 'teacher' });
    await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('microphone')?.sid, null, { timeout: 15_000 });
    const lossy = await joinStudentOnTop(browser, server.url, { room, name: 'Chidi', refuse: ['red'] });
    const clean = await joinStudentOnTop(browser, server.url, { room, name: 'Dana', refuse: ['red'] });
    assert.ok(lossy.media.ok && clean.media.ok, 'both students get media on a clean link');

    const before = await watch(clean.page, 5_000);
    assert.equal(before.audioFecPackets, 0, 'no in-band FEC while every listener is on a clean link');

    await impair(server.url, { room, identity: lossy.identity, loss: 0.2 });
    // The SFU's sustained loss and the teacher's encoder's own smoothing take some seconds.
    await new Promise((ok) => setTimeout(ok, 10_000));
    const after = await watch(clean.page, 10_000);
    console.log(`a student without RED at 20 % loss: in-band FEC in ${after.audioFecPackets} of the teacher's packets over 10 s (before: ${before.audioFecPackets} in 5 s)`);
    // 120 of about 500 packets in a quiet run: the encoder's own smoothing is still rising.
    assert.ok(after.audioFecPackets > 20, `the teacher's Opus carries in-band FEC: ${after.audioFecPackets} packets in 10 s`);
  });
});
