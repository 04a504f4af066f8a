/**
 * What the CLI touches of the outside world, injected: tests run the CLI in-process with their
 * own streams, environment and signals; `bin.ts` passes the real ones.
 */
import type { Readable, Writable } from 'node:stream';

export interface CliIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  /** Whether stderr is a terminal (a live progress line) or not (a plain line every few seconds). */
  stderrIsTTY: boolean;
  /** Whether stdin is a terminal (someone types the jobs). @default false */
  stdinIsTTY?: boolean;
  env: Readonly<Record<string, string | undefined>>;
  /** The working directory, against which FILE arguments resolve. */
  cwd: string;
  /**
   * Subscribes to interrupts (Ctrl-C / SIGINT): the first asks for a clean stop, the second for an
   * immediate one. Returns the function that unsubscribes.
   */
  onInterrupt(listener: () => void): () => void;
}
