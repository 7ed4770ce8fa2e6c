// End-to-end: a live class in headless Chromium against the real server (issue 2).
//
// One teacher publishes camera + microphone with simulcast; three students join through the
// page's form and must decode both; a fourth student joins late and must see video quickly; the
// first student reports how large it shows the teacher's camera (and 0x0 once it is hidden); the
// teacher shares the screen, stops sharing, mutes and unmutes; a bad token is refused; the
// teacher leaves and every student's page must drop the teacher's tracks and tile. The steps
// share one room and run in order, each bounded in time.

import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { joinClass, poll, sessionEnded, startServerAndBrowser, stopServerAndBrowser, waitForMedia } from './harness.js';
import { impair } from './weaknet.js';

/** First media may take a while on a loaded 2-core CI machine: ICE, DTLS, keyframe, decode. */
const MEDIA_DEADLINE_MS = 20_000;
/** The late joiner's budget from clicking Join to its first decoded frame. */
const LATE_JOIN_BUDGET_MS = 2_000;

/**
 * `browser` for `joinClass`, except that the page it opens records every WebSocket message it
 * sends and every error the server answers, parsed, in `log.sent` and `log.errors`.
 */
function recordingBrowser(browser, log) {
  return {
    newPage: async () => {
      const page = await browser.newPage();
      page.on('websocket', (ws) => {
        ws.on('framesent', ({ payload }) => log.sent.push(JSON.parse(payload)));
        ws.on('framereceived', ({ payload }) => {
          const msg = JSON.parse(payload);
          if (msg.type === 'error') log.errors.push(msg);
        });
      });
      return page;
    },
  };
}

/**
 * Frames per second `page` decodes of the teacher's `source` ('camera' or 'screen_share'),
 * counted from that track's receiver stats over `ms` (0 while the page has no such track).
 */
function decodedFps(page, source, ms = 3_000) {
  return page.evaluate(async ([source, ms]) => {
    const room = window.aulaRoom;
    const info = [...room.participants.values()].flatMap((p) => p.tracks).find((t) => t.source === source);
    const track = info && room.remoteTracks.get(info.sid)?.track;
    const receiver = track && room.subscriber.getReceivers().find((r) => r.track === track);
    if (!receiver) return 0;
    const decoded = async () => {
      let frames = 0;
      (await receiver.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp') frames += r.framesDecoded ?? 0;
      });
      return frames;
    };
    const [start, since] = [await decoded(), performance.now()];
    await new Promise((ok) => setTimeout(ok, ms));
    return ((await decoded()) - start) * 1000 / (performance.now() - since);
  }, [source, ms]);
}

// Issue 11, item 2: sharing the screen renegotiates the teacher's publish connection, which
// once froze the simulcast camera for every student, for good. The camera must keep playing
// (Chromium's fake camera sends 20 fps) during the share and after it, and a student who joins
// during the share must get both.
describe('a screen share', { timeout: 150_000 }, () => {
  /** The least camera frame rate a student must decode (of the fake camera's 20 fps). */
  const MIN_CAMERA_FPS = 15;
  let server;
  let browser;
  let teacher;
  const students = [];
  const room = `screen-${process.pid}`;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser());
  });

  after(() => stopServerAndBrowser({ server, browser }));

  it('leaves the teacher\'s camera playing for a student while the screen is shared', { timeout: 60_000 }, async () => {
    teacher = await joinClass(browser, server.url, { room, name: 'Mr Okafor', role: 'teacher' });
    await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('camera')?.sid, null, { timeout: 15_000 });
    students.push(await joinClass(browser, server.url, { room, name: 'Student 1', role: 'student' }));
    const media = await waitForMedia(students[0], MEDIA_DEADLINE_MS);
    assert.ok(media.ok, `${JSON.stringify(media)}\n${server.logTail()}`);
    const before = await decodedFps(students[0], 'camera');
    assert.ok(before > MIN_CAMERA_FPS, `camera at ${before.toFixed(1)} fps before the share`);

    await teacher.click('#screen');
    await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('screen_share')?.sid, null, { timeout: 15_000 });
    await students[0].waitForFunction(() => document.querySelector('#stage .tile.screen video')?.videoWidth > 0, null, { timeout: 15_000 });
    const during = await decodedFps(students[0], 'camera');
    console.log(`# student 1 decodes the camera at ${before.toFixed(1)} fps before the share, ${during.toFixed(1)} fps during it`);
    assert.ok(during > MIN_CAMERA_FPS, `camera at ${during.toFixed(1)} fps during the share\n${server.logTail()}`);
  });

  it('gives a student who joins during the share both the camera and the screen', { timeout: 40_000 }, async () => {
    const late = await joinClass(browser, server.url, { room, name: 'Student 2', role: 'student' });
    students.push(late);
    // Both subscribed, and the screen shown; the camera's frame rate is what is measured.
    await late.waitForFunction(() => {
      const room = window.aulaRoom;
      const camera = [...room.participants.values()].flatMap((p) => p.tracks).find((t) => t.source === 'camera');
      return room.remoteTracks.has(camera?.sid) && document.querySelector('#stage .tile.screen video')?.videoWidth > 0;
    }, null, { timeout: MEDIA_DEADLINE_MS });
    const [camera, screen] = [await decodedFps(late, 'camera'), await decodedFps(late, 'screen_share')];
    console.log(`# student 2, joined during the share, decodes the camera at ${camera.toFixed(1)} fps and the screen at ${screen.toFixed(1)} fps`);
    assert.ok(camera > MIN_CAMERA_FPS, `camera at ${camera.toFixed(1)} fps\n${server.logTail()}`);
    assert.ok(screen > 0, `screen at ${screen.toFixed(1)} fps`);
  });

  it('leaves the teacher\'s camera playing for every student once the share stops', { timeout: 40_000 }, async () => {
    await teacher.click('#screen');
    await teacher.waitForFunction(() => document.querySelector('#screen').textContent === 'Share screen', null, { timeout: 5_000 });
    for (const page of students) {
      await page.waitForFunction(() => document.querySelector('#stage').hidden && !document.querySelector('.tile.screen'), null, { timeout: 10_000 });
    }
    for (const [i, page] of students.entries()) {
      const fps = await decodedFps(page, 'camera');
      console.log(`# student ${i + 1} decodes the camera at ${fps.toFixed(1)} fps after the share`);
      assert.ok(fps > MIN_CAMERA_FPS, `student ${i + 1}: camera at ${fps.toFixed(1)} fps after the share\n${server.logTail()}`);
    }
    for (const page of [teacher, ...students]) assert.deepEqual(page.aulaErrors, []);
  });
});

describe('live class', { timeout: 180_000 }, () => {
  let server;
  let browser;
  let teacher;
  const students = [];
  /** What the first student's page sent and the errors it got (see `recordingBrowser`). */
  const firstStudent = { sent: [], errors: [] };
  const room = `class-${process.pid}`;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser());
  });

  after(() => stopServerAndBrowser({ server, browser }));

  it('students receive the teacher\'s camera and microphone', { timeout: 60_000 }, async () => {
    teacher = await joinClass(browser, server.url, { room, name: 'Ms Rivera', role: 'teacher' });
    // The teacher's own camera goes out as three simulcast layers.
    await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('camera')?.sid, null, { timeout: 15_000 });
    // Each layer gets its outbound-rtp report once it has sent; poll briefly for all three.
    const rids = await teacher.evaluate(async () => {
      const deadline = performance.now() + 10_000;
      for (;;) {
        const found = [];
        (await window.aulaRoom.publisher.getStats()).forEach((r) => {
          if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid) found.push(r.rid);
        });
        if (found.length >= 3 || performance.now() > deadline) return found.sort();
        await new Promise((ok) => setTimeout(ok, 100));
      }
    });
    assert.deepEqual(rids, ['f', 'h', 'q']);

    for (const n of [1, 2, 3]) {
      const opener = n === 1 ? recordingBrowser(browser, firstStudent) : browser;
      students.push(await joinClass(opener, server.url, { room, name: `Student ${n}`, role: 'student' }));
    }
    const results = await Promise.all(students.map((page) => waitForMedia(page, MEDIA_DEADLINE_MS)));
    results.forEach((r, i) => {
      assert.ok(r.ok, `student ${i + 1} within ${MEDIA_DEADLINE_MS} ms: ${JSON.stringify(r)}\n${server.logTail()}`);
    });

    for (const page of students) {
      // What a person sees: the teacher's tile plays (its clock advances), not just a first frame.
      await page.waitForFunction(() => document.querySelector('.tile.teacher video')?.currentTime > 1, null, { timeout: 10_000 });
      const simulcast = await page.evaluate(() => [...window.aulaRoom.participants.values()]
        .flatMap((p) => p.tracks)
        .find((t) => t.source === 'camera')?.simulcast);
      assert.equal(simulcast, true, 'the server announces the camera as simulcast');
    }
    const shot = join(process.env.AULA_SCREENSHOT_DIR ?? tmpdir(), 'aula-student.png');
    await students[0].screenshot({ path: shot });
    console.log(`# student page screenshot: ${shot}`);
  });

  it('a student may not publish', { timeout: 20_000 }, async () => {
    const outcome = await students[0].evaluate(() =>
      window.aulaRoom.publish({ microphone: true }).then(() => 'published', (err) => err.code));
    assert.equal(outcome, 'forbidden');
    // The refusal leaves the student's session and media intact.
    assert.ok((await waitForMedia(students[0], 5_000)).ok);
  });

  it('a student tells the server how large it shows the teacher\'s camera, and when not at all', { timeout: 20_000 }, async () => {
    const page = students[0];
    // The refusal of the step before is this student's, too.
    const errorsBefore = firstStudent.errors.length;
    const camera = await page.evaluate(() => [...window.aulaRoom.participants.values()]
      .flatMap((p) => p.tracks)
      .find((t) => t.source === 'camera').sid);
    const sizes = () => firstStudent.sent.filter((m) => m.type === 'track_settings' && m.track_sid === camera);
    // What the tile shows now, in device pixels: the last size sent must come to match it.
    const shown = () => page.evaluate(() => {
      const video = document.querySelector('.tile.teacher video');
      return { width: Math.round(video.clientWidth * devicePixelRatio), height: Math.round(video.clientHeight * devicePixelRatio) };
    });
    const settlesOn = async (expected) => {
      const last = await poll(async () => {
        const want = expected ?? await shown();
        const got = sizes().at(-1);
        return got?.width === want.width && got?.height === want.height ? got : null;
      }, 5_000);
      assert.ok(last, `expected ${JSON.stringify(expected ?? await shown())}, sent ${JSON.stringify(sizes())}`);
    };
    assert.equal(await page.evaluate(() => document.visibilityState), 'visible');
    const visible = await shown();
    assert.ok(visible.width > 0 && visible.height > 0, JSON.stringify(visible));
    await settlesOn(null);

    // Hidden (display:none): 0x0, which pauses it for this student; shown again: its size.
    await page.evaluate(() => { document.querySelector('.tile.teacher video').style.display = 'none'; });
    await settlesOn({ width: 0, height: 0 });
    await page.evaluate(() => { document.querySelector('.tile.teacher video').style.display = ''; });
    await settlesOn(null);

    // Only changes are sent, and the server accepted every one.
    sizes().slice(1).forEach((m, i) => {
      const before = sizes()[i];
      assert.ok(m.width !== before.width || m.height !== before.height, `sent twice: ${JSON.stringify(m)}`);
    });
    assert.deepEqual(firstStudent.errors.slice(errorsBefore), []);
    console.log(`# sizes sent for the teacher's camera: ${sizes().map((m) => `${m.width}x${m.height}`).join(', ')}`);
    // Shown again, the camera plays again (frames keep being decoded).
    const decoding = await page.evaluate(async () => {
      const decoded = async () => {
        let frames = 0;
        (await window.aulaRoom.subscriber.getStats()).forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
        });
        return frames;
      };
      const start = await decoded();
      const deadline = performance.now() + 5_000;
      while (performance.now() < deadline) {
        if (await decoded() >= start + 10) return true;
        await new Promise((ok) => setTimeout(ok, 100));
      }
      return false;
    });
    assert.ok(decoding, 'the teacher\'s camera is decoded again once shown');
  });

  // Three late joiners, one after another, and the median must fit the budget: one sample on
  // a shared 2-core machine measures the scheduler as much as the server (a single DTLS
  // retransmission costs a second), while a median of three still fails if joins are slow.
  it(`late students decode video within ${LATE_JOIN_BUDGET_MS} ms of joining (median of 3)`, { timeout: 60_000 }, async () => {
    const times = [];
    for (let i = 0; i < 3; i++) {
      const late = await joinClass(browser, server.url, { room, name: `Late Student ${i + 1}`, role: 'student' });
      const r = await waitForMedia(late, MEDIA_DEADLINE_MS);
      console.log(`# late join ${i + 1}: subscribed after ${r.subscribedAfterMs} ms, first frame decoded after ${r.decodedAfterMs} ms (from clicking Join)`);
      assert.ok(r.ok, JSON.stringify(r));
      times.push(r.decodedAfterMs);
      // The first stays for the steps below; the others leave so the class keeps its size.
      if (i === 0) students.push(late);
      else await late.close();
    }
    const median = [...times].sort((a, b) => a - b)[1];
    console.log(`# late join median: ${median} ms of ${JSON.stringify(times)}`);
    assert.ok(median < LATE_JOIN_BUDGET_MS, `median first frame after ${median} ms (${times})`);
  });

  it('a shared screen appears on every student\'s stage', { timeout: 30_000 }, async () => {
    await teacher.click('#screen');
    await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('screen_share')?.sid, null, { timeout: 15_000 });
    for (const page of students) {
      await page.waitForFunction(() => document.querySelector('#stage .tile.screen video')?.videoWidth > 0, null, { timeout: 15_000 });
    }
  });

  it('a stopped screen share leaves every student\'s stage', { timeout: 20_000 }, async () => {
    await teacher.click('#screen');
    await teacher.waitForFunction(() => document.querySelector('#screen').textContent === 'Share screen', null, { timeout: 5_000 });
    for (const page of students) {
      await page.waitForFunction(() => document.querySelector('#stage').hidden && !document.querySelector('.tile.screen'), null, { timeout: 10_000 });
    }
  });

  it('muting the microphone and camera shows on every student\'s teacher tile', { timeout: 20_000 }, async () => {
    const tileHas = (page, state) => page.waitForFunction(
      (s) => document.querySelector(`.tile.teacher`)?.classList.contains(s), state, { timeout: 5_000 });
    const tileLacks = (page, state) => page.waitForFunction(
      (s) => !document.querySelector(`.tile.teacher`)?.classList.contains(s), state, { timeout: 5_000 });
    await teacher.click('#mic');
    await teacher.click('#camera');
    for (const page of students) {
      await tileHas(page, 'mic-off');
      await tileHas(page, 'camera-off');
    }
    await teacher.click('#mic');
    await teacher.click('#camera');
    for (const page of students) {
      await tileLacks(page, 'mic-off');
      await tileLacks(page, 'camera-off');
    }
  });

  it('a bad token is refused and the page says so', { timeout: 15_000 }, async () => {
    const page = await browser.newPage();
    await page.goto(`${server.url}/class?token=not-a-token`);
    await page.waitForFunction(() => document.querySelector('#status').dataset.kind === 'error', null, { timeout: 10_000 });
    assert.match(await page.textContent('#status'), /unauthorized/);
    assert.ok(await page.isVisible('#join-form'), 'the join form is offered instead');
    await page.close();
  });

  it('the teacher leaving removes their tracks and tile for every student', { timeout: 30_000 }, async () => {
    // The students are still in the class; otherwise their ended sessions, not the teacher's
    // leaving, would be what removes the tracks and tiles checked below.
    for (const [i, page] of students.entries()) {
      assert.equal(await sessionEnded(page), null, `student ${i + 1}'s session ended before the teacher left`);
    }
    const teacherSid = await teacher.evaluate(() => window.aulaRoom.localParticipant.sid);
    // What the teacher still publishes, as the students' room state says (camera and microphone
    // unless an earlier step left more behind).
    const published = await students[0].evaluate(
      (sid) => window.aulaRoom.participants.get(sid).tracks.map((t) => t.source).sort(),
      teacherSid,
    );
    assert.ok(published.includes('camera') && published.includes('microphone'), String(published));
    for (const page of students) {
      await page.evaluate(() => {
        window.unsubscribed = [];
        window.aulaRoom.addEventListener('trackUnsubscribed', (e) => window.unsubscribed.push(e.detail.info.source));
      });
    }
    await teacher.click('#leave');
    await teacher.waitForSelector('#ended', { state: 'visible', timeout: 5_000 });

    for (const page of students) {
      await page.waitForFunction(
        ([sid, count]) => !document.querySelector(`[data-participant-sid="${sid}"]`) && window.unsubscribed.length >= count,
        [teacherSid, published.length],
        { timeout: 10_000 },
      );
      assert.deepEqual(await page.evaluate(() => window.unsubscribed.sort()), published);
      assert.equal(await page.locator('audio').count(), 0, 'no audio element left playing');
      assert.equal(await sessionEnded(page), null, 'the student stays in the class');
    }
  });

  it('no page threw an uncaught error', () => {
    for (const page of [teacher, ...students]) assert.deepEqual(page.aulaErrors, []);
  });
});

// Issue 11, item 9: a teacher whose tab closes (no `leave`) is kept for the server's reconnect
// window (15 s by default). Students must not sit in front of a frozen picture meanwhile: the
// teacher's tile says "reconnecting" within a few seconds, and once the window has passed the
// page says the teacher left. The same goes while the teacher's media stops with its WebSocket
// still up (a dead network can look connected to the server for a while).
describe('a teacher whose tab closes or whose media stops', { timeout: 90_000 }, () => {
  let server;
  let browser;

  before(async () => {
    ({ server, browser } = await startServerAndBrowser({ testImpairment: true }));
  });

  after(() => stopServerAndBrowser({ server, browser }));

  it('is shown reconnecting while none of its media arrives, and live again once it does', { timeout: 40_000 }, async () => {
    const room = `media-stops-${process.pid}`;
    const teacher = await joinClass(browser, server.url, { room, name: 'Teacher', role: 'teacher' });
    const student = await joinClass(browser, server.url, { room, name: 'Student', role: 'student' });
    const media = await waitForMedia(student, MEDIA_DEADLINE_MS);
    assert.ok(media.ok, `the student receives the teacher first: ${JSON.stringify(media)}`);
    const reconnecting = student.locator('.tile.teacher').getByText(/reconnecting/i);
    const identity = await teacher.evaluate(() => window.aulaRoom.localParticipant.identity);

    await impair(server.url, { room, identity, loss: 1 });
    const stoppedAt = Date.now();
    await reconnecting.waitFor({ timeout: 6_000 });
    const shownAfterMs = Date.now() - stoppedAt;
    await impair(server.url, { room, identity });
    await reconnecting.waitFor({ state: 'hidden', timeout: 10_000 });
    assert.ok(shownAfterMs <= 4_000, `"reconnecting" shown ${shownAfterMs} ms after the media stopped`);
    assert.equal(await sessionEnded(student), null, 'the student stays in the class');
    assert.deepEqual(student.aulaErrors, []);
    await teacher.close();
    await student.close();
  });

  it('is shown reconnecting to students at once, then as left after the reconnect window', { timeout: 50_000 }, async () => {
    const room = `tab-closed-${process.pid}`;
    const teacher = await joinClass(browser, server.url, { room, name: 'Teacher', role: 'teacher' });
    const student = await joinClass(browser, server.url, { room, name: 'Student', role: 'student' });
    const media = await waitForMedia(student, MEDIA_DEADLINE_MS);
    assert.ok(media.ok, `the student receives the teacher first: ${JSON.stringify(media)}`);
    const teacherTile = student.locator('.tile.teacher');
    assert.doesNotMatch(await teacherTile.innerText(), /reconnecting/i);

    await teacher.close();
    const closedAt = Date.now();
    await teacherTile.getByText(/reconnecting/i).waitFor({ timeout: 5_000 });
    const reconnectingAfterMs = Date.now() - closedAt;

    await student.locator('#status').getByText(/Teacher.*left/).waitFor({ timeout: 25_000 });
    assert.equal(await teacherTile.count(), 0, 'the teacher\'s tile is gone');
    assert.ok(reconnectingAfterMs <= 3_000, `"reconnecting" shown ${reconnectingAfterMs} ms after the tab closed`);
    assert.equal(await sessionEnded(student), null, 'the student stays in the class');
    assert.deepEqual(student.aulaErrors, []);
  });
});
