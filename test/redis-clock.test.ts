/**
 * The shared gates against a wall clock that steps (NTP, a resumed VM, an administrator): Redis's
 * clock decides expiry, and this process's renewals and deadlines run on the monotonic clock, so
 * a step of `Date.now()` (faked here in the test process, the monotonic clock untouched) must not
 * let a lease lapse in Redis while its holder still runs. Real redis-server, real time, with room
 * for a loaded machine.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from 'redis';
import { fromNodeRedis, RedisSemaphore } from '../src/redis/index.ts';
import { needsRedis, RedisServer } from './_helpers/redis.ts';
import { stepWallClock } from './_helpers/wall-clock.ts';

const HOUR = 3_600_000;

describe('RedisSemaphore when the wall clock steps', needsRedis, () => {
  let server: RedisServer;
  let redis: ReturnType<typeof createClient>;

  before(async () => {
    server = await RedisServer.start();
    redis = createClient({ url: server.url, maintNotifications: 'disabled' });
    await redis.connect();
  });
  after(async () => {
    await redis.close();
    await server.stop();
  });

  for (const step of [-HOUR, HOUR]) {
    it(`keeps a lease renewed when the holder's wall clock steps ${step < 0 ? 'back' : 'forward'} an hour`, async () => {
      const holder = new RedisSemaphore(fromNodeRedis(redis), `step${step}`, {
        permits: 1,
        leaseMs: 600,
      });
      const other = new RedisSemaphore(fromNodeRedis(redis), `step${step}`, {
        permits: 1,
        leaseMs: 600,
      });
      try {
        const permit = await holder.acquire();
        const restore = stepWallClock(step);
        try {
          // Four leases long: without renewals the lease lapses in Redis after the first.
          await sleep(2_400);
        } finally {
          restore();
        }
        assert.equal(permit.signal.aborted, false, 'the holder still holds');
        assert.equal(await other.tryAcquireAsync(), undefined, 'nobody else holds it too');
        await permit[Symbol.asyncDispose]();
      } finally {
        await Promise.all([holder.close(), other.close()]);
      }
    });
  }
});
