// Weak-network report: what a student sees and hears at 0, 5, 10, 20, 30, 50, 70 and 80 %
// random loss on the link between the SFU and the student's browser, at 500, 300 and 200
// kbit/s caps, and with the 500 kbit/s cap arriving while the student climbs back after a loss
// phase (probing before each upgrade).
// Prints a Markdown table (the README's "Weak networks" section is this output).
//
//   cd tests/browser && node weak-network-report.js [seconds per row, default 20] [row labels...]
//
// Row labels (e.g. `10` for 10 % loss, `300k` for a cap, `climb` for the cap mid-climb) pick
// rows; default all.
//
// A real `aula` server (the release build by default, as the tests; AULA_BIN to pick another)
// with its test-only impairment layer, Debian's Chromium with the fake camera and microphone,
// one teacher and one student, everything on 127.0.0.1.

import { joinClass, launchBrowser, startServer } from './harness.js';
import { impair, joinStudentOnTop, median, watch } from './weaknet.js';

const seconds = Number(process.argv[2] ?? 20);
const picked = process.argv.slice(3);
const rows = [
  ...[0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8].map((loss) => ({ key: `${Math.round(loss * 100)}`, label: `${Math.round(loss * 100)} % loss`, loss })),
  ...[500, 300, 200].map((rateKbps) => ({ key: `${rateKbps}k`, label: `${rateKbps} kbit/s cap`, rateKbps })),
  { key: 'climb', label: '500 kbit/s cap during a climb', rateKbps: 500, climb: true },
].filter((row) => picked.length === 0 || picked.includes(row.key));

const server = await startServer({ testImpairment: true });
const browser = await launchBrowser();
try {
  const room = `report-${process.pid}`;
  const teacher = await joinClass(browser, server.url, { room, name: 'Teacher', role: 'teacher' });
  await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('camera')?.sid, null, { timeout: 15_000 });
  console.log(`| link (SFU → student) | video frozen | longest stall | fps | median height | video kbit/s | NACKs | audio concealed | audio kbit/s |`);
  console.log(`|---|---|---|---|---|---|---|---|---|`);
  for (const row of rows) {
    // Every row has a student of its own, who joins on a clean link and climbs to the top
    // layer first, so no row inherits the estimate or the backoff of the one before.
    const { page: student, identity, media } = await joinStudentOnTop(browser, server.url, { room, name: 'Student' });
    if (!media.ok) throw new Error('no media on a clean link');
    const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
    if (row.climb) {
      // 10 % loss takes the student down a layer; 2 s after it ends the student is probing
      // its way back up, and the cap comes then. The switch itself is judged.
      await impair(server.url, { room, identity, loss: 0.1 });
      await sleep(8_000);
      await impair(server.url, { room, identity });
      await sleep(2_000);
    }
    await impair(server.url, { room, identity, loss: row.loss, rateKbps: row.rateKbps });
    // Let the allocation settle on the new link before judging it.
    if (!row.climb) await sleep(5_000);
    const seen = await watch(student, seconds * 1000);
    const pct = (x) => `${(x * 100).toFixed(2)} %`;
    console.log(
      `| ${row.label} | ${pct(seen.freezeShare)} | ${seen.longestStallMs} ms | ${seen.fps.toFixed(1)} | ${median(seen.heights)}p | ${seen.kbps.toFixed(0)} | ${seen.nacks} | ${pct(seen.concealment)} | ${seen.audioKbps.toFixed(0)} |`,
    );
    if (process.env.REPORT_JSON) console.log(JSON.stringify({ ...seen, heights: undefined }));
    await student.close();
  }
} finally {
  await browser.close();
  await server.stop();
}
