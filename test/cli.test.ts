/**
 * `sluice fetch`, run in-process with injected streams against local servers: one record per
 * input line whatever the line, exit codes, option errors, ordering, --resume, headers and
 * credentials, --body, progress on stderr, interrupts and the HTML report.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import {
  cli,
  indexes,
  ok,
  range,
  startCli,
  startServer,
  tempDir,
  until,
  type TestServer,
} from './cli-helpers.ts';

const { dir, remove, file } = tempDir();
after(remove);

/** A server that answers each request after 20 ms, and keeps the most it had in flight at once. */
async function countingServer(): Promise<TestServer & { peak: number }> {
  let inFlight = 0;
  const counting = Object.assign(
    await startServer((_req, res) => {
      inFlight++;
      counting.peak = Math.max(counting.peak, inFlight);
      setTimeout(() => {
        inFlight--;
        res.end('ok');
      }, 20);
    }),
    { peak: 0 },
  );
  return counting;
}

describe('sluice fetch: records', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res) => {
      if (req.url === '/missing') {
        res.statusCode = 404;
        res.end('no');
      } else res.end('hello');
    });
  });
  after(() => server.close());

  it('writes one record per input line, an error record for each bad line, and exits 1', async () => {
    const input = [
      `${server.url}/a`,
      `{"url":"${server.url}/b","id":"b-1"}`,
      '{"url": not json',
      'not a url',
      'ftp://example.com/file',
      `${server.url}/missing`,
      '["an", "array"]',
      `{"id": 9}`,
    ];
    const run = await cli(['fetch', '-q', file('mixed.txt', input)]);
    assert.equal(run.code, 1);
    assert.deepEqual(indexes(run.records), range(input.length));
    const by = new Map(run.records.map((r) => [r.index, r]));
    assert.deepEqual(by.get(0), {
      index: 0,
      id: null,
      url: `${server.url}/a`,
      status: 200,
      ok: true,
      attempts: 1,
      ms: by.get(0)!.ms,
      bytes: 5,
      error: null,
    });
    assert.equal(typeof by.get(0)!.ms, 'number');
    assert.equal(by.get(1)!.id, 'b-1');
    assert.equal(by.get(1)!.ok, true);
    assert.match(by.get(2)!.error as string, /^the line is not valid JSON/);
    assert.equal(by.get(2)!.url, null);
    assert.equal(by.get(3)!.error, 'invalid URL');
    assert.equal(by.get(3)!.url, 'not a url');
    assert.match(by.get(4)!.error as string, /unsupported scheme "ftp"/);
    assert.equal(by.get(5)!.status, 404);
    assert.equal(by.get(5)!.ok, false);
    assert.equal(by.get(5)!.error, 'HTTP 404 Not Found');
    assert.equal(by.get(6)!.error, 'the line is not a JSON object');
    assert.equal(by.get(7)!.id, 9);
    assert.match(by.get(7)!.error as string, /"url"/);
    for (const record of run.records.filter((r) => r.ok !== true)) {
      assert.equal(record.ok, false);
      assert.notEqual(record.error, null);
    }
  });

  it('gives a line whose headers cannot be sent an error record, and runs the lines after it', async () => {
    const input = [
      JSON.stringify({ url: `${server.url}/a`, headers: { 'x-split': 'a\r\nb' } }),
      JSON.stringify({ url: `${server.url}/b`, headers: { 'bad name': 'v' } }),
      `${server.url}/c`,
    ];
    const run = await cli(['fetch', '-q', file('bad-headers.txt', input)]);
    assert.equal(run.code, 1);
    assert.deepEqual(indexes(run.records), range(input.length));
    const by = new Map(run.records.map((r) => [r.index, r]));
    assert.equal(by.get(0)!.error, 'invalid x-split header: "a\\r\\nb"');
    assert.equal(by.get(0)!.attempts, 1, 'not retried: the request, not the network, is at fault');
    assert.equal(by.get(1)!.error, 'invalid header name "bad name"');
    assert.equal(by.get(2)!.ok, true);
  });

  it('exits 0 and leaves stderr empty with --quiet when every line is ok', async () => {
    const run = await cli([
      'fetch',
      '--quiet',
      file('good.txt', [`${server.url}/1`, `${server.url}/2`]),
    ]);
    assert.equal(run.code, 0);
    assert.equal(run.records.length, 2);
    assert.equal(run.stderr, '');
  });

  it('reads stdin for - and skips blank lines, keeping line numbers as indexes', async () => {
    const run = await cli(['fetch', '-q', '-'], {
      stdin: `${server.url}/x\r\n\n   \n${server.url}/y`,
    });
    assert.equal(run.code, 0);
    assert.deepEqual(indexes(run.records), [0, 3]);
    assert.equal(run.records.find((r) => r.index === 3)!.url, `${server.url}/y`);
  });

  it('writes the records to a file with -o', async () => {
    const out = join(dir, 'out.jsonl');
    const run = await cli(['fetch', '-q', '-o', out, file('o.txt', [`${server.url}/1`])]);
    assert.equal(run.code, 0);
    assert.equal(run.stdout, '');
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    assert.equal(lines.length, 1);
    assert.equal((JSON.parse(lines[0]!) as { ok: boolean }).ok, true);
  });

  it('sends JSONL requests with their method, headers and body', async () => {
    const line = JSON.stringify({
      url: `${server.url}/post`,
      method: 'post',
      headers: { 'X-Thing': 'one' },
      body: { a: 1 },
    });
    const before = server.requests.length;
    const run = await cli(['fetch', '-q', '-'], { stdin: `${line}\n` });
    assert.equal(run.code, 0);
    const request = server.requests[before]!;
    assert.equal(request.method, 'POST');
    assert.equal(request.headers['x-thing'], 'one');
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.body, '{"a":1}');
  });

  it('sends URL lines with -X as their method', async () => {
    const before = server.requests.length;
    const run = await cli(['fetch', '-q', '-X', 'delete', '-'], { stdin: `${server.url}/d\n` });
    assert.equal(run.code, 0);
    assert.equal(server.requests[before]!.method, 'DELETE');
  });
});

describe('sluice fetch: option errors', () => {
  const cases: [string, string[], RegExp][] = [
    [
      'a concurrency of 0',
      ['fetch', '-c', '0'],
      /'-c, --concurrency <n>' argument '0' is invalid\. Expected an integer >= 1 or "auto"\./,
    ],
    ['a concurrency that is not an integer', ['fetch', '-c', '2.5'], /Expected an integer >= 1/],
    ['a malformed rate', ['fetch', '--rate', 'ten per second'], /Expected a rate like "10\/s"/],
    ['a malformed duration', ['fetch', '--timeout', 'soon'], /Expected a duration like "30s"/],
    ['a negative retry count', ['fetch', '--retries', '-1'], /--retries/],
    [
      'a header without a colon',
      ['fetch', '-H', 'Authorization Bearer x'],
      /Expected "Name: value"/,
    ],
    ['an unknown option', ['fetch', '--bogus'], /unknown option '--bogus'/],
    [
      '-c auto with --max-concurrency 0',
      ['fetch', '-c', 'auto', '--max-concurrency', '0'],
      /'--max-concurrency <n>' argument '0' is invalid\. Expected an integer >= 1\./,
    ],
    [
      '-c neither a number nor auto',
      ['fetch', '-c', 'lots'],
      /'-c, --concurrency <n>' argument 'lots' is invalid\. Expected an integer >= 1 or "auto"\./,
    ],
    [
      '--max-concurrency without -c auto',
      ['fetch', '-c', '8', '--max-concurrency', '100'],
      /--max-concurrency is the ceiling of -c auto: use it with -c auto/,
    ],
    [
      '--algorithm without -c auto',
      ['fetch', '--algorithm', 'vegas'],
      /--algorithm is how -c auto adapts: use it with -c auto/,
    ],
    [
      'an unknown --algorithm',
      ['fetch', '-c', 'auto', '--algorithm', 'bbr'],
      /'--algorithm <name>' argument 'bbr' is invalid\. Allowed choices are gradient2, vegas, aimd\./,
    ],
    [
      '-c auto with --per-host-concurrency',
      ['fetch', '-c', 'auto', '--per-host-concurrency', '4'],
      /with -c auto each origin's limit adapts: --per-host-concurrency cannot be used with it/,
    ],
    ['a second file', ['fetch', 'a.txt', 'b.txt'], /too many arguments/],
  ];
  for (const [what, argv, message] of cases) {
    it(`prints one line and exits 2 for ${what}`, async () => {
      const run = await cli(argv);
      assert.equal(run.code, 2);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, /^sluice: [^\n]+ \(see sluice fetch --help\)\n$/);
      assert.match(run.stderr, message);
    });
  }

  it('prints one line and exits 2 for an unknown command', async () => {
    const run = await cli(['fetchh']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^sluice: unknown command 'fetchh'[^\n]*\(see sluice --help\)\n$/);
  });

  it('prints one line and exits 2 for an input file that does not exist', async () => {
    const run = await cli(['fetch', join(dir, 'nope.txt')]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^sluice: cannot read [^\n]*nope\.txt: no such file or directory\n$/);
  });

  it('prints one line and exits 2 for an output in a directory that does not exist', async () => {
    const run = await cli(['fetch', '-o', join(dir, 'no', 'such', 'out.jsonl'), '-'], {
      stdin: '',
    });
    assert.equal(run.code, 2);
    assert.match(
      run.stderr,
      /^sluice: cannot write [^\n]*out\.jsonl: no such file or directory\n$/,
    );
  });

  it('prints help on stdout and exits 0 for --help', async () => {
    const run = await cli(['fetch', '--help']);
    assert.equal(run.code, 0);
    assert.match(run.stdout, /Usage: sluice fetch \[options\] \[file\]/);
    assert.match(run.stdout, /--per-host-concurrency/);
    assert.match(run.stdout, /Exit codes: 0/);
    assert.equal(run.stderr, '');
  });

  it('prints the usage on stderr and exits 2 without a command', async () => {
    const run = await cli([]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /Usage: sluice/);
  });

  it('accepts durations as "250ms", "2s" or a number of milliseconds', async () => {
    for (const timeout of ['250ms', '2s', '1500']) {
      const run = await cli(['fetch', '-q', '--timeout', timeout, '-'], { stdin: '' });
      assert.equal(run.code, 0, `--timeout ${timeout}: ${run.stderr}`);
    }
  });
});

describe('sluice fetch: order, timeouts and retries', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const delay = Number(url.searchParams.get('delay') ?? 0);
      if (url.pathname === '/flaky') {
        const seen = server.requests.filter((r) => r.url === req.url).length;
        if (seen === 1) {
          res.statusCode = 429;
          res.setHeader('retry-after', '0');
          res.end('slow down');
          return;
        }
      }
      if (url.pathname === '/stall') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('the first bytes of many');
        return;
      }
      setTimeout(() => res.end(url.pathname), delay);
    });
  });
  after(() => server.close());

  // The first line is the slowest: as they finish, it comes last; in order, first.
  const lines = (): string[] => [0, 1, 2, 3].map((i) => `${server.url}/${i}?delay=${(4 - i) * 60}`);

  it('writes records as they finish by default', async () => {
    const run = await cli(['fetch', '-q', '-c', '4', file('order1.txt', lines())]);
    assert.deepEqual(
      run.records.map((r) => r.index),
      [3, 2, 1, 0],
    );
  });

  it('writes records in input order with --ordered', async () => {
    const run = await cli(['fetch', '-q', '-c', '4', '--ordered', file('order2.txt', lines())]);
    assert.deepEqual(
      run.records.map((r) => r.index),
      [0, 1, 2, 3],
    );
  });

  it('fails a request that takes longer than --timeout', async () => {
    const run = await cli(['fetch', '-q', '--timeout', '50ms', '--retries', '0', '-'], {
      stdin: `${server.url}/slow?delay=1000\n`,
    });
    assert.equal(run.code, 1);
    assert.equal(run.records[0]!.ok, false);
    assert.match(run.records[0]!.error as string, /timed out after 50ms/);
  });

  it('fails a response whose body stalls past --timeout, keeping its status', async () => {
    const run = await cli(['fetch', '-q', '--timeout', '100ms', '--retries', '0', '-'], {
      stdin: `${server.url}/stall\n`,
    });
    assert.equal(run.code, 1);
    assert.equal(run.records[0]!.status, 200);
    assert.equal(run.records[0]!.ok, false);
    assert.match(run.records[0]!.error as string, /timed out after 100ms/);
  });

  it('retries a 429, counts the attempts, and reports the 429', async () => {
    const run = await cli(['fetch', '-'], { stdin: `${server.url}/flaky\n` });
    assert.equal(run.code, 0);
    assert.equal(run.records[0]!.attempts, 2);
    assert.equal(run.records[0]!.status, 200);
    assert.match(run.stderr, /^sluice fetch: 1 done, 0 failed, 1 429s in /);
  });

  it('keeps at most --concurrency requests in flight', async () => {
    const counting = await countingServer();
    try {
      const input = range(30).map((i) => `${counting.url}/${i}`);
      const run = await cli(['fetch', '-q', '-c', '3', file('c3.txt', input)]);
      assert.equal(run.code, 0);
      assert.equal(run.records.length, 30);
      assert.equal(counting.peak, 3);
    } finally {
      await counting.close();
    }
  });

  it('keeps to --per-host-concurrency for each origin', async () => {
    const counting = await countingServer();
    try {
      const input = range(12).map((i) => `${counting.url}/${i}`);
      const run = await cli([
        'fetch',
        '-q',
        '-c',
        '8',
        '--per-host-concurrency',
        '2',
        file('ph.txt', input),
      ]);
      assert.equal(run.code, 0);
      assert.equal(counting.peak, 2);
    } finally {
      await counting.close();
    }
  });

  it('spaces starts to each origin by --per-host-rate', async () => {
    const before = server.requests.length;
    const started = performance.now();
    const input = range(5).map((i) => `${server.url}/p${i}`);
    const run = await cli(['fetch', '-q', '--per-host-rate', '20/s', file('phr.txt', input)]);
    assert.equal(run.code, 0);
    assert.equal(server.requests.length - before, 5);
    assert.ok(performance.now() - started >= 190, `took ${performance.now() - started}ms`);
  });

  it('spaces starts by --rate', async () => {
    const before = server.requests.length;
    const started = performance.now();
    const input = range(5).map((i) => `${server.url}/r${i}`);
    const run = await cli([
      'fetch',
      '-q',
      '-c',
      '5',
      '--rate',
      '20/s',
      '--rate',
      '1000/min',
      file('rate.txt', input),
    ]);
    assert.equal(run.code, 0);
    assert.equal(server.requests.length - before, 5);
    // Five starts at 20/s: the last one no sooner than 4 × 50 ms after the first.
    assert.ok(performance.now() - started >= 190, `took ${performance.now() - started}ms`);
  });
});

describe('sluice fetch: credentials', () => {
  let server: TestServer;
  before(async () => {
    // Echoes the request's headers: the worst case for a secret.
    server = await startServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('set-cookie', 'id=server-side-cookie-value');
      res.end(JSON.stringify(req.headers));
    });
  });
  after(() => server.close());

  it('sends -H headers with every request, JSONL headers overriding them', async () => {
    const start = server.requests.length;
    const input = [
      `${server.url}/plain`,
      JSON.stringify({ url: `${server.url}/json`, headers: { 'x-team': 'blue' } }),
    ];
    const run = await cli([
      'fetch',
      '-q',
      '-H',
      'X-Team: red',
      '-H',
      'Accept: text/plain',
      file('h.txt', input),
    ]);
    assert.equal(run.code, 0);
    const got = server.requests.slice(start).sort((a, b) => a.url.localeCompare(b.url));
    assert.equal(got[0]!.headers['x-team'], 'blue');
    assert.equal(got[0]!.headers.accept, 'text/plain');
    assert.equal(got[1]!.headers['x-team'], 'red');
  });

  it('keeps Authorization and Cookie values out of records, even from echoed bodies', async () => {
    const start = server.requests.length;
    const input = [
      `${server.url}/a`,
      JSON.stringify({ url: `${server.url}/b`, headers: { Cookie: 'session=cookie-secret-42' } }),
      '{"url": "http://x", "headers": {"Authorization": "Bearer unparsed-secret-3"',
    ];
    const run = await cli([
      'fetch',
      '-q',
      '--body',
      '--ordered',
      '-H',
      'Authorization: Bearer header-secret-1',
      file('secrets.txt', input),
    ]);
    assert.equal(run.records.length, 3);
    const got = server.requests.slice(start);
    assert.ok(got.every((r) => r.headers.authorization === 'Bearer header-secret-1'));
    assert.ok(got.some((r) => r.headers.cookie === 'session=cookie-secret-42'));
    for (const secret of ['header-secret-1', 'cookie-secret-42', 'unparsed-secret-3']) {
      assert.ok(!run.stdout.includes(secret), `${secret} in ${run.stdout}`);
    }
    // The bodies are kept, with the secrets masked.
    assert.equal((run.records[0]!.body as Record<string, string>).authorization, '[redacted]');
    assert.equal((run.records[1]!.body as Record<string, string>).cookie, '[redacted]');
    assert.equal((run.records[1]!.body as Record<string, string>).host, server.url.slice(7));
  });

  it("sends a URL's credentials as Basic authorization and records the URL with them masked", async () => {
    const start = server.requests.length;
    const host = server.url.slice('http://'.length);
    const run = await cli(['fetch', '-q', '--body', '-'], {
      stdin: `http://alice:url-password-7@${host}/c\n`,
    });
    assert.equal(run.code, 0);
    const basic = `Basic ${Buffer.from('alice:url-password-7').toString('base64')}`;
    assert.equal(server.requests[start]!.headers.authorization, basic);
    assert.equal(run.records[0]!.url, `http://[redacted]@${host}/c`);
    assert.ok(!run.stdout.includes('url-password-7'));
    assert.ok(!run.stdout.includes(basic.slice('Basic '.length)));
  });
});

describe('sluice fetch: --body', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res) => {
      if (req.url === '/json') {
        res.setHeader('content-type', 'application/json; charset=utf-8');
        res.end('{"n":[1,2]}');
      } else if (req.url === '/bad-json') {
        res.setHeader('content-type', 'application/json');
        res.end('{nope');
      } else res.end('plain text é');
    });
  });
  after(() => server.close());

  it('includes the body: parsed when JSON, as text otherwise', async () => {
    const input = ['/json', '/text', '/bad-json'].map((p) => `${server.url}${p}`);
    const run = await cli(['fetch', '-q', '--body', '--ordered', file('body.txt', input)]);
    assert.equal(run.code, 0);
    assert.deepEqual(run.records[0]!.body, { n: [1, 2] });
    assert.equal(run.records[1]!.body, 'plain text é');
    assert.equal(run.records[1]!.bytes, Buffer.byteLength('plain text é'));
    assert.equal(run.records[2]!.body, '{nope');
  });

  it('leaves the body out without --body', async () => {
    const run = await cli(['fetch', '-q', '-'], { stdin: `${server.url}/json\n` });
    assert.equal('body' in run.records[0]!, false);
    assert.equal(run.records[0]!.bytes, 11);
  });
});

describe('sluice fetch: --resume', () => {
  let server: TestServer;
  let failing = true;
  before(async () => {
    server = await startServer((req, res) => {
      if (failing && req.url?.startsWith('/fail')) {
        res.statusCode = 500;
        res.end('down');
      } else res.end('up');
    });
  });
  after(() => server.close());

  it('runs again only the lines not recorded ok, and copies the others through', async () => {
    const input = [
      `${server.url}/ok0`,
      `${server.url}/fail1`,
      `${server.url}/ok2`,
      `${server.url}/fail3`,
    ];
    const source = file('resume.txt', input);
    const first = join(dir, 'first.jsonl');
    failing = true;
    const run1 = await cli(['fetch', '-q', '--retries', '0', '-o', first, source]);
    assert.equal(run1.code, 1);
    failing = false;
    const start = server.requests.length;
    const run2 = await cli(['fetch', '-q', '--ordered', '--resume', first, source]);
    assert.equal(run2.code, 0);
    assert.deepEqual(
      server.requests
        .slice(start)
        .map((r) => r.url)
        .sort(),
      ['/fail1', '/fail3'],
    );
    assert.deepEqual(
      run2.records.map((r) => r.index),
      [0, 1, 2, 3],
    );
    assert.ok(run2.records.every((r) => r.ok === true));
    const previous = readFileSync(first, 'utf8').split('\n');
    const copied = previous.find((line) => line.includes('"index":0,'));
    assert.equal(run2.stdout.split('\n')[0], copied);
  });

  it('runs a line again when the previous record at its index is for another URL', async () => {
    const previous = file('other.jsonl', [
      JSON.stringify({ index: 0, id: null, url: `${server.url}/elsewhere`, status: 200, ok: true }),
    ]);
    const start = server.requests.length;
    const run = await cli(['fetch', '-q', '--resume', previous, '-'], {
      stdin: `${server.url}/ok0\n`,
    });
    assert.equal(run.code, 0);
    assert.deepEqual(
      server.requests.slice(start).map((r) => r.url),
      ['/ok0'],
    );
  });

  it('can resume into the file it resumes from', async () => {
    const input = [`${server.url}/ok0`, `${server.url}/fail1`];
    const source = file('same.txt', input);
    const out = join(dir, 'same.jsonl');
    failing = true;
    await cli(['fetch', '-q', '--retries', '0', '-o', out, source]);
    failing = false;
    const run = await cli(['fetch', '-q', '--resume', out, '-o', out, source]);
    assert.equal(run.code, 0);
    const records = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { index: number; ok: boolean });
    assert.deepEqual(records.map((r) => r.index).sort(), [0, 1]);
    assert.ok(records.every((r) => r.ok));
  });
});

describe('sluice fetch: streaming input', () => {
  it('pulls a long input only as fast as requests finish', { timeout: 15_000 }, async () => {
    const stalled = await startServer((_req, res, _body, server) => {
      server.held.push(res);
    });
    let pulled = 0;
    const total = 100_000;
    const input = new Readable({
      read() {
        if (pulled >= total) {
          this.push(null);
          return;
        }
        pulled += 100;
        this.push(
          range(100)
            .map((i) => `${stalled.url}/${pulled + i}\n`)
            .join(''),
        );
      },
    });
    const running = startCli(['fetch', '-q', '-c', '2', '-'], { stdin: input });
    try {
      await until(() => stalled.held.length === 2, 5000, 'two requests');
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(stalled.held.length, 2);
      assert.ok(pulled < 5000, `pulled ${pulled} lines while 2 requests were stalled`);
    } finally {
      running.interrupt();
      running.interrupt();
      await running.done;
      await stalled.close();
    }
  });
});

describe('sluice fetch: progress', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res) => {
      if (req.url === '/fail') {
        res.statusCode = 500;
        res.end();
        return;
      }
      setTimeout(() => res.end('ok'), 40);
    });
  });
  after(() => server.close());

  const input = (): string =>
    [...range(6).map((i) => `${server.url}/${i}`), `${server.url}/fail`].join('\n');

  it('prints a plain line every interval when stderr is not a terminal', async () => {
    const run = await cli(['fetch', '-c', '1', '--retries', '0', '-'], {
      stdin: input(),
      env: { SLUICE_PROGRESS_INTERVAL: '30' },
    });
    const lines = run.stderr.trim().split('\n');
    assert.ok(lines.length >= 3, run.stderr);
    assert.match(
      lines[0]!,
      /^sluice fetch: \d+ done, \d+ failed, [01] in flight, [\d.]+ req\/s, 0 429s$/,
    );
    assert.match(lines.at(-1)!, /^sluice fetch: 7 done, 1 failed in [\d.]+m?s \([\d.]+ req\/s\)$/);
    assert.ok(!run.stderr.includes('\r') && !run.stderr.includes('\x1b'));
  });

  it('redraws one live line on a terminal, in colour', async () => {
    const run = await cli(['fetch', '-c', '1', '--retries', '0', '-'], {
      stdin: input(),
      tty: true,
    });
    assert.ok(run.stderr.startsWith('\r'), JSON.stringify(run.stderr));
    assert.equal(run.stderr.split('\n').length, 2, 'one line, ended once');
    assert.ok(run.stderr.includes('\u001b[31m1 failed\u001b[0m'), JSON.stringify(run.stderr));
    assert.match(run.stderr, /in flight/);
  });

  it('uses no escape codes on a terminal when NO_COLOR is set', async () => {
    const run = await cli(['fetch', '-c', '1', '--retries', '0', '-'], {
      stdin: input(),
      tty: true,
      env: { NO_COLOR: '1' },
    });
    assert.ok(run.stderr.includes('\r'));
    assert.ok(!run.stderr.includes('\x1b'), JSON.stringify(run.stderr));
    assert.match(run.stderr, /1 failed/);
  });

  it('shows done/total (blank lines not counted) and an ETA when the input is a file', async () => {
    const urls = range(6).map((i) => `${server.url}/${i}`);
    const path = file('progress.txt', [...urls.slice(0, 3), ' \t', '', ...urls.slice(3)]);
    const run = await cli(['fetch', '-c', '1', path], {
      env: { SLUICE_PROGRESS_INTERVAL: '30' },
    });
    assert.match(
      run.stderr,
      /sluice fetch: \d\/6 done, 0 failed, [01] in flight, [\d.]+ req\/s, 0 429s(, ETA \S+)?\n/,
    );
    assert.match(run.stderr, /ETA/);
  });
});

describe('sluice fetch: interrupts', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res, _body, s) => {
      if (req.url?.startsWith('/hang')) s.held.push(res);
      else if (req.url === '/busy') res.writeHead(503, { 'retry-after': '1' }).end();
      else setTimeout(() => res.end('ok'), 400);
    });
  });
  after(() => server.close());

  it(
    'lets requests in flight finish within the grace period, and records the rest as not run',
    { timeout: 15_000 },
    async () => {
      const input = range(10).map((i) => `${server.url}/slow${i}`);
      // A per-host limit below the concurrency admits twice the concurrency (6 lines): two run,
      // four wait in the client's queue.
      const argv = [
        'fetch',
        '-q',
        '-c',
        '3',
        '--per-host-concurrency',
        '2',
        file('int1.txt', input),
      ];
      const running = startCli(argv, {
        env: { SLUICE_GRACE_MS: '5000' },
      });
      await until(() => server.requests.filter((r) => r.url.startsWith('/slow')).length >= 2);
      const interrupted = performance.now();
      running.interrupt();
      const run = await running.done;
      assert.equal(run.code, 130);
      // The two in flight finished; those queued behind them were refused at once, not after
      // the grace period.
      assert.ok(performance.now() - interrupted < 2500, `${performance.now() - interrupted}ms`);
      assert.equal(server.requests.filter((r) => r.url.startsWith('/slow')).length, 2);
      assert.deepEqual(indexes(run.records), range(10));
      assert.deepEqual(
        run.records.filter((r) => r.ok === true).map((r) => r.index),
        [0, 1],
      );
      const notRun = run.records.filter((r) => r.error === 'not run');
      assert.equal(notRun.length, 8);
      assert.ok(notRun.every((r) => r.attempts === 0 && r.status === null));
    },
  );

  it(
    'cancels what still runs after the grace period, then records the rest as not run',
    { timeout: 15_000 },
    async () => {
      const input = range(8).map((i) => `${server.url}/hang${i}`);
      const running = startCli(['fetch', '-q', '-c', '3', '--ordered', file('int2.txt', input)], {
        env: { SLUICE_GRACE_MS: '50' },
      });
      await until(() => server.held.length >= 3);
      running.interrupt();
      const run = await running.done;
      assert.equal(run.code, 130);
      assert.deepEqual(
        run.records.map((r) => r.index),
        range(8),
      );
      assert.deepEqual(
        run.records.map((r) => r.error),
        [
          'cancelled',
          'cancelled',
          'cancelled',
          'not run',
          'not run',
          'not run',
          'not run',
          'not run',
        ],
      );
    },
  );

  it(
    'refuses a retry due after the interrupt: the line is cancelled, the server asked once',
    { timeout: 15_000 },
    async () => {
      const input = [`${server.url}/busy`, `${server.url}/slow-retry`];
      const running = startCli(['fetch', '-q', '-c', '2', file('int4.txt', input)], {
        env: { SLUICE_GRACE_MS: '5000' },
      });
      await until(() => server.requests.some((r) => r.url === '/busy'));
      await delay(50); // the 503 has come: the line backs off for a second
      running.interrupt();
      const run = await running.done;
      assert.equal(run.code, 130);
      const records = run.records.sort((a, b) => Number(a.index) - Number(b.index));
      assert.deepEqual(
        records.map((r) => [r.index, r.error, r.attempts]),
        [
          [0, 'cancelled', 1],
          [1, null, 1],
        ],
      );
      assert.equal(server.requests.filter((r) => r.url === '/busy').length, 1);
    },
  );

  it('returns 130 at once on a second interrupt', { timeout: 15_000 }, async () => {
    const input = range(4).map((i) => `${server.url}/hang-twice${i}`);
    const held = server.held.length;
    const running = startCli(['fetch', '-q', '-c', '4', file('int3.txt', input)], {
      env: { SLUICE_GRACE_MS: '60000' },
    });
    await until(() => server.held.length >= held + 4);
    const started = performance.now();
    running.interrupt();
    running.interrupt();
    const run = await running.done;
    assert.equal(run.code, 130);
    assert.ok(performance.now() - started < 1000);
  });
});

describe('sluice fetch: --report', () => {
  it('writes an HTML report of the run, without credentials', async () => {
    const server = await startServer(ok);
    try {
      const out = join(dir, 'run.html');
      const input = range(5).map((i) => `${server.url}/${i}`);
      const run = await cli([
        'fetch',
        '-q',
        '--report',
        out,
        '-H',
        'Authorization: Bearer report-secret-9',
        file('report.txt', [...input, 'http://user:report-password@127.0.0.1:1/']),
      ]);
      assert.equal(run.code, 1);
      const html = readFileSync(out, 'utf8');
      assert.match(html, /<html/i);
      assert.match(html, new RegExp(`${server.url}/3`.replace(/[.]/g, '\\.')));
      assert.ok(!html.includes('report-secret-9'));
      assert.ok(!html.includes('report-password'));
    } finally {
      await server.close();
    }
  });

  it('prints one line and exits 2 for a report in a directory that does not exist', async () => {
    const run = await cli(['fetch', '--report', join(dir, 'nowhere', 'r.html'), '-'], {
      stdin: '',
    });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^sluice: cannot write [^\n]*r\.html: no such file or directory\n$/);
  });
});
