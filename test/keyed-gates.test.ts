/**
 * `KeyedLimiter`'s `keyGates`: gates of each key (a shared semaphore and rate per key), made once
 * per key and kept when an idle key's limiter is forgotten, passed by every attempt of the key,
 * paused with the key, and checked like the other options; and `createFetch`'s `originGates`,
 * which it keeps. Time is a `ManualClock`.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { createExchange } from '../src/http/index.ts';
import {
  KeyedLimiter,
  Semaphore,
  type AcquireOptions,
  type Gate,
  type Permit,
} from '../src/index.ts';
import { deferred, flush, ManualClock } from './_helpers/clock.ts';
import { RecordingGate } from './_helpers/recording-gate.ts';

/** A rate-like gate that admits at once and records its pauses. */
class PausableGate implements Gate {
  readonly acquired: AcquireOptions[] = [];
  readonly paused: number[] = [];

  acquire(options: AcquireOptions = {}): Promise<Permit> {
    this.acquired.push(options);
    const weight = options.weight ?? 1;
    const signal = new AbortController().signal;
    return Promise.resolve({
      weight,
      signal,
      release: () => undefined,
      [Symbol.dispose]: () => undefined,
      [Symbol.asyncDispose]: () => Promise.resolve(),
    });
  }

  pauseFor(ms: number): void {
    this.paused.push(ms);
  }
}

describe('KeyedLimiter keyGates', () => {
  it("makes a key's gates once, even after its idle limiter is forgotten, and each key its own", async () => {
    const clock = new ManualClock();
    const made: string[] = [];
    const keyed = new KeyedLimiter<string>({
      idleTtl: 1000,
      clock,
      perKey: { concurrency: 5 },
      keyGates: (key) => {
        made.push(key);
        return { concurrency: new RecordingGate(1, clock) };
      },
    });
    await keyed.schedule('a', () => 'one');
    await keyed.schedule('b', () => 'one');
    await clock.advance(5000);
    await keyed.schedule('c', () => 'sweeps a and b');
    assert.equal(keyed.size, 1);
    await keyed.schedule('a', () => 'two');
    assert.deepEqual(made, ['a', 'b', 'c']);
  });

  it("keeps the key's concurrency by its gate in place of perKey.concurrency", async () => {
    const clock = new ManualClock();
    const gates = new Map<string, RecordingGate>();
    const keyed = new KeyedLimiter<string>({
      clock,
      perKey: { concurrency: 5 },
      keyGates: (key) => {
        const gate = new RecordingGate(1, clock);
        gates.set(key, gate);
        return { concurrency: gate };
      },
    });
    const first = deferred<string>();
    let running = 0;
    let peak = 0;
    const task = (result: Promise<string> | string) => async () => {
      running++;
      peak = Math.max(peak, running);
      try {
        return await result;
      } finally {
        running--;
      }
    };
    const a1 = keyed.schedule('a', task(first.promise));
    const a2 = keyed.schedule('a', task('a2'));
    const b1 = keyed.schedule('b', task('b1'));
    await flush();
    // a's second task waits for a's gate; b has a gate of its own.
    assert.equal(await b1, 'b1');
    assert.equal(peak, 2);
    first.resolve('a1');
    assert.deepEqual(await Promise.all([a1, a2]), ['a1', 'a2']);
    assert.equal(gates.get('a')!.acquired.length, 2);
    assert.equal(gates.get('b')!.acquired.length, 1);
  });

  it("passes the key's rate gates besides its rates, and pauses those that can pause with the key", async () => {
    const clock = new ManualClock();
    const rate = new PausableGate();
    const other = new PausableGate();
    const keyed = new KeyedLimiter<string>({
      clock,
      perKey: { rate: '100/s' },
      keyGates: () => ({ rate: [rate, other] }),
    });
    await keyed.schedule('a', () => undefined);
    assert.equal(rate.acquired.length, 1);
    assert.equal(other.acquired.length, 1);
    keyed.limiterFor('a').pauseFor(250);
    assert.deepEqual(rate.paused, [250]);
    assert.deepEqual(other.paused, [250]);
    // The key's own rate still holds (100/s: the next start 10 ms after the last).
    const started: number[] = [];
    const done = Promise.all(
      [1, 2].map(() => keyed.schedule('a', () => void started.push(clock.now()))),
    );
    await clock.advance(250);
    await flush();
    await clock.advance(20);
    await done;
    assert.equal(started.length, 2);
    assert.ok(started[0]! >= 250 && started[1]! - started[0]! >= 10, JSON.stringify(started));
  });

  it('checks keyGates and what it returns, naming them', async () => {
    assert.throws(
      () => new KeyedLimiter({ keyGates: 5 as never }),
      /^TypeError: Expected `keyGates` to be a function, got `5` \(number\)$/,
    );
    const cases: [unknown, RegExp][] = [
      [
        5,
        /^TypeError: Expected `keyGates` to return an object \(\{ concurrency\?, rate\? \}\), got `5` \(number\)$/,
      ],
      [{ concurrency: 3 }, /^TypeError: Expected `keyGates\(\)\.concurrency` to be a gate/],
      [{ rate: {} }, /^TypeError: Expected `keyGates\(\)\.rate` to be a gate/],
      [
        { rate: [new PausableGate(), '10/s'] },
        /^TypeError: Expected `keyGates\(\)\.rate\[1\]` to be a gate/,
      ],
    ];
    for (const [returned, error] of cases) {
      const keyed = new KeyedLimiter({ keyGates: () => returned as never });
      await assert.rejects(
        keyed.schedule('a', () => 'never'),
        (e: unknown) => {
          assert.match(String(e), error);
          return true;
        },
      );
    }
  });
});

describe("createFetch's originGates", () => {
  it("are made once per origin, also after the origin's idle limiter is forgotten", async () => {
    const server = createServer((_req, res) => res.end('ok'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const [a, b] = [`http://127.0.0.1:${port}`, `http://localhost:${port}`];
    const clock = new ManualClock();
    const made: string[] = [];
    const exchange = createExchange({
      clock,
      originGates: (origin) => {
        made.push(origin);
        return { concurrency: new Semaphore(1) };
      },
    });
    try {
      assert.equal((await exchange(`${a}/1`)).status, 200);
      // Past the idle limit (60 s): the next request, to another origin, forgets a's limiter.
      await clock.advance(120_000);
      assert.equal((await exchange(`${b}/1`)).status, 200);
      assert.equal(exchange.client.limiter.size, 1);
      assert.equal((await exchange(`${a}/2`)).status, 200);
      assert.deepEqual(made, [a, b]);
    } finally {
      await exchange.close();
      server.closeAllConnections();
      server.close();
    }
  });
});
