/**
 * `RedisAdaptiveStore`: an adaptive limit shared through a real redis-server (one per file,
 * test/_helpers/redis.ts). The script's decisions as a table over instants of Redis's clock (the
 * last increase or decrease set that long before the call); several stores at once as several
 * clients would be; and four clients, each with its own connection and its own `createFetch`,
 * against a real HTTP server of hidden capacity (test/_helpers/capacity-server.ts): together
 * they must settle near its capacity, not four times it, with few refusals and none starved.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { adaptive, type AdaptiveLimit, type LimitChangeEvent } from '../src/index.ts';
import { createFetch } from '../src/http/index.ts';
import type { LimitState, StoreUser } from '../src/_limit-store.ts';
import { fromNodeRedis, type RedisClient } from '../src/redis/_client.ts';
import { ADAPTIVE_SCRIPT } from '../src/redis/_scripts.ts';
import { RedisAdaptiveStore } from '../src/redis/index.ts';
import { startCapacityServer } from './_helpers/capacity-server.ts';
import { needsRedis, RedisServer } from './_helpers/redis.ts';

let server: RedisServer;
const connections: { close(): Promise<void> }[] = [];

async function connect() {
  const client = createClient({ url: server.url });
  client.on('error', () => undefined);
  await client.connect();
  connections.push(client);
  return client;
}

let names = 0;
function fresh(): string {
  return `test-${process.pid}-${names++}`;
}

function keys(name: string): [string, string] {
  return [`sluice:{${name}}:adaptive`, `sluice:{${name}}:adaptive-clients`];
}

/** A gate's side of a store, for the stores tested alone: what it was told. */
function user(initial = 10, min = 1, max = 200): StoreUser & { told: LimitState[] } {
  const told: LimitState[] = [];
  return { min, max, initial, told, update: (state) => told.push(state) };
}

describe('RedisAdaptiveStore', { ...needsRedis, timeout: 60_000 }, () => {
  let redis: RedisClient;
  let raw: Awaited<ReturnType<typeof connect>>;

  before(async () => {
    server = await RedisServer.start();
    raw = await connect();
    redis = fromNodeRedis(raw);
  });
  after(async () => {
    for (const connection of connections) await connection.close();
    await server.stop();
  });

  /** Redis's clock, ms. */
  async function redisNow(): Promise<number> {
    const [s, us] = await raw.sendCommand<[string, string]>(['TIME']);
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }

  describe('the script decides on Redis time', () => {
    interface Row {
      name: string;
      /** The state before, with the last changes that many ms before the call (Redis's clock). */
      state?: { limit: number; increasedAgo?: number; decreasedAgo?: number; epoch?: number };
      op: 'sync' | 'increase' | 'decrease' | 'shrink';
      /** Other clients present. */
      others?: number;
      from?: number;
      to?: number;
      known?: number;
      window?: number;
      cooldown?: number;
      max?: number;
      expect: { limit: number; taken: 0 | 1; epoch: number };
    }
    const rows: Row[] = [
      {
        name: 'no state: the total starts at initial',
        op: 'sync',
        expect: { limit: 10, taken: 0, epoch: 0 },
      },
      {
        name: 'an increase a window after the last increase is taken',
        state: { limit: 10, increasedAgo: 600 },
        op: 'increase',
        from: 10,
        to: 12,
        window: 300,
        expect: { limit: 12, taken: 1, epoch: 0 },
      },
      {
        name: 'an increase within a window of another’s increase is taken: each client’s counts',
        state: { limit: 10, increasedAgo: 100 },
        op: 'increase',
        from: 10,
        to: 12,
        window: 300,
        expect: { limit: 12, taken: 1, epoch: 0 },
      },
      {
        name: 'an increase within a window of the last decrease is refused',
        state: { limit: 10, decreasedAgo: 100, epoch: 1 },
        op: 'increase',
        from: 10,
        to: 12,
        window: 300,
        expect: { limit: 10, taken: 0, epoch: 1 },
      },
      {
        name: 'an increase adds what the proposer added, to the total as it is',
        state: { limit: 20, increasedAgo: 5000 },
        op: 'increase',
        from: 10,
        to: 11,
        window: 300,
        expect: { limit: 21, taken: 1, epoch: 0 },
      },
      {
        name: 'an increase stops at max',
        state: { limit: 49 },
        op: 'increase',
        from: 10,
        to: 15,
        window: 300,
        max: 50,
        expect: { limit: 50, taken: 1, epoch: 0 },
      },
      {
        name: 'a decrease a cooldown after the last, from a client that knew of it, is taken',
        state: { limit: 20, decreasedAgo: 600, epoch: 3 },
        op: 'decrease',
        from: 10,
        to: 9,
        known: 3,
        cooldown: 300,
        expect: { limit: 18, taken: 1, epoch: 4 },
      },
      {
        name: 'a decrease within the cooldown of the last is refused',
        state: { limit: 20, decreasedAgo: 100, epoch: 3 },
        op: 'decrease',
        from: 10,
        to: 9,
        known: 3,
        cooldown: 300,
        expect: { limit: 20, taken: 0, epoch: 3 },
      },
      {
        name: 'a decrease from a client that had not heard of the last is refused, however late',
        state: { limit: 20, decreasedAgo: 60_000, epoch: 3 },
        op: 'decrease',
        from: 10,
        to: 9,
        known: 2,
        cooldown: 300,
        expect: { limit: 20, taken: 0, epoch: 3 },
      },
      {
        name: 'a decrease right after an increase is taken (an increase does not hold one back)',
        state: { limit: 20, increasedAgo: 1, epoch: 0 },
        op: 'decrease',
        from: 20,
        to: 10,
        known: 0,
        cooldown: 300,
        expect: { limit: 10, taken: 1, epoch: 1 },
      },
      {
        name: 'a decrease for a rising latency, alone: taken whole, no cooldown, no epoch',
        state: { limit: 20, decreasedAgo: 1, epoch: 3 },
        op: 'shrink',
        from: 20,
        to: 18,
        known: 0,
        cooldown: 300,
        expect: { limit: 18, taken: 1, epoch: 3 },
      },
      {
        name: 'a decrease for a rising latency, one of 4 clients: takes off what it took off its share',
        state: { limit: 16 },
        others: 3,
        op: 'shrink',
        from: 4,
        to: 1,
        expect: { limit: 13, taken: 1, epoch: 0 },
      },
      {
        name: 'a decrease for a drop, one of 4 clients: cuts the whole total by its factor',
        state: { limit: 40 },
        others: 3,
        op: 'decrease',
        from: 10,
        to: 9,
        known: 0,
        expect: { limit: 36, taken: 1, epoch: 1 },
      },
      {
        name: 'a decrease stops at min',
        state: { limit: 2 },
        op: 'decrease',
        from: 10,
        to: 1,
        known: 0,
        cooldown: 0,
        expect: { limit: 1, taken: 1, epoch: 1 },
      },
      {
        name: 'a total above the caller’s max is brought within it',
        state: { limit: 500 },
        op: 'sync',
        expect: { limit: 200, taken: 0, epoch: 0 },
      },
    ];
    for (const row of rows) {
      it(row.name, async () => {
        const name = fresh();
        const [state, clients] = keys(name);
        if (row.state !== undefined) {
          const now = await redisNow();
          const fields = ['limit', String(row.state.limit), 'epoch', String(row.state.epoch ?? 0)];
          if (row.state.increasedAgo !== undefined)
            fields.push('increased', String(now - row.state.increasedAgo));
          if (row.state.decreasedAgo !== undefined)
            fields.push('decreased', String(now - row.state.decreasedAgo));
          await raw.sendCommand(['HSET', state, ...fields]);
        }
        for (let i = 0; i < (row.others ?? 0); i++) {
          await raw.sendCommand(['ZADD', clients, String((await redisNow()) + 10_000), `o${i}`]);
        }
        const reply = (await redis.run(
          ADAPTIVE_SCRIPT,
          [state, clients],
          [
            row.op,
            'c1',
            row.from ?? 0,
            row.to ?? 0,
            row.known ?? 0,
            row.window ?? 0,
            row.cooldown ?? 0,
            1,
            row.max ?? 200,
            10,
            1000,
            60_000,
          ],
        )) as [string, number, number, number, number];
        assert.deepEqual(
          { limit: Math.round(Number(reply[0]) * 1e9) / 1e9, taken: reply[4], epoch: reply[3] },
          row.expect,
        );
        const kept = Number(await raw.sendCommand(['HGET', state, 'limit']));
        assert.ok(Math.abs(kept - row.expect.limit) < 1e-9, `kept ${kept}`);
        const ttl = Number(await raw.sendCommand(['PTTL', state]));
        assert.ok(ttl > 0 && ttl <= 60_000, `the state expires (${ttl} ms)`);
      });
    }

    it('validates every argument before it writes anything', async () => {
      const name = fresh();
      const [state, clients] = keys(name);
      const good = ['decrease', 'c1', 10, 9, 0, 0, 0, 1, 200, 10, 1000, 60_000];
      const bad: [number, unknown, RegExp][] = [
        [0, 'grow', /op must be sync, increase, decrease, shrink or leave/],
        [1, 'a b', /client must be/],
        [2, 0, /from and to must be numbers > 0/],
        [3, 'x', /from and to must be numbers > 0/],
        [4, 'x', /epoch must be a number/],
        [5, -1, /window must be/],
        [6, 'inf', /cooldown must be/],
        [7, 0, /min must be an integer >= 1/],
        [8, 0, /max must be an integer >= min/],
        [9, 500, /initial must be an integer from min to max/],
        [10, 0, /presence must be/],
        [11, 10, /keep must be/],
      ];
      for (const [i, value, message] of bad) {
        const args = good.slice();
        args[i] = value as never;
        await assert.rejects(redis.run(ADAPTIVE_SCRIPT, [state, clients], args), message);
      }
      assert.equal(await raw.sendCommand(['EXISTS', state, clients]), 0, 'nothing written');
    });
  });

  it('N clients that see one burst of 429s cut the total once; N that see room raise it N times', async () => {
    const name = fresh();
    const stores = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const store = new RedisAdaptiveStore(await connect(), name, {
          cooldownMs: 5000,
          windowMs: 1000,
        });
        store.attach(user(40));
        await store.sync();
        return store;
      }),
    );
    // Each proposes what its own gate would: 40 × 0.9, from the 40 it knows.
    const cuts = await Promise.all(
      stores.flatMap((store) =>
        [1, 2].map(() =>
          store.change({ kind: 'decrease', reason: 'drop', from: 40, to: 36, at: 0 }),
        ),
      ),
    );
    assert.ok(
      cuts.every((state) => state.limit === 36),
      `cut once: ${cuts.map((s) => s.limit).join(' ')}`,
    );
    await sleep(10);
    const raises = await Promise.all(
      stores
        .map(() => 0)
        .map((_, i) =>
          stores[i]!.change({ kind: 'increase', reason: 'growth', from: 36, to: 37, at: 0 }),
        ),
    );
    // Within the window of the decrease: none is taken; the rule is the same for all.
    assert.ok(raises.every((state) => state.limit === 36));
    // A window later, each one's increase is taken, as each would raise a limit of its own: the
    // fleet's total climbs as fast as N clients' own limits would in sum, not as one client's.
    await sleep(1100);
    const later = await Promise.all(
      stores.map((store) =>
        store.change({ kind: 'increase', reason: 'growth', from: 36, to: 37, at: 0 }),
      ),
    );
    assert.equal(Math.max(...later.map((state) => state.limit)), 40);
    for (const store of stores) await store.close();
  });

  it('splits the total among the clients present; one that leaves or lapses gives its share back', async () => {
    const name = fresh();
    const users = [user(42), user(42), user(42)];
    const stores = await Promise.all(
      users.map(async (u) => {
        const store = new RedisAdaptiveStore(await connect(), name, { presenceMs: 400 });
        store.attach(u);
        return store;
      }),
    );
    for (const store of stores) await store.sync();
    let states = await Promise.all(stores.map((store) => store.sync()));
    assert.deepEqual(
      states.map((s) => s.clients),
      [3, 3, 3],
    );
    assert.equal(
      states.reduce((sum, s) => sum + s.share!, 0),
      42,
      'the shares add up to the total',
    );
    assert.deepEqual(states.map((s) => s.share).sort(), [14, 14, 14]);
    await stores[0]!.close();
    states = await Promise.all(stores.slice(1).map((store) => store.sync()));
    assert.deepEqual(
      states.map((s) => [s.clients, s.share]),
      [
        [2, 21],
        [2, 21],
      ],
    );
    // The third stops calling: after its presence lapses, the second has it all.
    await sleep(600);
    const alone = await stores[1]!.sync();
    assert.deepEqual([alone.clients, alone.share], [1, 42]);
    assert.ok(users[1]!.told.length >= 3, 'each sync tells the gate');
  });

  it('gives each client at least min, and splits the remainder one each', async () => {
    const name = fresh();
    const stores = await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const store = new RedisAdaptiveStore(await connect(), name);
        store.attach(user(10));
        await store.sync();
        return store;
      }),
    );
    const shares = (await Promise.all(stores.map((store) => store.sync()))).map((s) => s.share!);
    assert.deepEqual(shares.slice().sort(), [2, 2, 3, 3]);
    await Promise.all(
      stores.map((store) =>
        store.change({ kind: 'decrease', reason: 'drop', from: 10, to: 2, at: 0 }),
      ),
    );
    const low = (await Promise.all(stores.map((store) => store.sync()))).map((s) => s.share!);
    assert.deepEqual(low, [1, 1, 1, 1], 'a total of 2 for 4 clients: each keeps min');
  });

  it('an adaptive gate on a shared store admits its share, and hears of another client’s decrease', async () => {
    const name = fresh();
    const options = { algorithm: 'aimd', initial: 20, max: 100, backoff: 0.5 } as const;
    const a = adaptive({
      ...options,
      store: new RedisAdaptiveStore(await connect(), name, { syncMs: 1 }),
    });
    const b = adaptive({
      ...options,
      store: new RedisAdaptiveStore(await connect(), name, { syncMs: 1 }),
    });
    assert.equal(a.limit, 1, 'min until it has heard from Redis');
    const heard: LimitChangeEvent[] = [];
    b.on('limit', (change) => heard.push(change));
    a.tryAcquire()?.release();
    b.tryAcquire()?.release();
    await sleep(50);
    a.tryAcquire()?.release();
    await sleep(50);
    assert.equal(a.limit + b.limit, 20, `${a.limit} + ${b.limit}`);
    assert.deepEqual(a.stats().shared, { limit: 20, clients: 2 });
    const permit = a.tryAcquire()!;
    permit.release({ ok: false, dropped: true, latencyMs: 5 });
    await sleep(50);
    b.tryAcquire()?.release();
    await sleep(50);
    assert.equal(a.stats().shared?.limit, 10);
    assert.equal(b.limit, 5);
    assert.equal(heard.at(-1)?.reason, 'shared');
  });

  it('cuts again for a drop of work begun after it heard of the last cut, at once, as one limit of its own would', async () => {
    // A server whose capacity halved refuses the fleet's excess at once, many times a round
    // trip: each refusal of work begun since the last cut is news that the cut was not enough.
    const name = fresh();
    const options = { algorithm: 'aimd', initial: 40, max: 100, backoff: 0.5 } as const;
    const stores = [
      new RedisAdaptiveStore(await connect(), name),
      new RedisAdaptiveStore(await connect(), name),
    ];
    const [a, b] = stores.map((store) => adaptive({ ...options, store })) as [
      AdaptiveLimit,
      AdaptiveLimit,
    ];
    for (const store of [...stores, stores[0]!]) await store.sync();
    assert.deepEqual(a.stats().shared, { limit: 40, clients: 2 });
    const before = [a.tryAcquire()!, b.tryAcquire()!];
    before[0]!.release({ ok: false, dropped: true, latencyMs: 1 });
    await sleep(20);
    // b's refusal of work begun before the cut: the same burst, no second cut.
    before[1]!.release({ ok: false, dropped: true, latencyMs: 1 });
    await sleep(20);
    assert.equal(a.stats().shared?.limit, 20);
    a.tryAcquire()!.release({ ok: false, dropped: true, latencyMs: 1 });
    await sleep(20);
    assert.equal(a.stats().shared?.limit, 10, 'a second cut, without waiting for a cooldown');
  });

  it('refuses a bad name, client or option, naming it', async () => {
    const client = await connect();
    assert.throws(() => new RedisAdaptiveStore(client, 'a{b}'), RangeError);
    assert.throws(() => new RedisAdaptiveStore(client, ''), RangeError);
    assert.throws(() => new RedisAdaptiveStore({}, 'x'), /Expected `redis` to be/);
    assert.throws(() => new RedisAdaptiveStore(client, 'x', { syncMs: 0 }), /`syncMs`/);
    assert.throws(() => adaptive({ store: {} as never }), /Expected `store` to be/);
    const store = new RedisAdaptiveStore(client, 'x');
    adaptive({ store });
    assert.throws(() => adaptive({ store }), /already serves an adaptive limit/);
  });

  it('4 clients against a server of hidden capacity settle near it together, none starved', async (t) => {
    // A latency long beside what a loaded machine adds to each request on the client's side
    // (which the limit cannot tell from a queue at the server).
    const C = 16;
    const LATENCY = 100;
    // A line of C / 2: at its end a request takes 1.5 times the no-load latency, gradient2's
    // tolerance, so the latency speaks before the refusals do. (A line of 4, as long as the
    // fleet's growth in a window, left the total sawing at the refusal edge: 3-7% refused on a
    // loaded machine, where one limit of its own has 1%.)
    const LINE = C / 2;
    const http = await startCapacityServer({ capacity: C, latencyMs: LATENCY, queue: LINE });
    t.after(() => http.close());
    const name = fresh();
    const stores = await Promise.all(
      [0, 1, 2, 3].map(async () => new RedisAdaptiveStore(await connect(), name)),
    );
    const limits = stores.map((store) => adaptive({ initial: 4, max: 100, store }));
    const fetches = limits.map((limit) =>
      createFetch({ perOrigin: { concurrency: limit }, retry: 0 }),
    );
    t.after(() => Promise.all(fetches.map((f) => f.close())));
    // The total, as Redis keeps it for the origin's copy of the limit (each key has its own).
    const [stateKey] = keys(name);
    const originKey = `${stateKey}:${encodeURIComponent(http.url)}`;
    const totals: number[] = [];
    let stopped = false;
    const worker = async (i: number): Promise<void> => {
      while (!stopped) {
        const response = await fetches[i]!(`${http.url}/c${i}/work`);
        await response.arrayBuffer();
      }
    };
    const workers = [0, 1, 2, 3].flatMap((i) => Array.from({ length: 30 }, () => worker(i)));
    const started = performance.now();
    while (performance.now() - started < 6000) {
      await sleep(100);
      if (performance.now() - started > 3000) {
        totals.push(Number(await raw.sendCommand(['HGET', originKey, 'limit'])));
      }
    }
    stopped = true;
    await Promise.all(workers);
    const stats = http.stats();
    const total = stats.served + stats.refused;
    const perClient = [0, 1, 2, 3].map((i) => stats.clients[`c${i}`]?.served ?? 0);
    const fair = stats.served / 4;
    assert.ok(stats.refused <= 0.05 * total, `${stats.refused} of ${total} refused`);
    assert.ok(Math.min(...perClient) >= 0.5 * fair, `none starved: ${perClient.join(' / ')}`);
    // Near C in total, up to C + the server's line (where refusals begin), not 4 × C. (How
    // much it serves is not asserted: on a loaded machine that measures the machine.)
    const settled = totals.reduce((a, b) => a + b, 0) / totals.length;
    assert.ok(
      settled >= 0.5 * C && settled <= 1.25 * (C + LINE),
      `the shared total: ${totals.join(' ')}`,
    );
    // Closing a store closes its keys' stores: every client has left the origin's limit.
    await Promise.all(stores.map((store) => store.close()));
    const [, clientsKey] = keys(name);
    const present = await raw.sendCommand([
      'ZCARD',
      `${clientsKey}:${encodeURIComponent(http.url)}`,
    ]);
    assert.equal(present, 0);
  });
});
