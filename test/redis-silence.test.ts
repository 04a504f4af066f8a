/**
 * A Redis that stops answering while its connection stays open: every gate made on one client
 * shares what it knows of the calls unanswered, and once one has waited a whole timeout with
 * nothing answered since, a new call fails at once, unsent, until Redis answers again.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { TimeoutError } from '../src/errors.ts';
import { RedisRateLimiter, RedisSemaphore } from '../src/redis/index.ts';
import { answerWithin, Silence } from '../src/redis/_timeout.ts';
import { needsRedis, RedisServer, untilSent } from './_helpers/redis.ts';
import { within } from './_helpers/within.ts';

/** A call that settles when told to. */
function deferred(): { promise: Promise<string>; answer: () => void; fail: () => void } {
  let answer = (): void => undefined;
  let fail = (): void => undefined;
  const promise = new Promise<string>((resolve, reject) => {
    answer = () => {
      resolve('OK');
    };
    fail = () => {
      reject(new Error('connection lost'));
    };
  });
  promise.catch(() => undefined);
  return { promise, answer, fail };
}

describe('Silence', () => {
  it('counts from the oldest call unanswered, or from the last answer if later', async () => {
    let now = 0;
    const silence = new Silence(() => now);
    const a = deferred();
    const b = deferred();
    const c = deferred();
    const settle = async (call: () => void): Promise<void> => {
      call();
      await Promise.resolve();
      await Promise.resolve();
    };
    assert.equal(silence.silentFor(), 0, 'at 0: nothing sent');
    now = 100;
    void silence.track(a.promise);
    assert.equal(silence.silentFor(), 0, 'at 100: a sent');
    now = 600;
    assert.equal(silence.silentFor(), 500, 'at 600: a out for 500');
    now = 700;
    void silence.track(b.promise);
    assert.equal(silence.silentFor(), 600, 'at 700: b sent, a still out');
    now = 800;
    await settle(a.answer);
    assert.equal(silence.silentFor(), 0, 'at 800: a answered');
    now = 3_000;
    assert.equal(silence.silentFor(), 2_200, 'at 3 000: b out, nothing heard since 800');
    void silence.track(c.promise);
    now = 3_100;
    await settle(b.fail);
    assert.equal(
      silence.silentFor(),
      0,
      'at 3 100: b failed (its connection given up), c just sent',
    );
    await settle(c.answer);
    assert.equal(silence.silentFor(), 0, 'none out');
  });

  it('fails a call at once, unsent, once Redis has been silent for its timeout', async () => {
    let now = 0;
    const silence = new Silence(() => now);
    const stuck = deferred();
    void silence.track(stuck.promise);
    now = 499;
    let sent = 0;
    const calls: ReturnType<typeof deferred>[] = [];
    const send = (): Promise<string> => {
      sent++;
      const call = deferred();
      calls.push(call);
      return call.promise;
    };
    // Silent for less than the timeout: sent (and unanswered too).
    const sentLast = answerWithin(silence, send, 500, 'a call');
    assert.equal(sent, 1);
    now = 500;
    await assert.rejects(answerWithin(silence, send, 500, 'a call'), (error) => {
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.message, 'Redis has not answered for 500ms: not sent (a call)');
      return true;
    });
    assert.equal(sent, 1, 'not sent');
    // Redis answers the stuck call: heard again, the next call is sent.
    stuck.answer();
    await Promise.resolve();
    const next = answerWithin(silence, send, 500, 'a call');
    assert.equal(sent, 2);
    for (const call of calls) call.answer();
    assert.deepEqual(await Promise.all([sentLast, next]), ['OK', 'OK']);
  });
});

describe('shared gates on a Redis gone silent', needsRedis, () => {
  let server: RedisServer;

  before(async () => {
    server = await RedisServer.start();
  });
  after(async () => {
    await server.stop();
  });

  it('fail at once, unsent, once a call on their client has waited a whole timeout; then work again', async () => {
    const redis = await createClient({ url: server.url }).connect();
    const options = { permits: 2, leaseMs: 3_000, commandTimeoutMs: 300 };
    const sem = new RedisSemaphore(redis, 'silent', options);
    const rate = new RedisRateLimiter(redis, 'silent', { rate: '100/s', commandTimeoutMs: 300 });
    try {
      (await sem.acquire()).release();
      await rate.wait();
      server.pause();
      await assert.rejects(sem.acquire(), /Redis did not answer within 300ms/);
      // Every later call, of any gate on this client, fails at once without being sent.
      await assert.rejects(sem.acquire({ weight: 2 }), (error) => {
        assert.ok(error instanceof TimeoutError);
        assert.match(
          error.message,
          /^Redis has not answered for \d+ms: not sent \(acquire of RedisSemaphore silent\)$/,
        );
        return true;
      });
      await assert.rejects(rate.wait(), /Redis has not answered for \d+ms: not sent/);
      server.resume();
      // Once the calls sent before the silence are answered, Redis is heard again (until then,
      // calls go on failing at once).
      const permit = await within(
        5_000,
        untilSent(() => sem.acquire({ weight: 2 })),
        'granted',
      );
      permit.release();
      await within(
        5_000,
        untilSent(() => rate.wait()),
        'a start',
      );
    } finally {
      server.resume();
      await Promise.all([sem.close(), rate.close()]);
      await redis.close();
    }
  });
});
