/**
 * The shared gates on a real 3-master Redis Cluster (test/_helpers/redis-cluster.ts), through
 * node-redis's cluster client (`createCluster()`) and ioredis's `Cluster`. Names are chosen so
 * that their hash slots lie on every master. What it proves:
 * - the hash tags: every key of a name is in the name's slot, on the master that serves it (a
 *   script touching keys of two slots would fail with CROSSSLOT);
 * - the script cache is per node: after SCRIPT FLUSH everywhere, each master gets the source once;
 * - a subscription reaches the master of its channel's slot (SPUBLISH there counts it), and gets
 *   there again after its connection is killed;
 * - RedisSemaphore: grants and a wake-up over sharded pub/sub between two cluster clients (the
 *   waiter's timed check is off), with higher fences; RedisRateLimiter: a rate shared by two
 *   cluster clients is held.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster } from 'ioredis';
import { createCluster } from 'redis';
import {
  RedisRateLimiter,
  RedisSemaphore,
  redisClient,
  type RedisClient,
} from '../src/redis/index.ts';
import { busiest } from './_helpers/arrivals.ts';
import { cli, needsRedisCluster, RedisCluster } from './_helpers/redis-cluster.ts';
import { waitFor } from './_helpers/redis.ts';

/** A cluster client on a fresh set of connections, and how to end them. */
interface Connected {
  client: RedisClient;
  end(): void;
}

const CLIENTS: Record<string, (cluster: RedisCluster) => Promise<Connected>> = {
  'node-redis': async (cluster) => {
    const raw = createCluster({
      rootNodes: cluster.rootNodes.map((node) => ({ socket: node })),
      defaults: { maintNotifications: 'disabled' },
    });
    raw.on('error', () => undefined);
    await raw.connect();
    return {
      client: redisClient('client', raw),
      end: () => {
        raw.destroy();
      },
    };
  },
  ioredis: async (cluster) => {
    const raw = new Cluster(cluster.rootNodes);
    raw.on('error', () => undefined);
    await raw.ping();
    return {
      client: redisClient('client', raw),
      end: () => {
        raw.disconnect();
      },
    };
  },
};

/** How often the node on `port` ran EVAL, from INFO commandstats. */
async function evals(port: number): Promise<number> {
  const info = await cli(port, 'INFO', 'commandstats');
  return Number(/cmdstat_eval:calls=(\d+)/.exec(info)?.[1] ?? 0);
}

describe('the shared gates on a 3-master Redis Cluster', needsRedisCluster, () => {
  let cluster: RedisCluster;
  /** The port of the master serving each name's slot. */
  const owners = new Map<string, number>();

  /** `perMaster` names starting with `prefix` on each master, found by their keys' slots. */
  async function namesOnEveryMaster(prefix: string, perMaster = 2): Promise<string[]> {
    const found = new Map<number, string[]>(cluster.nodes.map((node) => [node.port, []]));
    for (let i = 0; [...found.values()].some((names) => names.length < perMaster); i++) {
      const name = `${prefix}-${i}`;
      const owner = await cluster.ownerOf(await cluster.slotOf(`sluice:{${name}}:x`));
      const names = found.get(owner)!;
      if (names.length < perMaster) {
        names.push(name);
        owners.set(name, owner);
      }
    }
    return [...found.values()].flat();
  }

  /**
   * Checks every `sluice:` key of `names` on every node: in its name's slot, on the master that
   * serves it; and that each name has some key (it is in use).
   */
  async function assertKeysPlaced(names: readonly string[]): Promise<void> {
    const seen = new Set<string>();
    for (const node of cluster.nodes) {
      for (const key of await cluster.keysOn(node.port, 'sluice:*')) {
        const name = /^sluice:\{([^}]+)\}:/.exec(key)?.[1];
        if (name === undefined || !names.includes(name)) continue;
        seen.add(name);
        assert.equal(owners.get(name), node.port, `${key} is on the master of its name's slot`);
        assert.equal(
          await cluster.slotOf(key),
          await cluster.slotOf(`sluice:{${name}}:x`),
          `${key} is in its name's slot`,
        );
      }
    }
    assert.deepEqual([...seen].sort(), [...names].sort(), 'every name has keys');
  }

  before(async () => {
    cluster = await RedisCluster.start();
  });
  after(async () => {
    await cluster.stop();
  });

  for (const [label, connect] of Object.entries(CLIENTS)) {
    describe(`through ${label}`, () => {
      let one: Connected;
      let two: Connected;
      before(async () => {
        [one, two] = await Promise.all([connect(cluster), connect(cluster)]);
      });
      after(() => {
        one.end();
        two.end();
      });

      it('subscribes on the master of the channel’s slot, and again after a kill', async () => {
        const names = await namesOnEveryMaster(`${label}-sub`, 1);
        const got = new Map<string, string[]>(names.map((name) => [name, []]));
        const subscriptions = await Promise.all(
          names.map((name) =>
            one.client.subscribe(`sluice:{${name}}:wake`, (message) => {
              got.get(name)!.push(message);
            }),
          ),
        );
        try {
          for (const name of names) {
            const channel = `sluice:{${name}}:wake`;
            assert.equal(await cli(owners.get(name)!, 'SPUBLISH', channel, 'hello'), '1');
            await waitFor(`${name}'s message`, () => got.get(name)!.includes('hello'));
          }
          for (const node of cluster.nodes)
            await cli(node.port, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
          for (const name of names) {
            const channel = `sluice:{${name}}:wake`;
            await waitFor(`${name} subscribed again`, async () => {
              await cli(owners.get(name)!, 'SPUBLISH', channel, 'again');
              return got.get(name)!.includes('again');
            });
          }
        } finally {
          await Promise.all(subscriptions.map((subscription) => subscription.close()));
        }
      });

      it('runs RedisSemaphores on names over every master, woken across clients', async () => {
        const names = await namesOnEveryMaster(`${label}-sem`);
        await Promise.all(cluster.nodes.map((node) => cli(node.port, 'SCRIPT', 'FLUSH')));
        const before = await Promise.all(cluster.nodes.map((node) => evals(node.port)));
        const rounds = names.map(async (name) => {
          const a = new RedisSemaphore(one.client, name, { permits: 2 });
          // No timed check within the test (every min(pollMs, leaseMs / 3)): only the SPUBLISH on
          // the name's master can wake it.
          const b = new RedisSemaphore(two.client, name, {
            permits: 2,
            pollMs: 60_000,
            leaseMs: 60_000,
          });
          const first = await a.acquire();
          const second = await a.acquire({ weight: 1 });
          let woken = false;
          const waiting = b.acquire({ timeout: 15_000 }).then((permit) => {
            woken = true;
            return permit;
          });
          return {
            name,
            a,
            b,
            async finish() {
              await sleep(100);
              assert.equal(woken, false, `${name}: the limit holds`);
              first.release();
              const third = await waiting;
              assert.ok(third.fence > second.fence, `${name}: a higher fence`);
              await Promise.all([second[Symbol.asyncDispose](), third[Symbol.asyncDispose]()]);
              await Promise.all([a.close(), b.close()]);
            },
          };
        });
        const held = await Promise.all(rounds);
        await assertKeysPlaced(names);
        await Promise.all(held.map((round) => round.finish()));
        const after = await Promise.all(cluster.nodes.map((node) => evals(node.port)));
        after.forEach((count, i) => {
          assert.ok(count > before[i]!, `master ${i} got the source after NOSCRIPT`);
        });
      });

      it('holds a RedisRateLimiter’s rate shared by two clients, on every master', async () => {
        const names = await namesOnEveryMaster(`${label}-rate`);
        const n = 15;
        await Promise.all(
          names.map(async (name) => {
            const limiters = [
              new RedisRateLimiter(one.client, name, '10/s'),
              new RedisRateLimiter(two.client, name, '10/s'),
            ];
            const t0 = performance.now();
            const asks = Array.from({ length: n }, (_, i) =>
              i === 0
                ? limiters[0]!.acquire().then((permit) => {
                    permit.release();
                    return performance.now() - t0;
                  })
                : limiters[i % 2]!.wait().then(() => performance.now() - t0),
            );
            // Halfway, while the rest are being booked (a booking's key lives until its slot).
            await asks[n >> 1];
            await assertKeysPlaced([name]);
            const starts = await Promise.all(asks);
            starts.sort((x, y) => x - y);
            // Spaced 100 ms apart, 11 starts span a second: within 900 ms, they would have come
            // 100 ms closer than booked (a start is made at most 20 ms after its slot, and seen
            // here after the event loop gets to it, late by as much on a busy machine).
            assert.ok(busiest(starts, 900) <= 10, `${name}: ${starts.map(Math.round).join(' ')}`);
            assert.ok(starts.at(-1)! < (n - 1) * 100 + 2_000, `${name}: the rate is reached`);
            await Promise.all(limiters.map((limiter) => limiter.close()));
          }),
        );
      });
    });
  }
});
