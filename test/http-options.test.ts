/**
 * The options of `createFetch()`, `createRequest()` and `createExchange()`: every one is checked
 * when the function is made, not at the first request, and a bad one is refused with an error that
 * names it by its path (`perOrigin.rate`, `origins["https://a.example"].rate`), says what was
 * expected and what came. No request is made here: these are checks of construction alone.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RetryBudget } from '../src/index.ts';
import { createExchange, createFetch, createRequest, type HttpOptions } from '../src/http/index.ts';

const makers = { createFetch, createRequest, createExchange } as const;

/** A bad option, and the whole error it must give (its class and message). */
const bad: [what: string, options: unknown, error: RegExp][] = [
  ['options', 'x', /^TypeError: Expected `options` to be an object, got `"x"` \(string\)$/],
  [
    'concurrency',
    { concurrency: 0 },
    /^RangeError: Expected `concurrency` to be an integer >= 1 or Infinity, got `0` \(number\)$/,
  ],
  [
    'concurrency of the wrong type',
    { concurrency: '5' },
    /^TypeError: Expected `concurrency` to be an integer >= 1 or Infinity, got `"5"` \(string\)$/,
  ],
  ['perOrigin', { perOrigin: 5 }, /^TypeError: Expected `perOrigin` to be an object, got `5`/],
  [
    'perOrigin.concurrency',
    { perOrigin: { concurrency: 1.5 } },
    /^RangeError: Expected `perOrigin.concurrency` to be an integer >= 1 or Infinity, got `1.5` \(number\)$/,
  ],
  [
    'perOrigin.rate',
    { perOrigin: { rate: '10/x' } },
    /^RangeError: Expected `perOrigin.rate` to be a rate like "10\/s", "500\/min", "1\/2s" or \{ limit, interval \}, got `"10\/x"` \(string\)$/,
  ],
  [
    'perOrigin.rate, one of several',
    { perOrigin: { rate: ['10/s', 'fast'] } },
    /^RangeError: Expected `perOrigin.rate\[1\]` to be a rate like .*, got `"fast"` \(string\)$/,
  ],
  [
    'perOrigin.rate as an object',
    { perOrigin: { rate: { limit: 0, interval: 1000 } } },
    /^RangeError: Expected `perOrigin.rate.limit` to be an integer >= 1, got `0` \(number\)$/,
  ],
  [
    'perOrigin.burst',
    { perOrigin: { rate: '10/s', burst: 0 } },
    /^RangeError: Expected `perOrigin.burst` to be an integer >= 1, got `0` \(number\)$/,
  ],
  [
    'perOrigin.burst above the rate',
    { perOrigin: { rate: '2/s', burst: 3 } },
    /^RangeError: Expected `perOrigin.burst` to be at most the limit of every rate, got `3` \(number\) for 2\/s$/,
  ],
  [
    'perOrigin.window',
    { perOrigin: { window: 'fixed' } },
    /^TypeError: Expected `perOrigin.window` to be one of 'spaced', 'sliding', got `"fixed"` \(string\)$/,
  ],
  [
    'perOrigin.burst with a sliding window',
    { perOrigin: { rate: '5/s', window: 'sliding', burst: 2 } },
    /^TypeError: `perOrigin.burst` applies to window 'spaced' only/,
  ],
  ['origins', { origins: 'x' }, /^TypeError: Expected `origins` to be an object, got `"x"`/],
  ...[
    'not a url',
    'ftp://a.example',
    'https://a.example/v1',
    'https://a.example/?q',
    'https://u:p@a.example',
  ].map((key): [string, unknown, RegExp] => [
    `a key of origins: ${key}`,
    { origins: { [key]: {} } },
    new RegExp(
      `^TypeError: Expected the keys of \`origins\` to be origins like "https://api.example.com", got \`${JSON.stringify(key).replace(/[.?/]/g, '\\$&')}\` \\(string\\)$`,
    ),
  ]),
  [
    'keys of origins that name the same origin',
    { origins: { 'https://a.example': {}, 'HTTPS://A.example:443/': {} } },
    /^RangeError: Expected the keys of `origins` to name each origin once, got `"HTTPS:\/\/A.example:443\/"` \(string\) for https:\/\/a.example, named before$/,
  ],
  [
    'an entry of origins',
    { origins: { 'https://a.example': 5 } },
    /^TypeError: Expected `origins\["https:\/\/a.example"\]` to be an object, got `5` \(number\)$/,
  ],
  [
    'the rate of an entry of origins',
    { origins: { 'https://a.example': { rate: '1/q' } } },
    /^RangeError: Expected `origins\["https:\/\/a.example"\].rate` to be a rate like .*, got `"1\/q"` \(string\)$/,
  ],
  [
    'the concurrency of an entry of origins',
    { origins: { 'https://a.example': { concurrency: 0 } } },
    /^RangeError: Expected `origins\["https:\/\/a.example"\].concurrency` to be an integer >= 1 or Infinity, got `0`/,
  ],
  [
    'the burst of an entry of origins, above the rate it gets from perOrigin',
    { perOrigin: { rate: '2/s' }, origins: { 'https://a.example': { burst: 5 } } },
    /^RangeError: Expected `origins\["https:\/\/a.example"\].burst` to be at most the limit of every rate, got `5`/,
  ],
  [
    'retry',
    { retry: -1 },
    /^RangeError: Expected `retry` to be an integer >= 0 or Infinity, got `-1` \(number\)$/,
  ],
  [
    'retry of the wrong type',
    { retry: 'x' },
    /^TypeError: Expected `retry` to be a number of retries or an object, got `"x"` \(string\)$/,
  ],
  ['retry.retries', { retry: { retries: -1 } }, /^RangeError: Expected `retry.retries` to be/],
  ['retry.minDelay', { retry: { minDelay: -1 } }, /^RangeError: Expected `retry.minDelay` to be/],
  ['retry.maxDelay', { retry: { maxDelay: 'x' } }, /^TypeError: Expected `retry.maxDelay` to be/],
  ['retry.factor', { retry: { factor: 0.5 } }, /^RangeError: Expected `retry.factor` to be/],
  ['retry.jitter', { retry: { jitter: 'x' } }, /^TypeError: Expected `retry.jitter` to be one of/],
  [
    'retry.budget',
    { retry: { budget: {} } },
    /^TypeError: Expected `retry.budget` to be a RetryBudget/,
  ],
  [
    'retry.random',
    { retry: { random: 1 } },
    /^TypeError: Expected `retry.random` to be a function/,
  ],
  [
    'retry.onRetry',
    { retry: { onRetry: 1 } },
    /^TypeError: Expected `retry.onRetry` to be a function/,
  ],
  [
    'retry.methods',
    { retry: { methods: 'GET' } },
    /^TypeError: Expected `retry.methods` to be an array of HTTP methods, got `"GET"` \(string\)$/,
  ],
  [
    'one of retry.methods',
    { retry: { methods: ['GET', 'BAD METHOD'] } },
    /^TypeError: Expected `retry.methods\[1\]` to be an HTTP method \(a token, such as "GET"\), got `"BAD METHOD"` \(string\)$/,
  ],
  [
    'retry.statuses',
    { retry: { statuses: 503 } },
    /^TypeError: Expected `retry.statuses` to be an array of status codes, got `503` \(number\)$/,
  ],
  [
    'one of retry.statuses',
    { retry: { statuses: [503, 99] } },
    /^RangeError: Expected `retry.statuses\[1\]` to be an integer from 100 to 599, got `99` \(number\)$/,
  ],
  [
    'retry.maxRetryAfter, which is the client’s own option',
    { retry: { maxRetryAfter: 5 } },
    /^TypeError: Expected `retry.maxRetryAfter` to be absent \(the HTTP client’s is `maxRetryAfter`\), got `5` \(number\)$/,
  ],
  [
    'retry.retryIf, which the client does not take',
    { retry: { retryIf: () => true } },
    /^TypeError: Expected `retry.retryIf` to be absent \(the HTTP client retries by `retry.methods` and `retry.statuses`\), got `\[function retryIf\]` \(function\)$/,
  ],
  [
    'timeout',
    { timeout: -1 },
    /^RangeError: Expected `timeout` to be a number >= 0 or Infinity, got `-1` \(number\)$/,
  ],
  [
    'maxRetryAfter',
    { maxRetryAfter: 'x' },
    /^TypeError: Expected `maxRetryAfter` to be a number >= 0 or Infinity, got `"x"` \(string\)$/,
  ],
  [
    'signal',
    { signal: {} },
    /^TypeError: Expected `signal` to be an AbortSignal, got `\[object\]`/,
  ],
  ['onReport', { onReport: 'x' }, /^TypeError: Expected `onReport` to be a function, got `"x"`/],
  ['clock', { clock: 5 }, /^TypeError: Expected `clock` to be an object, got `5` \(number\)$/],
  [
    'clock.now',
    { clock: { setTimeout, clearTimeout } },
    /^TypeError: Expected `clock.now` to be a function, got `undefined` \(undefined\)$/,
  ],
  [
    'clock.clearTimeout',
    { clock: { now: () => 0, setTimeout } },
    /^TypeError: Expected `clock.clearTimeout` to be a function, got `undefined` \(undefined\)$/,
  ],
];

for (const [name, make] of Object.entries(makers)) {
  describe(`${name}(): options`, () => {
    for (const [what, options, error] of bad) {
      it(`refuses a bad ${what} when it is made`, () => {
        assert.throws(
          () => make(options as HttpOptions),
          (thrown: unknown) => {
            assert.match(String(thrown), error);
            return true;
          },
        );
      });
    }

    it('takes every option, each at a good value', async () => {
      const made = make({
        concurrency: 10,
        perOrigin: { concurrency: 4, rate: ['10/s', { limit: 100, interval: 60_000 }] },
        origins: {
          'https://a.example': { concurrency: 2, rate: '5/s', window: 'sliding' },
          'https://d.example': { rate: '20/s', burst: 5 },
          'http://b.example:8080/': { concurrency: Infinity },
        },
        retry: {
          retries: 3,
          minDelay: 10,
          maxDelay: 1_000,
          factor: 3,
          jitter: 'equal',
          budget: new RetryBudget(),
          random: Math.random,
          onRetry: () => undefined,
          methods: ['get', 'POST'],
          statuses: [429, 503],
        },
        timeout: 5_000,
        maxRetryAfter: 10_000,
        signal: new AbortController().signal,
        onReport: () => undefined,
        clock: { now: () => performance.now(), setTimeout, clearTimeout },
      });
      // The keys of `origins` are read as origins: each limits the origin it names.
      assert.equal(made.client.limiter.limiterFor('https://a.example').concurrency, 2);
      assert.equal(made.client.limiter.limiterFor('http://b.example:8080').concurrency, Infinity);
      assert.equal(made.client.limiter.limiterFor('https://c.example').concurrency, 4);
      await made.close();
    });
  });
}
