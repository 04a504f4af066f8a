/**
 * The seed scenario: 100 jobs of 100 ms each through a limit of 10. Prints the results in input
 * order, the most jobs ever in flight, and the makespan against the ideal (100 / 10 × 100 ms).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { all } from '../src/index.ts';

const JOBS = 100;
const CONCURRENCY = 10;
const JOB_MS = 100;

let inFlight = 0;
let peak = 0;

async function job(n: number): Promise<string> {
  inFlight++;
  peak = Math.max(peak, inFlight);
  await sleep(JOB_MS);
  inFlight--;
  return `job ${String(n).padStart(2, '0')}`;
}

const started = performance.now();
const results = await all(
  Array.from({ length: JOBS }, (_, n) => () => job(n)),
  { concurrency: CONCURRENCY },
);
const makespan = performance.now() - started;
const ideal = (JOBS / CONCURRENCY) * JOB_MS;

console.log(
  `${JOBS} jobs of ${JOB_MS} ms through a limit of ${CONCURRENCY}; results in input order:`,
);
for (let row = 0; row < results.length; row += 10)
  console.log('  ' + results.slice(row, row + 10).join('  '));
console.log(`peak in flight: ${peak} (limit ${CONCURRENCY})`);
console.log(
  `makespan: ${(makespan / 1000).toFixed(3)} s, ideal ${(ideal / 1000).toFixed(3)} s (ratio ${(makespan / ideal).toFixed(3)})`,
);
