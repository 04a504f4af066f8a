/**
 * The input of `sluice fetch` and `sluice exec`: a file, or stdin (`-` or no argument), read
 * lazily, a chunk at a time, so that a million-line file never sits in memory.
 *
 * A chunk stays bytes (a Buffer, outside the JS heap) and each line is decoded as it is taken:
 * lines split from a decoded chunk would be slices of one large string, which any of them keeps
 * alive, and a chunk's worth of lines waiting to be taken lives long enough to be promoted to the
 * old generation, only to die there.
 *
 * Invariants: lines come out in order, each once, without their `\n` or `\r\n`; a UTF-8 byte
 * order mark at the very start of the input is not part of the first line (editors on Windows
 * write one; it would otherwise be the first command's first character); nothing is read ahead
 * of the consumer beyond the chunk being split; leaving the iteration early closes the stream.
 */
import { createReadStream } from 'node:fs';
import { open as openFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CliIo } from './io.ts';

/** An opened input. */
export interface Input {
  /** What the input is called in messages: the file's path, or "stdin". */
  name: string;
  /** The lines, in batches (those of one chunk read). */
  batches: AsyncIterable<Lines>;
  /**
   * How many non-empty lines there are, counted in the background when the input is a regular
   * file and the count was asked for (a second, cheap pass over it); undefined otherwise.
   */
  total: Promise<number | undefined>;
}

/** Thrown when the input cannot be opened: the CLI's usage error. */
export class InputError extends Error {}

/**
 * Opens `file` (resolved against `io.cwd`), or stdin for `-` and undefined. `count`: whether to
 * count its lines in the background (only the progress line shows the total).
 */
export async function openInput(file: string | undefined, io: CliIo, count = true): Promise<Input> {
  if (file === undefined || file === '-') {
    return {
      name: 'stdin',
      batches: lineBatches(() => io.stdin),
      total: Promise.resolve(undefined),
    };
  }
  const path = resolve(io.cwd, file);
  let isFile: boolean;
  try {
    const info = await stat(path);
    if (info.isDirectory()) throw new InputError(`cannot read ${file}: it is a directory`);
    isFile = info.isFile();
  } catch (error) {
    if (error instanceof InputError) throw error;
    throw new InputError(`cannot read ${file}: ${fileProblem(error)}`);
  }
  // A FIFO or a device may be readable once only: count regular files alone.
  const total = isFile && count ? countLines(path) : Promise.resolve(undefined);
  const open = (): AsyncIterable<unknown> =>
    isFile ? fileChunks(path, 64 * 1024) : createReadStream(path, { highWaterMark: 64 * 1024 });
  return { name: file, batches: lineBatches(open), total };
}

/** Why a file could not be used, briefly. */
export function fileProblem(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return error instanceof Error ? error.message : String(error);
}

/** Whether a line holds nothing but blanks (such lines are skipped: they are not requests). */
export function isBlank(line: string): boolean {
  return line.length === 0 || (line.charCodeAt(0) <= 32 && line.trim() === '');
}

const NEWLINE = 10;
const CR = 13;
/** U+FEFF in UTF-8: a byte order mark at the start of a text. */
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
/** Bytes of a file's first read (about a hundred lines of URLs). */
const FIRST_READ = 4096;

/** The lines of one chunk, decoded (UTF-8) one at a time as they are taken. */
export class Lines implements Iterable<string> {
  readonly #bytes: Buffer;
  #at = 0;

  /** `bytes` holds whole lines, each ended by `\n` except perhaps the last. */
  constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }

  /** The next line, or undefined when there is none. */
  next(): string | undefined {
    const bytes = this.#bytes;
    const from = this.#at;
    if (from >= bytes.length) return undefined;
    let end = bytes.indexOf(NEWLINE, from);
    if (end === -1) end = bytes.length;
    this.#at = end + 1;
    // A newline never falls inside a multi-byte character: decoding line by line is exact.
    return bytes.toString('utf8', from, end > from && bytes[end - 1] === CR ? end - 1 : end);
  }

  *[Symbol.iterator](): Iterator<string> {
    for (let line = this.next(); line !== undefined; line = this.next()) yield line;
  }
}

function bytesOf(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  const view = chunk as Uint8Array;
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * The chunks of a regular file, each read into the same buffer: a chunk is valid until the next
 * is asked for. A file read in fresh chunks leaves them to the garbage collector, and those that
 * lived long enough to be promoted wait for a major collection: tens of MB of dead buffers in the
 * resident set of a long run.
 */
async function* fileChunks(path: string, size: number): AsyncGenerator<Buffer, void, undefined> {
  const handle = await openFile(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(size);
    // The first read is short: its lines run while the code is still cold, and the run moves on
    // to the next chunk before V8 optimizes the loop over lines, which would otherwise be thrown
    // away (and compiled again) at the first chunk's end, the first time it sees that step.
    let want = Math.min(FIRST_READ, size);
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, want, null);
      want = size;
      if (bytesRead === 0) return;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/**
 * Splits chunks (from a source opened on the first pull) into lines, yielding those of each
 * chunk together, read before the next chunk is asked for (a chunk's buffer may be reused). A
 * line longer than a chunk gathers (copied) pieces until its end comes, and is joined once.
 */
async function* lineBatches(
  open: () => AsyncIterable<unknown>,
): AsyncGenerator<Lines, void, undefined> {
  let carry: Buffer[] = [];
  // Until the input's first three bytes have been seen (a chunk may hold fewer).
  let head: Buffer | undefined = Buffer.alloc(0);
  // Leaving early returns the source's iterator: the stream is destroyed, the file closed.
  for await (const chunk of open()) {
    let bytes = bytesOf(chunk);
    if (head !== undefined) {
      const start: Buffer = head.length === 0 ? bytes : Buffer.concat([head, bytes]);
      if (start.length < BOM.length && BOM.subarray(0, start.length).equals(start)) {
        head = Buffer.from(start); // a file's chunk is read into a buffer that is reused
        continue;
      }
      bytes = withoutBom(start);
      head = undefined;
    }
    const last = bytes.lastIndexOf(NEWLINE);
    if (last === -1) {
      if (bytes.length > 0) carry.push(Buffer.from(bytes));
      continue;
    }
    if (carry.length === 0) {
      yield new Lines(bytes.subarray(0, last + 1));
    } else {
      // Only the line split across chunks is joined (copied); the chunk's other lines are read
      // where they are, not copied with it into a new chunk-sized buffer.
      const first = bytes.indexOf(NEWLINE) + 1;
      yield new Lines(Buffer.concat([...carry, bytes.subarray(0, first)]));
      if (first < last + 1) yield new Lines(bytes.subarray(first, last + 1));
    }
    carry = last + 1 < bytes.length ? [Buffer.from(bytes.subarray(last + 1))] : [];
  }
  if (head !== undefined && head.length > 0) carry = [head]; // a short input, a partial mark
  if (carry.length > 0) yield new Lines(Buffer.concat(carry));
}

/** `bytes` without the byte order mark it may start with. */
function withoutBom(bytes: Buffer): Buffer {
  return bytes.subarray(0, BOM.length).equals(BOM) ? bytes.subarray(BOM.length) : bytes;
}

/** Space, tab, CR, vertical tab, form feed: what `isBlank()` trims (in ASCII). */
function isSpace(byte: number): boolean {
  return byte === 32 || (byte >= 9 && byte <= 13);
}

/** Counts the lines of a file that are not blank. Never rejects. */
async function countLines(path: string): Promise<number | undefined> {
  let count = 0;
  let lineHasContent = false;
  try {
    let first = true;
    for await (const chunk of fileChunks(path, 256 * 1024)) {
      // The first read asks for 4 KiB: a mark at the start is whole in it.
      let from = first ? chunk.length - withoutBom(chunk).length : 0;
      first = false;
      for (;;) {
        const at = chunk.indexOf(NEWLINE, from);
        const end = at === -1 ? chunk.length : at;
        // Usually decided by the line's first byte; only blank-looking lines are scanned on.
        for (let i = from; !lineHasContent && i < end; i++) lineHasContent = !isSpace(chunk[i]!);
        if (at === -1) break;
        if (lineHasContent) count++;
        lineHasContent = false;
        from = at + 1;
      }
    }
  } catch {
    return undefined;
  }
  return lineHasContent ? count + 1 : count;
}
