/**
 * A response body kept up to a limit: what `createExchange()`'s `keepBody` keeps, and what the
 * CLI decodes a compressed body into.
 *
 * The bytes that fit are copied into one buffer, made as large as the body says it is
 * (Content-Length) when it says so, else grown by doubling; bytes past the limit are left to the
 * caller to count. Never a list of chunks joined at the end: the chunks and their join would be
 * twice the body at once, and each chunk of a reused read buffer would need a copy of its own
 * first.
 *
 * Invariants: at most `limit` bytes are kept; `cut` is set once a byte did not fit; the buffer
 * is never larger than the limit (a doubling stops there).
 */
import { constants } from 'node:buffer';
import { describe } from '../_validate.ts';

/** The first buffer for a body of unknown length (grown by doubling from there). */
const FIRST = 16 * 1024;

export class KeptBody {
  readonly limit: number;
  /** Whether some bytes did not fit. */
  cut = false;
  #buffer: Buffer | undefined = undefined;
  #size = 0;
  /** How long the body is said to be (Content-Length), or 0 when unknown. */
  #expected = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes kept so far. */
  get size(): number {
    return this.#size;
  }

  /** Whether no more byte can be kept. */
  get full(): boolean {
    return this.#size >= this.limit;
  }

  /** The body is said to be `length` bytes: its buffer is made that large when its first byte comes. */
  expect(length: number): void {
    this.#expected = length;
  }

  /** Keeps what fits of `chunk` (copied: the chunk may be reused once this returns). */
  add(chunk: Uint8Array): void {
    const room = this.limit - this.#size;
    const n = Math.min(room, chunk.length);
    if (n < chunk.length) this.cut = true;
    if (n === 0) return;
    const need = this.#size + n;
    let buffer = this.#buffer;
    if (buffer === undefined || buffer.length < need) {
      let grown: number;
      if (buffer !== undefined) grown = 2 * buffer.length;
      else grown = this.#expected > 0 ? this.#expected : FIRST;
      const bigger = Buffer.allocUnsafe(Math.min(this.limit, Math.max(need, grown)));
      buffer?.copy(bigger, 0, 0, this.#size);
      buffer = this.#buffer = bigger;
      this.#expected = 0;
    }
    buffer.set(n === chunk.length ? chunk : chunk.subarray(0, n), this.#size);
    this.#size = need;
  }

  /** The bytes kept (a view of the buffer they were gathered in). */
  bytes(): Buffer {
    return this.#buffer === undefined ? Buffer.alloc(0) : this.#buffer.subarray(0, this.#size);
  }
}

/**
 * `keepBody` read: undefined to keep nothing, else the most bytes to keep (`true`: as many as a
 * Buffer can hold). Throws for anything but a boolean or an integer >= 0 (or Infinity).
 */
export function keepLimit(keepBody: unknown): number | undefined {
  if (keepBody === undefined || keepBody === false) return undefined;
  if (keepBody === true) return constants.MAX_LENGTH;
  if (
    typeof keepBody === 'number' &&
    (keepBody === Infinity || (Number.isInteger(keepBody) && keepBody >= 0))
  )
    return Math.min(keepBody, constants.MAX_LENGTH);
  const Kind = typeof keepBody === 'number' ? RangeError : TypeError;
  throw new Kind(
    `Expected \`keepBody\` to be a boolean or an integer >= 0, got ${describe(keepBody)}`,
  );
}
