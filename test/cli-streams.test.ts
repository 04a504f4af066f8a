import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { CliIo } from '../src/cli/io.ts';
import { openInput } from '../src/cli/input.ts';
import { Output } from '../src/cli/output.ts';

function ioWith(stdin: Readable): CliIo {
  return {
    stdin,
    stdout: new PassThrough(),
    stderr: new PassThrough(),
    stderrIsTTY: false,
    env: {},
    cwd: process.cwd(),
    onInterrupt: () => () => undefined,
  };
}

/** The lines `openInput` gives for `bytes` read in chunks cut at `cuts`. */
async function linesOf(bytes: Buffer, cuts: number[]): Promise<string[]> {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const cut of [...at, bytes.length]) {
    if (cut > from) chunks.push(bytes.subarray(from, cut));
    from = Math.max(from, cut);
  }
  const input = await openInput('-', ioWith(Readable.from(chunks)));
  const lines: string[] = [];
  for await (const batch of input.batches) for (const line of batch) lines.push(line);
  return lines;
}

/** What a reader of text lines expects: split on \n, one \r before it dropped, no last empty line. */
function expected(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.map((line) => (line.endsWith('\r') ? line.slice(0, -1) : line));
}

describe('CLI input', () => {
  it('splits UTF-8 into lines exactly, wherever the chunks are cut', async () => {
    const piece = fc.constantFrom('a', 'é', '€', '𝄞', '\n', '\r\n', '\r', ' ', 'http://x/');
    await fc.assert(
      fc.asyncProperty(
        fc.array(piece, { maxLength: 60 }),
        fc.array(fc.nat(400), { maxLength: 12 }),
        async (pieces, cuts) => {
          const text = pieces.join('');
          assert.deepEqual(await linesOf(Buffer.from(text, 'utf8'), cuts), expected(text));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('reads a regular file exactly across its reads (a short first one, then 64 KiB ones)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-input-'));
    try {
      // Lines of varied length and width, so that reads end inside lines and characters.
      const lines = Array.from({ length: 3_000 }, (_, i) =>
        i % 7 === 0 ? '' : `https://example.test/${'é€𝄞'.repeat(i % 13)}${i}`,
      );
      const text = `${lines.join('\r\n')}\n`;
      const file = join(dir, 'urls.txt');
      writeFileSync(file, text);
      assert.ok(Buffer.byteLength(text) > 2 * 64 * 1024);
      const counted = await openInput(file, ioWith(Readable.from([])));
      const got: string[] = [];
      for await (const batch of counted.batches) for (const line of batch) got.push(line);
      assert.deepEqual(got, expected(text));
      assert.equal(await counted.total, lines.filter((line) => line !== '').length);
      // Without a progress line to show it, the total is not counted (the file is read once).
      const uncounted = await openInput(file, ioWith(Readable.from([])), false);
      assert.equal(await uncounted.total, undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('drops a UTF-8 byte order mark at the start of the input, wherever the chunks are cut', async () => {
    const piece = fc.constantFrom('a', '\uFEFF', '€', '\n', '\r\n', ' ');
    await fc.assert(
      fc.asyncProperty(
        fc.array(piece, { maxLength: 30 }),
        fc.array(fc.nat(100), { maxLength: 8 }),
        async (pieces, cuts) => {
          // Only the mark at the very start is dropped: one further on is text.
          const text = pieces.join('');
          assert.deepEqual(
            await linesOf(Buffer.from(`\uFEFF${text}`, 'utf8'), cuts),
            expected(text),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('does not count a line that holds nothing but the byte order mark', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-input-'));
    try {
      const file = join(dir, 'bom.txt');
      writeFileSync(file, '\uFEFF\nhttp://a.test/\n\uFEFFhttp://b.test/\n');
      const input = await openInput(file, ioWith(Readable.from([])));
      const got: string[] = [];
      for await (const batch of input.batches) for (const line of batch) got.push(line);
      assert.deepEqual(got, ['', 'http://a.test/', '\uFEFFhttp://b.test/']);
      assert.equal(await input.total, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('joins a line longer than many chunks once its end comes', async () => {
    const long = '€'.repeat(50_000);
    const text = `first\n${long}\r\nlast`;
    const bytes = Buffer.from(text, 'utf8');
    const cuts = Array.from({ length: 40 }, (_, i) => 7 + i * 3_997);
    assert.deepEqual(await linesOf(bytes, cuts), ['first', long, 'last']);
  });
});

describe('CLI output', () => {
  it('writes every record whole and in order, whatever their sizes and characters, as text or bytes', async () => {
    const text = fc.oneof(
      fc.string({ unit: fc.constantFrom('a', '"', 'é', '€', '𝄞'), maxLength: 200 }),
      fc.integer({ min: 20_000, max: 70_000 }).map((n) => '€'.repeat(n)), // past one batch
    );
    // A record with a body comes as UTF-8 bytes.
    const record = fc.tuple(text, fc.boolean());
    await fc.assert(
      fc.asyncProperty(fc.array(record, { maxLength: 30 }), async (records) => {
        const stdout = new PassThrough();
        const chunks: Buffer[] = [];
        stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
        const output = await Output.open(undefined, { ...ioWith(Readable.from([])), stdout });
        for (const [line, bytes] of records) output.write(bytes ? Buffer.from(line) : line);
        await output.close();
        const written = Buffer.concat(chunks).toString('utf8');
        assert.equal(written, records.map(([line]) => `${line}\n`).join(''));
      }),
      { numRuns: 60 },
    );
  });
});
