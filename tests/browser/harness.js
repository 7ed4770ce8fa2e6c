// Test harness: the real `aula` server on loopback, headless Chromium, and class-page helpers.
//
// Everything listens on and talks to 127.0.0.1 only. Set AULA_URL to test a server you started
// yourself, AULA_BIN to pick the binary (default: the workspace's target/release/aula, the build
// the README's run command starts), and CHROMIUM to pick the browser (default: Debian's
// /usr/bin/chromium).

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const REPO = resolve(import.meta.dirname, '../..');

/** Flags from DESIGN.md: loopback ICE, fake camera/mic without prompts, no calls to the outside. */
const CHROMIUM_ARGS = [
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--no-sandbox',
  '--headless=new',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-gpu',
];

/** A port that was free a moment ago (another process may take it first: startServer then tries again). */
async function freeTcpPort() {
  const server = createServer();
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

async function freeUdpPort() {
  const socket = createSocket('udp4');
  await new Promise((ok) => socket.bind(0, '127.0.0.1', ok));
  const { port } = socket.address();
  await new Promise((ok) => socket.close(ok));
  return port;
}

/**
 * Starts `aula serve` the way the README's quick start does: no config file, so its defaults
 * (dev mode, HTTP and media bound to every interface, host candidates for 127.0.0.1 and every
 * interface address); only the ports differ, through the documented `--http-port` and
 * `--udp-port`, so that tests never clash with a server someone runs. Or uses AULA_URL.
 * Resolves once /healthz answers. `testImpairment` adds the documented `--test-impairment`
 * (the test-only `POST /test/impairment`, see weaknet.js). `cwd` is the server's working
 * directory (default: the caller's), where relative defaults such as `./recordings` land: a
 * test that records passes a temporary directory and removes it. The pages are driven at
 * http://127.0.0.1, so media goes over loopback.
 *
 * `config` is a config file's TOML text (see aula.sample.toml), for a test that needs options
 * the command line does not have (a cluster node: relay.test.js); it is written into the
 * server's temporary directory and passed with `--config`, and AULA_URL is then ignored.
 * The ports are free ones, picked here; they override the config's.
 * @returns {Promise<{url: string, udpPort?: number, stop: () => Promise<void>, kill?: () => Promise<void>, logTail: () => string}>}
 */
export async function startServer({ testImpairment = false, cwd, config } = {}) {
  if (process.env.AULA_URL && config === undefined) {
    const url = process.env.AULA_URL.replace(/\/$/, '');
    await waitHealthy(url, null);
    return { url, stop: async () => {}, logTail: () => '(external server)' };
  }
  // A port that was free a moment ago may be taken by another process before the server binds
  // it: then the server exits at once, and is started again on other free ports.
  for (let attempt = 1; ; attempt++) {
    const ports = { http: await freeTcpPort(), udp: await freeUdpPort() };
    try {
      return await launchServer({ testImpairment, cwd, config }, ports);
    } catch (err) {
      if (attempt === 3 || !err.message.includes('Address already in use')) throw err;
    }
  }
}

/**
 * A cluster's nodes on loopback, sharing the Redis at `redisUrl`, each an `aula serve` with a
 * config of its own: dev keys, the tests' short directory timings (a node is dropped 3 s after
 * it stops refreshing, a lease lapses after 3 s), a relay endpoint on a free port that the node
 * publishes, and a certificate from a cluster CA made for the test in `certs`. With
 * `publicAddrs` a node also publishes the HTTP address it bound, where the other nodes carry
 * signaling and where clients are sent when theirs dies (the alternates).
 * @returns {Promise<any[]>} the servers, in the order of `nodes`
 */
export async function startClusterNodes(nodes, redisUrl, certs, { publicAddrs = false } = {}) {
  await aulaCli(['cluster', 'ca', '--out', join(certs, 'ca')]);
  for (const node of nodes) {
    await aulaCli(['cluster', 'cert', '--node', node.id, '--ca', join(certs, 'ca'), '--out', join(certs, node.id)]);
  }
  const servers = [];
  for (const node of nodes) {
    servers.push(await startServer({ config: clusterNodeConfig(node, redisUrl, certs, publicAddrs) }));
  }
  return servers;
}

function clusterNodeConfig({ id, region }, redisUrl, certs, publicAddrs) {
  // Port 0 in a public address: the port the node bound, which the harness picks.
  const published = publicAddrs ? 'public_addrs = ["127.0.0.1:0"]\n' : '';
  return `log_level = "info"

[http]
bind = "127.0.0.1:0"

[rtc]
udp_bind = "127.0.0.1:0"
advertised_ips = ["127.0.0.1"]

[cluster]
redis_url = "${redisUrl}"
node_id = "${id}"
region = "${region}"
node_ttl_secs = 3
refresh_secs = 1
lease_ttl_secs = 3
${published}
[cluster.relay]
# Port 0: the OS picks a free one, and the node publishes the port it bound.
bind = "127.0.0.1:0"
addr = "127.0.0.1:0"
ca_cert = "${join(certs, 'ca', 'ca.pem')}"
node_cert = "${join(certs, id, 'node.pem')}"
node_key = "${join(certs, id, 'node.key')}"
`;
}

/** Spawns `aula serve` for startServer on `ports`; resolves once it is healthy. */
async function launchServer({ testImpairment, cwd, config }, { http: httpPort, udp: udpPort }) {
  const dir = mkdtempSync(join(tmpdir(), 'aula-test-'));
  const logPath = join(dir, 'server.log');
  const log = createWriteStream(logPath);
  const bin = aulaBin();
  const args = ['serve', '--http-port', String(httpPort), '--udp-port', String(udpPort)];
  if (testImpairment) args.push('--test-impairment');
  if (config !== undefined) {
    const configPath = join(dir, 'aula.toml');
    writeFileSync(configPath, config);
    args.push('--config', configPath);
  }
  // Nothing of the caller's environment may point the server at a config file.
  const { AULA_CONFIG: _ignored, ...env } = process.env;
  const child = spawn(bin, args, {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const exited = new Promise((ok) => {
    child.once('exit', (code, signal) => ok({ code, signal }));
    child.once('error', (err) => ok({ code: err.code, signal: null })); // e.g. ENOENT: not built
  });
  const logTail = () => {
    try {
      return readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n');
    } catch {
      return '(no log)';
    }
  };
  const url = `http://127.0.0.1:${httpPort}`;
  try {
    await waitHealthy(url, exited);
  } catch (err) {
    child.kill('SIGKILL');
    const tail = logTail();
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${err.message}\n--- server log (${bin}) ---\n${tail}`);
  }
  const stop = async () => {
    child.kill('SIGTERM');
    const done = await Promise.race([exited, sleep(5000, null)]);
    if (!done) child.kill('SIGKILL');
    log.end();
    if (!process.env.AULA_KEEP_LOGS) rmSync(dir, { recursive: true, force: true });
  };
  /** Kills the server outright (SIGKILL: no goodbye to anyone), as a crashed machine would. */
  const kill = async () => {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(5000)]);
  };
  return { url, udpPort, stop, kill, logTail };
}

/**
 * The `aula` binary the tests run: AULA_BIN, else the workspace's release build, which is what
 * `cargo run --release --bin aula -- serve` (the README's run command) starts. Timing and loss
 * repair are judged on the server users run, not on a debug build several times slower.
 */
export function aulaBin() {
  return process.env.AULA_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'release', 'aula');
}

/** Runs the `aula` CLI with `args` (e.g. `cluster ca --out DIR`), for up to 30 s; rejects if it fails. */
export async function aulaCli(args) {
  return promisify(execFile)(aulaBin(), args, { timeout: 30_000 });
}

/**
 * Starts a real `redis-server` on a free loopback port with persistence off (as the Rust tests'
 * signaling/tests/support/redis_server.rs does; scripts/setup.sh installs it) and waits until
 * it answers PING, for up to 10 s.
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
export async function startRedis() {
  const port = await freeTcpPort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const exited = new Promise((ok) => {
    child.once('exit', (code, signal) => ok(`exited (code ${code}, signal ${signal})`));
    child.once('error', (err) => ok(`${err.message} (scripts/setup.sh installs redis-server)`));
  });
  const pong = () => new Promise((ok) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    socket.setTimeout(1000, () => socket.destroy());
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => {
      reply += data;
      if (reply.includes('\r\n')) socket.end();
    });
    socket.on('close', () => ok(reply === '+PONG\r\n'));
    socket.on('error', () => {});
  });
  const stop = async () => {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(5000)]);
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    const failed = await Promise.race([exited, sleep(0, null)]);
    if (failed) throw new Error(`redis-server ${failed}`);
    if (await pong()) return { url: `redis://127.0.0.1:${port}`, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server on port ${port} did not answer PING within 10 s`);
    }
    await sleep(50);
  }
}

/** Polls GET /healthz for up to 30 s (a debug build on a busy 2-core machine starts slowly). */
async function waitHealthy(url, exited) {
  const deadline = Date.now() + 30_000;
  let lastError = 'no answer';
  while (Date.now() < deadline) {
    if (exited) {
      const status = await Promise.race([exited, sleep(0, null)]);
      if (status) throw new Error(`server exited early (code ${status.code}, signal ${status.signal})`);
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
      lastError = `HTTP ${res.status}`;
    } catch (err) {
      lastError = err.cause?.code ?? err.message;
    }
    await sleep(200);
  }
  throw new Error(`${url}/healthz not healthy within 30 s (${lastError})`);
}

/** The dev keys (`ApiKeys::dev()`) as the admin API's HTTP Basic credentials. */
export const DEV_ADMIN = `Basic ${Buffer.from('devkey:devsecret-change-me-in-production-0123456789').toString('base64')}`;

/** One admin API request to the server at `url` with the dev keys; asserts a 2xx, returns the JSON body. */
export async function adminRequest(url, method, path) {
  const res = await fetch(`${url}${path}`, { method, headers: { Authorization: DEV_ADMIN } });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/**
 * Starts headless Chromium. With `netns`, Chromium runs inside that network namespace (a
 * second computer on its own network; see lan.test.js): playwright talks to it over a pipe,
 * which crosses namespaces, while its network is the namespace's.
 */
export async function launchBrowser({ netns } = {}) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'aula-chromium-'));
  const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  let executablePath = chromiumPath;
  if (netns) {
    executablePath = join(userDataDir, 'chromium-in-netns');
    writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${netns} ${chromiumPath} "$@"\n`, { mode: 0o755 });
  }
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
  });
  return {
    /** A fresh page in the browser's one context: each tab is its own participant. */
    newPage: () => context.newPage(),
    close: async () => {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A server (`options` as for `startServer`) and a browser, for a suite's `before`; if the
 * browser does not start, the server is stopped again.
 */
export async function startServerAndBrowser(options) {
  const server = await startServer(options);
  try {
    return { server, browser: await launchBrowser() };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** Closes what `startServerAndBrowser` started, for a suite's `after` (either may be missing). */
export async function stopServerAndBrowser({ server, browser }) {
  await browser?.close();
  await server?.stop();
}

/**
 * Opens `/class?room=R` (with `&region=G` when `region` is given: the dev token then names the
 * participant's region), fills the join form like a person, and waits until the SDK's room
 * exists. Uncaught page errors are collected in `page.aulaErrors` for the test to assert on.
 * @param {{room: string, name: string, role: 'teacher'|'student', region?: string}} who
 */
export async function joinClass(browser, baseUrl, { room, name, role, region, initScript }) {
  const page = await browser.newPage();
  // Run in the page before its own scripts (a test changing what the browser negotiates).
  if (initScript) await page.addInitScript(initScript);
  page.aulaErrors = [];
  page.on('pageerror', (err) => page.aulaErrors.push(err.message));
  const query = new URLSearchParams({ room });
  if (region !== undefined) query.set('region', region);
  await page.goto(`${baseUrl}/class?${query}`);
  await page.fill('input[name="name"]', name);
  await page.check(`input[name="role"][value="${role}"]`);
  // Time zero for "join to first decoded frame", taken in the page's clock.
  await page.evaluate(() => {
    window.joinClickedAt = performance.now();
  });
  await page.click('button[type="submit"]');
  await page.waitForFunction(() => window.aulaRoom?.localParticipant, null, { timeout: 10_000 });
  // Why the session ended, if it did (see `sessionEnded`).
  await page.evaluate(() => window.aulaRoom.addEventListener('disconnected', (e) => {
    window.aulaEndedReason = e.detail.reason;
  }));
  return page;
}

/**
 * The reason the server or the SDK gave for ending the page's session, or null while it lasts.
 * A session ended early also drops every remote track and tile, which can make a later step's
 * checks pass, or fail, for the wrong reason.
 */
export function sessionEnded(page) {
  return page.evaluate(() => window.aulaEndedReason ?? null);
}

/**
 * Polls the page's subscriber stats until inbound video has decoded a frame and inbound audio
 * has received samples, or `timeoutMs` passes. Runs inside the page so polling is cheap (20 ms).
 * Times are milliseconds since the join button was clicked.
 * @returns {Promise<{ok: boolean, framesDecoded: number, totalSamplesReceived: number,
 *   subscribedAfterMs: number|null, decodedAfterMs: number|null}>}
 */
export function waitForMedia(page, timeoutMs) {
  return page.evaluate(async (timeoutMs) => {
    const room = window.aulaRoom;
    const deadline = performance.now() + timeoutMs;
    const since = () => Math.round(performance.now() - window.joinClickedAt);
    let subscribedAfterMs = null;
    let decodedAfterMs = null;
    let framesDecoded = 0;
    let totalSamplesReceived = 0;
    while (performance.now() < deadline) {
      if (subscribedAfterMs === null && room.remoteTracks.size > 0) subscribedAfterMs = since();
      framesDecoded = 0;
      totalSamplesReceived = 0;
      (await room.subscriber.getStats()).forEach((r) => {
        if (r.type !== 'inbound-rtp') return;
        if (r.kind === 'video') framesDecoded += r.framesDecoded ?? 0;
        if (r.kind === 'audio') totalSamplesReceived += r.totalSamplesReceived ?? 0;
      });
      if (framesDecoded > 0 && decodedAfterMs === null) decodedAfterMs = since();
      if (framesDecoded > 0 && totalSamplesReceived > 0) {
        return { ok: true, framesDecoded, totalSamplesReceived, subscribedAfterMs, decodedAfterMs };
      }
      await new Promise((ok) => setTimeout(ok, 20));
    }
    return { ok: false, framesDecoded, totalSamplesReceived, subscribedAfterMs, decodedAfterMs };
  }, timeoutMs);
}

/**
 * A teacher and a student (`studentName`, its page opened from `studentUrl`) joined to `room`,
 * once the student decodes the teacher's video and receives its audio.
 */
export async function teacherAndStudent(browser, baseUrl, { room, studentName = 'Student', studentUrl = baseUrl }) {
  const teacher = await joinClass(browser, baseUrl, { room, name: 'Teacher', role: 'teacher' });
  const student = await joinClass(browser, studentUrl, { room, name: studentName, role: 'student' });
  const media = await waitForMedia(student, 20_000);
  assert.ok(media.ok, `student receives the teacher first: ${JSON.stringify(media)}`);
  return { teacher, student };
}

/** Video frames the page's subscriber has decoded so far. */
export function framesDecoded(page) {
  return page.evaluate(async () => {
    let frames = 0;
    (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
    });
    return frames;
  });
}

/**
 * Polls `framesDecoded` every `polling` ms until it is over `min`, for at most `timeout` ms;
 * returns the count.
 */
export async function waitForFramesDecoded(page, min, { timeout, polling = 100 }) {
  let frames;
  const more = await poll(async () => (frames = await framesDecoded(page)) > min, timeout, polling);
  assert.ok(more, `over ${min} video frames decoded within ${timeout} ms, not ${frames}`);
  return frames;
}

/** Polls `check` (async, truthy when done) every `every` ms for up to `ms`; returns its last value. */
export async function poll(check, ms, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value || Date.now() > deadline) return value;
    await sleep(every);
  }
}

/**
 * Records from now on what the page's status line says (`window.aulaStatuses`) and the SDK's
 * reconnect events (`window.aulaEvents`: type, reason, previousSid and the participant's sid).
 */
export function recordReconnecting(page) {
  return page.evaluate(() => {
    window.aulaStatuses = [];
    window.aulaEvents = [];
    const status = document.getElementById('status');
    new MutationObserver(() => window.aulaStatuses.push(status.textContent))
      .observe(status, { childList: true, characterData: true, subtree: true });
    for (const type of ['reconnecting', 'reconnected', 'rejoined', 'disconnected']) {
      window.aulaRoom.addEventListener(type, (e) => window.aulaEvents.push({
        type,
        reason: e.detail.reason,
        previousSid: e.detail.previousSid,
        sid: e.detail.participant?.sid,
      }));
    }
  });
}
