/**
 * `KeyedLimiter`: a limiter per key under a global concurrency, served round-robin between the
 * keys with ready work, and idle keys forgotten lazily. Time is a `ManualClock` and tasks are
 * deferred promises finished by hand, so the order of starts is measured, not guessed.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { inspect, promisify } from 'node:util';
import fc from 'fast-check';
import { ClosedError, KeyedLimiter } from '../src/index.ts';
import { deferred, flush, ManualClock } from './_helpers/clock.ts';

interface Run {
  key: string;
  name: string;
  /** The clock instant it started. */
  at: number;
  done: ReturnType<typeof deferred<string>>;
  finished: boolean;
}

/** Tasks that record each start and run until the test finishes them. */
class Runs {
  readonly runs: Run[] = [];
  readonly #clock: ManualClock;

  constructor(clock: ManualClock) {
    this.#clock = clock;
  }

  /** A task of `key` named `name` (the key itself by default). */
  task(key: string, name = key): () => Promise<string> {
    return () => {
      const done = deferred<string>();
      this.runs.push({ key, name, at: this.#clock.now(), done, finished: false });
      return done.promise;
    };
  }

  /** Names in the order they started. */
  get started(): string[] {
    return this.runs.map((run) => run.name);
  }

  /** Started and not finished, oldest first. */
  running(): Run[] {
    return this.runs.filter((run) => !run.finished);
  }

  finish(run: Run): void {
    run.finished = true;
    run.done.resolve(run.name);
  }

  /** Finishes the task called `name`. */
  finishNamed(name: string): void {
    const run = this.runs.find((r) => r.name === name);
    assert.ok(run, `${name} has not started`);
    this.finish(run);
  }

  /** Finishes the task that has run longest. */
  finishOldest(): void {
    const run = this.running()[0];
    assert.ok(run, 'nothing runs');
    this.finish(run);
  }

  /** Start instants of `key`'s tasks, in order. */
  startsOf(key: string): number[] {
    return this.runs.filter((run) => run.key === key).map((run) => run.at);
  }
}

/** Rounds away the hair (a billionth of the interval) a spaced rate adds to its spacing. */
const round = (ms: number) => Math.round(ms * 1000) / 1000;

describe('KeyedLimiter', () => {
  describe('per-key limits', () => {
    it('holds each key to its own concurrency and rate, whatever the other keys do', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ perKey: { concurrency: 1, rate: '10/s' }, clock });
      const runs = new Runs(clock);
      const all = Promise.all(
        ['a1', 'a2', 'a3', 'b1', 'b2'].map((name) =>
          keyed.schedule(name[0]!, runs.task(name[0]!, name)),
        ),
      );
      await flush();
      assert.deepEqual(runs.started, ['a1', 'b1']);
      await clock.advanceTo(50);
      runs.finishNamed('a1');
      await clock.advanceTo(99);
      assert.deepEqual(runs.started, ['a1', 'b1'], 'a is free at 50, its rate says 100');
      await clock.advanceTo(300);
      assert.deepEqual(runs.started, ['a1', 'b1', 'a2'], 'b1 still runs: b waits');
      runs.finishNamed('b1');
      runs.finishNamed('a2');
      await flush();
      assert.deepEqual(runs.started, ['a1', 'b1', 'a2', 'b2', 'a3']);
      assert.deepEqual(
        runs.runs.map((r) => [r.name, round(r.at)]),
        [
          ['a1', 0],
          ['b1', 0],
          ['a2', 100],
          ['b2', 300],
          ['a3', 300],
        ],
      );
      runs.finishNamed('b2');
      runs.finishNamed('a3');
      await all;
    });

    it('never runs more than the global concurrency across all keys', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 2, perKey: { concurrency: 2 }, clock });
      const runs = new Runs(clock);
      const keys = ['a', 'b', 'c', 'd', 'e'];
      const all = Promise.all(
        keys.flatMap((key) => [1, 2].map((i) => keyed.schedule(key, runs.task(key, `${key}${i}`)))),
      );
      let peak = 0;
      for (let i = 0; i < 10; i++) {
        await flush();
        const running = runs.running().length;
        peak = Math.max(peak, running);
        assert.ok(running <= 2, `${running} running at once`);
        assert.equal(keyed.activeCount, running);
        runs.finishOldest();
      }
      await all;
      assert.equal(peak, 2);
      assert.equal(runs.runs.length, 10);
      assert.equal(keyed.activeCount, 0);
    });

    it('takes per-key options from a function of the key, and rejects the tasks of a key whose options are bad', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({
        perKey: (key) =>
          key === 'slow' ? { rate: '1/s' } : key === 'bad' ? { concurrency: 0 } : {},
        clock,
      });
      const starts: [string, number][] = [];
      const all = Promise.all(
        ['slow', 'slow', 'fast', 'fast'].map((key) =>
          keyed.schedule(key, () => {
            starts.push([key, round(clock.now())]);
          }),
        ),
      );
      await clock.advanceTo(2000);
      await all;
      assert.deepEqual(starts, [
        ['slow', 0],
        ['fast', 0],
        ['fast', 0],
        ['slow', 1000],
      ]);
      assert.deepEqual(keyed.limiterFor('slow').rate, ['1/s']);
      assert.deepEqual(keyed.limiterFor('fast').rate, []);
      await assert.rejects(
        keyed.schedule('bad', () => 'never'),
        {
          name: 'RangeError',
          message: 'Expected `concurrency` to be an integer >= 1 or Infinity, got `0` (number)',
        },
      );
    });

    it('starts higher priorities first within a key', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ perKey: { concurrency: 1 }, clock });
      const runs = new Runs(clock);
      const all = Promise.all([
        keyed.schedule('a', runs.task('a', 'first')),
        keyed.schedule('a', runs.task('a', 'low'), { priority: -1 }),
        keyed.schedule('a', runs.task('a', 'mid')),
        keyed.schedule('a', runs.task('a', 'high'), { priority: 5 }),
      ]);
      for (let i = 0; i < 4; i++) {
        await flush();
        runs.finishOldest();
      }
      await all;
      assert.deepEqual(runs.started, ['first', 'high', 'mid', 'low']);
    });
  });

  describe('fairness', () => {
    it("starts the cold keys' tasks within one turn, not after a hot key's backlog of 100", async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 2, clock });
      const runs = new Runs(clock);
      const tasks: Promise<string>[] = [];
      for (let i = 0; i < 100; i++) tasks.push(keyed.schedule('hot', runs.task('hot')));
      for (const key of ['cold1', 'cold2', 'cold3']) {
        tasks.push(keyed.schedule(key, runs.task(key)), keyed.schedule(key, runs.task(key)));
      }
      assert.equal(keyed.pendingCount, 104);
      for (let i = 0; i < 11; i++) {
        await flush();
        runs.finishOldest();
      }
      await flush();
      assert.deepEqual(
        runs.started.slice(0, 13),
        // One start per key per turn, in the order the keys became ready.
        [
          ...['hot', 'hot'],
          ...['hot', 'cold1', 'cold2', 'cold3'],
          ...['hot', 'cold1', 'cold2', 'cold3'],
          ...['hot', 'hot', 'hot'],
        ],
      );
      while (runs.running().length > 0) {
        runs.finishOldest();
        await flush();
      }
      await Promise.all(tasks);
      assert.equal(runs.runs.length, 106);
    });

    it('starts the task of a key that becomes ready later within one turn', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 1, clock });
      const runs = new Runs(clock);
      const tasks: Promise<string>[] = [];
      for (let i = 0; i < 50; i++) tasks.push(keyed.schedule('hot', runs.task('hot')));
      for (let i = 0; i < 5; i++) {
        await flush();
        runs.finishOldest();
      }
      await flush();
      const readyAt = runs.runs.length;
      tasks.push(keyed.schedule('late', runs.task('late')));
      for (let i = 0; i < 2; i++) {
        await flush();
        runs.finishOldest();
      }
      await flush();
      assert.ok(
        runs.started.indexOf('late') >= 0 && runs.started.indexOf('late') - readyAt <= 1,
        `late started ${runs.started.indexOf('late') - readyAt} starts after it was ready`,
      );
      await keyed.close({ deadline: 0 });
      for (const run of runs.running()) runs.finish(run);
      await Promise.allSettled(tasks);
    });

    it('gives a free global slot to another key while a key waits on its own rate', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 1, perKey: { rate: '10/s' }, clock });
      const runs = new Runs(clock);
      const all = Promise.all([
        keyed.schedule('a', runs.task('a', 'a1')),
        keyed.schedule('a', runs.task('a', 'a2')),
        keyed.schedule('b', runs.task('b', 'b1')),
      ]);
      await clock.advanceTo(10);
      runs.finishNamed('a1');
      await flush();
      assert.deepEqual(runs.started, ['a1', 'b1'], 'a may not start before 100: b takes the slot');
      await clock.advanceTo(150);
      assert.deepEqual(runs.started, ['a1', 'b1'], 'a is due, but b holds the only slot');
      runs.finishNamed('b1');
      await flush();
      assert.deepEqual(
        runs.runs.map((r) => [r.name, round(r.at)]),
        [
          ['a1', 0],
          ['b1', 10],
          ['a2', 150],
        ],
      );
      runs.finishNamed('a2');
      await all;
    });

    it('passes over a key paused while it waits for a global slot, and gives the slot to the next', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 1, clock });
      const runs = new Runs(clock);
      const all = Promise.all([
        keyed.schedule('a', runs.task('a', 'a1')),
        keyed.schedule('b', runs.task('b', 'b1')),
        keyed.schedule('a', runs.task('a', 'a2')),
      ]);
      keyed.limiterFor('b').pause();
      runs.finishNamed('a1');
      await flush();
      assert.deepEqual(runs.started, ['a1', 'a2'], 'b is next in turn, but paused');
      keyed.limiterFor('b').resume();
      runs.finishNamed('a2');
      await flush();
      assert.deepEqual(runs.started, ['a1', 'a2', 'b1']);
      runs.finishNamed('b1');
      await all;
    });

    it('never starts a key sooner than its rate allows, however the global slots free up', async () => {
      const keys = ['a', 'b', 'c'];
      const perKey = 4;
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({
              advance: fc.integer({ min: 0, max: 150 }),
              finish: fc.array(fc.nat(), { maxLength: 3 }),
            }),
            { minLength: 1, maxLength: 25 },
          ),
          async (steps) => {
            const clock = new ManualClock();
            const keyed = new KeyedLimiter({ concurrency: 2, perKey: { rate: '10/s' }, clock });
            const runs = new Runs(clock);
            const tasks = keys.flatMap((key) =>
              Array.from({ length: perKey }, () => keyed.schedule(key, runs.task(key))),
            );
            const check = () => {
              const running = runs.running().length;
              assert.ok(running <= 2, `${running} running at once`);
              assert.equal(keyed.activeCount, running);
            };
            for (const step of steps) {
              for (const pick of step.finish) {
                const running = runs.running();
                if (running.length > 0) runs.finish(running[pick % running.length]!);
              }
              await flush();
              check();
              await clock.advance(step.advance);
              check();
            }
            // Whatever happened, the rest must still run: finish what runs and let time pass.
            for (let i = 0; i < 50 && runs.runs.length < tasks.length; i++) {
              for (const run of runs.running()) runs.finish(run);
              await flush();
              await clock.advance(100);
            }
            assert.equal(runs.runs.length, tasks.length, 'every task started');
            for (const run of runs.running()) runs.finish(run);
            await Promise.all(tasks);
            for (const key of keys) {
              const starts = runs.startsOf(key);
              for (let i = 1; i < starts.length; i++) {
                assert.ok(
                  starts[i]! - starts[i - 1]! >= 100,
                  `${key} started at ${starts[i - 1]} and again at ${starts[i]}`,
                );
              }
            }
            assert.equal(clock.pending, 0);
          },
        ),
        { numRuns: 60 },
      );
    });
  });

  describe('limiterFor()', () => {
    it("gives the same limiter for a key every time, the one that runs the key's tasks", async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 1, clock });
      const runs = new Runs(clock);
      const a = keyed.limiterFor('a');
      assert.equal(keyed.limiterFor('a'), a);
      assert.notEqual(keyed.limiterFor('b'), a);
      a.pause();
      const all = Promise.all([
        keyed.schedule('a', runs.task('a')),
        keyed.schedule('b', runs.task('b')),
      ]);
      await flush();
      assert.deepEqual(runs.started, ['b'], 'a paused key leaves the global slot to the others');
      assert.equal(a.stats().pending, 1);
      a.resume();
      runs.finishOldest();
      await flush();
      assert.deepEqual(runs.started, ['b', 'a']);
      assert.equal(a.activeCount, 1);
      runs.finishOldest();
      await all;
      assert.equal(keyed.size, 2);
    });
  });

  describe('idle keys', () => {
    it('forgets a key idle for idleTtl lazily, on a later schedule() call, with no timer', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ idleTtl: 1000, clock });
      await keyed.schedule('a', () => 'a');
      const first = keyed.limiterFor('a');
      await clock.advanceTo(999);
      await keyed.schedule('b', () => 'b');
      assert.equal(keyed.size, 2, 'a has been idle 999 ms: kept');
      assert.equal(keyed.limiterFor('a'), first);
      await clock.advanceTo(1998);
      assert.equal(keyed.size, 2, 'nothing happens without a call');
      assert.equal(clock.pending, 0);
      await keyed.schedule('b', () => 'b');
      assert.equal(keyed.size, 1, 'a is forgotten; b was idle 999 ms only');
      assert.notEqual(keyed.limiterFor('a'), first, 'a comes back as a new limiter');
    });

    it('keeps a key while its task runs, however long', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ idleTtl: 1000, clock });
      const runs = new Runs(clock);
      const long = keyed.schedule('a', runs.task('a'));
      const limiter = keyed.limiterFor('a');
      await clock.advanceTo(10_000);
      await keyed.schedule('b', () => 'b');
      assert.equal(keyed.size, 2);
      assert.equal(keyed.limiterFor('a'), limiter);
      runs.finishOldest();
      await long;
    });

    it('keeps a key whose rate could still hold a start back, so its next start still waits for it', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ idleTtl: 1000, perKey: { rate: '1/10s' }, clock });
      const starts: number[] = [];
      const start = () => {
        starts.push(round(clock.now()));
      };
      await keyed.schedule('a', start);
      const limiter = keyed.limiterFor('a');
      await clock.advanceTo(5000);
      const again = keyed.schedule('a', start);
      assert.equal(keyed.limiterFor('a'), limiter, 'idle for 5 s, but not forgotten');
      await clock.advanceTo(9999);
      assert.deepEqual(starts, [0]);
      await clock.advanceTo(10_001);
      await again;
      assert.deepEqual(starts, [0, 10_000]);
      await clock.advanceTo(21_000);
      await keyed.schedule('b', start);
      assert.equal(keyed.size, 1, 'once its rate history has lapsed, a is forgotten');
    });

    it('forgets idle keys however often they were busy before, and again once they come back', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ idleTtl: 1000, clock });
      for (const at of [0, 200]) {
        await clock.advanceTo(at);
        // Two tasks of a at once: the second comes while a is busy already.
        await Promise.all([
          keyed.schedule('a', () => Promise.resolve('a')),
          keyed.schedule('a', () => Promise.resolve('a')),
          keyed.schedule('b', () => Promise.resolve('b')),
        ]);
      }
      await clock.advanceTo(1200);
      await keyed.schedule('b', () => 'b');
      assert.equal(keyed.size, 1, 'a, idle since 200, is forgotten');
      await keyed.schedule('a', () => 'a');
      assert.equal(keyed.size, 2, 'a is back');
      await clock.advanceTo(2200);
      await keyed.schedule('c', () => 'c');
      assert.equal(keyed.size, 1, 'a and b, idle since 1200, are forgotten; c is new');
    });

    it('forgets a key whose only task was refused at once', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ idleTtl: 1000, clock });
      await assert.rejects(keyed.schedule('a', () => 'a', { signal: AbortSignal.abort() }));
      await clock.advanceTo(5000);
      await keyed.schedule('b', () => 'b');
      assert.equal(keyed.size, 1, 'a has held nothing for 5 s');
    });
  });

  describe('close()', () => {
    it('rejects the waiting tasks of every key with a ClosedError, lets running ones finish, and refuses new ones', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 3, perKey: { concurrency: 1 }, clock });
      const runs = new Runs(clock);
      const settled = Promise.allSettled(
        ['a1', 'a2', 'b1', 'b2'].map((name) => keyed.schedule(name[0]!, runs.task(name[0]!, name))),
      );
      await flush();
      let closed = false;
      const closing = keyed.close().then(() => {
        closed = true;
      });
      await assert.rejects(
        keyed.schedule('c', () => 'c'),
        {
          name: 'ClosedError',
          message: 'the keyed limiter is closed',
        },
      );
      runs.finishNamed('a1');
      await flush();
      assert.equal(closed, false, 'b1 still runs');
      runs.finishNamed('b1');
      await closing;
      const outcomes = await settled;
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ['fulfilled', 'rejected', 'fulfilled', 'rejected'],
      );
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') assert.ok(outcome.reason instanceof ClosedError);
      }
      assert.deepEqual(runs.started, ['a1', 'b1']);
    });

    it('with drain, lets the waiting tasks of every key run before it resolves', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 1, clock });
      const runs = new Runs(clock);
      const all = Promise.all(
        ['a1', 'b1', 'a2'].map((name) => keyed.schedule(name[0]!, runs.task(name[0]!, name))),
      );
      let closed = false;
      const closing = keyed.close({ drain: true }).then(() => {
        closed = true;
      });
      for (let i = 0; i < 3; i++) {
        await flush();
        assert.equal(closed, false);
        runs.finishOldest();
      }
      await closing;
      assert.deepEqual(await all, ['a1', 'b1', 'a2']);
    });
  });

  describe('onIdle()', () => {
    it('resolves only when no key has anything running or waiting', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 1, clock });
      const runs = new Runs(clock);
      await keyed.onIdle();
      const all = Promise.all([
        keyed.schedule('a', runs.task('a')),
        keyed.schedule('b', runs.task('b')),
      ]);
      let idle = false;
      const idling = keyed.onIdle().then(() => {
        idle = true;
      });
      await flush();
      runs.finishOldest();
      await flush();
      assert.equal(idle, false, 'b runs now');
      runs.finishOldest();
      await idling;
      await all;
    });
  });

  describe('the global concurrency', () => {
    it('starts waiting tasks at once, a key per turn, when it is raised', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 1, clock });
      const runs = new Runs(clock);
      const all = Promise.all(
        ['a1', 'a2', 'b1', 'b2', 'c1', 'c2'].map((name) =>
          keyed.schedule(name[0]!, runs.task(name[0]!, name)),
        ),
      );
      assert.deepEqual(runs.started, ['a1']);
      keyed.concurrency = 4;
      assert.equal(keyed.concurrency, 4);
      assert.deepEqual(runs.started, ['a1', 'a2', 'b1', 'c1']);
      assert.throws(
        () => (keyed.concurrency = 0),
        /^RangeError: Expected `concurrency` to be an integer >= 1 or Infinity, got `0` \(number\)$/,
      );
      keyed.concurrency = 1;
      for (let i = 0; i < 4; i++) runs.finishOldest();
      await flush();
      assert.deepEqual(runs.started, ['a1', 'a2', 'b1', 'c1', 'b2'], 'one at a time again');
      runs.finishOldest();
      await flush();
      runs.finishOldest();
      await all;
    });

    it('describes itself like KeyedLimiter(2/3 active, 3 pending, 2 keys)', async () => {
      const clock = new ManualClock();
      const keyed = new KeyedLimiter({ concurrency: 3, perKey: { concurrency: 1 }, clock });
      const runs = new Runs(clock);
      const all = Promise.all(
        ['a1', 'a2', 'b1', 'b2', 'b3'].map((name) =>
          keyed.schedule(name[0]!, runs.task(name[0]!, name)),
        ),
      );
      assert.equal(keyed.toString(), 'KeyedLimiter(2/3 active, 3 pending, 2 keys)');
      assert.equal(inspect(keyed), keyed.toString());
      assert.equal(
        String(new KeyedLimiter()),
        'KeyedLimiter(0/Infinity active, 0 pending, 0 keys)',
      );
      for (let i = 0; i < 5; i++) {
        await flush();
        runs.finishOldest();
      }
      await all;
    });
  });

  describe(
    'weighted tasks, in a child process (a spinning loop must not hang the suite)',
    { concurrency: true },
    () => {
      const root = fileURLToPath(new URL('..', import.meta.url));
      const source = pathToFileURL(join(root, 'src', 'index.ts')).href;
      const dir = mkdtempSync(join(tmpdir(), 'sluice-keyed-'));
      after(() => {
        rmSync(dir, { recursive: true, force: true });
      });

      /** Runs `code` as a module in a child process, killed after 6 s; resolves to its output. */
      async function run(name: string, code: string): Promise<string[]> {
        const file = join(dir, `${name}.mts`);
        writeFileSync(
          file,
          `import { KeyedLimiter } from '${source}';
const tick = () => new Promise((resolve) => setImmediate(resolve));
const held = () => { let release; const promise = new Promise((r) => (release = r)); return { promise, release }; };
${code}
export {};
`,
        );
        try {
          const { stdout } = await promisify(execFile)(
            process.execPath,
            ['--import', 'tsx', file],
            {
              cwd: root,
              timeout: 6000,
            },
          );
          return stdout.split('\n').filter((line) => line !== '');
        } catch (error) {
          const { killed, stderr } = error as { killed?: boolean; stderr?: string };
          assert.fail(killed === true ? 'the child process did not finish in 6 s' : String(stderr));
        }
      }

      it('starts a weighted task once enough global slots have freed, one at a time', async () => {
        const lines = await run(
          'weighted-partial-room',
          `const keyed = new KeyedLimiter({ concurrency: 3 });
const x1 = held(), x2 = held(), y = held();
void keyed.schedule('x', () => x1.promise);
void keyed.schedule('x', () => x2.promise);
void keyed.schedule('y', () => y.promise);
const heavy = keyed.schedule('b', () => 'heavy ran', { weight: 2 });
y.release();
await tick();
console.log(keyed.toString());
x1.release();
console.log(await heavy);
x2.release();
await keyed.onIdle();
console.log(keyed.toString());`,
        );
        assert.deepEqual(lines, [
          'KeyedLimiter(2/3 active, 1 pending, 3 keys)',
          'heavy ran',
          'KeyedLimiter(0/3 active, 0 pending, 3 keys)',
        ]);
      });

      it('rejects a waiting task heavier than a lowered global concurrency with a RangeError', async () => {
        const lines = await run(
          'weighted-lowered',
          `const keyed = new KeyedLimiter({ concurrency: 4 });
const a = held();
void keyed.schedule('a', () => a.promise, { weight: 4 });
const b = keyed.schedule('b', () => 'b ran', { weight: 3 });
keyed.concurrency = 2;
a.release();
console.log(await b.then((value) => value, (error) => error.name));`,
        );
        assert.deepEqual(lines, ['RangeError']);
      });

      it('starts a lighter task at once when the heavy one in front of it is rejected by a lowered global concurrency', async () => {
        const lines = await run(
          'weighted-lowered-behind',
          `const keyed = new KeyedLimiter({ concurrency: 4, perKey: { concurrency: 3 } });
const a = held();
void keyed.schedule('k', () => a.promise);
const heavy = keyed.schedule('k', () => 'heavy ran', { weight: 3 });
let lightRan = false;
const light = keyed.schedule('k', () => { lightRan = true; return 'light ran'; });
await tick();
console.log('light ran before:', lightRan);
keyed.concurrency = 2;
console.log(await heavy.then((value) => value, (error) => error.name));
await tick();
console.log('light ran while a runs:', lightRan);
a.release();
console.log(await light);`,
        );
        assert.deepEqual(lines, [
          'light ran before: false',
          'RangeError',
          'light ran while a runs: true',
          'light ran',
        ]);
      });
    },
  );
});
