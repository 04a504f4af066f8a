/**
 * The shared gates measured by bench/cases/redis.mjs, behind one shape, each used as its own
 * documentation says: sluice's RedisSemaphore and RedisRateLimiter (imported from dist/),
 * redis-semaphore 5.8 (on ioredis), bottleneck 2.19 in its Redis mode (on ioredis: it hangs
 * without an error on node-redis 6) and rate-limiter-flexible 11 (`RateLimiterRedis`, waited for
 * with `RateLimiterQueue` or with the retry loop its README shows).
 *
 * `semaphores[name](url, key, limit, options)` resolves to `{ acquire(), close() }`, where
 * `acquire()` resolves once a permit is held, to `release()`, which resolves once the release is
 * done (awaited in every measurement, so that nobody's release is counted as free).
 * `rates[name](url, key, perSecond, options)` resolves to `{ wait(), close() }`.
 *
 * Two floors, not limiters to use, show what the machine allows any design of the kind: a ring
 * of tokens passed over pub/sub (a release is one PUBLISH that wakes the next process, nothing
 * else), and a fixed schedule of starts known in advance (no Redis: each start only sleeps until
 * its instant). Each takes `{ index, processes }` (its place in the fleet) in `options`.
 */
const SLUICE_REDIS = new URL('../dist/redis/index.js', import.meta.url).href;

async function nodeRedis(url) {
  const { createClient } = await import('redis');
  const client = createClient({ url, maintNotifications: 'disabled' });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function ioRedis(url) {
  const { default: Redis } = await import('ioredis');
  const client = new Redis(url, { lazyConnect: true });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function bottleneck(url, key, settings) {
  const { default: Bottleneck } = await import('bottleneck');
  const { port } = new URL(url);
  const limiter = new Bottleneck({
    id: key,
    datastore: 'ioredis',
    clientOptions: { host: '127.0.0.1', port: Number(port) },
    ...settings,
  });
  limiter.on('error', () => undefined);
  await limiter.ready();
  return limiter;
}

/** rate-limiter-flexible's `RateLimiterRedis` of `perSecond` points a second, on ioredis. */
async function flexible(url, key, perSecond) {
  const { RateLimiterRedis } = await import('rate-limiter-flexible');
  const client = await ioRedis(url);
  const limiter = new RateLimiterRedis({
    storeClient: client,
    keyPrefix: key,
    points: perSecond,
    duration: 1,
  });
  return { client, limiter };
}

async function sluiceSemaphore(client, key, limit, options) {
  const { RedisSemaphore } = await import(SLUICE_REDIS);
  const sem = new RedisSemaphore(client, key, { permits: limit, leaseMs: options.leaseMs });
  return {
    sem,
    async acquire() {
      const permit = await sem.acquire();
      return () => permit[Symbol.asyncDispose]();
    },
    async close() {
      await sem.close();
      await client.close?.();
      client.disconnect?.();
    },
  };
}

export const semaphores = {
  /** sluice on node-redis, the client it is made for. */
  async sluice(url, key, limit, options = {}) {
    return sluiceSemaphore(await nodeRedis(url), key, limit, options);
  },
  /** sluice on ioredis, the peers' client. */
  async 'sluice-ioredis'(url, key, limit, options = {}) {
    return sluiceSemaphore(await ioRedis(url), key, limit, options);
  },
  async 'redis-semaphore'(url, key, limit, options = {}) {
    const { Semaphore } = await import('redis-semaphore');
    const client = await ioRedis(url);
    const lockTimeout = options.leaseMs ?? 10_000;
    return {
      async acquire() {
        const sem = new Semaphore(client, key, limit, {
          lockTimeout,
          acquireTimeout: 60_000,
          onLockLost: () => undefined,
        });
        await sem.acquire();
        return () => sem.release();
      },
      async close() {
        client.disconnect();
      },
    };
  },
  /**
   * bottleneck has no acquire/release: a permit is a job that runs until released. Its release
   * resolves with the job's promise, once bottleneck has told Redis the job is done.
   */
  async bottleneck(url, key, limit, options = {}) {
    const limiter = await bottleneck(url, key, { maxConcurrent: limit });
    const jobOptions = options.expiration === undefined ? {} : { expiration: options.expiration };
    return {
      limiter,
      acquire() {
        return new Promise((granted, failed) => {
          let finish;
          const job = limiter.schedule(
            jobOptions,
            () =>
              new Promise((resolve) => {
                finish = resolve;
                granted(() => {
                  finish();
                  return job.catch(() => undefined);
                });
              }),
          );
          job.catch(failed);
        });
      },
      async close() {
        await limiter.disconnect(false);
      },
    };
  },
  /**
   * The floor of a cross-process handoff (limit `limit` across `processes` processes): `limit`
   * tokens, all in process 0 at first; a release PUBLISHes its token to the next process's
   * channel, which hands it to its first waiter. `stopAt(instant)` rejects what still waits
   * just after `instant` (the tokens may by then be with a process that has stopped asking).
   */
  async 'floor: pub/sub token ring'(url, key, limit, { index, processes }) {
    const publisher = await ioRedis(url);
    const subscriber = await ioRedis(url);
    const channel = (i) => `${key}:ring:${i}`;
    const waiters = [];
    let tokens = index === 0 ? limit : 0;
    let stopped = false;
    const release = async () => {
      await publisher.publish(channel((index + 1) % processes), '1');
    };
    subscriber.on('message', () => {
      const waiter = waiters.shift();
      if (waiter === undefined) tokens++;
      else waiter.resolve(release);
    });
    await subscriber.subscribe(channel(index));
    return {
      acquire() {
        if (stopped) return Promise.reject(new Error('stopped'));
        if (tokens > 0) {
          tokens--;
          return Promise.resolve(release);
        }
        return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
      },
      stopAt(instant) {
        setTimeout(
          () => {
            stopped = true;
            for (const waiter of waiters.splice(0)) waiter.reject(new Error('stopped'));
          },
          Math.max(0, instant - clock()) + 50,
        );
      },
      async close() {
        publisher.disconnect();
        subscriber.disconnect();
      },
    };
  },
};

export const rates = {
  async sluice(url, key, perSecond) {
    const { RedisRateLimiter } = await import(SLUICE_REDIS);
    const client = await nodeRedis(url);
    const rate = new RedisRateLimiter(client, key, `${perSecond}/s`);
    return {
      wait: () => rate.wait(),
      async close() {
        await rate.close();
        await client.close();
      },
    };
  },
  async 'rate-limiter-flexible queue'(url, key, perSecond) {
    const { RateLimiterQueue } = await import('rate-limiter-flexible');
    const { client, limiter } = await flexible(url, key, perSecond);
    const queue = new RateLimiterQueue(limiter, { maxQueueSize: 100_000 });
    return {
      wait: () => queue.removeTokens(1),
      async close() {
        client.disconnect();
      },
    };
  },
  /** The loop of rate-limiter-flexible's README: consume, and on a refusal sleep msBeforeNext. */
  async 'rate-limiter-flexible retry'(url, key, perSecond) {
    const { client, limiter } = await flexible(url, key, perSecond);
    return {
      async wait() {
        for (;;) {
          try {
            await limiter.consume('shared', 1);
            return;
          } catch (refusal) {
            if (refusal instanceof Error) throw refusal;
            await new Promise((resolve) => setTimeout(resolve, refusal.msBeforeNext));
          }
        }
      },
      async close() {
        client.disconnect();
      },
    };
  },
  async bottleneck(url, key, perSecond) {
    const limiter = await bottleneck(url, key, { minTime: 1000 / perSecond });
    return {
      wait: () => limiter.schedule(() => Promise.resolve()),
      async close() {
        await limiter.disconnect(false);
      },
    };
  },
  /**
   * The floor of booking starts and sleeping until them: start n of process `index` is at
   * `begin + (n * processes + index) / perSecond`, known without asking anybody; `wait()` sleeps
   * until it (never resolving before it), and `begin(start)` sets the instant of start 0.
   */
  async 'floor: fixed schedule'(_url, _key, perSecond, { index, processes }) {
    let begin = clock();
    let n = 0;
    return {
      begin(start) {
        begin = start;
      },
      async wait() {
        const at = begin + ((n++ * processes + index) * 1000) / perSecond;
        while (clock() < at) await sleep(at - clock());
      },
      async close() {},
    };
  },
};

/** A clock every process on the machine shares (CLOCK_MONOTONIC), in ms. */
export function clock() {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
