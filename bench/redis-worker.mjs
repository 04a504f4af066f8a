/**
 * One process of a fleet sharing a gate, for bench/cases/redis.mjs:
 * `node bench/redis-worker.mjs '<config json>'`. It opens its gate, prints `{"ready":true}`, reads
 * one line from stdin: the instant to begin at (on the shared clock of redis-impls.mjs), and
 * prints its result as one JSON line at the end.
 *
 * - `{ mode: 'contend', impl, url, key, limit, loops, holdMs, until, index, processes }`:
 *   `loops` loops acquire, hold `holdMs` and release until `until` ms after the start. Prints
 *   `{ events }`: per acquisition [asked, granted, released] on the shared clock.
 * - `{ mode: 'hold', impl, url, key, limit, leaseMs, expiration }`: takes one permit, prints
 *   `{ held: instant }` and holds it until killed.
 * - `{ mode: 'rate', impl, url, key, perSecond, loops, until, index, processes }`: `loops` loops
 *   wait for a start and record its instant until `until` ms after the start. Prints
 *   `{ starts }`.
 * `index` and `processes` (the worker's place in the fleet) are what the floors need.
 */
import { createInterface } from 'node:readline';
import { clock, rates, semaphores, sleep } from './redis-impls.mjs';

const config = JSON.parse(process.argv[2]);

function print(value) {
  return new Promise((resolve) => process.stdout.write(`${JSON.stringify(value)}\n`, resolve));
}

async function startInstant() {
  await print({ ready: true });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    return Number(line);
  }
  throw new Error('no start instant on stdin');
}

if (config.mode === 'contend') {
  const gate = await semaphores[config.impl](config.url, config.key, config.limit, {
    index: config.index,
    processes: config.processes,
  });
  // One round first: connections, scripts loaded, code warm (not for the ring, whose tokens
  // begin in one process).
  if (gate.stopAt === undefined) {
    await (
      await gate.acquire()
    )();
  }
  const start = await startInstant();
  await sleep(Math.max(0, start - clock()));
  const end = start + config.until;
  gate.stopAt?.(end);
  const events = [];
  const loop = async () => {
    while (clock() < end) {
      const asked = clock();
      const release = await gate.acquire().catch((error) => {
        if (gate.stopAt === undefined) throw error;
        return undefined; // the ring stopped: the run has ended
      });
      if (release === undefined) break;
      const granted = clock();
      await sleep(config.holdMs);
      const released = clock();
      await release();
      events.push([asked, granted, released]);
    }
  };
  await Promise.all(Array.from({ length: config.loops }, loop));
  await print({ events });
  await gate.close();
  process.exit(0);
} else if (config.mode === 'hold') {
  const gate = await semaphores[config.impl](config.url, config.key, config.limit, {
    leaseMs: config.leaseMs,
    expiration: config.expiration,
  });
  await gate.acquire();
  await print({ held: clock() });
  setInterval(() => undefined, 60_000); // held until killed
} else if (config.mode === 'rate') {
  const gate = await rates[config.impl](config.url, config.key, config.perSecond, {
    index: config.index,
    processes: config.processes,
  });
  const start = await startInstant();
  gate.begin?.(start);
  await sleep(Math.max(0, start - clock()));
  const end = start + config.until;
  const starts = [];
  const loop = async () => {
    while (clock() < end) {
      await gate.wait();
      starts.push(clock());
    }
  };
  await Promise.all(Array.from({ length: config.loops }, loop));
  await print({ starts });
  await gate.close();
  process.exit(0);
} else {
  throw new Error(`unknown mode ${config.mode}`);
}
