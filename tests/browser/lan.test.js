// End-to-end: the README's quick start reached from a second computer on the LAN (issue 11).
//
// The server runs as the README starts it (no config file: bound to every interface, host
// candidates for 127.0.0.1 and every interface address). The teacher joins on this machine at
// http://127.0.0.1; the student is Chromium inside a network namespace of its own, joined to
// this machine by a veth pair: a second computer whose only way to the server is the server's
// address on that link, as on a school's LAN. The student must decode the teacher's camera and
// microphone. Before the fix the server advertised 127.0.0.1 only, and discarded checks sent to
// any other address, so the student never connected.
//
// Needs root (network namespaces) and iproute2's `ip`; skipped otherwise. All traffic stays on
// this machine: loopback and the namespace's veth link.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { joinClass, launchBrowser, sessionEnded, startServer, waitForMedia } from './harness.js';

const MEDIA_DEADLINE_MS = 20_000;
/** Namespace and link names unique to this run; the /30 is this project's own test subnet. */
const NS = `aula-lan-${process.pid}`;
const HOST_IF = `alan${process.pid % 100000}`;
const SUBNET = `10.199.${process.pid % 250}`;
const SERVER_IP = `${SUBNET}.1`;

function ip(...args) {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function canMakeNamespaces() {
  if (process.getuid?.() !== 0) return 'needs root for a network namespace';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'needs iproute2 (ip)';
  }
  return null;
}

const skip = canMakeNamespaces();

describe('a student on a second computer on the LAN', { skip: skip ?? false }, () => {
  let server;
  let teacherBrowser;
  let studentBrowser;

  before(async () => {
    ip('netns', 'add', NS);
    ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS);
    ip('addr', 'add', `${SERVER_IP}/30`, 'dev', HOST_IF);
    ip('link', 'set', HOST_IF, 'up');
    ip('-n', NS, 'addr', 'add', `${SUBNET}.2/30`, 'dev', 'eth0');
    ip('-n', NS, 'link', 'set', 'eth0', 'up');
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    // After the link exists: the server lists interface addresses when it starts.
    server = await startServer();
    teacherBrowser = await launchBrowser();
    studentBrowser = await launchBrowser({ netns: NS });
  });

  after(async () => {
    await studentBrowser?.close();
    await teacherBrowser?.close();
    await server?.stop();
    try {
      ip('netns', 'del', NS); // also removes the veth pair
    } catch {
      // Not created: before() failed early.
    }
  });

  it('decodes the teacher through the server address on the LAN', async () => {
    const room = `lan-${Date.now()}`;
    const teacher = await joinClass(teacherBrowser, server.url, { room, name: 'Teacher', role: 'teacher' });
    const lanUrl = server.url.replace('127.0.0.1', SERVER_IP);
    const student = await joinClass(studentBrowser, lanUrl, { room, name: 'Remote student', role: 'student' });
    const media = await waitForMedia(student, MEDIA_DEADLINE_MS);
    assert.ok(
      media.ok,
      `the LAN student decoded nothing: ${JSON.stringify(media)}; ended: ${await sessionEnded(student)}\n${server.logTail()}`,
    );
    // The media went over the LAN link, not some other way.
    const pair = await student.evaluate(async () => {
      let remote = null;
      (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
        if (r.type === 'candidate-pair' && r.state === 'succeeded' && r.nominated) remote = r.remoteCandidateId;
      });
      let address = null;
      (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
        if (r.id === remote) address = r.address ?? r.ip;
      });
      return address;
    });
    assert.equal(pair, SERVER_IP);
    assert.deepEqual(teacher.aulaErrors, []);
    assert.deepEqual(student.aulaErrors, []);
  });
});
