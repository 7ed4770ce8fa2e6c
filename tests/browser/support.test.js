// End-to-end test of the support desk pages in headless Chromium against the real server: a
// learner asks for help before any agent is on duty (and sees its place in line), an agent goes
// on duty and is paired with it, the learner hears the agent's (fake) microphone from the start
// and sees its camera once the agent turns it on, the learner shares a (fake) screen, and the
// agent's page decodes it; then the learner ends the session.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startServer } from './harness.js';

describe('support desk', () => {
  let server;
  let browser;
  let learner;
  let agent;

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function open(path) {
    const page = await browser.newPage();
    page.aulaErrors = [];
    page.on('pageerror', (err) => page.aulaErrors.push(err.message));
    await page.goto(`${server.url}${path}`);
    return page;
  }

  it('a learner waiting for help sees its place in line', { timeout: 20_000 }, async () => {
    learner = await open('/support');
    await learner.fill('input[name="name"]', 'Ana');
    await learner.selectOption('select[name="topic"]', 'video');
    await learner.click('#go');
    await learner.waitForFunction(() => document.querySelector('#status').textContent.includes('number 1 in line'), null, { timeout: 10_000 });
  });

  it('an agent going on duty is paired with the learner in a private room', { timeout: 20_000 }, async () => {
    agent = await open('/agent');
    await agent.fill('input[name="name"]', 'Bo');
    await agent.fill('input[name="skills"]', 'video,en');
    await agent.click('#go');
    for (const page of [agent, learner]) {
      await page.waitForFunction(() => window.aulaSession?.localParticipant, null, { timeout: 10_000 });
    }
    const rooms = await Promise.all([agent, learner].map((p) => p.evaluate(() => window.aulaSession.name)));
    assert.equal(rooms[0], rooms[1]);
    assert.match(rooms[0], /^support-/);
  });

  /** Sums a few fields over the page's inbound RTP streams of `kind` in the support session. */
  function inbound(page, kind) {
    return page.evaluate(async (kind) => {
      const sum = { framesDecoded: 0, totalSamplesReceived: 0, totalAudioEnergy: 0 };
      (await window.aulaSession.subscriber.getStats()).forEach((r) => {
        if (r.type !== 'inbound-rtp' || r.kind !== kind) return;
        for (const key of Object.keys(sum)) sum[key] += r[key] ?? 0;
      });
      return sum;
    }, kind);
  }

  it('the learner hears the agent, whose microphone is on from the start', { timeout: 30_000 }, async () => {
    // The button offers to mute: the microphone is on without the agent doing anything.
    await agent.getByRole('button', { name: 'Mute microphone', exact: true }).waitFor({ timeout: 10_000 });
    await learner.waitForFunction(() => {
      const audio = document.querySelector('#audio audio[data-source="microphone"]');
      return audio && !audio.paused && audio.srcObject?.getAudioTracks()[0]?.readyState === 'live';
    }, null, { timeout: 15_000 });
    // A second of samples, and sound in them (the fake microphone beeps).
    const deadline = Date.now() + 15_000;
    let audio = await inbound(learner, 'audio');
    while (Date.now() < deadline && !(audio.totalSamplesReceived > 48_000 && audio.totalAudioEnergy > 0)) {
      await new Promise((ok) => setTimeout(ok, 200));
      audio = await inbound(learner, 'audio');
    }
    assert.ok(audio.totalSamplesReceived > 48_000, `learner received ${audio.totalSamplesReceived} samples`);
    assert.ok(audio.totalAudioEnergy > 0, `learner heard silence: ${JSON.stringify(audio)}`);
  });

  it('the learner sees the agent\'s camera while the agent has it on', { timeout: 40_000 }, async () => {
    await agent.getByRole('button', { name: 'Turn on camera', exact: true }).click();
    await agent.getByRole('button', { name: 'Turn off camera', exact: true }).waitFor({ timeout: 15_000 });
    await learner.waitForFunction(() => document.querySelector('#grid video[data-source="camera"]')?.videoWidth > 0, null, { timeout: 20_000 });
    const video = await inbound(learner, 'video');
    assert.ok(video.framesDecoded > 0, `learner decoded ${video.framesDecoded} frames of the agent's camera`);

    // Off and on again: the learner's picture goes, then comes back.
    await agent.getByRole('button', { name: 'Turn off camera', exact: true }).click();
    await learner.waitForFunction(() => !document.querySelector('#grid video[data-source="camera"]'), null, { timeout: 15_000 });
    await agent.getByRole('button', { name: 'Turn on camera', exact: true }).click();
    await learner.waitForFunction(() => document.querySelector('#grid video[data-source="camera"]')?.videoWidth > 0, null, { timeout: 20_000 });
  });

  it('the agent decodes the screen the learner shares', { timeout: 40_000 }, async () => {
    await learner.click('#share-screen');
    await learner.waitForFunction(() => window.aulaSession.localTracks.get('screen_share')?.sid, null, { timeout: 15_000 });
    await agent.waitForFunction(() => document.querySelector('video[data-source="screen_share"]')?.videoWidth > 0, null, { timeout: 20_000 });
    const decoded = await agent.evaluate(async () => {
      let frames = 0;
      (await window.aulaSession.subscriber.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
      });
      return frames;
    });
    assert.ok(decoded > 0, `agent decoded ${decoded} frames`);
  });

  it('ending the session closes the private room on both sides', { timeout: 20_000 }, async () => {
    await learner.click('#end');
    for (const page of [learner, agent]) {
      await page.waitForFunction(() => document.querySelector('#status').textContent.includes('Session ended'), null, { timeout: 10_000 });
    }
    assert.deepEqual(learner.aulaErrors, []);
    assert.deepEqual(agent.aulaErrors, []);
  });
});
