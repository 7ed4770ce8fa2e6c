// End-to-end test of the support desk pages in headless Chromium against the real server, driven
// through the visible buttons as a person would: a learner asks for help before anyone serves
// the topic and cancels; an agent going on duty sees the queue, and adding the topic pairs them;
// the learner hears the agent's (fake) microphone from the start, not while the agent mutes it,
// and sees its camera while it is on; the learner shares screen and camera, which the agent's
// console shows large and small, with the learner's name, request and connection; chat both
// ways; a transfer by skill hands the learner to a second agent; the learner ends the session
// and rates it, and the rating reaches /metrics. An agent off duty gets no learner, and sees the
// language the learner chose in the queue; back on duty it is paired, ends the session itself,
// and the learner's "Bad" reaches /metrics too. Screenshots of the console and the learner's
// page go to AULA_SCREENSHOT_DIR (docs/screenshots to update the README's), or the temp
// directory, as the other tests' do; the console's layout is checked at both sizes.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { startServerAndBrowser, stopServerAndBrowser } from './harness.js';

const SCREENSHOTS = resolve(process.env.AULA_SCREENSHOT_DIR ?? tmpdir());
const DESKTOP = { width: 1280, height: 720 };
const PHONE = { width: 390, height: 844 };

describe('support desk', () => {
  let server;
  let browser;
  let learner;
  let agent;
  let second;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser());
  });

  after(() => stopServerAndBrowser({ server, browser }));

  async function open(path) {
    const page = await browser.newPage();
    await page.setViewportSize(DESKTOP);
    page.aulaErrors = [];
    page.on('pageerror', (err) => page.aulaErrors.push(err.message));
    await page.goto(`${server.url}${path}`);
    return page;
  }

  const button = (page, name) => page.getByRole('button', { name, exact: true });
  const text = (page, selector) => page.locator(selector).textContent({ timeout: 5_000 });

  /** Waits until `selector`'s text matches `pattern`. */
  function waitText(page, selector, pattern, timeout = 10_000) {
    return page.waitForFunction(([selector, source]) => new RegExp(source).test(document.querySelector(selector)?.textContent ?? ''),
      [selector, pattern.source], { timeout });
  }

  /**
   * The header's brand and page name as shown, generated content included (`::before`, which
   * textContent does not show), so that no stylesheet can put a prefix such as "Room " back.
   */
  function headerText(page) {
    return page.evaluate(() => [...document.querySelectorAll('header .brand, header .page-name')].map((el) => {
      const before = getComputedStyle(el, '::before').content;
      return (before.startsWith('"') ? JSON.parse(before) : '') + el.textContent;
    }));
  }

  /**
   * The console in a session: labelled tiles side by side, none over another, the learner's
   * screen the large one, and the content area ending where the controls bar begins.
   */
  async function assertConsoleLayout(page) {
    const boxes = await page.evaluate(() => Object.fromEntries(['learner-screen', 'learner-camera', 'self-view', 'controls', 'main']
      .map((id) => [id, (document.getElementById(id) ?? document.querySelector(id)).getBoundingClientRect().toJSON()])));
    const size = await page.evaluate(() => `${innerWidth}x${innerHeight}`);
    const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const area = (r) => r.width * r.height;
    assert.ok(!overlap(boxes['learner-screen'], boxes['learner-camera']), `${size}: ${JSON.stringify(boxes)}`);
    assert.ok(!overlap(boxes['learner-screen'], boxes['self-view']), `${size}: ${JSON.stringify(boxes)}`);
    assert.ok(!overlap(boxes['learner-camera'], boxes['self-view']), `${size}: ${JSON.stringify(boxes)}`);
    assert.ok(area(boxes['learner-screen']) > 2 * area(boxes['learner-camera']), `${size}: the screen is the large one`);
    assert.ok(boxes.main.bottom <= boxes.controls.top + 1, `${size}: the content area ends where the controls begin`);
  }

  /** Goes on duty on the console with these topics (the form starts with every topic, English). */
  async function goOnDuty(page, name, topics) {
    await page.getByLabel('Your name').fill(name);
    for (const topic of ['Audio', 'Video', 'Billing']) await page.getByLabel(topic, { exact: true }).setChecked(topics.includes(topic));
    await button(page, 'Go on duty').click();
    await button(page, 'Go off duty').waitFor({ timeout: 10_000 });
  }

  it('a queued learner cancels, and the page says so', { timeout: 30_000 }, async () => {
    learner = await open('/support');
    assert.deepEqual(await headerText(learner), ['Aula', 'Get help']);
    await learner.getByLabel('Your name').fill('Ana');
    await learner.getByLabel('Topic').selectOption('video');
    await button(learner, 'Ask for help').click();
    await waitText(learner, '#position', /You are next in line/);
    await waitText(learner, '#wait', /No agent for this topic is on duty yet/);
    await button(learner, 'Cancel').click();
    await learner.getByRole('heading', { name: 'You cancelled your request' }).waitFor({ timeout: 5_000 });
    assert.equal(await learner.locator('#rating').isVisible(), false, 'nothing to rate');
    await button(learner, 'Ask again').waitFor({ timeout: 5_000 });
  });

  it('an agent sees the queue, and taking the topic pairs it with the learner', { timeout: 40_000 }, async () => {
    agent = await open('/agent');
    assert.deepEqual(await headerText(agent), ['Aula', 'Support desk']);
    await goOnDuty(agent, 'Bo', ['Audio']);
    await waitText(agent, '#queue-empty', /Nobody is waiting/); // the cancelled request is gone

    await button(learner, 'Ask again').click();
    await button(learner, 'Ask for help').click();
    await waitText(learner, '#position', /You are next in line/);
    await waitText(agent, '#queue', /Ana · Video · English · waiting 0:\d\d/);
    await waitText(agent, '#queue-count', /^1$/);

    await agent.getByLabel('Video', { exact: true }).check(); // applies at once while on duty
    for (const page of [agent, learner]) {
      await page.waitForFunction(() => window.aulaSession?.localParticipant, null, { timeout: 15_000 });
    }
    await waitText(agent, '#learner-name', /^Ana$/);
    await waitText(agent, '#learner-request', /Video · English/);
    await waitText(agent, '#queue-count', /^0$/);
    // The learner sees the agent's display name, not its identity.
    await waitText(learner, '#agent-label', /^Bo \(agent\)$/);
    await waitText(learner, '#status', /Connected with Bo\./);
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

  /** Waits until the learner plays the agent's microphone and has received a second of sound. */
  async function learnerHearsAgent() {
    await learner.waitForFunction(() => {
      const audio = document.querySelector('#audio audio[data-source="microphone"]');
      return audio && !audio.paused && audio.srcObject?.getAudioTracks()[0]?.readyState === 'live';
    }, null, { timeout: 15_000 });
    const deadline = Date.now() + 15_000;
    const start = await inbound(learner, 'audio');
    let audio = start;
    while (Date.now() < deadline && !(audio.totalSamplesReceived - start.totalSamplesReceived > 48_000 && audio.totalAudioEnergy > start.totalAudioEnergy)) {
      await new Promise((ok) => setTimeout(ok, 200));
      audio = await inbound(learner, 'audio');
    }
    assert.ok(audio.totalSamplesReceived - start.totalSamplesReceived > 48_000, `learner received ${audio.totalSamplesReceived} samples`);
    assert.ok(audio.totalAudioEnergy > start.totalAudioEnergy, `learner heard silence: ${JSON.stringify(audio)}`);
  }

  /** Waits until the learner's SDK has the agent's microphone (un)muted (the server's `track_muted`). */
  const learnerSeesAgentMic = (muted) => learner.waitForFunction((muted) => {
    const mic = [...window.aulaSession.participants.values()].flatMap((p) => p.tracks).find((t) => t.source === 'microphone');
    return mic && Boolean(mic.muted) === muted;
  }, muted, { timeout: 5_000 });

  /** Audio energy the learner receives over `ms` (silence adds none). */
  async function energyOver(ms) {
    const start = await inbound(learner, 'audio');
    await learner.waitForTimeout(ms); // a measuring window, not a wait for a state
    return (await inbound(learner, 'audio')).totalAudioEnergy - start.totalAudioEnergy;
  }

  it('the learner hears the agent, whose microphone is on from the start, and not while it is muted', { timeout: 60_000 }, async () => {
    // The button offers to mute: the microphone is on without the agent doing anything.
    await button(agent, 'Mute microphone').waitFor({ timeout: 10_000 });
    await learnerHearsAgent();
    const speaking = await energyOver(1000);
    assert.ok(speaking > 0, `energy while speaking: ${speaking}`);

    // Muted: the learner's page knows, and what it receives goes silent.
    await button(agent, 'Mute microphone').click();
    await button(agent, 'Unmute microphone').waitFor({ timeout: 5_000 });
    await learnerSeesAgentMic(true);
    const deadline = Date.now() + 10_000;
    let muted = await energyOver(1000);
    while (muted > speaking / 100 && Date.now() < deadline) muted = await energyOver(1000);
    assert.ok(muted <= speaking / 100, `energy over a second: ${speaking} speaking, ${muted} muted`);

    await button(agent, 'Unmute microphone').click();
    await button(agent, 'Mute microphone').waitFor({ timeout: 5_000 });
    await learnerSeesAgentMic(false);
    await learnerHearsAgent();
  });

  const agentCameraShown = () => learner.waitForFunction(() => {
    const tile = document.querySelector('#agent-tile');
    return !tile.classList.contains('empty') && tile.querySelector('video').videoWidth > 0;
  }, null, { timeout: 20_000 });

  it('the learner sees the agent\'s camera while the agent has it on', { timeout: 60_000 }, async () => {
    await button(agent, 'Turn on camera').click();
    await button(agent, 'Turn off camera').waitFor({ timeout: 15_000 });
    await agentCameraShown();
    const video = await inbound(learner, 'video');
    assert.ok(video.framesDecoded > 0, `learner decoded ${video.framesDecoded} frames of the agent's camera`);

    // Off and on again: the learner's picture goes (the tile says so), then comes back.
    await button(agent, 'Turn off camera').click();
    await learner.waitForFunction(() => document.querySelector('#agent-tile').classList.contains('empty'), null, { timeout: 15_000 });
    assert.equal(await learner.locator('#agent-camera-off').isVisible(), true);
    await button(agent, 'Turn on camera').click();
    await agentCameraShown();
  });

  it('the agent sees the learner\'s screen large and camera small, and the learner\'s connection', { timeout: 60_000 }, async () => {
    await button(learner, 'Share screen').click();
    await button(learner, 'Stop sharing').waitFor({ timeout: 15_000 });
    await button(learner, 'Share camera').click();
    await button(learner, 'Stop camera').waitFor({ timeout: 15_000 });
    for (const id of ['own-screen', 'own-camera']) assert.equal(await learner.locator(`#${id}`).isVisible(), true, `${id} preview`);
    for (const id of ['learner-screen', 'learner-camera']) {
      await agent.waitForFunction((id) => document.querySelector(`#${id} video`).videoWidth > 0, id, { timeout: 20_000 });
    }
    assert.equal(await text(agent, '#screen-label'), 'Ana\'s screen');
    assert.equal(await text(agent, '#camera-label'), 'Ana\'s camera');

    await assertConsoleLayout(agent);

    // The server's word for the learner's connection, and the figures its page measures.
    // Loopback, nothing impaired: never "Poor".
    await waitText(agent, '#quality', /Connection: (Excellent|Good)/, 20_000);
    await waitText(agent, '#link-stats', /loss receiving \d+\.\d %.* RTT \d+ ms/, 15_000);
  });

  it('chat goes both ways', { timeout: 20_000 }, async () => {
    await agent.getByLabel('Message').fill('Hello Ana, I see your screen.');
    await button(agent, 'Send').click();
    await waitText(learner, '#chat-log', /Bo: Hello Ana, I see your screen\./);
    await learner.getByLabel('Message').fill('Thanks!');
    await learner.getByLabel('Message').press('Enter');
    await waitText(agent, '#chat-log', /Ana: Thanks!/);
    await waitText(learner, '#chat-log', /You: Thanks!/);
  });

  it('screenshots of the console and the learner\'s page, desktop and phone, with the console laid out at both', { timeout: 30_000 }, async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    for (const [size, name] of [[DESKTOP, '1280x720'], [PHONE, '390x844']]) {
      for (const [page, who] of [[agent, 'agent'], [learner, 'learner']]) {
        await page.setViewportSize(size);
        await page.waitForTimeout(700); // the videos settle at their new size
        await page.screenshot({ path: `${SCREENSHOTS}/support-${who}-${name}.png` });
      }
      await assertConsoleLayout(agent);
    }
    for (const page of [agent, learner]) await page.setViewportSize(DESKTOP);
  });

  it('a transfer by skill hands the learner to a second agent', { timeout: 60_000 }, async () => {
    second = await open('/agent');
    await goOnDuty(second, 'Cy', ['Billing']);
    await agent.getByLabel('Transfer to').selectOption('billing');
    await button(agent, 'Transfer').click();
    await waitText(agent, '#status', /Ana was handed to a colleague/);
    assert.equal(await agent.locator('#session').isVisible(), false);

    await waitText(second, '#learner-name', /^Ana$/, 15_000);
    await waitText(second, '#learner-request', /Billing · English/);
    await waitText(learner, '#agent-label', /^Cy \(agent\)$/, 15_000);
    await second.waitForFunction(() => document.querySelector('#learner-screen video').videoWidth > 0, null, { timeout: 20_000 });
    await learnerHearsAgent();
    assert.equal(await learner.evaluate(() => [...window.aulaSession.participants.values()].map((p) => p.name).join()), 'Cy');
  });

  it('the learner ends the session and rates it; the rating reaches /metrics', { timeout: 30_000 }, async () => {
    await button(learner, 'End').click();
    await learner.getByRole('heading', { name: 'Session ended' }).waitFor({ timeout: 10_000 });
    await waitText(second, '#status', /Session with Ana ended/);
    await button(learner, 'Good').click();
    await waitText(learner, '#rating-question', /Thank you for your feedback/);
    assert.equal(await button(learner, 'Bad').isVisible(), false, 'rated once');

    const metrics = await metricsOnceIncluding('aula_support_ratings_total{rating="good"} 1');
    assert.match(metrics, /aula_support_ratings_total\{rating="good"\} 1/);
    assert.match(metrics, /aula_support_ratings_total\{rating="bad"\} 0/);
    for (const page of [learner, agent, second]) assert.deepEqual(page.aulaErrors, []);
  });

  it('an agent off duty gets no learner, and sees the language the learner chose in the queue', { timeout: 30_000 }, async () => {
    await button(agent, 'Go off duty').click();
    await button(agent, 'Go on duty').waitFor({ timeout: 5_000 });
    await waitText(agent, '#duty-state', /^Off duty: no new learners/);

    // Ana asks again about video, in Spanish: Bo serves video but is off duty, Cy only billing.
    await button(learner, 'Ask again').click();
    await learner.getByLabel('Language').selectOption('es');
    await button(learner, 'Ask for help').click();
    await waitText(learner, '#position', /You are next in line/);
    // The desk routes a request as it queues it, then shows the queue: once the line is there,
    // nobody was given Ana.
    await waitText(agent, '#queue', /Ana · Video · Español · waiting 0:\d\d/);
    await waitText(second, '#queue', /Ana · Video · Español/);
    assert.equal(await agent.locator('#session').isVisible(), false, 'Bo, off duty, has no session');
    assert.equal(await second.locator('#session').isVisible(), false, 'Cy does not serve video');
    assert.equal(await learner.locator('#waiting').isVisible(), true, 'Ana still waits');
  });

  it('back on duty the agent is paired, ends the session itself, and "Bad" reaches /metrics', { timeout: 40_000 }, async () => {
    await button(agent, 'Go on duty').click();
    await waitText(agent, '#duty-state', /^On duty: Audio, Video; English/);
    await waitText(agent, '#learner-name', /^Ana$/, 15_000);
    await waitText(agent, '#learner-request', /Video · Español/);
    await waitText(learner, '#agent-label', /^Bo \(agent\)$/, 15_000);
    await waitText(learner, '#status', /Connected with Bo\./);

    await button(agent, 'End').click();
    await learner.getByRole('heading', { name: 'Session ended' }).waitFor({ timeout: 10_000 });
    await waitText(agent, '#status', /Session with Ana ended/);
    assert.equal(await agent.locator('#session').isVisible(), false, 'the console is back to its lists');
    await button(learner, 'Bad').click();
    await waitText(learner, '#rating-question', /Thank you for your feedback/);

    const metrics = await metricsOnceIncluding('aula_support_ratings_total{rating="bad"} 1');
    assert.match(metrics, /aula_support_ratings_total\{rating="bad"\} 1/);
    assert.match(metrics, /aula_support_ratings_total\{rating="good"\} 1/);
    for (const page of [learner, agent, second]) assert.deepEqual(page.aulaErrors, []);
  });

  /** GET /metrics until it includes `line`, for up to 10 s; returns the last body. */
  async function metricsOnceIncluding(line) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const metrics = await (await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
      if (metrics.includes(line) || Date.now() > deadline) return metrics;
      await new Promise((ok) => setTimeout(ok, 200));
    }
  }
});
