// Power-cut soak (prints figures; not a test): `node bench/power-cut.ts [cycles] [seed]`
// (npm run bench:power-cut). The harness of test/relay/power-cut.test.ts (test/fixtures/power-cut.ts)
// run for many cycles: the relay's spool on LazyFS, SMTP clients and a faulty sink, the relay cut at
// random moments under accept load, during deliveries and during recovery, every unsynced byte
// dropped at each cut. Prints cycles, acked, lost, duplicated and in-flight duplicates, and how many
// bytes were unsynced at the cuts. Exit status 1 when anything was lost, duplicated beyond what was
// in flight, or invented. Needs root, /dev/fuse and LazyFS's packages (fuse3 libfuse3-3 libspdlog1.10 libfmt9).
import { lazyFsUnavailable } from '../test/fixtures/lazyfs.ts';
import { describeFigures } from '../test/fixtures/power-cut-ledger.ts';
import { runPowerCuts } from '../test/fixtures/power-cut.ts';
import { temporaryDirectory } from '../test/fixtures/relay-process.ts';

const cycles = Number(process.argv[2] ?? 30);
const seed = Number(process.argv[3] ?? Math.floor(Math.random() * 2 ** 31));

const probe = await temporaryDirectory('vmta-lazyfs-probe-');
const unavailable = await lazyFsUnavailable(probe.path).finally(() => probe.remove());
if (unavailable) {
  console.error(`power-cut soak cannot run: ${unavailable}`);
  process.exit(2);
}
const started = performance.now();
console.log(`power-cut soak: ${cycles} cycles, seed ${seed}`);
const figures = await runPowerCuts({ cycles, seed, measureUnsynced: true, log: (line) => console.log(`  ${line}`) });
console.log(describeFigures(figures));
console.log(`took ${((performance.now() - started) / 1000).toFixed(0)} s`);
const failures = [...figures.lostAtCut, ...figures.resultsLostAtCut, ...figures.lost, ...figures.beyondInFlight, ...figures.invented];
for (const failure of failures.slice(0, 20)) console.log(`FAIL ${failure}`);
if (failures.length > 20) console.log(`... and ${failures.length - 20} more`);
process.exit(failures.length > 0 ? 1 : 0);
