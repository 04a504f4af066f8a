/**
 * `sluice fetch` against what users give it: methods no fetch client carries, header values that
 * cannot be sent, credentials in URLs, an output or a report that is the input, a `--resume` file
 * that holds no records, stdin from a terminal. In-process, against local servers.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { within } from './_helpers/within.ts';
import {
  cli,
  indexes,
  parseRecords,
  range,
  ROOT,
  startCli,
  startServer,
  tempDir,
  until,
  type TestServer,
} from './cli-helpers.ts';

const { dir, remove, file } = tempDir();
after(remove);

/**
 * A server that answers every request head as a proxy answers CONNECT: 200, then the tunnel
 * stays open. What it was asked is kept, by method.
 */
async function tunnelServer(): Promise<{ url: string; methods: string[]; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const methods: string[] = [];
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (data: Buffer) => {
      methods.push(data.toString('latin1').split(' ')[0]!);
      socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    methods,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    },
  };
}

describe('sluice fetch: methods a fetch client cannot carry', () => {
  let server: Awaited<ReturnType<typeof tunnelServer>>;
  before(async () => {
    server = await tunnelServer();
  });
  after(() => server.close());

  it('gives CONNECT, TRACE and TRACK lines an error record each, sends none, and ends', async () => {
    const input = [
      JSON.stringify({ url: `${server.url}/a`, method: 'CONNECT' }),
      JSON.stringify({ url: `${server.url}/b`, method: 'trace' }),
      JSON.stringify({ url: `${server.url}/c`, method: 'Track' }),
    ];
    const run = await within(5000, cli(['fetch', '-q', file('connect.txt', input)]), 'the run');
    assert.equal(run.code, 1);
    assert.deepEqual(indexes(run.records), range(3));
    const errors = run.records
      .sort((a, b) => Number(a.index) - Number(b.index))
      .map((r) => r.error);
    assert.deepEqual(errors, [
      'the method CONNECT cannot be sent (no fetch client sends CONNECT, TRACE or TRACK)',
      'the method TRACE cannot be sent (no fetch client sends CONNECT, TRACE or TRACK)',
      'the method TRACK cannot be sent (no fetch client sends CONNECT, TRACE or TRACK)',
    ]);
    assert.ok(run.records.every((r) => r.attempts === 0 && r.status === null));
    assert.deepEqual(server.methods, []);
  });

  for (const method of ['CONNECT', 'trace', 'TRACK']) {
    it(`refuses -X ${method} as a usage error before anything runs`, async () => {
      const run = await within(
        5000,
        cli(['fetch', '-q', '-X', method, '-'], { stdin: `${server.url}/x\n` }),
        'the run',
      );
      assert.equal(run.code, 2);
      assert.equal(run.stdout, '');
      assert.match(
        run.stderr,
        /^sluice: option '-X, --method <method>' argument '\w+' is invalid\. [^\n]*not CONNECT, TRACE or TRACK[^\n]*\n$/,
      );
      assert.deepEqual(server.methods, []);
    });
  }
});

describe('sluice fetch: -H values that cannot be sent', () => {
  let server: Awaited<ReturnType<typeof tunnelServer>>;
  before(async () => {
    server = await tunnelServer();
  });
  after(() => server.close());

  const values: [string, string][] = [
    ['a CR', 'a\rb'],
    ['an LF', 'a\nb'],
    ['a CR LF', 'a\r\nX-Injected: 1'],
    ['a NUL', 'a\0b'],
    ['another control character', 'a\u0007b'],
    ['a character beyond Latin-1', 'a\u2028b'],
  ];
  for (const [what, value] of values) {
    it(`is a usage error for a value with ${what}, before any line runs`, async () => {
      const input = file(
        'many.txt',
        range(1000).map((i) => `${server.url}/${i}`),
      );
      const run = await cli(['fetch', '-q', '-H', `X-Thing: ${value}`, input]);
      assert.equal(run.code, 2);
      assert.equal(run.stdout, '');
      assert.match(
        run.stderr,
        /^sluice: option '-H, --header <header>' argument '[^']*' is invalid\. Expected "Name: value" [^\n]*\(see sluice fetch --help\)\n$/,
      );
      // eslint-disable-next-line no-control-regex -- what the line must not hold
      assert.doesNotMatch(run.stderr.slice(0, -1), /[\x00-\x1f\x7f]/, 'one line, shown as it is');
      assert.deepEqual(server.methods, []);
    });
  }

  it('takes a value with a tab, or with Latin-1 characters', async () => {
    const run = await cli(['fetch', '-q', '-H', 'X-Thing: a\tb é', '-'], { stdin: '' });
    assert.equal(run.code, 0, run.stderr);
  });
});

describe('sluice fetch: default headers', () => {
  const version = (
    JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  ).version;
  let server: TestServer;
  before(async () => {
    server = await startServer((_req, res) => res.end('ok'));
  });
  after(() => server.close());

  /** The values of a header in the request for `path`, however often and in whatever case sent. */
  function sent(path: string, name: string): string[] {
    const request = server.requests.find((r) => r.url === path);
    assert.ok(request !== undefined, `no request for ${path}`);
    const raw = request.rawHeaders;
    const values: string[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i]!.toLowerCase() === name) values.push(raw[i + 1]!);
    }
    return values;
  }

  it('sends User-Agent: sluice/<version> and Accept: */* unless told otherwise', async () => {
    const input = [`${server.url}/plain`, JSON.stringify({ url: `${server.url}/json` })];
    const run = await cli(['fetch', '-q', file('defaults.txt', input)]);
    assert.equal(run.code, 0);
    for (const path of ['/plain', '/json']) {
      assert.deepEqual(sent(path, 'user-agent'), [`sluice/${version}`]);
      assert.deepEqual(sent(path, 'accept'), ['*/*']);
    }
  });

  it("lets -H and a line's own headers replace them, whatever their case", async () => {
    const input = [
      `${server.url}/h`,
      JSON.stringify({
        url: `${server.url}/line`,
        headers: { 'User-Agent': 'line/2', ACCEPT: 'text/csv' },
      }),
    ];
    const run = await cli([
      'fetch',
      '-q',
      '-H',
      'USER-AGENT: mine/1',
      '-H',
      'accept: application/json',
      file('override.txt', input),
    ]);
    assert.equal(run.code, 0);
    assert.deepEqual(sent('/h', 'user-agent'), ['mine/1']);
    assert.deepEqual(sent('/h', 'accept'), ['application/json']);
    assert.deepEqual(sent('/line', 'user-agent'), ['line/2']);
    assert.deepEqual(sent('/line', 'accept'), ['text/csv']);
  });
});

describe("sluice fetch: a URL's user name and password", () => {
  let server: TestServer;
  before(async () => {
    // Echoes what it got: the worst case for a secret.
    server = await startServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
  });
  after(() => server.close());
  const host = (): string => server.url.slice('http://'.length);

  it('sends a token given as the user name (https://TOKEN@host/) as Basic authorization and records it masked', async () => {
    const token = 'ghp_user-name-token-0123';
    const start = server.requests.length;
    const run = await cli(['fetch', '-q', '--body', '-'], {
      stdin: `http://${token}@${host()}/t\n`,
    });
    assert.equal(run.code, 0);
    const basic = Buffer.from(`${token}:`).toString('base64');
    assert.equal(server.requests[start]!.headers.authorization, `Basic ${basic}`);
    assert.equal(run.records[0]!.url, `http://[redacted]@${host()}/t`);
    assert.ok(!run.stdout.includes(token), run.stdout);
    assert.ok(!run.stdout.includes(basic), run.stdout);
  });

  it('masks a user name and a password, percent-encoded or not', async () => {
    const input = [
      `http://user%40corp.example:p%40ss-word-42@${host()}/a`,
      JSON.stringify({ url: `http://plain-user-77:plain-pass-88@${host()}/b`, id: 'b' }),
    ];
    const run = await cli(['fetch', '-q', '--body', '--ordered', file('userinfo.txt', input)]);
    assert.equal(run.code, 0);
    assert.equal(run.records[0]!.url, `http://[redacted]@${host()}/a`);
    assert.equal(run.records[1]!.url, `http://[redacted]@${host()}/b`);
    for (const secret of [
      'user%40corp.example',
      'user@corp.example',
      'p%40ss-word-42',
      'p@ss-word-42',
      'plain-user-77',
      'plain-pass-88',
    ]) {
      assert.ok(!run.stdout.includes(secret), `${secret} in ${run.stdout}`);
    }
  });

  it('records the URL that was sent (normalised, no fragment), not the line as written', async () => {
    const input = [
      `HTTP://${host()}/a/../b?x=1#private-fragment`,
      `  http://${host()}/spaced path  `,
    ];
    const run = await cli(['fetch', '-q', '--ordered', file('normal.txt', input)]);
    assert.equal(run.code, 0);
    assert.equal(run.records[0]!.url, `http://${host()}/b?x=1`);
    assert.equal(run.records[1]!.url, `http://${host()}/spaced%20path`);
  });

  it('keeps credentials out of the records of lines that are never sent', async () => {
    const input = [
      'http://bad-user-11:bad-pass-22@[::1',
      JSON.stringify({ url: `http://trace-user-33:trace-pass-44@${host()}/`, method: 'TRACE' }),
    ];
    const run = await cli(['fetch', '-q', '--ordered', file('unsent.txt', input)]);
    assert.equal(run.code, 1);
    assert.equal(run.records[0]!.error, 'invalid URL');
    assert.equal(run.records[1]!.url, `http://[redacted]@${host()}/`);
    for (const secret of ['bad-user-11', 'bad-pass-22', 'trace-user-33', 'trace-pass-44']) {
      assert.ok(!run.stdout.includes(secret), `${secret} in ${run.stdout}`);
    }
  });
});

describe('sluice fetch: files that are one and the same', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((_req, res) => res.end('ok'));
  });
  after(() => server.close());

  const cases: [what: string, argv: (input: string) => string[], message: RegExp][] = [
    ['-o is the input', (input) => ['-o', input, input], /the output [^\n]* is the input file/],
    [
      '-o is the input, by another path',
      (input) => ['-o', join(dir, '.', 'sub', '..', 'same.txt'), input],
      /the output [^\n]* is the input file/,
    ],
    [
      '-o is a symbolic link to the input',
      (input) => ['-o', join(dir, 'link.txt'), input],
      /the output [^\n]*link\.txt is the input file/,
    ],
    [
      '--report is the input',
      (input) => ['--report', input, input],
      /the report [^\n]* is the input file/,
    ],
    [
      '--report is the output',
      (input) => ['--report', join(dir, 'out.jsonl'), '-o', join(dir, 'out.jsonl'), input],
      /the report [^\n]* is the output file/,
    ],
    [
      '--report is the output, neither made yet',
      (input) => [
        '--report',
        join(dir, 'new.jsonl'),
        '-o',
        join(dir, 'sub', '..', 'new.jsonl'),
        input,
      ],
      /the report [^\n]* is the output file/,
    ],
    [
      '--report is the --resume file',
      (input) => ['--report', join(dir, 'prev.jsonl'), '--resume', join(dir, 'prev.jsonl'), input],
      /the report [^\n]* is the --resume file/,
    ],
  ];
  for (const [what, argv, message] of cases) {
    it(`refuses to run, leaving the files alone, when ${what}`, async () => {
      const lines = [`${server.url}/1`, `${server.url}/2`];
      const input = file('same.txt', lines);
      mkdirSync(join(dir, 'sub'), { recursive: true });
      rmSync(join(dir, 'link.txt'), { force: true });
      symlinkSync(input, join(dir, 'link.txt'));
      writeFileSync(join(dir, 'out.jsonl'), 'previous output\n');
      writeFileSync(join(dir, 'prev.jsonl'), '');
      rmSync(join(dir, 'new.jsonl'), { force: true });
      const before = server.requests.length;
      const run = await cli(['fetch', '-q', ...argv(input)]);
      assert.equal(run.code, 2);
      assert.match(run.stderr, /^sluice: [^\n]+\n$/);
      assert.match(run.stderr, message);
      assert.equal(readFileSync(input, 'utf8'), lines.map((l) => `${l}\n`).join(''));
      assert.equal(readFileSync(join(dir, 'out.jsonl'), 'utf8'), 'previous output\n');
      assert.equal(server.requests.length, before);
      assert.equal(existsSync(join(dir, 'new.jsonl')), false);
    });
  }

  it('writes an output that does not exist yet, and one that is a copy of the input', async () => {
    const input = file('original.txt', [`${server.url}/1`]);
    const fresh = join(dir, 'fresh.jsonl');
    rmSync(fresh, { force: true });
    assert.equal((await cli(['fetch', '-q', '-o', fresh, input])).code, 0);
    assert.equal(parseRecords(readFileSync(fresh, 'utf8')).length, 1);
    const copy = file('copy.txt', [`${server.url}/1`]);
    assert.equal((await cli(['fetch', '-q', '-o', copy, input])).code, 0);
    assert.equal(parseRecords(readFileSync(copy, 'utf8')).length, 1);
  });
});

describe('sluice fetch: a --resume file that holds no records', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((_req, res) => res.end('ok'));
  });
  after(() => server.close());

  const record = (index: number): string =>
    JSON.stringify({ index, id: null, url: `${server.url}/${index}`, status: 200, ok: true });

  const cases: [what: string, content: () => string, line: number][] = [
    ['the input given by mistake', () => `${server.url}/0\n${server.url}/1\n`, 1],
    ['a bad line after records', () => `${record(0)}\n\n${record(1)}\r\nnot json\n`, 4],
    ['a JSON value that is no object', () => `${record(0)}\n[1,2]\n`, 2],
    ['an object without an index', () => `{"url":"x","ok":true}\n`, 1],
    ['an index that is not a line number', () => `${record(0)}\n{"index":-1,"ok":true}\n`, 2],
    ['an index that is a string', () => `{"index":"0","ok":true}\n`, 1],
    ['a line cut off before the last one', () => `{"index":0,"ok":tr\n${record(1)}\n`, 1],
  ];
  for (const [what, content, line] of cases) {
    it(`is a usage error naming the file and line ${line} for ${what}`, async () => {
      const previous = join(dir, 'previous.jsonl');
      writeFileSync(previous, content());
      const before = server.requests.length;
      const run = await cli(['fetch', '-q', '--resume', previous, '-'], {
        stdin: `${server.url}/0\n${server.url}/1\n`,
      });
      assert.equal(run.code, 2);
      assert.equal(run.stdout, '');
      assert.equal(
        run.stderr,
        `sluice: --resume ${previous}: line ${line} is not a record of a previous run (a JSON object with an "index")\n`,
      );
      assert.equal(server.requests.length, before);
    });
  }

  it('takes a last line cut off mid-record (a run killed as it wrote) as not recorded', async () => {
    const previous = join(dir, 'cut.jsonl');
    writeFileSync(previous, `${record(0)}\n${record(1).slice(0, 20)}`);
    const before = server.requests.length;
    const run = await cli(['fetch', '-q', '--ordered', '--resume', previous, '-'], {
      stdin: `${server.url}/0\n${server.url}/1\n`,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(
      server.requests.slice(before).map((r) => r.url),
      ['/1'],
    );
    assert.deepEqual(indexes(run.records), [0, 1]);
  });
});

describe('sluice fetch: a terminal', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((_req, res) => res.end('ok'));
  });
  after(() => server.close());

  it('says once that it reads jobs from stdin when stdin is a terminal, and draws no live line over what is typed', async () => {
    const running = startCli(['fetch', '-'], { openStdin: true, stdinTty: true, tty: true });
    running.stdin.write(`${server.url}/1\n`);
    await until(() => running.stdoutSoFar().includes('"index":0'), 5000, 'the first record');
    await delay(250); // a live line would have been drawn by now
    running.stdin.end(`${server.url}/2\n`);
    const run = await running.done;
    assert.equal(run.code, 0);
    assert.equal(run.records.length, 2);
    const hint = 'sluice fetch: reading jobs from stdin; end with Ctrl-D\n';
    assert.ok(run.stderr.startsWith(hint), JSON.stringify(run.stderr));
    const rest = run.stderr.slice(hint.length);
    assert.doesNotMatch(rest, /in flight/);
    assert.match(rest, /^\r?sluice fetch: 2 done, [^\n]*0 failed in [^\n]+\n$/);
  });

  it('says nothing of stdin with --quiet, nor when stdin is not a terminal', async () => {
    const quiet = await cli(['fetch', '-q', '-'], { stdin: `${server.url}/1\n`, stdinTty: true });
    assert.equal(quiet.stderr, '');
    const piped = await cli(['fetch', '-'], { stdin: `${server.url}/1\n`, tty: true });
    assert.doesNotMatch(piped.stderr, /reading jobs/);
  });

  for (const columns of [0, 20]) {
    it(`prints the whole summary on a terminal that reports ${columns} columns`, async () => {
      const run = await cli(['fetch', '-'], {
        stdin: `${server.url}/1\n${server.url}/2\n`,
        tty: true,
        columns,
        env: { NO_COLOR: '1' },
      });
      assert.equal(run.code, 0);
      const last = run.stderr.split('\r').at(-1)!;
      assert.match(last, /^sluice fetch: 2 done, 0 failed in [\d.]+m?s \([\d.]+ req\/s\) *\n$/);
    });
  }
});
