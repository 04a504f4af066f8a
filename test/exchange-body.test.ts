/**
 * `createExchange()`'s `keepBody` as a number: the body's first bytes are kept and every byte is
 * counted, through `_h1.ts` (plain `http:`) and through undici (a request with a header about the
 * connection), with and without a Content-Length; and `KeptBody`, which does the keeping, as an
 * invariant over any chunking.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { createExchange, type ExchangeFunction } from '../src/http/index.ts';
import { KeptBody } from '../src/http/_body.ts';
import { within } from './_helpers/within.ts';

const BODY = randomBytes(300_000);

describe('createExchange() keepBody: a number', () => {
  let server: Server;
  let origin: string;
  let exchange: ExchangeFunction;
  before(async () => {
    // /length/N: N bytes of BODY with a Content-Length; /chunked/N: the same, chunked, in pieces.
    server = createServer((req, res) => {
      const [, framing, size] = (req.url ?? '').split('/');
      const body = BODY.subarray(0, Number(size));
      if (framing === 'length') {
        res.setHeader('content-length', body.length);
        res.end(body);
        return;
      }
      for (let at = 0; at < body.length; at += 7_777) res.write(body.subarray(at, at + 7_777));
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    exchange = createExchange({ concurrency: 4 });
  });
  after(async () => {
    await exchange.close();
    server.close();
  });

  // [framing, body size, keepBody]
  const cases: [string, number, number | boolean][] = [
    ['length', 300_000, 100_000],
    ['chunked', 300_000, 100_000],
    ['length', 300_000, 300_000],
    ['chunked', 300_000, 300_001],
    ['length', 50, 0],
    ['chunked', 0, 10],
    ['length', 300_000, true],
    ['chunked', 300_000, Infinity],
  ];
  for (const through of ['_h1', 'undici'] as const) {
    for (const [framing, size, keepBody] of cases) {
      it(`keeps at most ${String(keepBody)} bytes of a ${size}-byte ${framing} body and counts them all (${through})`, async () => {
        // A header about the connection sends the request through undici.
        const headers: Record<string, string> =
          through === 'undici' ? { connection: 'keep-alive' } : {};
        const got = await within(
          5000,
          exchange(`${origin}/${framing}/${size}`, { keepBody, headers }),
          'the response',
        );
        assert.equal(got.status, 200);
        assert.equal(got.bytes, size);
        const kept = keepBody === true ? size : Math.min(size, keepBody as number);
        assert.ok(got.body !== undefined);
        assert.equal(got.body.length, kept);
        assert.ok(got.body.equals(BODY.subarray(0, kept)), 'the first bytes, as sent');
      });
    }
  }

  it('gathers a body with a Content-Length in one buffer of its size', async () => {
    const got = await exchange(`${origin}/length/300000`, { keepBody: 1 << 20 });
    assert.equal(got.body?.buffer.byteLength, 300_000);
    const cut = await exchange(`${origin}/length/300000`, { keepBody: 200_000 });
    assert.equal(cut.body?.buffer.byteLength, 200_000);
  });

  it('gathers a body without one in a buffer less than twice its size', async () => {
    const got = await exchange(`${origin}/chunked/300000`, { keepBody: 1 << 20 });
    const size = got.body?.buffer.byteLength ?? 0;
    assert.ok(size >= 300_000 && size < 600_000, `${size} bytes`);
  });

  const bad: [unknown, typeof TypeError, string][] = [
    [-1, RangeError, '`-1` (number)'],
    [1.5, RangeError, '`1.5` (number)'],
    [Number.NaN, RangeError, '`NaN` (number)'],
    ['1m', TypeError, '`"1m"` (string)'],
    [null, TypeError, '`null` (null)'],
  ];
  for (const [keepBody, Kind, shown] of bad) {
    it(`rejects keepBody ${shown} with a ${Kind.name}`, async () => {
      await assert.rejects(
        exchange(`${origin}/length/5`, { keepBody: keepBody as number }),
        (error: unknown) => {
          assert.ok(error instanceof Kind, String(error));
          assert.equal(
            error.message,
            `Expected \`keepBody\` to be a boolean or an integer >= 0, got ${shown}`,
          );
          return true;
        },
      );
    });
  }
});

describe('KeptBody', () => {
  it('keeps the first `limit` bytes of any chunking, and says whether some did not fit', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 40_000 }), { maxLength: 12 }),
        fc.nat({ max: 200_000 }),
        fc.option(fc.nat({ max: 300_000 })),
        (chunks, limit, expected) => {
          const kept = new KeptBody(limit);
          if (expected !== null) kept.expect(expected);
          const all = Buffer.concat(chunks);
          for (const chunk of chunks) {
            // The caller may reuse a chunk once add() returns: what is kept must be a copy.
            kept.add(chunk);
            chunk.fill(0xee);
          }
          const bytes = kept.bytes();
          assert.ok(bytes.equals(all.subarray(0, limit)));
          assert.equal(kept.size, bytes.length);
          assert.equal(kept.cut, all.length > limit);
          assert.equal(kept.full, bytes.length >= limit);
          if (bytes.length > 8192) assert.ok(bytes.buffer.byteLength <= limit);
        },
      ),
    );
  });
});
