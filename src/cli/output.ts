/**
 * Where records go: stdout, or a file (`-o FILE`). Records are gathered and written in batches
 * (one write per 64 KiB, or every 50 ms when fewer come: a write per record, or even per turn of
 * the event loop, costs a tenth of the run's CPU at 10 000 records/s), and the writer reports
 * backpressure so that the run stops admitting work while the output cannot keep up.
 *
 * A record is encoded into the batch's buffer as it comes: a record string kept until the batch
 * is written would outlive a young-generation collection or two and die in the old generation.
 *
 * A file that is also the run's `--resume` source is written beside it and renamed over it at the
 * end: the previous records are read while the new ones are written.
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import type { CliIo } from './io.ts';
import { later, type Cancel } from '../_clock.ts';

const BATCH = 64 * 1024;
/** A batch this full is written: the next record would likely not fit. */
const FULL = BATCH - 512;
/** Written batches kept to be filled again. */
const SPARES = 2;
const LINGER = 50;
const NEWLINE = 10;
const NEWLINE_BYTES = Buffer.from('\n');

export class Output {
  readonly #stream: Writable;
  readonly #ownStream: boolean;
  readonly #finalPath: string | undefined;
  readonly #writtenPath: string | undefined;
  /** The batch being gathered, and how many of its bytes are used. */
  #batch: Buffer | undefined = undefined;
  /** Batches written out, to fill again. */
  readonly #spares: Buffer[] = [];
  #size = 0;
  #timer: Cancel | undefined;
  #blocked = false;
  #failure: Error | undefined;
  /** Called when the output can take more (after backpressure), or failed. */
  onReady: () => void = () => undefined;
  /** Called once, when the output fails (before `onReady`). */
  onFailed: () => void = () => undefined;

  private constructor(
    stream: Writable,
    own: boolean,
    writtenPath: string | undefined,
    finalPath: string | undefined,
  ) {
    this.#stream = stream;
    this.#ownStream = own;
    this.#writtenPath = writtenPath;
    this.#finalPath = finalPath;
    stream.on('error', this.#onError);
  }

  /**
   * Opens the output: `path` (already resolved) or the injected stdout. With `replace`, the file
   * is written under a temporary name and renamed over `path` by `close()`.
   */
  static async open(path: string | undefined, io: CliIo, replace = false): Promise<Output> {
    if (path === undefined) return new Output(io.stdout, false, undefined, undefined);
    const written = replace ? `${path}.sluice-${Date.now().toString(36)}.tmp` : path;
    const stream = createWriteStream(written);
    await once(stream, 'open'); // rejects with the open's error (a missing directory, EACCES, …)
    return new Output(stream, true, written, replace ? path : undefined);
  }

  /** Whether the stream asked to wait: admit no more work until `onReady`. */
  get blocked(): boolean {
    return this.#blocked;
  }

  /** The write error that ended the output, if any. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /**
   * Whether the output ended because its reader went away (EPIPE: `sluice fetch … | head -1`),
   * which is how a pipeline ends, not a fault.
   */
  get closedByReader(): boolean {
    return (this.#failure as { code?: unknown } | undefined)?.code === 'EPIPE';
  }

  /** Queues one record (a line of JSON, without its newline; as text or as UTF-8 bytes). */
  write(line: string | Uint8Array): void {
    if (this.#failure !== undefined) return;
    const text = typeof line === 'string';
    // At most 3 bytes of UTF-8 per UTF-16 unit, and the newline.
    const most = (text ? 3 * line.length : line.length) + 1;
    if (this.#size + most > BATCH) {
      this.flush();
      if (most > BATCH) {
        // A record larger than a batch (a body): on its own, bytes not copied.
        if (text) this.#send(`${line}\n`);
        else {
          this.#send(line);
          this.#send(NEWLINE_BYTES);
        }
        return;
      }
    }
    const batch = (this.#batch ??= this.#spares.pop() ?? Buffer.allocUnsafe(BATCH));
    let size = this.#size;
    if (text) size += batch.write(line, size, 'utf8');
    else {
      batch.set(line, size);
      size += line.length;
    }
    batch[size] = NEWLINE;
    this.#size = size + 1;
    if (this.#size >= FULL) this.flush();
    else this.#timer ??= later(LINGER, this.#flushLater);
  }

  /** Writes what is queued. */
  flush(): void {
    if (this.#timer !== undefined) {
      this.#timer();
      this.#timer = undefined;
    }
    const batch = this.#batch;
    if (batch === undefined || this.#size === 0 || this.#failure !== undefined) return;
    const bytes = batch.subarray(0, this.#size);
    this.#batch = undefined; // the stream holds the written one until it is out
    this.#size = 0;
    this.#send(bytes, () => {
      // Out: the batch is filled again, rather than a new one made and this one left to the
      // garbage collector (a long run would hold many such batches between major collections).
      if (this.#spares.length < SPARES) this.#spares.push(batch);
    });
  }

  #send(chunk: Uint8Array | string, written?: () => void): void {
    let more: boolean;
    try {
      more = this.#stream.write(chunk, written);
    } catch (error) {
      // A stream that throws rather than emitting 'error' (this may run in the batch's timer,
      // where a throw would end the process): the output has failed all the same.
      this.#onError(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    if (!more && !this.#blocked) {
      this.#blocked = true;
      this.#stream.once('drain', this.#onDrain);
    }
  }

  /** Flushes, waits until everything is written, and closes a file (stdout stays open). */
  async close(): Promise<void> {
    this.flush();
    if (this.#failure === undefined) {
      const stream = this.#stream;
      if (this.#ownStream) {
        stream.end();
        if (!stream.writableFinished) await once(stream, 'finish').catch(() => undefined);
      } else {
        await new Promise<void>((resolve) => {
          stream.write('', () => {
            resolve();
          });
        });
      }
    } else if (this.#ownStream) {
      this.#stream.destroy();
    }
    if (this.#writtenPath !== undefined && this.#finalPath !== undefined) {
      if (this.#failure === undefined) await rename(this.#writtenPath, this.#finalPath);
      else await rm(this.#writtenPath, { force: true });
    }
  }

  readonly #flushLater = (): void => {
    this.#timer = undefined;
    this.flush();
  };

  readonly #onDrain = (): void => {
    this.#blocked = false;
    this.onReady();
  };

  readonly #onError = (error: Error): void => {
    const first = this.#failure === undefined;
    this.#failure ??= error;
    this.#batch = undefined;
    this.#size = 0;
    this.#blocked = false;
    if (first) this.onFailed();
    this.onReady();
  };
}
