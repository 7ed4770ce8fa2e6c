// Video FEC side by side: two students watch the teacher over the same random loss, one
// whose browser negotiates ULPFEC and one whose browser leaves it out of its answers (as a
// browser without it would); both keep NACK. Prints what each saw, per run.
//
//   cd tests/browser && AULA_BIN=../../target/release/aula node fec-report.js [loss] [seconds] [runs]
//
// Defaults: 50 % loss, 20 s judged after 5 s to settle, one run (a fresh pair of students each).
import { joinClass, launchBrowser, startServer } from './harness.js';
import { impair, joinStudentOnTop, watch } from './weaknet.js';
const [loss, secs, runs] = [Number(process.argv[2] ?? 0.5), Number(process.argv[3] ?? 20), Number(process.argv[4] ?? 1)];
const server = await startServer({ testImpairment: true });
const browser = await launchBrowser();
try {
  const room = `fec-report-${process.pid}`;
  const teacher = await joinClass(browser, server.url, { room, name: 'Teacher', role: 'teacher' });
  await teacher.waitForFunction(() => window.aulaRoom.localTracks.get('camera')?.sid, null, { timeout: 15_000 });
  for (let r = 0; r < runs; r++) {
    const a = await joinStudentOnTop(browser, server.url, { room, name: 'A' });
    const b = await joinStudentOnTop(browser, server.url, { room, name: 'B', refuse: ['ulpfec'] });
    for (const s of [a, b]) await impair(server.url, { room, identity: s.identity, loss });
    await new Promise((ok) => setTimeout(ok, 5000));
    const [sa, sb] = await Promise.all([watch(a.page, secs * 1000), watch(b.page, secs * 1000)]);
    const f = (s) => `frozen ${(s.freezeShare * 100).toFixed(2)}% stall ${s.longestStallMs} fps ${s.fps.toFixed(1)} h ${s.heights.sort((x, y) => x - y)[s.heights.length >> 1]} kbps ${s.kbps.toFixed(0)} nacks ${s.nacks} conc ${(s.concealment * 100).toFixed(2)}%`;
    console.log(`loss ${loss}: with FEC    ${f(sa)}\n          without FEC ${f(sb)}`);
    await a.page.close(); await b.page.close();
  }
} finally { await browser.close(); await server.stop(); }
