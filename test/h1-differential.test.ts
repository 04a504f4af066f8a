/**
 * The wire reader (`_h1.ts`, through `createExchange()` on an `http:` URL) against Node's own
 * HTTP parser (`http.request`): the same generated raw responses, served by a TCP server on
 * 127.0.0.1 in random chunkings, must give both the same status, headers and body, or be refused
 * by both. The wire reader keeps its place only while it is as correct as Node's parser.
 *
 * The responses vary in framing (Content-Length, chunked with extensions and trailers, read until
 * the connection closes, 1xx interim responses before the final one, HEAD, 204 and 304 without a
 * body) and in the forms of their heads (case, whitespace, obs-fold, repeated or conflicting
 * lengths, bytes no field may hold, bare LF line ends). Where the two parsers legitimately differ,
 * RFC 9112 (and RFC 9110) decided which is right; those differences are listed in `DIFFERENCES`
 * with their reasons, and nothing else may differ.
 */
import assert from 'node:assert/strict';
import { request as nodeRequest, type IncomingHttpHeaders } from 'node:http';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { createExchange } from '../src/http/index.ts';
import { rawServer, type RawServer } from './_helpers/raw-server.ts';

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

interface Field {
  name: string;
  value: string;
  /** An obs-fold line that continues the value (its leading whitespace included). */
  fold?: string;
  /** The whole line as written, instead of `name:value` (a line that is no field). */
  raw?: string;
}

type Framing =
  | { kind: 'length'; values: string[] }
  | {
      kind: 'chunked';
      te: string;
      sizes: number[];
      /** What follows each chunk size (and the last), from BWS ";" on, or "". */
      extensions: string[];
      upper: boolean;
      trailers: Field[];
      /** A Content-Length beside the Transfer-Encoding. */
      length?: string;
    }
  | { kind: 'close'; te?: string };

/** One generated response, and how it is written. */
interface Case {
  method: 'GET' | 'HEAD';
  /** Empty lines before the status line. */
  leading: string;
  interim: { status: number; fields: Field[] }[];
  version: '1.0' | '1.1';
  status: string;
  reason: string | undefined;
  fields: Field[];
  framing: Framing;
  body: string;
  /** The line end of the status line and of every field line (a bare LF is lenient). */
  eol: '\r\n' | '\n';
  /** The line end of chunk framing (a bare LF is not allowed). */
  chunkEol: '\r\n' | '\n';
  /** Where the bytes are split into separate writes. */
  cuts: number[];
  /** What breaks or bends it, if anything (one of `TWISTS`). */
  twist?: string;
}

/** Whether a response with this status, to this method, has no body (RFC 9112 §6.3). */
function bodiless(c: Pick<Case, 'method' | 'status'>): boolean {
  const status = Number(c.status);
  return c.method === 'HEAD' || status < 200 || status === 204 || status === 304;
}

function fieldLines(fields: readonly Field[], eol: string): string {
  return fields
    .map(
      (f) =>
        `${f.raw ?? `${f.name}:${f.value}`}${eol}${f.fold === undefined ? '' : `${f.fold}${eol}`}`,
    )
    .join('');
}

function framingFields(framing: Framing): Field[] {
  switch (framing.kind) {
    case 'length':
      return framing.values.map((value) => ({ name: 'Content-Length', value: ` ${value}` }));
    case 'chunked':
      return [
        { name: 'Transfer-Encoding', value: ` ${framing.te}` },
        ...(framing.length === undefined
          ? []
          : [{ name: 'Content-Length', value: ` ${framing.length}` }]),
      ];
    case 'close':
      return framing.te === undefined
        ? []
        : [{ name: 'Transfer-Encoding', value: ` ${framing.te}` }];
  }
}

/** The bytes of the body as framed (nothing for a response without a body). */
function framedBody(c: Case): string {
  if (bodiless(c)) return '';
  const framing = c.framing;
  if (framing.kind !== 'chunked') return c.body;
  const eol = c.chunkEol;
  let out = '';
  let at = 0;
  for (const [i, size] of framing.sizes.entries()) {
    const hex = size.toString(16);
    out += `${framing.upper ? hex.toUpperCase() : hex}${framing.extensions[i] ?? ''}${eol}`;
    out += `${c.body.slice(at, at + size)}${eol}`;
    at += size;
  }
  out += `0${framing.extensions.at(-1) ?? ''}${eol}`;
  return `${out}${fieldLines(framing.trailers, c.eol)}${c.eol}`;
}

function serialize(c: Case): Buffer {
  const interim = c.interim
    .map((i) => `HTTP/1.1 ${i.status} Interim${c.eol}${fieldLines(i.fields, c.eol)}${c.eol}`)
    .join('');
  const status = `HTTP/${c.version} ${c.status}${c.reason === undefined ? '' : ` ${c.reason}`}`;
  const fields = fieldLines([...c.fields, ...framingFields(c.framing)], c.eol);
  return Buffer.from(
    `${c.leading}${interim}${status}${c.eol}${fields}${c.eol}${framedBody(c)}`,
    'latin1',
  );
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/** Printable bytes, latin1 above 0x7f and HTAB included: what a field value may hold. */
const VALUE_CHARS = fc.oneof(
  { weight: 20, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
  { weight: 1, arbitrary: fc.constant(0x09) },
);

/** A field value as written after the colon: whitespace around it is not part of it. */
const value = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .array(VALUE_CHARS, { maxLength: 12 })
      .map((codes) => ` ${String.fromCharCode(...codes)}`),
  },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '\tx\t', 'x', '  a, b  ') },
);

const fieldName = fc
  .constantFrom('X-A', 'X-Long-Field-Name', 'Set-Cookie', 'Content-Type', 'Cache-Control', 'ETag')
  .chain((name) => fc.constantFrom(name, name.toLowerCase(), name.toUpperCase()));

const field: fc.Arbitrary<Field> = fc.record({ name: fieldName, value });

const extension = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  {
    weight: 1,
    arbitrary: fc.constantFrom(';a', ';a=b', ';name="quoted value"', ';a=1;b=2', ';A="x\\"y"'),
  },
);

const framing = (body: string): fc.Arbitrary<Framing> =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .constantFrom(String(body.length), `00${body.length}`)
        .map((length): Framing => ({ kind: 'length', values: [length] })),
    },
    {
      weight: 4,
      arbitrary: fc
        .record({
          te: fc.constantFrom('chunked', 'Chunked', 'CHUNKED', 'gzip, chunked', 'chunked, chunked'),
          cuts: fc.array(fc.integer({ min: 1, max: Math.max(1, body.length) }), { maxLength: 3 }),
          extensions: fc.array(extension, { minLength: 5, maxLength: 5 }),
          upper: fc.boolean(),
          trailers: fc.array(field, { maxLength: 2 }),
        })
        .map(({ cuts, ...rest }): Framing => {
          // Chunk sizes that add up to the body, none of them 0 (that would end it).
          const at = [...new Set(cuts.filter((c) => c < body.length))].sort((a, b) => a - b);
          const sizes = [...at, body.length]
            .map((to, i) => to - (at[i - 1] ?? 0))
            .filter((size) => size > 0);
          return { kind: 'chunked', ...rest, sizes };
        }),
    },
    {
      weight: 2,
      arbitrary: fc
        .option(fc.constantFrom('gzip', 'chunked, gzip'), { nil: undefined, freq: 2 })
        .map((te): Framing => (te === undefined ? { kind: 'close' } : { kind: 'close', te })),
    },
  );

/** A well-formed response: framing, status, fields, 1xx, HEAD, line ends, splits all vary. */
const wellFormed: fc.Arbitrary<Case> = fc
  .record({
    method: fc.constantFrom('GET', 'GET', 'GET', 'HEAD'),
    leading: fc.constantFrom('', '', '', '', '\r\n'),
    interim: fc.array(
      fc.record({ status: fc.constantFrom(100, 103), fields: fc.array(field, { maxLength: 1 }) }),
      { maxLength: 2 },
    ),
    version: fc.constantFrom('1.1', '1.1', '1.1', '1.0'),
    status: fc.oneof(
      { weight: 10, arbitrary: fc.constantFrom('200', '201', '206', '404', '500', '503') },
      { weight: 3, arbitrary: fc.constantFrom('204', '304') },
      { weight: 1, arbitrary: fc.constantFrom('299', '599', '600') },
    ),
    reason: fc.constantFrom('OK', 'Some Reason', '', undefined),
    fields: fc.array(field, { maxLength: 5 }),
    body: fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x')),
    eol: fc.constant<'\r\n' | '\n'>('\r\n'),
    chunkEol: fc.constant<'\r\n' | '\n'>('\r\n'),
    cuts: fc.array(fc.nat({ max: 400 }), { maxLength: 4 }),
  })
  .chain((c) => framing(c.body).map((f): Case => ({ ...c, framing: f })));

/** A chunked framing of `c`'s body in one chunk, with `extension` after each size. */
function chunkedWith(c: Case, extension: string): Case {
  return {
    ...c,
    framing: {
      kind: 'chunked',
      te: 'chunked',
      sizes: c.body === '' ? [] : [c.body.length],
      extensions: [extension, extension],
      upper: false,
      trailers: [],
    },
  };
}

const withField = (c: Case, f: Field): Case => ({ ...c, fields: [...c.fields, f] });
const withLength = (c: Case, values: string[]): Case => ({
  ...c,
  framing: { kind: 'length', values },
});

/**
 * One thing that breaks, or bends, a well-formed response: what each case may carry, at most
 * one at a time, so that what the parsers make of it can be put down to it.
 */
const TWISTS = {
  'bare LF line ends in the head': (c: Case) => ({ ...c, eol: '\n' as const }),
  'bare LF line ends in the chunk framing': (c: Case) => ({
    ...chunkedWith(c, ''),
    chunkEol: '\n' as const,
  }),
  'an obs-fold line': (c: Case) => withField(c, { name: 'X-Folded', value: ' a', fold: '  b' }),
  'a control byte in a value': (c: Case) => withField(c, { name: 'X-Bad', value: ' a\x01b' }),
  'DEL in a value': (c: Case) => withField(c, { name: 'X-Bad', value: ' a\x7fb' }),
  'NUL in a value': (c: Case) => withField(c, { name: 'X-Bad', value: ' a\x00b' }),
  'a bare CR in a value': (c: Case) => withField(c, { name: 'X-Bad', value: ' a\rb' }),
  'a space in a field name': (c: Case) => withField(c, { name: 'X Bad', value: ' v' }),
  'a separator in a field name': (c: Case) => withField(c, { name: 'X(Bad)', value: ' v' }),
  'a byte above 0x7f in a field name': (c: Case) => withField(c, { name: 'X-\xe9', value: ' v' }),
  'whitespace before the colon': (c: Case) => withField(c, { name: 'X-Bad ', value: ' v' }),
  'an empty field name': (c: Case) => withField(c, { name: '', value: ' v' }),
  'a Content-Length line given twice': (c: Case) =>
    withLength(c, [String(c.body.length), String(c.body.length)]),
  'a Content-Length list of one value': (c: Case) =>
    withLength(c, [`${c.body.length}, ${c.body.length}`]),
  'Content-Length lines that differ': (c: Case) =>
    withLength(c, [String(c.body.length), String(c.body.length + 1)]),
  'a Content-Length with a sign': (c: Case) => withLength(c, [`+${c.body.length}`]),
  'a Content-Length that is not a number': (c: Case) => withLength(c, [`${c.body.length}x`]),
  'both Transfer-Encoding and Content-Length': (c: Case) => ({
    ...chunkedWith(c, ''),
    framing: { ...(chunkedWith(c, '').framing as Framing & { kind: 'chunked' }), length: '0' },
  }),
  'BWS before a chunk extension': (c: Case) => chunkedWith(c, ' ;a=b'),
  'whitespace after a chunk size': (c: Case) => chunkedWith(c, ' '),
  'an empty chunk extension': (c: Case) => chunkedWith(c, ';;'),
  'a chunk extension with "=" and no value': (c: Case) => chunkedWith(c, ';a='),
  'an unterminated quoted chunk extension': (c: Case) => chunkedWith(c, ';a="open'),
  'a trailer line without a colon': (c: Case) => {
    const chunked = chunkedWith(c, '');
    const f = chunked.framing as Framing & { kind: 'chunked' };
    const trailers = [{ name: '', value: '', raw: 'no colon here' }];
    return { ...chunked, framing: { ...f, trailers } };
  },
  'a status code below 100': (c: Case) => ({ ...c, status: '099' }),
  'a control byte in the reason phrase': (c: Case) => ({ ...c, reason: 'O\x01K' }),
  'Transfer-Encoding in an HTTP/1.0 response': (c: Case) => ({
    ...chunkedWith(c, ''),
    version: '1.0' as const,
  }),
} satisfies Record<string, (c: Case) => Case>;

type Twist = keyof typeof TWISTS;

/** A response, well formed or with one twist (about a third of them). */
const aCase: fc.Arbitrary<Case> = fc
  .tuple(
    wellFormed,
    fc.oneof(
      { weight: 2, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.constantFrom(...(Object.keys(TWISTS) as Twist[])) },
    ),
  )
  .map(([c, twist]) => (twist === undefined ? c : { ...TWISTS[twist](c), twist }));

// ---------------------------------------------------------------------------------------------
// The two clients
// ---------------------------------------------------------------------------------------------

/** What a client made of a response: delivered (status, every header's values, body), or refused. */
type Outcome =
  | { delivered: true; status: number; headers: Record<string, string[]>; body: string }
  | { delivered: false; why: string };

const TIMEOUT_MS = 3_000;

/** Node's own HTTP client; a response counts as delivered only if it came whole. */
function viaNode(url: string, method: string): Promise<Outcome> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (outcome: Outcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const timer = setTimeout(() => {
      finish({ delivered: false, why: 'timed out' });
      req.destroy();
    }, TIMEOUT_MS);
    const req = nodeRequest(url, { method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', () => undefined);
      res.on('close', () => {
        finish(
          res.complete
            ? {
                delivered: true,
                status: res.statusCode ?? 0,
                headers: normal(res.headersDistinct),
                body: Buffer.concat(chunks).toString('latin1'),
              }
            : { delivered: false, why: 'the response was cut short' },
        );
      });
    });
    req.on('error', (error: Error & { code?: string }) => {
      // An error after a whole response (bytes past its end) does not undo it.
      finish({ delivered: false, why: error.code ?? error.message });
    });
    req.end();
  });
}

/** The wire reader, through createExchange(). */
async function viaWire(url: string, method: string): Promise<Outcome> {
  const exchange = createExchange({ retry: 0, timeout: TIMEOUT_MS });
  try {
    const response = await exchange(url, { method, keepBody: true });
    return {
      delivered: true,
      status: response.status,
      headers: normal(response.headers),
      body: response.body?.toString('latin1') ?? '',
    };
  } catch (error) {
    return { delivered: false, why: String((error as { code?: unknown }).code ?? error) };
  } finally {
    await exchange.close({ deadline: 0 });
  }
}

/** Headers as arrays of values by name, in a stable order. */
function normal(
  headers:
    IncomingHttpHeaders | Record<string, string | string[] | undefined> | NodeJS.Dict<string[]>,
): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const name of Object.keys(headers).sort()) {
    const v = headers[name];
    if (v !== undefined) out[name] = Array.isArray(v) ? [...v] : [v];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Where the two may differ
// ---------------------------------------------------------------------------------------------

/** A difference that RFC 9112 (or 9110) decided in the wire reader's favour. */
interface Difference {
  /** The twist of the responses it is about. */
  twist: Twist;
  reason: string;
  /** Which of the two refuses such a response while the other delivers it. */
  refusedBy: 'node' | 'wire';
}

const DIFFERENCES: Difference[] = [
  {
    twist: 'bare LF line ends in the head',
    reason:
      'RFC 9112 §2.2: a recipient MAY recognize a single LF as the line terminator of the ' +
      'start-line and of fields; Node’s parser requires CRLF',
    refusedBy: 'node',
  },
  {
    twist: 'an obs-fold line',
    reason:
      'RFC 9112 §5.2: a user agent that receives an obs-fold in a response MUST replace it with ' +
      'SP before interpreting the value (the wire reader does); Node’s parser refuses it',
    refusedBy: 'node',
  },
  {
    twist: 'a Content-Length line given twice',
    reason:
      'RFC 9110 §8.6: a recipient MAY replace a list of identical Content-Length values with ' +
      'that one value (the wire reader does) or reject it (Node’s parser does)',
    refusedBy: 'node',
  },
  {
    twist: 'a Content-Length list of one value',
    reason: 'RFC 9110 §8.6, as for a Content-Length line given twice',
    refusedBy: 'node',
  },
  {
    twist: 'a status code below 100',
    reason:
      'RFC 9110 §15: every valid status code is from 100 to 599 (a three-digit code below 100 ' +
      'has no class); Node’s parser takes it',
    refusedBy: 'wire',
  },
  {
    twist: 'a control byte in the reason phrase',
    reason:
      'RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ), no other control byte; ' +
      'Node’s parser takes one',
    refusedBy: 'wire',
  },
  {
    twist: 'a chunk extension with "=" and no value',
    reason:
      'RFC 9112 §7.1.1: chunk-ext-val = token / quoted-string, and a token is one or more ' +
      'characters; Node’s parser takes an empty value',
    refusedBy: 'wire',
  },
  {
    twist: 'BWS before a chunk extension',
    reason:
      'RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name … ), so "5 ;a=b" is a ' +
      'chunk size with an extension; Node’s parser refuses the BWS',
    refusedBy: 'node',
  },
];

/** The listed difference that explains `wire` and `node` differing on `c`, if any. */
function explained(c: Case, wire: Outcome): Difference | undefined {
  const refusedBy = wire.delivered ? 'node' : 'wire';
  return DIFFERENCES.find((d) => d.refusedBy === refusedBy && d.twist === c.twist);
}

// ---------------------------------------------------------------------------------------------
// The server and the comparison
// ---------------------------------------------------------------------------------------------

let server: RawServer;
/** The bytes to serve for each case, by path, and where to split them. */
const scripts = new Map<string, { bytes: Buffer; cuts: number[] }>();
let next = 0;

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

before(async () => {
  server = await rawServer(({ path, socket }) => {
    const script = scripts.get(path);
    if (script === undefined) {
      socket.destroy();
      return;
    }
    void (async () => {
      const at = [...new Set(script.cuts.filter((c) => c > 0 && c < script.bytes.length))].sort(
        (a, b) => a - b,
      );
      let from = 0;
      for (const to of [...at, script.bytes.length]) {
        if (socket.destroyed) return;
        socket.write(script.bytes.subarray(from, to));
        from = to;
        await turn();
        await turn();
      }
      // The end of the connection ends a body read until close, and cuts short any other.
      socket.end(() => socket.destroy());
    })();
  });
});
after(() => server.close());

/** How the compared cases came out: both delivered, both refused, or a listed difference. */
const tally = { delivered: 0, refused: 0, differed: new Map<string, number>() };

/** Serves `c` to both clients (each on a connection of its own) and compares what they made of it. */
async function compare(c: Case): Promise<void> {
  const bytes = serialize(c);
  const serve = (): string => {
    const path = `/case/${++next}`;
    scripts.set(path, { bytes, cuts: c.cuts });
    return server.url(path);
  };
  const [wire, node] = await Promise.all([viaWire(serve(), c.method), viaNode(serve(), c.method)]);
  const shown = `for ${JSON.stringify(bytes.toString('latin1'))} (${c.method})`;
  if (wire.delivered && node.delivered) {
    assert.deepEqual(wire, node, `both delivered, differently, ${shown}`);
    tally.delivered++;
    return;
  }
  if (!wire.delivered && !node.delivered) {
    tally.refused++; // how they name it may differ
    return;
  }
  const difference = explained(c, wire);
  if (difference !== undefined)
    tally.differed.set(difference.twist, (tally.differed.get(difference.twist) ?? 0) + 1);
  assert.ok(
    difference !== undefined,
    `only ${wire.delivered ? 'Node' : 'the wire reader'} refused (${
      wire.delivered ? (node as { why: string }).why : (wire as { why: string }).why
    }) ${shown}`,
  );
}

describe('_h1 against Node’s HTTP parser', { timeout: 60_000 }, () => {
  it('gives the same status, headers and body as Node, or both refuse (but for the listed differences)', async () => {
    const runs = Number(process.env.SLUICE_H1_RUNS ?? 300);
    await fc.assert(fc.asyncProperty(aCase, compare), {
      numRuns: runs,
      ...(process.env.SLUICE_H1_RUNS === undefined ? { seed: 0x5eed } : {}),
    });
    // Most cases are delivered by both: the comparison is of responses, not only of refusals.
    assert.ok(tally.delivered > runs / 2, JSON.stringify(tally));
    if (process.env.SLUICE_H1_RUNS !== undefined) console.log(tally);
  });

  it('agrees with Node on one response split at every boundary', async () => {
    const rich: Case = {
      method: 'GET',
      leading: '',
      interim: [{ status: 100, fields: [] }],
      version: '1.1',
      status: '200',
      reason: 'OK',
      fields: [
        { name: 'X-A', value: ' one ' },
        { name: 'x-a', value: '\ttwo' },
        { name: 'Set-Cookie', value: ' a=1' },
      ],
      framing: {
        kind: 'chunked',
        te: 'chunked',
        sizes: [3, 1, 5],
        extensions: [';a=b', '', ';name="v"', ''],
        upper: true,
        trailers: [{ name: 'X-Trailer', value: ' t' }],
      },
      body: 'abcdefghi',
      eol: '\r\n',
      chunkEol: '\r\n',
      cuts: [],
    };
    const length = serialize(rich).length;
    for (let cut = 1; cut < length; cut++) await compare({ ...rich, cuts: [cut] });
  });

  it('lists each difference once, with the RFC that decided it', () => {
    for (const d of DIFFERENCES) assert.match(d.reason, /^RFC 911[02] §/, d.twist);
    assert.equal(new Set(DIFFERENCES.map((d) => d.twist)).size, DIFFERENCES.length);
  });
});
