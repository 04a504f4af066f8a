/**
 * Counts (capacities, concurrencies, weights, retries, queue lengths, bursts) are checked by one
 * validator: an integer in range, `Infinity` where the option allows it, and never an integer
 * past `Number.MAX_SAFE_INTEGER`, where `held + 1` can equal `held` and a gate would grant past
 * its capacity. Every public way in is tried here.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  all,
  KeyedLimiter,
  limit,
  Limiter,
  limitFunction,
  map,
  mapIterable,
  mapSettled,
  RateLimiter,
  retry,
  Semaphore,
} from '../src/index.ts';
import { createExchange } from '../src/http/index.ts';

const UNSAFE = 2 ** 53;

/** The message for `value` refused as `name`, an integer >= `min` (or Infinity). */
function unsafe(name: string, min: number, infinity: boolean, value = UNSAFE): RegExp {
  const expected = `an integer >= ${min}${infinity ? ' or Infinity' : ''}`;
  return new RegExp(
    `^Expected \`${name.replace(/[.[\]]/g, '\\$&')}\` to be ${expected}, got \`${value}\` \\(number\\): ` +
      `above Number\\.MAX_SAFE_INTEGER \\(9007199254740991\\), where integers are no longer exact$`,
  );
}

describe('counts are safe integers', () => {
  it('a semaphore of 2^53 permits would grant past its capacity: it is refused', () => {
    assert.throws(() => new Semaphore(UNSAFE), {
      name: 'RangeError',
      message: unsafe('permits', 1, true),
    });
    assert.throws(() => new Semaphore(2 ** 60), {
      name: 'RangeError',
      message: unsafe('permits', 1, true, 2 ** 60),
    });
  });

  it('the largest safe integer still counts exactly', () => {
    const sem = new Semaphore(Number.MAX_SAFE_INTEGER);
    const most = sem.tryAcquire(Number.MAX_SAFE_INTEGER - 1);
    assert.ok(most !== undefined);
    assert.ok(sem.tryAcquire(1) !== undefined);
    assert.equal(sem.tryAcquire(1), undefined);
    assert.equal(sem.held, Number.MAX_SAFE_INTEGER);
  });

  it('Semaphore: capacity, weights and releases', async () => {
    const sem = new Semaphore(1);
    assert.throws(() => (sem.capacity = UNSAFE), { message: unsafe('capacity', 1, true) });
    assert.equal(sem.capacity, 1);
    assert.throws(() => sem.tryAcquire(UNSAFE), { message: unsafe('weight', 1, false) });
    await assert.rejects(sem.acquire({ weight: UNSAFE }), { message: unsafe('weight', 1, false) });
    assert.throws(
      () => {
        sem.release(UNSAFE);
      },
      { message: unsafe('weight', 1, false) },
    );
  });

  it('limit() and limitFunction(): the concurrency, given and set', () => {
    assert.throws(() => limit(UNSAFE), {
      name: 'RangeError',
      message: unsafe('concurrency', 1, true),
    });
    assert.throws(() => limit({ concurrency: UNSAFE }), {
      message: unsafe('concurrency', 1, true),
    });
    const run = limit(2);
    assert.throws(() => (run.concurrency = UNSAFE), { message: unsafe('concurrency', 1, true) });
    assert.equal(run.concurrency, 2);
    assert.throws(() => limitFunction(() => 1, { concurrency: UNSAFE }), {
      message: unsafe('concurrency', 1, true),
    });
  });

  it('Limiter and KeyedLimiter: concurrency, maxQueue, retries, weights, given and set', async () => {
    assert.throws(() => new Limiter({ concurrency: UNSAFE }), {
      message: unsafe('concurrency', 1, true),
    });
    assert.throws(() => new Limiter({ maxQueue: UNSAFE }), {
      message: unsafe('maxQueue', 0, true),
    });
    assert.throws(() => new Limiter({ retry: UNSAFE }), { message: unsafe('retry', 0, true) });
    const limiter = new Limiter({ concurrency: 2 });
    assert.throws(() => (limiter.concurrency = UNSAFE), {
      message: unsafe('concurrency', 1, true),
    });
    assert.equal(limiter.concurrency, 2);
    await assert.rejects(limiter.acquire({ weight: UNSAFE }), {
      message: unsafe('weight', 1, false),
    });
    await limiter.close();
    assert.throws(() => new KeyedLimiter({ concurrency: UNSAFE }), {
      message: unsafe('concurrency', 1, true),
    });
    assert.throws(() => new KeyedLimiter({ perKey: { concurrency: UNSAFE } }), {
      message: unsafe('concurrency', 1, true),
    });
    const keyed = new KeyedLimiter({ concurrency: 2 });
    assert.throws(() => (keyed.concurrency = UNSAFE), { message: unsafe('concurrency', 1, true) });
    assert.equal(keyed.concurrency, 2);
    await keyed.close();
  });

  it('map, all, mapSettled and mapIterable: the concurrency', async () => {
    const options = { concurrency: UNSAFE };
    await assert.rejects(
      map([1], (x) => x, options),
      { message: unsafe('concurrency', 1, true) },
    );
    await assert.rejects(all([() => 1], options), { message: unsafe('concurrency', 1, true) });
    await assert.rejects(
      mapSettled([1], (x) => x, options),
      {
        message: unsafe('concurrency', 1, true),
      },
    );
    assert.throws(() => mapIterable([1], (x) => x, options), {
      message: unsafe('concurrency', 1, true),
    });
  });

  it('RateLimiter burst, retry() retries, and the HTTP client concurrency', async () => {
    assert.throws(() => new RateLimiter({ rate: '10/s', burst: UNSAFE }), {
      message: /^Expected `burst` to be an integer >= 1, got `9007199254740992` \(number\): above/,
    });
    assert.throws(() => new RateLimiter({ rate: { limit: UNSAFE, interval: 1000 } }), {
      message: unsafe('rate.limit', 1, false),
    });
    assert.throws(() => new RateLimiter(`${UNSAFE}/s`), { name: 'RangeError' });
    await assert.rejects(
      retry(() => 1, { retries: UNSAFE }),
      {
        message: unsafe('options.retries', 0, true),
      },
    );
    assert.throws(() => createExchange({ concurrency: UNSAFE }), {
      message: unsafe('concurrency', 1, true),
    });
    assert.throws(() => createExchange({ perOrigin: { concurrency: UNSAFE } }), {
      message: unsafe('perOrigin.concurrency', 1, true),
    });
  });
});
