/**
 * What a server says about when to come back, as tables: Retry-After (delay-seconds, and an
 * HTTP-date resolved against the response's own Date), the IETF RateLimit headers (structured
 * field, dictionary and split forms), X-RateLimit-Remaining + X-RateLimit-Reset (delta seconds,
 * Unix seconds, Unix milliseconds), the precedence between them, and malformed values, which are
 * ignored rather than read as a wait. Then a property: for any header strings at all, `serverWait`
 * neither throws nor returns a negative or NaN wait.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  parseRateLimit,
  parseRetryAfter,
  parseXRateLimit,
  serverWait,
  type HeaderGetter,
} from '../src/http/index.ts';

/** A response's headers, read the way `Headers.get` reads them (case-insensitive, null if absent). */
function headers(fields: Record<string, string>): HeaderGetter {
  const map = new Map(Object.entries(fields).map(([name, value]) => [name.toLowerCase(), value]));
  return (name) => map.get(name.toLowerCase()) ?? null;
}

/** A client clock and a server clock that disagree by an hour, to show which one is used. */
const SERVER_DATE = 'Wed, 21 Oct 2015 07:28:00 GMT';
const SERVER_NOW = Date.parse(SERVER_DATE);
const CLIENT_NOW = SERVER_NOW + 3_600_000;

/** A local epoch-ms instant for the X-RateLimit-Reset tables. */
const NOW = 1_700_000_000_000;

describe('parseRetryAfter', () => {
  const table: [
    name: string,
    value: string | null,
    date: string | null,
    now: number,
    ms: number | undefined,
  ][] = [
    ['no header', null, null, NOW, undefined],
    ['delay-seconds', '120', null, NOW, 120_000],
    ['delay-seconds of zero', '0', null, NOW, 0],
    ['delay-seconds with surrounding spaces', ' 5 ', null, NOW, 5_000],
    ['delay-seconds ignore the Date header', '3', SERVER_DATE, CLIENT_NOW, 3_000],
    [
      'an IMF-fixdate against the response Date, not the client clock',
      'Wed, 21 Oct 2015 07:28:30 GMT',
      SERVER_DATE,
      CLIENT_NOW,
      30_000,
    ],
    [
      'an IMF-fixdate against the client clock when there is no Date',
      'Wed, 21 Oct 2015 07:28:30 GMT',
      null,
      SERVER_NOW,
      30_000,
    ],
    [
      'an IMF-fixdate against the client clock when the Date is malformed',
      'Wed, 21 Oct 2015 07:28:30 GMT',
      'yesterday',
      SERVER_NOW + 10_000,
      20_000,
    ],
    ['an RFC 850 date', 'Wednesday, 21-Oct-15 07:28:30 GMT', SERVER_DATE, CLIENT_NOW, 30_000],
    ['an asctime date', 'Wed Oct 21 07:28:30 2015', SERVER_DATE, CLIENT_NOW, 30_000],
    [
      'a date before the response Date as no wait',
      'Wed, 21 Oct 2015 07:27:00 GMT',
      SERVER_DATE,
      CLIENT_NOW,
      0,
    ],
    ['a date equal to the response Date as no wait', SERVER_DATE, SERVER_DATE, CLIENT_NOW, 0],
    [
      'a past date without a Date header as no wait',
      'Wed, 21 Oct 2015 07:28:30 GMT',
      null,
      CLIENT_NOW,
      0,
    ],
  ];
  for (const [name, value, date, now, ms] of table) {
    it(`reads ${name}`, () => {
      assert.equal(parseRetryAfter(value, date, now), ms);
    });
  }

  it('reads an asctime date as GMT whatever the local time zone', (t) => {
    // RFC 9110 §5.6.7: all three HTTP-date forms are in GMT; Date.parse reads asctime as local.
    const tz = process.env.TZ;
    t.after(() => {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    });
    process.env.TZ = 'America/New_York';
    assert.equal(parseRetryAfter('Wed Oct 21 07:28:30 2015', SERVER_DATE, CLIENT_NOW), 30_000);
  });
});

// parseRateLimit answers with a wait, 0 when the headers say there is quota left (an answer: no
// X-RateLimit wait under it), and undefined when they are absent or malformed.
describe('parseRateLimit', () => {
  const table: [name: string, fields: Record<string, string>, ms: number | undefined][] = [
    ['no header', {}, undefined],
    ['a structured field with nothing remaining', { RateLimit: '"default";r=0;t=30' }, 30_000],
    ['a structured field with a token name', { RateLimit: 'default;r=0;t=30' }, 30_000],
    [
      'a structured field next to its RateLimit-Policy',
      { RateLimit: '"default";r=0;t=7', 'RateLimit-Policy': '"default";q=100;w=60' },
      7_000,
    ],
    ['a structured field with quota left as no wait', { RateLimit: '"default";r=5;t=30' }, 0],
    ['a structured field without a reset as no wait', { RateLimit: '"default";r=0' }, undefined],
    ['a structured field with a reset of zero', { RateLimit: '"default";r=0;t=0' }, 0],
    [
      'a dictionary with nothing remaining',
      { RateLimit: 'limit=100, remaining=0, reset=30' },
      30_000,
    ],
    ['a dictionary in another order', { RateLimit: 'reset=12, limit=100, remaining=0' }, 12_000],
    [
      'a dictionary with quota left as no wait',
      { RateLimit: 'limit=100, remaining=3, reset=30' },
      0,
    ],
    [
      'split headers with nothing remaining',
      { 'RateLimit-Limit': '100', 'RateLimit-Remaining': '0', 'RateLimit-Reset': '30' },
      30_000,
    ],
    [
      'split headers with quota left as no wait',
      { 'RateLimit-Limit': '100', 'RateLimit-Remaining': '1', 'RateLimit-Reset': '30' },
      0,
    ],
    ['split headers without a reset as no wait', { 'RateLimit-Remaining': '0' }, undefined],
    [
      'a lone RateLimit-Policy as no wait',
      { 'RateLimit-Policy': '"default";q=100;w=60' },
      undefined,
    ],
  ];
  for (const [name, fields, ms] of table) {
    it(`reads ${name}`, () => {
      assert.equal(parseRateLimit(headers(fields)), ms);
    });
  }

  // The draft lets a server send one item per policy (several fields, which Headers.get joins with
  // ", "); a request needs quota in every policy, so any exhausted one asks for its reset.
  const policies: [name: string, field: string, ms: number | undefined][] = [
    ['the first of two policies exhausted', '"burst";r=0;t=1, "daily";r=100;t=3600', 1_000],
    ['the second of two policies exhausted', '"daily";r=100;t=3600, "burst";r=0;t=2', 2_000],
    ['both of two policies exhausted (the later reset)', '"a";r=0;t=5, "b";r=0;t=60', 60_000],
    ['neither of two policies exhausted', '"a";r=1;t=5, "b";r=9;t=60', 0],
  ];
  for (const [name, field, ms] of policies) {
    it(`reads ${name} in one RateLimit field`, () => {
      assert.equal(parseRateLimit(headers({ RateLimit: field })), ms);
    });
  }
});

describe('parseXRateLimit', () => {
  const table: [name: string, fields: Record<string, string>, ms: number | undefined][] = [
    ['no headers', {}, undefined],
    [
      'a reset in delta seconds',
      { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '30' },
      30_000,
    ],
    [
      'a reset as a Unix time in seconds',
      { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(NOW / 1000 + 60) },
      60_000,
    ],
    [
      'a reset as a Unix time in milliseconds',
      { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(NOW + 1_500) },
      1_500,
    ],
    [
      'a Unix time in seconds already past as no wait',
      { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(NOW / 1000 - 60) },
      0,
    ],
    [
      'a Unix time in milliseconds already past as no wait',
      { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(NOW - 1) },
      0,
    ],
    [
      'quota left as no wait',
      { 'X-RateLimit-Remaining': '5', 'X-RateLimit-Reset': '30' },
      undefined,
    ],
    ['a reset without a remaining count as no wait', { 'X-RateLimit-Reset': '30' }, undefined],
    ['a remaining count without a reset as no wait', { 'X-RateLimit-Remaining': '0' }, undefined],
  ];
  for (const [name, fields, ms] of table) {
    it(`reads ${name}`, () => {
      assert.equal(parseXRateLimit(headers(fields), NOW), ms);
    });
  }
});

describe('serverWait', () => {
  const all = {
    'Retry-After': '1',
    RateLimit: '"default";r=0;t=2',
    'X-RateLimit-Remaining': '0',
    'X-RateLimit-Reset': '3',
  };
  const table: [
    name: string,
    fields: Record<string, string>,
    wait: ReturnType<typeof serverWait>,
  ][] = [
    ['nothing when no header asks', { 'Content-Type': 'text/plain' }, undefined],
    ['Retry-After over RateLimit and X-RateLimit', all, { ms: 1_000, source: 'retry-after' }],
    [
      'RateLimit over X-RateLimit',
      { ...all, 'Retry-After': '' },
      { ms: 2_000, source: 'ratelimit' },
    ],
    [
      'X-RateLimit when nothing else asks',
      { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '3' },
      { ms: 3_000, source: 'x-ratelimit' },
    ],
    [
      'a Retry-After of zero over an exhausted RateLimit',
      { 'Retry-After': '0', RateLimit: '"default";r=0;t=30' },
      { ms: 0, source: 'retry-after' },
    ],
    [
      'nothing when a RateLimit field says there is quota left, whatever X-RateLimit says',
      { RateLimit: '"default";r=9;t=30', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '4' },
      undefined,
    ],
    [
      'a malformed Retry-After, falling through to RateLimit',
      { 'Retry-After': 'soon', RateLimit: '"default";r=0;t=30' },
      { ms: 30_000, source: 'ratelimit' },
    ],
    [
      'a malformed RateLimit, falling through to X-RateLimit',
      {
        RateLimit: '"default";r=0;t=later',
        'X-RateLimit-Remaining': '0',
        'X-RateLimit-Reset': '4',
      },
      { ms: 4_000, source: 'x-ratelimit' },
    ],
    [
      'an HTTP-date against the response Date',
      { 'Retry-After': 'Wed, 21 Oct 2015 07:28:10 GMT', Date: SERVER_DATE },
      { ms: 10_000, source: 'retry-after' },
    ],
  ];
  for (const [name, fields, wait] of table) {
    it(`gives ${name}`, () => {
      assert.deepEqual(serverWait(headers(fields), CLIENT_NOW), wait);
    });
  }

  it('reads the client clock from Date.now() by default', () => {
    const at = new Date(Date.now() + 60_000).toUTCString();
    const wait = serverWait(headers({ 'Retry-After': at }));
    assert.ok(wait !== undefined && wait.ms > 50_000 && wait.ms <= 60_000, JSON.stringify(wait));
  });
});

describe('malformed headers', () => {
  // Each value is not what its header's grammar allows: it must be ignored (undefined), not
  // read as a wait of any length, and never throw.
  const retryAfter = [
    '',
    '   ',
    '-1',
    '+5',
    '1e3',
    '0x10',
    '1,5',
    '1 2',
    '5s',
    '5 seconds',
    'NaN',
    'Infinity',
    'soon',
    'tomorrow 12:00',
    'Mon, 32 Jan 2024 00:00:00 GMT',
    'Wed, 21 Oct 2015 25:00:00 GMT',
    '2030-01-01T00:00:00Z',
    'not before 2030',
    'never 9999',
    'Tue 2024',
  ];
  for (const value of retryAfter) {
    it(`ignores Retry-After: ${JSON.stringify(value)}`, () => {
      assert.equal(parseRetryAfter(value, SERVER_DATE, CLIENT_NOW), undefined);
      assert.equal(
        serverWait(headers({ 'Retry-After': value, Date: SERVER_DATE }), CLIENT_NOW),
        undefined,
      );
    });
  }

  const rateLimit: Record<string, string>[] = [
    { RateLimit: '' },
    { RateLimit: 'garbage' },
    { RateLimit: '"default";r=0;t=-5' },
    { RateLimit: '"default";r=0;t=abc' },
    { RateLimit: '"default";r=0;t=30s' },
    { RateLimit: '"default";r=0;t=1e3' },
    { RateLimit: '"default";r=;t=30' },
    { RateLimit: '"default";r=zero;t=30' },
    { RateLimit: '"default";r=-0;t=30' },
    { RateLimit: '"default";rr=0;t=30' },
    { RateLimit: '"default";r=0;tt=30' },
    { RateLimit: 'limit=100, remaining=0, reset=' },
    { RateLimit: 'limit=100, remaining=none, reset=30' },
    { RateLimit: 'limit=100, remaining=0, reset=soon' },
    { 'RateLimit-Remaining': 'none', 'RateLimit-Reset': '30' },
    { 'RateLimit-Remaining': '0', 'RateLimit-Reset': '-1' },
    { 'RateLimit-Remaining': '0', 'RateLimit-Reset': '30 seconds' },
    { 'RateLimit-Remaining': '', 'RateLimit-Reset': '30' },
  ];
  for (const fields of rateLimit) {
    it(`ignores ${JSON.stringify(fields)}`, () => {
      assert.equal(parseRateLimit(headers(fields)), undefined);
      assert.equal(serverWait(headers(fields), CLIENT_NOW), undefined);
    });
  }

  const xRateLimit: Record<string, string>[] = [
    { 'X-RateLimit-Remaining': 'zero', 'X-RateLimit-Reset': '30' },
    { 'X-RateLimit-Remaining': '-0', 'X-RateLimit-Reset': '30' },
    { 'X-RateLimit-Remaining': '', 'X-RateLimit-Reset': '30' },
    { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '' },
    { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '-5' },
    { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': 'soon' },
    { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '1e3' },
    { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': 'Wed, 21 Oct 2015 07:28:30 GMT 5' },
  ];
  for (const fields of xRateLimit) {
    it(`ignores ${JSON.stringify(fields)}`, () => {
      assert.equal(parseXRateLimit(headers(fields), NOW), undefined);
      assert.equal(serverWait(headers(fields), NOW), undefined);
    });
  }
});

describe('serverWait on arbitrary headers', () => {
  const NAMES = [
    'retry-after',
    'date',
    'ratelimit',
    'ratelimit-policy',
    'ratelimit-remaining',
    'ratelimit-reset',
    'x-ratelimit-remaining',
    'x-ratelimit-reset',
  ] as const;

  /** Strings near the grammars (numbers, dates, parameter lists) as well as any string at all. */
  const value = fc.oneof(
    fc.string(),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.stringMatching(/^\s?-?\d{0,25}(\.\d{0,4})?\s?$/),
    { arbitrary: fc.constantFrom('0', ' 0', '00', '0.0'), weight: 3 },
    // Seconds to wait, Unix seconds and Unix milliseconds, past and future.
    fc.nat({ max: 2 ** 42 }).map(String),
    fc.nat({ max: 2 ** 32 }).map(String),
    fc.date({ noInvalidDate: true }).map((d) => d.toUTCString()),
    fc
      .tuple(fc.constantFrom('r', 't', 'remaining', 'reset', 'limit', 'q', 'w'), fc.string())
      .map(([key, v]) => `${key}=${v}`),
    fc
      .array(
        fc.tuple(
          fc.constantFrom('"default"', 'a', ''),
          fc.constantFrom('r', 't', 'rr'),
          fc.stringMatching(/^-?\d{0,20}(\.\d{0,3})?$/),
        ),
        { maxLength: 3 },
      )
      .map((items) => items.map(([n, k, v]) => `${n};${k}=${v};t=${v}`).join(', ')),
  );

  it('never throws, and never gives a negative or NaN wait', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.constantFrom(...NAMES), value),
        fc.oneof(fc.integer({ min: 0, max: 2 ** 42 }), fc.integer({ min: 1.6e12, max: 1.9e12 })),
        (fields, now) => {
          const get: HeaderGetter = (name) => fields[name] ?? null;
          const wait = serverWait(get, now);
          if (wait === undefined) return;
          assert.ok(['retry-after', 'ratelimit', 'x-ratelimit'].includes(wait.source), wait.source);
          assert.ok(!Number.isNaN(wait.ms) && wait.ms >= 0, `a wait of ${wait.ms}ms`);
        },
      ),
      { numRuns: 3_000 },
    );
  });
});
