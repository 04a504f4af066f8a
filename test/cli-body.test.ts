/**
 * `sluice fetch --body` with what servers send: bodies longer than `--max-body` (cut, counted,
 * `"truncated": true`), bodies that are not UTF-8 (base64, never U+FFFD), JSON kept as it is,
 * and encoded bodies (`--compressed`, or sent unasked) decoded within the cap, a zip bomb
 * included. In-process, against a local server.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { cli, startServer, type CliRun, type TestServer } from './cli-helpers.ts';

const MiB = 1024 * 1024;
const TEXT = 'the quick brown fox jumps over the lazy dog\n';

/** What the server sends for a path: the body and its headers. */
const responses: Record<string, () => [Buffer, Record<string, string>]> = {
  '/latin1': () => [Buffer.from('café crème', 'latin1'), { 'content-type': 'text/plain' }],
  '/binary': () => [Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x41]), {}],
  '/accents': () => [Buffer.from('ééééé'), { 'content-type': 'text/plain; charset=utf-8' }],
  '/json': () => [
    Buffer.from('{\r\n  "big": 12345678901234567890,\n  "s": "a\\nb",\n  "list": [1, 2]\n}\n'),
    { 'content-type': 'application/json' },
  ],
  '/not-json': () => [Buffer.from('{"a": 1,}'), { 'content-type': 'application/json' }],
  '/gzip': () => [gzipSync(TEXT.repeat(100)), { 'content-encoding': 'gzip' }],
  '/x-gzip': () => [gzipSync(TEXT), { 'content-encoding': 'x-gzip' }],
  '/deflate': () => [deflateSync(TEXT), { 'content-encoding': 'deflate' }],
  '/deflate-raw': () => [deflateRawSync(TEXT), { 'content-encoding': 'deflate' }],
  '/br': () => [brotliCompressSync(TEXT), { 'content-encoding': 'br' }],
  '/chained': () => [gzipSync(deflateSync(TEXT)), { 'content-encoding': 'deflate, gzip' }],
  '/gzip-json': () => [
    gzipSync('{"ok": true}'),
    { 'content-encoding': 'gzip', 'content-type': 'application/json' },
  ],
  '/unknown': () => [Buffer.from('(zstd bytes)'), { 'content-encoding': 'zstd' }],
  '/corrupt': () => [Buffer.from('not gzip at all'), { 'content-encoding': 'gzip' }],
  // 256 gzip members of 1 MiB of "a" each: 256 MiB decoded from a few hundred KB.
  '/bomb': () => {
    const member = gzipSync(Buffer.alloc(MiB, 'a'));
    return [Buffer.concat(Array<Buffer>(256).fill(member)), { 'content-encoding': 'gzip' }];
  },
};

describe('sluice fetch --body', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const size = url.searchParams.get('size');
      if (url.pathname === '/text' && size !== null) {
        res.setHeader('content-type', 'text/plain');
        res.end(Buffer.alloc(Number(size), 'x'));
        return;
      }
      if (url.pathname === '/echo-secret') {
        // The request's Authorization, last: a body cut at --max-body cuts the secret in two.
        res.end(`${'-'.repeat(10)}${req.headers.authorization ?? ''}`);
        return;
      }
      const [body, headers] = responses[url.pathname]!();
      res.writeHead(200, { ...headers, 'content-length': body.length });
      res.end(body);
    });
  });
  after(() => server.close());

  async function fetchOne(path: string, ...options: string[]): Promise<Record<string, unknown>> {
    const run: CliRun = await cli(['fetch', '-q', '--body', ...options, '-'], {
      stdin: `${server.url}${path}\n`,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.records.length, 1);
    return run.records[0]!;
  }

  describe('--max-body', () => {
    it('cuts a longer body, says so, and counts every byte received', async () => {
      const record = await fetchOne('/text?size=100', '--max-body', '10');
      assert.equal(record.body, 'x'.repeat(10));
      assert.equal(record.truncated, true);
      assert.equal(record.bytes, 100);
    });

    it('keeps a body of exactly --max-body bytes whole, without a truncated field', async () => {
      const record = await fetchOne('/text?size=100', '--max-body', '100');
      assert.equal(record.body, 'x'.repeat(100));
      assert.equal('truncated' in record, false);
      assert.equal('bodyEncoding' in record, false);
    });

    const sizes: [string, number][] = [
      ['1m', MiB],
      ['64k', 64 * 1024],
      ['8MiB', 8 * MiB],
      ['2KB', 2048],
      ['1.5k', 1536],
      ['1048576', MiB],
      ['0', 0],
    ];
    for (const [size, bytes] of sizes) {
      it(`reads --max-body ${size} as ${bytes} bytes`, async () => {
        const record = await fetchOne(`/text?size=${bytes + 1}`, '--max-body', size);
        assert.equal((record.body as string).length, bytes);
        assert.equal(record.truncated, true);
      });
    }

    it('keeps 8 MiB by default', async () => {
      const record = await fetchOne(`/text?size=${8 * MiB + 1}`);
      assert.equal((record.body as string).length, 8 * MiB);
      assert.equal(record.truncated, true);
      assert.equal(record.bytes, 8 * MiB + 1);
    });

    for (const size of ['lots', '-1', '1.2.3', '10x', '', '1e3', '99999g']) {
      it(`is a usage error for --max-body ${JSON.stringify(size)}`, async () => {
        const run = await cli(['fetch', '--body', '--max-body', size, '-'], { stdin: '' });
        assert.equal(run.code, 2);
        assert.match(
          run.stderr,
          /^sluice: option '--max-body <size>' argument '[^']*' is invalid\. Expected a size like "8m", "64k", "8MiB" or a number of bytes[^\n]*\n$/,
        );
      });
    }

    it('leaves out a character the cut split, rather than giving up on the text', async () => {
      const record = await fetchOne('/accents', '--max-body', '5');
      assert.equal(record.body, 'éé');
      assert.equal(record.truncated, true);
      assert.equal('bodyEncoding' in record, false);
    });

    it('masks a secret the cut split at the end of the body', async () => {
      const secret = 'Bearer cut-in-two-secret-0123456789';
      const run = await cli(
        ['fetch', '-q', '--body', '--max-body', '30', '-H', `Authorization: ${secret}`, '-'],
        {
          stdin: `${server.url}/echo-secret\n`,
        },
      );
      const record = run.records[0]!;
      assert.equal(record.truncated, true);
      assert.equal(record.body, `${'-'.repeat(10)}[redacted]`);
      assert.ok(!run.stdout.includes('Bearer cut'), run.stdout);
    });
  });

  describe('bodies that are not UTF-8', () => {
    for (const [path, bytes] of [
      ['/latin1', Buffer.from('café crème', 'latin1')],
      ['/binary', Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x41])],
    ] as const) {
      it(`keeps ${path} as base64, never with U+FFFD in place of bytes`, async () => {
        const record = await fetchOne(path);
        assert.equal(record.bodyEncoding, 'base64');
        assert.ok(Buffer.from(record.body as string, 'base64').equals(bytes));
        assert.equal(record.bytes, bytes.length);
      });
    }
  });

  describe('JSON', () => {
    it('keeps a JSON body as it is, on one line, numbers and all', async () => {
      const run = await cli(['fetch', '-q', '--body', '-'], { stdin: `${server.url}/json\n` });
      assert.equal(run.stdout.split('\n').length, 2, 'one line');
      assert.ok(run.stdout.includes('12345678901234567890'), run.stdout);
      assert.deepEqual(
        run.records[0]!.body,
        JSON.parse('{"big": 12345678901234567890, "s": "a\\nb", "list": [1, 2]}'),
      );
    });

    it('keeps a body that says JSON and is not as text', async () => {
      const record = await fetchOne('/not-json');
      assert.equal(record.body, '{"a": 1,}');
    });

    it('keeps a JSON body that was cut as text', async () => {
      const record = await fetchOne('/json', '--max-body', '10');
      assert.equal(record.body, '{\r\n  "big"');
      assert.equal(record.truncated, true);
    });
  });

  describe('encoded bodies', () => {
    it('sends Accept-Encoding: gzip, deflate, br with --compressed, and none without', async () => {
      const start = server.requests.length;
      await fetchOne('/gzip', '--compressed');
      await fetchOne('/gzip');
      assert.equal(server.requests[start]!.headers['accept-encoding'], 'gzip, deflate, br');
      assert.equal(server.requests[start + 1]!.headers['accept-encoding'], undefined);
    });

    it('lets -H replace the Accept-Encoding of --compressed', async () => {
      const start = server.requests.length;
      await fetchOne('/gzip', '--compressed', '-H', 'Accept-Encoding: br');
      assert.equal(server.requests[start]!.headers['accept-encoding'], 'br');
    });

    for (const path of ['/gzip', '/x-gzip', '/deflate', '/deflate-raw', '/br', '/chained']) {
      it(`decodes ${path}, asked for or not, and counts the bytes received`, async () => {
        const expected = path === '/gzip' ? TEXT.repeat(100) : TEXT;
        for (const options of [['--compressed'], []]) {
          const record = await fetchOne(path, ...options);
          assert.equal(record.body, expected);
          assert.equal(record.bytes, responses[path]!()[0].length);
          assert.equal('truncated' in record, false);
        }
      });
    }

    it('reads a decoded body as JSON when it says it is', async () => {
      assert.deepEqual((await fetchOne('/gzip-json')).body, { ok: true });
    });

    it('applies --max-body to the decoded bytes', async () => {
      const record = await fetchOne('/gzip', '--max-body', '50');
      assert.equal(record.body, TEXT.repeat(100).slice(0, 50));
      assert.equal(record.truncated, true);
    });

    it('stops decoding a zip bomb at --max-body', { timeout: 20_000 }, async () => {
      const before = process.memoryUsage().rss;
      const record = await fetchOne('/bomb', '--max-body', '1m');
      assert.equal(record.body, 'a'.repeat(MiB));
      assert.equal(record.truncated, true);
      assert.equal(record.bytes, responses['/bomb']!()[0].length);
      // 256 MiB decoded would show; 1 MiB kept (and its record) does not.
      const grown = process.memoryUsage().rss - before;
      assert.ok(grown < 128 * MiB, `RSS grew by ${Math.round(grown / MiB)} MiB`);
    });

    for (const path of ['/unknown', '/corrupt']) {
      it(`keeps ${path} as received, in base64`, async () => {
        const record = await fetchOne(path);
        assert.equal(record.bodyEncoding, 'base64');
        assert.ok(Buffer.from(record.body as string, 'base64').equals(responses[path]!()[0]));
      });
    }
  });
});
