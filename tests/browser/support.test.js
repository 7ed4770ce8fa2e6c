// End-to-end test of the support desk pages in headless Chromium against the real server: a
// learner asks for help before any agent is on duty (and sees its place in line), an agent goes
// on duty and is paired with it, the learner shares a (fake) screen, and the agent's page
// decodes it; then the learner ends the session.

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
