/**
 * RedisSemaphore on real redis-server processes (test/_helpers/redis.ts): the gate contract; the
 * line, the fences, cancellation and the leases as Redis holds them; a model-based property test;
 * a fleet of child processes counted by an independent HTTP server on 127.0.0.1; a holder killed
 * (kill -9) or stopped (SIGSTOP); and Redis failing: restarted with its data lost, its script cache
 * flushed, its clients paused, the wake-up connection killed, the server gone.
 *
 * Waits on real time are bounded by what the design promises (a lease, a poll), with room for a
 * loaded machine; none asserts speed.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { createClient } from 'redis';
import { ClosedError, LeaseLostError, TimeoutError } from '../src/errors.ts';
import { Limiter } from '../src/limiter.ts';
import {
  fromNodeRedis,
  RedisSemaphore,
  type RedisClient,
  type RedisPermit,
  type RedisSemaphoreOptions,
} from '../src/redis/index.ts';
import { gateContract } from './contract/gate.ts';
import { state } from './_helpers/clock.ts';
import { needsRedis, RedisServer, TrackedClient } from './_helpers/redis.ts';

function nodeRedis(url: string) {
  const client = createClient({ url, maintNotifications: 'disabled' });
  client.on('error', () => undefined); // the tests kill, pause and restart servers
  return client;
}

type NodeRedis = ReturnType<typeof nodeRedis>;

async function connect(url: string): Promise<NodeRedis> {
  const client = nodeRedis(url);
  await client.connect();
  return client;
}

/** A client whose answers are held back while `holding` is set: a slow network's replies. */
class SlowAnswers implements RedisClient {
  holding: Promise<void> | undefined;
  readonly #inner: RedisClient;

  constructor(inner: RedisClient) {
    this.#inner = inner;
  }

  async run(...args: Parameters<RedisClient['run']>): ReturnType<RedisClient['run']> {
    const reply = await this.#inner.run(...args);
    await this.holding;
    return reply;
  }

  subscribe(...args: Parameters<RedisClient['subscribe']>): ReturnType<RedisClient['subscribe']> {
    return this.#inner.subscribe(...args);
  }
}

/** A reply's pairs, from a flat RESP2 array, nested RESP3 pairs, or a RESP3 map. */
function pairs(reply: unknown): [string, string][] {
  if (!Array.isArray(reply)) {
    return Object.entries(reply as Record<string, unknown>).map(([k, v]) => [k, String(v)]);
  }
  const flat = (reply as unknown[]).flat();
  const out: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([String(flat[i]), String(flat[i + 1])]);
  return out;
}

function command(redis: NodeRedis, ...args: string[]): Promise<unknown> {
  return redis.sendCommand<unknown>(args);
}

/** What Redis holds for the semaphore `name`, after checking that its counts agree. */
async function stateOf(redis: NodeRedis, name: string) {
  const key = (part: string): string => `sluice:{${name}}:${part}`;
  const [held, expiries, queue, ids] = (await Promise.all([
    command(redis, 'HGET', key('ids'), 'held'),
    command(redis, 'ZRANGE', key('expiry'), '0', '-1'),
    command(redis, 'ZRANGE', key('queue'), '0', '-1'),
    command(redis, 'HGETALL', key('ids')),
  ])) as [string | null, string[], string[], unknown];
  // Lease ids are "<process>:<n>"; the other entries are processes, counters, and the lists of
  // grants not acknowledged yet ("+<process>").
  const leases = expiries.filter((id) => id.includes(':'));
  const all = pairs(ids);
  const entries = new Map(all.filter(([id]) => id.includes(':')));
  const granted = all
    .filter(([field]) => field.startsWith('+'))
    .reduce((sum, [, list]) => sum + list.trim().split(' ').length, 0);
  const weightOf = (id: string): number => Number(entries.get(id)?.split(' ')[0] ?? NaN);
  const leaseWeight = leases.reduce((sum, id) => sum + weightOf(id), 0);
  const state = {
    held: Number(held ?? 0),
    leases: leases.length,
    queue: queue.length,
    ids: entries.size,
    granted,
  };
  assert.equal(state.held, leaseWeight, `held agrees with the leases: ${JSON.stringify(state)}`);
  assert.ok(state.held >= 0, `no negative count: ${JSON.stringify(state)}`);
  assert.equal(state.ids, state.leases + state.queue, `every id is held or in line`);
  return state;
}

/** How many requests are in the line of the semaphore `name` (cheaper than `stateOf`). */
async function inLine(redis: NodeRedis, name: string): Promise<number> {
  return Number(await command(redis, 'ZCARD', `sluice:{${name}}:queue`));
}

/** Polls `probe` until it returns true, failing after `ms`. */
async function waitFor(what: string, probe: () => Promise<boolean> | boolean, ms = 10_000) {
  const deadline = performance.now() + ms;
  while (!(await probe())) {
    if (performance.now() > deadline) assert.fail(`${what}: not within ${ms}ms`);
    await sleep(5);
  }
}

/** Resolves with `promise`, or fails the test after `ms`. */
async function within<T>(what: string, promise: Promise<T>, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: not within ${ms}ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once the permit's signal has aborted (at once if it has). */
function lost(permit: RedisPermit): Promise<unknown> {
  return permit.signal.aborted ? Promise.resolve() : once(permit.signal, 'abort');
}

/** A RedisClient around `inner` whose calls go through `run` (to lose, repeat or delay them). */
function intercept(
  inner: () => RedisClient,
  run: (
    next: RedisClient['run'],
    ...args: Parameters<RedisClient['run']>
  ) => ReturnType<RedisClient['run']>,
  subscribe?: RedisClient['subscribe'],
): RedisClient {
  return {
    run: (script, keys, args) => run((s, k, a) => inner().run(s, k, a), script, keys, args),
    subscribe: subscribe ?? ((channel, listener) => inner().subscribe(channel, listener)),
  };
}

// ---------------------------------------------------------------------------------------------

describe('RedisSemaphore on a real Redis', needsRedis, () => {
  let server: RedisServer;
  let redis: NodeRedis;
  let adapter: RedisClient;
  const made: RedisSemaphore[] = [];
  let names = 0;
  const tracked = new TrackedClient(() => adapter);

  before(async () => {
    server = await RedisServer.start();
    redis = await connect(server.url);
    adapter = fromNodeRedis(redis);
  });
  after(async () => {
    await Promise.all(made.map((sem) => sem.close()));
    await tracked.settled();
    await redis.close();
    await server.stop();
  });

  /** A semaphore on the shared server, closed after the suite. */
  const make = (
    name: string,
    options: RedisSemaphoreOptions,
    client: RedisClient = tracked,
  ): RedisSemaphore => {
    const sem = new RedisSemaphore(client, name, options);
    made.push(sem);
    return sem;
  };

  gateContract('RedisSemaphore', (capacity, clock) => {
    const sem = make(`contract-${++names}`, { permits: capacity, clock });
    return {
      gate: sem,
      held: () => sem.held,
      waiting: () => sem.waiting,
      settle: () => tracked.settled(),
    };
  });

  it('checks its arguments, naming the bad one', () => {
    const ok = { permits: 1 };
    assert.throws(
      () => new RedisSemaphore({}, 'x', ok),
      /^TypeError: Expected `redis` to be a connected Redis client/,
    );
    assert.throws(() => new RedisSemaphore(adapter, '', ok), /^RangeError: Expected `name`/);
    assert.throws(() => new RedisSemaphore(adapter, 'a}b', ok), /^RangeError: Expected `name`/);
    assert.throws(
      () => new RedisSemaphore(adapter, 'x', { permits: 0 }),
      /^RangeError: Expected `permits` to be an integer >= 1, got `0` \(number\)/,
    );
    assert.throws(
      () => new RedisSemaphore(adapter, 'x', { permits: 1, leaseMs: '5s' as never }),
      /^TypeError: Expected `leaseMs` to be an integer >= 10, got `"5s"` \(string\)/,
    );
    assert.throws(
      () => new RedisSemaphore(adapter, 'x', { permits: 1, pollMs: 0 }),
      /^RangeError: Expected `pollMs`/,
    );
    assert.throws(
      () => new RedisSemaphore(adapter, 'x', { permits: 1, commandTimeoutMs: -1 }),
      /^RangeError: Expected `commandTimeoutMs`/,
    );
    assert.throws(() => new RedisSemaphore(adapter, 'x', null as never), /^TypeError/);
  });

  it('names `options.permits` when the options are left out', () => {
    assert.throws(
      () => new RedisSemaphore(adapter, 'x', undefined as never),
      /^TypeError: Expected `options.permits` to be an integer >= 1, got `undefined` \(undefined\)/,
    );
    assert.throws(
      () => new RedisSemaphore(adapter, 'x', {} as RedisSemaphoreOptions),
      /^TypeError: Expected `permits` to be an integer >= 1, got `undefined` \(undefined\)/,
    );
  });

  it('refuses a commandTimeoutMs above the renewal margin, two thirds of leaseMs, and keeps its default within it', () => {
    assert.throws(
      () =>
        new RedisSemaphore(adapter, 'x', { permits: 1, leaseMs: 1_000, commandTimeoutMs: 2_000 }),
      /^RangeError: Expected `commandTimeoutMs` to be at most two thirds of `leaseMs` \(666\), got `2000` \(number\)/,
    );
    assert.throws(
      () => new RedisSemaphore(adapter, 'x', { permits: 1, leaseMs: 900, commandTimeoutMs: 900 }),
      /^RangeError: Expected `commandTimeoutMs`/,
    );
    // A grant answered within the call's time has a third of its lease left at least.
    assert.equal(
      new RedisSemaphore(adapter, 'x', { permits: 1, leaseMs: 1_000 }).commandTimeoutMs,
      666,
    );
    assert.equal(new RedisSemaphore(adapter, 'x', { permits: 1 }).commandTimeoutMs, 2_000);
    assert.equal(
      new RedisSemaphore(adapter, 'x', { permits: 1, leaseMs: 900, commandTimeoutMs: 600 })
        .commandTimeoutMs,
      600,
    );
  });

  it('refuses a process that gives another number of permits for the same name', async () => {
    const five = make('sizes', { permits: 5 });
    const six = make('sizes', { permits: 6 });
    const permit = await five.acquire();
    await assert.rejects(six.acquire(), /this name has 5 permits, and this process asked for 6/);
    permit.release();
  });

  it('serves one line across processes: by arrival, a heavy head blocking lighter requests', async () => {
    const a = make('line', { permits: 4 });
    const b = make('line', { permits: 4 });
    const first = await a.acquire({ weight: 2 });
    const inLine = async (n: number): Promise<void> => {
      await waitFor(`${n} in line`, async () => (await stateOf(redis, 'line')).queue === n);
    };
    const heavy = b.acquire({ weight: 3 });
    await inLine(1);
    const light = a.acquire({ weight: 1 });
    await inLine(2);
    const last = b.acquire({ weight: 1 });
    await inLine(3);
    assert.equal(a.held, 2, 'the light request would fit, but waits behind the heavy one');
    first.release();
    const [h, l] = await within('the heavy and the light request', Promise.all([heavy, light]));
    assert.ok(first.fence < h.fence && h.fence < l.fence, 'granted in the order they asked');
    assert.equal((await stateOf(redis, 'line')).held, 4);
    h.release();
    const z = await within('the last request', last);
    assert.ok(l.fence < z.fence);
    l.release();
    z.release();
    await waitFor('all given back', async () => (await stateOf(redis, 'line')).held === 0);
  });

  it('wakes a waiter in another process at once over pub/sub, and by its timed check without', async () => {
    const holder = make('wake', { permits: 1 });
    // Its timed check (and its renewal) is 20 s away: only the announcement (or the check it makes
    // once it listens, for a grant made before) can wake it in time.
    const pushed = make('wake', { permits: 1, pollMs: 60_000, leaseMs: 60_000 });
    // Its announcements never arrive: only its timed check can find the grant.
    const deaf = intercept(
      () => adapter,
      (next, ...args) => next(...args),
      () => Promise.resolve({ close: () => Promise.resolve() }),
    );
    const polled = make('wake', { permits: 1, pollMs: 50 }, deaf);

    const first = await holder.acquire();
    const woken = pushed.acquire();
    await waitFor('in line', async () => (await stateOf(redis, 'wake')).queue === 1);
    first.release();
    const second = await within('the announced grant', woken, 10_000);

    const checked = polled.acquire();
    await waitFor('in line', async () => (await stateOf(redis, 'wake')).queue === 1);
    second.release();
    (await within('the grant found by the timed check', checked, 10_000)).release();
  });

  it('wakes only the process a release granted to, not every process in line', async () => {
    // Each waiter's announcements are counted as they reach it (on its own subscription).
    const heard = [0, 0];
    const subscribed = [false, false];
    const listening = (i: number): RedisClient =>
      intercept(
        () => adapter,
        (next, ...args) => next(...args),
        async (channel, listener, signal) => {
          const subscription = await adapter.subscribe(
            channel,
            (message) => {
              heard[i]!++;
              listener(message);
            },
            signal,
          );
          subscribed[i] = true;
          return subscription;
        },
      );
    const slow = { permits: 1, pollMs: 60_000, leaseMs: 60_000 };
    const holder = make('wake-one', { permits: 1 });
    const [a, b] = [make('wake-one', slow, listening(0)), make('wake-one', slow, listening(1))];
    const held = await holder.acquire();
    const first = a.acquire();
    await waitFor('a in line', async () => (await stateOf(redis, 'wake-one')).queue === 1);
    const second = b.acquire();
    await waitFor('b in line', async () => (await stateOf(redis, 'wake-one')).queue === 2);
    await waitFor('both listening', () => subscribed.every(Boolean));
    held.release();
    const granted = await within('the first in line', first, 10_000);
    await sleep(100); // an announcement to b would have come by now
    assert.deepEqual(heard, [1, 0]);
    granted.release();
    (await within('the second in line', second, 10_000)).release();
    assert.deepEqual(heard, [1, 1]);
  });

  it('counts an acquire retried after a lost reply once, with the same fence', async () => {
    // Each call is run, its reply lost, and run again: what a client that re-sends does.
    const twice = intercept(
      () => adapter,
      async (next, ...args) => {
        await next(...args);
        return next(...args);
      },
    );
    const sem = make('retried', { permits: 3 }, twice);
    const permit = await sem.acquire({ weight: 2 });
    assert.deepEqual(await stateOf(redis, 'retried'), {
      held: 2,
      leases: 1,
      queue: 0,
      ids: 1,
      granted: 0,
    });
    const other = make('retried', { permits: 3 });
    const full = await other.acquire();
    const waiting = sem.acquire({ weight: 1 });
    await waitFor('in line once', async () => (await stateOf(redis, 'retried')).queue === 1);
    assert.equal((await stateOf(redis, 'retried')).ids, 3);
    full.release();
    const next = await within('the retried request', waiting);
    assert.ok(next.fence > full.fence);
    permit.release();
    next.release();
    await waitFor('all given back', async () => (await stateOf(redis, 'retried')).held === 0);
  });

  it('leaves Redis as if never asked when an acquire is aborted, times out, or was granted meanwhile', async () => {
    const sem = make('cancel', { permits: 1 });
    const other = make('cancel', { permits: 1 });
    const holder = await other.acquire();
    const before = await stateOf(redis, 'cancel');

    const controller = new AbortController();
    const aborted = sem.acquire({ signal: controller.signal });
    await waitFor('in line', async () => (await stateOf(redis, 'cancel')).queue === 1);
    const reason = new Error('changed my mind');
    controller.abort(reason);
    await assert.rejects(aborted, (error) => error === reason);
    assert.deepEqual(await stateOf(redis, 'cancel'), before);

    await assert.rejects(sem.acquire({ timeout: 50 }), TimeoutError);
    assert.deepEqual(await stateOf(redis, 'cancel'), before);
    assert.equal(sem.waiting, 0);

    // Granted by the release in Redis just before the withdrawal arrives: given back.
    const late = new AbortController();
    const granted = sem.acquire({ signal: late.signal });
    await waitFor('in line', async () => (await stateOf(redis, 'cancel')).queue === 1);
    holder.release();
    late.abort(reason);
    await assert.rejects(granted, (error) => error === reason);
    assert.deepEqual(await stateOf(redis, 'cancel'), {
      held: 0,
      leases: 0,
      queue: 0,
      ids: 0,
      granted: 0,
    });
    assert.equal(sem.held, 0);
  });

  it('takes with tryAcquireAsync only what is free with nobody in line', async () => {
    const a = make('try', { permits: 2 });
    const b = make('try', { permits: 2 });
    const one = await a.tryAcquireAsync();
    assert.ok(one);
    const waiting = a.acquire({ weight: 2 });
    await waitFor('in line', async () => (await stateOf(redis, 'try')).queue === 1);
    assert.equal(await b.tryAcquireAsync(1), undefined, 'one is free, but someone waits');
    await assert.rejects(b.acquire({ timeout: 0 }), /timed out after 0ms/);
    one.release();
    (await waiting).release();
    const two = await b.tryAcquireAsync(2);
    assert.equal(two?.weight, 2);
    two.release();
  });

  // `await using` on the permit of a limiter that keeps its concurrency with the semaphore waits,
  // as on the semaphore's own permit, for Redis to confirm the release: with the answers held
  // back, the release is done in Redis and the block has not ended; it ends once they come.
  it("`await using` on a Limiter's permit waits for Redis to confirm the release, as on its own", async () => {
    const client = new SlowAnswers(tracked);
    const sem = make('group-dispose', { permits: 1 }, client);
    const limiter = new Limiter({ concurrency: sem });
    for (const gate of [sem, limiter]) {
      const permit = await gate.acquire();
      assert.equal((await stateOf(redis, 'group-dispose')).leases, 1);
      let answer!: () => void;
      client.holding = new Promise<void>((resolve) => (answer = resolve));
      const block = (async () => {
        await using held = permit;
        assert.equal(held.weight, 1);
      })();
      await waitFor('released in Redis', async () => {
        return (await stateOf(redis, 'group-dispose')).leases === 0;
      });
      assert.equal(await state(block), 'pending', `${String(gate)}: the confirmation awaited`);
      client.holding = undefined;
      answer();
      await block;
    }
  });

  it('closes: rejects the requests in line and later ones, and renews held permits until released', async () => {
    const sem = make('close', { permits: 1, leaseMs: 150 });
    const held = await sem.acquire();
    const waiting = sem.acquire();
    await waitFor('in line', async () => (await stateOf(redis, 'close')).queue === 1);
    const rejected = assert.rejects(waiting, ClosedError);
    await sem.close();
    await rejected;
    await assert.rejects(sem.acquire(), ClosedError);
    assert.equal((await stateOf(redis, 'close')).queue, 0, 'withdrawn from Redis');
    await sleep(500); // over three leases: renewed all along
    assert.equal(held.signal.aborted, false);
    assert.equal((await stateOf(redis, 'close')).leases, 1);
    await held[Symbol.asyncDispose]();
    assert.deepEqual(await stateOf(redis, 'close'), {
      held: 0,
      leases: 0,
      queue: 0,
      ids: 0,
      granted: 0,
    });
  });

  it("renews each lease on its own: a short lease does not shorten a long one's", async () => {
    const short = make('leases', { permits: 2, leaseMs: 150 });
    const long = make('leases', { permits: 2, leaseMs: 5_000 });
    const a = await short.acquire();
    const b = await long.acquire();
    await sleep(600); // the short lease renewed a dozen times
    // When each key expires (PEXPIRETIME, Unix ms), not its TTL: read a millisecond after TIME,
    // a TTL would be a millisecond short of the same expiry.
    const [time, scores, keyExpiries] = await Promise.all([
      command(redis, 'TIME'),
      command(redis, 'ZRANGE', 'sluice:{leases}:expiry', '0', '-1', 'WITHSCORES'),
      Promise.all(
        ['expiry', 'ids'].map((part) => command(redis, 'PEXPIRETIME', `sluice:{leases}:${part}`)),
      ),
    ]);
    const now = Number((time as string[])[0]) * 1000 + Number((time as string[])[1]) / 1000;
    const expiries = pairs(scores)
      .filter(([id]) => id.includes(':'))
      .map(([, score]) => Number(score));
    assert.equal(expiries.length, 2);
    const longest = Math.max(...expiries) - now;
    assert.ok(longest > 3_000, `the long lease has ${longest}ms left`);
    for (const at of keyExpiries as number[]) {
      assert.ok(at >= Math.max(...expiries), `a key expires ${at - now}ms from now`);
    }
    assert.equal(a.signal.aborted || b.signal.aborted, false);
    a.release();
    b.release();
  });

  it('does not lose or bring back a lease released while its renewal is on its way', async () => {
    // Renewals are held back a random while, so that a release sent after one reaches Redis
    // first about half of the time.
    const slow = intercept(
      () => adapter,
      async (next, script, keys, args) => {
        if (args[0] === 'renew') await sleep(Math.random() * 40);
        return next(script, keys, args);
      },
    );
    const sem = make('race', { permits: 2, leaseMs: 150 }, slow);
    let lost = 0;
    sem.on('leaseLost', () => lost++);
    for (let i = 0; i < 30; i++) {
      const permit = await sem.acquire();
      await sleep(Math.random() * 60);
      permit.release();
    }
    await sleep(120);
    assert.equal(lost, 0);
    assert.deepEqual(await stateOf(redis, 'race'), {
      held: 0,
      leases: 0,
      queue: 0,
      ids: 0,
      granted: 0,
    });
  });

  it('takes back a short lease on time, after long ones were granted and given back', async () => {
    const long = make('short-after-long', { permits: 2, leaseMs: 60_000 });
    (await long.acquire({ weight: 2 })).release();
    // A process that takes a permit and then goes silent (its calls never arrive).
    let alive = true;
    const silent = intercept(
      () => adapter,
      (next, ...args) => (alive ? next(...args) : new Promise<never>(() => undefined)),
    );
    const short = make('short-after-long', { permits: 2, leaseMs: 200 }, silent);
    await short.acquire({ weight: 2 });
    alive = false;
    const waited = performance.now();
    const permit = await within('the short lease back', long.acquire({ weight: 2 }), 10_000);
    const after = performance.now() - waited;
    assert.ok(after < 5_000, `back after ${Math.round(after)}ms, not a long lease later`);
    permit.release();
  });

  it("asks for a silent holder's permits when its lease ends, not at its next timed check", async () => {
    // Its timed check is 20 s away: only the lease's end, as Redis said, can make it ask in time.
    const waiter = make('lease-end', { permits: 1, pollMs: 60_000, leaseMs: 60_000 });
    let alive = true;
    const silent = intercept(
      () => adapter,
      (next, ...args) => (alive ? next(...args) : new Promise<never>(() => undefined)),
    );
    const holder = make('lease-end', { permits: 1, leaseMs: 1_000 }, silent);
    await holder.acquire();
    alive = false;
    const waiting = waiter.acquire();
    await waitFor('in line', async () => (await stateOf(redis, 'lease-end')).queue === 1);
    const permit = await within('the permit back', waiting, 10_000);
    permit.release();
  });

  it('keeps two Limiters within the concurrency they share, and aborts a task whose lease is lost', async () => {
    const limiters = [0, 1].map(
      () => new Limiter({ concurrency: make('limiters', { permits: 3 }) }),
    );
    let inside = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        limiters[i % 2]!.schedule(async () => {
          inside++;
          peak = Math.max(peak, inside);
          await sleep(3);
          inside--;
        }),
      ),
    );
    assert.equal(peak, 3);
    await Promise.all(limiters.map((limiter) => limiter.close()));

    // A process whose calls stop arriving once its task has started: its lease runs out.
    let alive = true;
    const silent = intercept(
      () => adapter,
      (next, ...args) => (alive ? next(...args) : new Promise<never>(() => undefined)),
    );
    const limiter = new Limiter({
      concurrency: make('limiter-lost', { permits: 1, leaseMs: 150 }, silent),
    });
    const task = limiter.schedule(
      ({ signal }) =>
        new Promise((_, reject) => {
          alive = false;
          signal.addEventListener('abort', () => {
            reject(signal.reason as Error);
          });
        }),
    );
    await assert.rejects(within('the task aborted', task, 5_000), LeaseLostError);
    await limiter.close();
  });

  it('serves 10 000 requests in line from one process in the order they asked', async () => {
    const sem = make('ten-thousand', { permits: 10 });
    const holder = await sem.acquire({ weight: 10 });
    const order: number[] = [];
    const all = Array.from({ length: 10_000 }, (_, i) =>
      sem.acquire().then((permit) => {
        order.push(i);
        permit.release();
      }),
    );
    await waitFor('all in line', async () => (await inLine(redis, 'ten-thousand')) === 10_000);
    holder.release();
    await within('all served', Promise.all(all), 30_000);
    assert.deepEqual(
      order,
      Array.from({ length: 10_000 }, (_, i) => i),
    );
    await waitFor('all given back', async () => (await stateOf(redis, 'ten-thousand')).ids === 0);
  });

  it('keeps 100 000 requests in line, grants 1 000 at once, and withdraws the rest on close()', async () => {
    const sem = make('hundred-thousand', { permits: 1_000 });
    const holder = await sem.acquire({ weight: 1_000 });
    const requests = Array.from({ length: 100_000 }, () => sem.acquire());
    const granted: RedisPermit[] = [];
    for (const request of requests) {
      request.then(
        (permit) => granted.push(permit),
        () => undefined,
      );
    }
    await waitFor(
      'all in line',
      async () => (await inLine(redis, 'hundred-thousand')) === 100_000,
      30_000,
    );
    holder.release();
    await waitFor('1 000 granted at once', () => granted.length === 1_000);
    await sem.close();
    const state = await stateOf(redis, 'hundred-thousand');
    assert.deepEqual([state.held, state.queue], [1_000, 0]);
    for (const permit of granted) permit.release();
    await waitFor(
      'all given back',
      async () => (await stateOf(redis, 'hundred-thousand')).ids === 0,
    );
  });

  it('keeps the held weight within the permits and serves in order, against a model', async () => {
    const commandArb = fc.oneof(
      fc.record({
        kind: fc.constant('acquire' as const),
        by: fc.integer({ min: 0, max: 1 }),
        weight: fc.integer({ min: 1, max: 3 }),
      }),
      fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }),
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 3, max: 5 }),
        fc.array(commandArb, { maxLength: 20 }),
        async (permits, commands) => {
          const name = `model-${++run}`;
          const sems = [make(name, { permits }), make(name, { permits })];
          interface Request {
            n: number;
            weight: number;
            promise: Promise<RedisPermit>;
            controller: AbortController;
          }
          // The model: a FIFO line, served from the head while the head's weight fits.
          const line: Request[] = [];
          const holding: Request[] = [];
          const grantOrder: number[] = [];
          let held = 0;
          const serve = (): void => {
            while (line.length > 0 && held + line[0]!.weight <= permits) {
              const request = line.shift()!;
              held += request.weight;
              holding.push(request);
              grantOrder.push(request.n);
            }
          };
          const fences = new Map<number, number>();
          for (const [n, c] of commands.entries()) {
            if (c.kind === 'acquire') {
              const controller = new AbortController();
              const promise = sems[c.by]!.acquire({ weight: c.weight, signal: controller.signal });
              promise.catch(() => undefined);
              line.push({ n, weight: c.weight, promise, controller });
              serve();
            } else if (c.kind === 'release' && holding.length > 0) {
              const [request] = holding.splice(c.pick % holding.length, 1);
              const permit = await within('a granted request', request!.promise);
              fences.set(request!.n, permit.fence);
              permit.release();
              held -= request!.weight;
              serve();
            } else if (c.kind === 'cancel' && line.length > 0) {
              const [request] = line.splice(c.pick % line.length, 1);
              request!.controller.abort(new Error('cancelled'));
              await assert.rejects(request!.promise, /cancelled/);
              serve();
            }
            await tracked.settled();
            const state = await stateOf(redis, name);
            assert.ok(state.held <= permits);
            assert.deepEqual(
              [state.held, state.leases, state.queue],
              [held, holding.length, line.length],
            );
          }
          for (const request of holding) {
            const permit = await within('a granted request', request.promise);
            fences.set(request.n, permit.fence);
            permit.release();
          }
          for (const request of line) request.controller.abort(new Error('cancelled'));
          await Promise.allSettled(line.map((request) => request.promise));
          // Grants in the model's order: their fences rise in it.
          const inOrder = grantOrder.map((n) => fences.get(n)!);
          assert.deepEqual(
            inOrder,
            [...inOrder].sort((x, y) => x - y),
          );
          await tracked.settled();
          assert.equal((await stateOf(redis, name)).ids, 0);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('gives a line made between refreshes the same expiry as the counts that describe it', async () => {
    const a = make('one-expiry', { permits: 1 });
    const b = make('one-expiry', { permits: 1 });
    const holder = await a.acquire();
    await sleep(100); // the keys' expiry was set by the grant; the line is made after it
    const waiting = b.acquire();
    await waitFor('in line', async () => (await inLine(redis, 'one-expiry')) === 1);
    // When each expires (PEXPIRETIME, Unix ms): a TTL read a millisecond after the other's would
    // differ by one without the expiries differing.
    const [queue, ids] = (await Promise.all(
      ['queue', 'ids'].map((part) => command(redis, 'PEXPIRETIME', `sluice:{one-expiry}:${part}`)),
    )) as [number, number];
    assert.ok(queue > 0 && queue <= ids, `the line expires at ${queue}, the counts at ${ids}`);
    holder.release();
    (await within('the waiter', waiting)).release();
  });

  it('serves the line right after a fleet died with requests in it and a new one started', async () => {
    // Two processes whose calls stop arriving at once (killed during a deploy): one holds the
    // only permit, the other waits; nothing of theirs is renewed any more.
    let alive = true;
    const dying = intercept(
      () => adapter,
      (next, ...args) => (alive ? next(...args) : new Promise<never>(() => undefined)),
    );
    const options = { permits: 1, leaseMs: 1_000 };
    const a = make('fleet', options, dying);
    const b = make('fleet', options, dying);
    await a.acquire();
    await sleep(600); // the line is made a while after the keys' expiry was last set
    b.acquire().catch(() => undefined);
    await waitFor('in line', async () => (await inLine(redis, 'fleet')) === 1);
    alive = false;
    await waitFor(
      "the name's counts expired",
      async () => Number(await command(redis, 'EXISTS', 'sluice:{fleet}:ids')) === 0,
    );
    // A new fleet, at once.
    const [c, d, e] = [0, 1, 2].map(() => make('fleet', options));
    const first = await c!.acquire();
    const second = d!.acquire();
    await tracked.settled(); // in line
    assert.equal(await e!.tryAcquireAsync(), undefined, 'nobody barges past the request in line');
    first.release();
    (await within('the request in line, with the permit free', second, 5_000)).release();
    await waitFor('all given back', async () => (await stateOf(redis, 'fleet')).ids === 0);
    const [held, queued] = (await command(
      redis,
      'HMGET',
      'sluice:{fleet}:ids',
      'held',
      'queued',
    )) as (string | null)[];
    assert.deepEqual([Number(held ?? 0), Number(queued ?? 0)], [0, 0]);
  });
});

// ---------------------------------------------------------------------------------------------

const WORKER = fileURLToPath(new URL('./fixtures/redis-worker.ts', import.meta.url));

/** A child process running test/fixtures/redis-worker.ts, and the JSON lines it printed. */
class Worker {
  readonly process: ChildProcess;
  readonly lines: Record<string, unknown>[] = [];
  readonly exited: Promise<unknown>;
  #notify: (() => void) | undefined;

  constructor(config: Record<string, unknown>) {
    this.process = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.exited = once(this.process, 'exit');
    createInterface({ input: this.process.stdout! }).on('line', (line) => {
      this.lines.push(JSON.parse(line) as Record<string, unknown>);
      this.#notify?.();
    });
  }

  /** The first line that has `field`, once printed. */
  async line(field: string, ms = 20_000): Promise<Record<string, unknown>> {
    const deadline = performance.now() + ms;
    for (;;) {
      const found = this.lines.find((line) => field in line);
      if (found !== undefined) return found;
      if (performance.now() > deadline) assert.fail(`no "${field}" line within ${ms}ms`);
      await new Promise<void>((resolve) => {
        this.#notify = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  kill(): void {
    this.process.kill('SIGCONT');
    this.process.kill('SIGKILL');
  }
}

/** An HTTP server on 127.0.0.1 that counts the weight of the requests in flight. */
async function countingServer() {
  let inFlight = 0;
  let peak = 0;
  let requests = 0;
  const server = createServer((request, response) => {
    const weight = Number(new URL(request.url!, 'http://x').searchParams.get('w') ?? 1);
    inFlight += weight;
    peak = Math.max(peak, inFlight);
    requests++;
    setTimeout(() => {
      // Counted out before the answer leaves: the holder releases only after it arrives.
      inFlight -= weight;
      response.end('ok');
    }, 2);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    get peak() {
      return peak;
    },
    get requests() {
      return requests;
    },
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

describe('RedisSemaphore shared by processes', needsRedis, () => {
  let server: RedisServer;
  let redis: NodeRedis;
  const sems: RedisSemaphore[] = [];
  const workers: Worker[] = [];

  before(async () => {
    server = await RedisServer.start();
    redis = await connect(server.url);
  });
  after(async () => {
    for (const worker of workers) worker.kill();
    await Promise.all(sems.map((sem) => sem.close()));
    await redis.close();
    await server.stop();
  });

  const worker = (config: Record<string, unknown>): Worker => {
    const started = new Worker({ url: server.url, ...config });
    workers.push(started);
    return started;
  };
  const make = (name: string, options: RedisSemaphoreOptions): RedisSemaphore => {
    const sem = new RedisSemaphore(redis, name, options);
    sems.push(sem);
    return sem;
  };

  it('4 processes × 2 500 permits on a limit of 5, of weight 1 and then of weights 1 to 3: at most 5 in flight at the server, and 5 reached', async () => {
    const runs = [
      { name: 'fleet-1', weights: [1], counter: await countingServer() },
      { name: 'fleet-3', weights: [1, 3, 2, 2, 1, 3], counter: await countingServer() },
    ];
    try {
      const fleet = Array.from({ length: 4 }, () =>
        worker({
          mode: 'loop',
          runs: runs.map(({ name, weights, counter }) => ({ name, weights, counter: counter.url })),
          permits: 5,
          leaseMs: 10_000,
          count: 2_500,
          workers: 3,
        }),
      );
      const results = await Promise.all(fleet.map((w) => w.line('fences', 120_000)));
      for (const [i, { name, counter }] of runs.entries()) {
        assert.equal(counter.requests, 10_000, name);
        assert.ok(counter.peak <= 5, `${name}: the server saw ${counter.peak} in flight`);
        assert.equal(counter.peak, 5, name);
        const fences = results.flatMap((result) => (result.fences as number[][])[i]!);
        assert.equal(new Set(fences).size, 10_000, `${name}: a fence of its own for every grant`);
      }
    } finally {
      for (const { counter } of runs) counter.close();
    }
  });

  it("gives a killed holder's permits back within its lease and a second", async () => {
    const holder = worker({ mode: 'hold', name: 'killed', permits: 5, leaseMs: 1_000, weight: 5 });
    const { held } = await holder.line('held');
    const sem = make('killed', { permits: 5, leaseMs: 1_000, pollMs: 100 });
    const waiting = sem.acquire({ weight: 5 });
    await waitFor('in line', async () => (await stateOf(redis, 'killed')).queue === 1);
    const killedAt = performance.now();
    holder.process.kill('SIGKILL');
    const permit = await within('the permits back', waiting, 10_000);
    const after = performance.now() - killedAt;
    assert.ok(after <= 2_000, `back ${Math.round(after)}ms after the kill`);
    assert.ok(permit.fence > (held as number));
    permit.release();
  });

  it('aborts the signal of a holder stopped past its lease, which does not renew it after', async () => {
    const holder = worker({ mode: 'hold', name: 'stopped', permits: 1, leaseMs: 1_000 });
    const { held } = await holder.line('held');
    const sem = make('stopped', { permits: 1, leaseMs: 1_000, pollMs: 100 });
    const waiting = sem.acquire();
    await waitFor('in line', async () => (await stateOf(redis, 'stopped')).queue === 1);
    holder.process.kill('SIGSTOP');
    const permit = await within('the lease expired in Redis', waiting, 10_000);
    assert.ok(permit.fence > (held as number), 'the next holder has a higher fence');
    holder.process.kill('SIGCONT');
    const { lost, event } = await holder.line('lost');
    assert.equal(lost, 'ERR_SLUICE_LEASE_LOST');
    assert.equal(event, true, "'leaseLost' emitted");
    await sleep(800); // more than two of its renewal periods
    assert.deepEqual(await stateOf(redis, 'stopped'), {
      held: 1,
      leases: 1,
      queue: 0,
      ids: 1,
      granted: 0,
    });
    assert.equal(permit.signal.aborted, false);
    permit.release();
  });

  it('lets a killed process’s requests in line leave it', async () => {
    const sem = make('dead-waiter', { permits: 1, leaseMs: 800, pollMs: 100 });
    const holder = await sem.acquire();
    const waiter = worker({ mode: 'wait', name: 'dead-waiter', permits: 1, leaseMs: 800 });
    await waitFor('in line', async () => (await stateOf(redis, 'dead-waiter')).queue === 1, 20_000);
    const mine = sem.acquire();
    await waitFor('behind it', async () => (await stateOf(redis, 'dead-waiter')).queue === 2);
    waiter.process.kill('SIGKILL');
    holder.release();
    const permit = await within('past the dead request', mine, 10_000);
    assert.equal((await stateOf(redis, 'dead-waiter')).held, 1);
    permit.release();
  });
});

// ---------------------------------------------------------------------------------------------

describe('RedisSemaphore when Redis fails', needsRedis, () => {
  let server: RedisServer;
  let redis: NodeRedis;
  const sems: RedisSemaphore[] = [];

  before(async () => {
    server = await RedisServer.start();
    redis = await connect(server.url);
  });
  after(async () => {
    await Promise.all(sems.map((sem) => sem.close()));
    redis.destroy();
    await server.stop();
  });

  const make = (name: string, options: RedisSemaphoreOptions, client: unknown = redis) => {
    const sem = new RedisSemaphore(client, name, options);
    sems.push(sem);
    return sem;
  };

  it('recovers from a Redis restart that lost the data: leases lost, waiters back in line, the limit kept', async () => {
    const a = make('restart', { permits: 2, leaseMs: 600, pollMs: 50 });
    const b = make('restart', { permits: 2, leaseMs: 600, pollMs: 50 });
    const held = [await a.acquire(), await a.acquire()];
    const fenceBefore = Math.max(...held.map((permit) => permit.fence));
    const waiting = [b.acquire(), b.acquire({ weight: 2 }), b.acquire()];
    await waitFor('in line', async () => (await stateOf(redis, 'restart')).queue === 3);
    await server.restart();
    for (const permit of held) {
      await within('the lease lost', lost(permit), 5_000);
      assert.ok(permit.signal.reason instanceof LeaseLostError);
    }
    // Each waiter is granted again in turn (its place was lost with the data), or fails clearly.
    for (const request of waiting) {
      try {
        const permit = await within('the waiter settles', request, 10_000);
        assert.ok(permit.fence > fenceBefore, 'fences keep rising across the restart');
        await stateOf(redis, 'restart');
        permit.release();
      } catch (error) {
        assert.ok(error instanceof Error && error.message.length > 0, String(error));
      }
    }
    // The limit holds afterwards.
    let inside = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const permit = await (i % 2 === 0 ? a : b).acquire();
        inside++;
        peak = Math.max(peak, inside);
        await sleep(2);
        inside--;
        permit.release();
      }),
    );
    assert.equal(peak, 2);
    await waitFor('all given back', async () => (await stateOf(redis, 'restart')).ids === 0);
  });

  it('runs on after SCRIPT FLUSH', async () => {
    const a = make('flush', { permits: 1 });
    const b = make('flush', { permits: 1, pollMs: 50 });
    const first = await a.acquire();
    const waiting = b.acquire();
    await waitFor('in line', async () => (await stateOf(redis, 'flush')).queue === 1);
    assert.equal(await server.command('SCRIPT FLUSH'), '+OK');
    first.release();
    (await within('granted after the flush', waiting)).release();
    (await a.acquire()).release();
  });

  it('waits out a CLIENT PAUSE shorter than its bounds, and fails clearly past them', async () => {
    const sem = make('paused', { permits: 1, leaseMs: 3_000, pollMs: 50 });
    const holder = await sem.acquire();
    const waiting = sem.acquire();
    await waitFor('in line', async () => (await stateOf(redis, 'paused')).queue === 1);
    assert.equal(await server.command('CLIENT PAUSE 400 ALL'), '+OK');
    holder.release();
    (await within('granted after the pause', waiting)).release();

    const impatient = make('paused', { permits: 1, leaseMs: 3_000, commandTimeoutMs: 200 });
    assert.equal(await server.command('CLIENT PAUSE 800 ALL'), '+OK');
    await assert.rejects(impatient.acquire(), (error) => {
      assert.ok(error instanceof TimeoutError);
      assert.match(error.message, /Redis did not answer within 200ms/);
      return true;
    });
    // Its late grant, once Redis runs it, is given back.
    await waitFor('given back after the pause', async () => {
      const state = await stateOf(redis, 'paused');
      return state.ids === 0;
    });
  });

  it('is still woken after its wake-up connection is killed', async () => {
    const a = make('pubsub', { permits: 1 });
    const b = make('pubsub', { permits: 1, pollMs: 100 });
    for (let round = 0; round < 3; round++) {
      const first = await a.acquire();
      const waiting = b.acquire();
      await waitFor('in line', async () => (await stateOf(redis, 'pubsub')).queue === 1);
      assert.match(await server.command('CLIENT KILL TYPE pubsub'), /^:\d+$/);
      first.release();
      (await within('woken', waiting, 5_000)).release();
    }
  });

  it('fails clearly, and within its bounds, when the server is gone', async () => {
    const gone = await RedisServer.start();
    const client = await connect(gone.url);
    try {
      const sem = make(
        'gone',
        { permits: 1, leaseMs: 400, commandTimeoutMs: 250, pollMs: 50 },
        client,
      );
      const holder = await sem.acquire();
      const waiting = sem.acquire();
      await waitFor('in line', async () => (await stateOf(client, 'gone')).queue === 1);
      await gone.stop();
      await assert.rejects(within('a new acquire fails', sem.acquire(), 5_000), (error) => {
        assert.ok(error instanceof Error && error.message !== '', String(error));
        return true;
      });
      await assert.rejects(within('the waiter fails', waiting, 5_000), Error);
      await within('the lease lost', lost(holder), 5_000);
      assert.ok(holder.signal.reason instanceof LeaseLostError);
    } finally {
      client.destroy();
      await gone.stop();
    }
  });

  it('hands out higher fences after a restart that brought back older data (a snapshot)', async () => {
    const own = await RedisServer.start();
    let client = await connect(own.url);
    try {
      const grant = async (sem: RedisSemaphore): Promise<number> => {
        const permit = await sem.acquire();
        await permit[Symbol.asyncDispose]();
        return permit.fence;
      };
      const sem = make('snapshot', { permits: 1 }, client);
      const before = [await grant(sem), await grant(sem)];
      assert.equal(await own.command('SAVE'), '+OK'); // what a periodic snapshot does
      before.push(await grant(sem), await grant(sem), await grant(sem));
      await own.restart(); // killed, then started on the same directory: the snapshot is loaded
      client.destroy();
      client = await connect(own.url);
      const restored = Number(await command(client, 'HGET', 'sluice:{snapshot}:ids', 'fence'));
      assert.equal(restored, before[1], 'the older count came back');
      const again = make('snapshot', { permits: 1 }, client);
      const after = [await grant(again), await grant(again)];
      assert.ok(
        Math.min(...after) > Math.max(...before),
        `fences before the restart ${before.join(' ')}, after it ${after.join(' ')}`,
      );
    } finally {
      client.destroy();
      await own.stop();
    }
  });

  it('gives back in Redis a lease it declared lost, though a renewal late on its way renewed it there', async () => {
    const sem = make('late-renewal', {
      permits: 1,
      leaseMs: 4_500,
      commandTimeoutMs: 1_500,
      pollMs: 100,
    });
    // Redis stops while the acquire is on its way: the lease's local deadline comes a second
    // before its expiry in Redis.
    server.pause();
    const acquired = sem.acquire();
    await sleep(1_000);
    server.resume();
    const permit = await within('granted', acquired);
    // It stops again with the renewals on their way, until past the local deadline but before
    // the expiry in Redis: there, they find the lease and renew it.
    server.pause();
    try {
      await within('the lease lost', lost(permit), 10_000);
      await sleep(300);
    } finally {
      server.resume();
    }
    assert.equal(sem.held, 0);
    await waitFor(
      'the lost lease given back in Redis',
      async () => (await stateOf(redis, 'late-renewal')).leases === 0,
      2_500,
    );
  });

  it('withdraws an acquire cancelled while it is sent again after NOSCRIPT, though its withdrawal finds the script', async () => {
    const other = make('noscript-cancel', { permits: 1 });
    const held = await other.acquire();
    // A connection on which the script sent whole (EVAL, after NOSCRIPT) arrives late.
    const late = new Proxy(redis, {
      get(target, key) {
        if (key === 'sendCommand') {
          return async (args: string[]) => {
            if (args[0] === 'EVAL') await sleep(300);
            return target.sendCommand(args);
          };
        }
        const value: unknown = Reflect.get(target, key);
        return typeof value === 'function' ? (value.bind(target) as unknown) : value;
      },
    });
    const tracked = new TrackedClient(() => fromNodeRedis(late));
    const sem = make('noscript-cancel', { permits: 1 }, tracked);
    assert.equal(await server.command('SCRIPT FLUSH'), '+OK');
    const controller = new AbortController();
    const request = sem.acquire({ signal: controller.signal });
    await sleep(100); // its EVALSHA met NOSCRIPT; its EVAL is on its way
    assert.equal(await other.tryAcquireAsync(), undefined); // another process loads the script
    const reason = new Error('given up');
    controller.abort(reason);
    await assert.rejects(request, (error) => error === reason);
    await tracked.settled();
    assert.equal(await inLine(redis, 'noscript-cancel'), 0, 'not left in line');
    held.release();
    await waitFor(
      'all given back',
      async () => (await stateOf(redis, 'noscript-cancel')).ids === 0,
    );
  });
});
