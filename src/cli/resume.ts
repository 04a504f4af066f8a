/**
 * `--resume FILE`: the records of a previous run that ended ok, so that their lines are not run
 * again and their records are copied through to the new output.
 *
 * The previous output may be as long as the input, so it is not kept in memory: loading it keeps,
 * for each ok record, only its index and where it lies in the file (24 bytes), sorted by index;
 * `take(index)` reads that one record back from the file when the input reaches its line.
 * Reads are one at a time (the run's loop awaits each). A file that is not a previous output
 * (a line that is no record) is refused, not read as one with nothing recorded.
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** A `--resume` file with a line that is not a record (the file is not a previous output). */
export class NotRecordsError extends Error {
  /** The line, from 1. */
  readonly line: number;

  constructor(line: number) {
    super(`line ${line} is not a record of a previous run (a JSON object with an "index")`);
    this.line = line;
  }
}

/** A previous record: its line as it was written, and what it says. */
export interface PreviousRecord {
  raw: string;
  record: Record<string, unknown>;
}

const NEWLINE = 10;
const OPEN_BRACE = 0x7b;
const WINDOW = 256 * 1024;

export class Previous {
  readonly #file: FileHandle;
  readonly #indexes: Float64Array;
  readonly #offsets: Float64Array;
  readonly #lengths: Float64Array;
  /**
   * A window of the file, starting at offset `#from`: previous outputs are mostly in input
   * order, so most records are read from it rather than with a read of their own.
   */
  #window = Buffer.alloc(0);
  #from = 0;

  private constructor(
    file: FileHandle,
    indexes: Float64Array,
    offsets: Float64Array,
    lengths: Float64Array,
  ) {
    this.#file = file;
    this.#indexes = indexes;
    this.#offsets = offsets;
    this.#lengths = lengths;
  }

  /**
   * Reads the ok records' positions from `path`. Rejects with a {@link NotRecordsError} at the
   * first line that is not a record (blank lines aside), unless it is a last line cut off
   * mid-record (no newline after it: a run killed as it wrote), which is left out.
   */
  static async load(path: string): Promise<Previous> {
    const file = await open(path, 'r');
    try {
      const found = new Triples();
      let offset = 0; // of the start of `pending` in the file
      let line = 0;
      let pending: Buffer = Buffer.alloc(0);
      for await (const chunk of createReadStream(path, {
        highWaterMark: 256 * 1024,
      }) as AsyncIterable<Buffer>) {
        const data = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        let from = 0;
        for (let at = data.indexOf(NEWLINE); at !== -1; at = data.indexOf(NEWLINE, from)) {
          line++;
          if (!consider(data, from, at, offset + from, found)) throw new NotRecordsError(line);
          from = at + 1;
        }
        pending = data.subarray(from);
        offset += from;
      }
      if (
        pending.length > 0 &&
        !consider(pending, 0, pending.length, offset, found) &&
        pending[0] !== OPEN_BRACE
      )
        throw new NotRecordsError(line + 1);
      const [indexes, offsets, lengths] = found.sorted();
      return new Previous(file, indexes, offsets, lengths);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  /**
   * The ok record of input line `index` (the last one, if it was recorded more than once), read
   * back from the file; undefined, without a read, when there is none.
   */
  take(index: number): Promise<PreviousRecord> | undefined {
    const indexes = this.#indexes;
    let lo = 0;
    let hi = indexes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (indexes[mid]! <= index) lo = mid + 1;
      else hi = mid;
    }
    const at = lo - 1;
    if (at < 0 || indexes[at] !== index) return undefined;
    return this.#read(this.#offsets[at]!, this.#lengths[at]!);
  }

  async #read(offset: number, length: number): Promise<PreviousRecord> {
    const start = offset - this.#from;
    if (start < 0 || start + length > this.#window.length) {
      const window = Buffer.allocUnsafe(Math.max(WINDOW, length));
      const { bytesRead } = await this.#file.read(window, 0, window.length, offset);
      this.#window = window.subarray(0, bytesRead);
      this.#from = offset;
    }
    const at = offset - this.#from;
    const raw = this.#window.toString('utf8', at, at + length);
    return { raw, record: JSON.parse(raw) as Record<string, unknown> };
  }

  async close(): Promise<void> {
    await this.#file.close();
  }
}

/**
 * Notes the line `data[from, to)` (at `position` in the file) if it is an ok record. Returns
 * whether it is a record (ok or not) or blank.
 */
function consider(
  data: Buffer,
  from: number,
  to: number,
  position: number,
  found: Triples,
): boolean {
  let end = to;
  if (end > from && data[end - 1] === 13) end--;
  if (isBlank(data, from, end)) return true;
  let record: unknown;
  try {
    record = JSON.parse(data.toString('utf8', from, end));
  } catch {
    return false;
  }
  if (typeof record !== 'object' || record === null || Array.isArray(record)) return false;
  const { index, ok } = record as { index?: unknown; ok?: unknown };
  if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) return false;
  if (ok === true) found.push(index, position, end - from);
  return true;
}

/** Whether `data[from, end)` holds only spaces and tabs. */
function isBlank(data: Buffer, from: number, end: number): boolean {
  for (let i = from; i < end; i++) if (data[i] !== 32 && data[i] !== 9) return false;
  return true;
}

/** A growable array of (index, offset, length), sorted by index on demand (stably). */
class Triples {
  #data = new Float64Array(3 * 1024);
  #size = 0;

  push(index: number, offset: number, length: number): void {
    if (3 * (this.#size + 1) > this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2);
      bigger.set(this.#data);
      this.#data = bigger;
    }
    const at = 3 * this.#size++;
    this.#data[at] = index;
    this.#data[at + 1] = offset;
    this.#data[at + 2] = length;
  }

  sorted(): [Float64Array, Float64Array, Float64Array] {
    const n = this.#size;
    const data = this.#data;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    // Stable: among records of one index, the later one in the file ends up last (and is taken).
    order.sort((a, b) => data[3 * a]! - data[3 * b]! || a - b);
    const indexes = new Float64Array(n);
    const offsets = new Float64Array(n);
    const lengths = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const at = 3 * order[i]!;
      indexes[i] = data[at]!;
      offsets[i] = data[at + 1]!;
      lengths[i] = data[at + 2]!;
    }
    return [indexes, offsets, lengths];
  }
}
