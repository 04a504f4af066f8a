#!/usr/bin/env node
/**
 * The `sluice` executable: the one file that touches `process`. It hands the real streams,
 * environment and SIGINT to `main()` and exits with what `main()` returns.
 */
import type { CliIo } from './io.ts';
import { main } from './main.ts';
import { tune } from './tune.ts';

tune(process.execArgv, process.env.NODE_OPTIONS);

// Progress and messages that stderr cannot take (its reader went away: `2>&1 | head -1`) are
// dropped: there is nowhere else to say anything, and the run must still end as it should.
process.stderr.on('error', () => undefined);

let interrupts = 0;
const count = (): void => {
  interrupts++;
};

const io: CliIo = {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  stderrIsTTY: process.stderr.isTTY,
  stdinIsTTY: process.stdin.isTTY,
  env: process.env,
  cwd: process.cwd(),
  onInterrupt(listener) {
    process.on('SIGINT', count);
    process.on('SIGINT', listener);
    return () => {
      process.off('SIGINT', listener);
      process.off('SIGINT', count);
    };
  },
};

// Until a run subscribes, Ctrl-C ends the process as usual; while one runs, it decides. After a
// run has returned, a Ctrl-C while the last bytes are flushed ends the process at once.
let code: number;
try {
  code = await main(process.argv.slice(2), io);
} catch (error) {
  process.stderr.write(
    `sluice: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  code = 1;
}
if (interrupts >= 2) {
  process.exit(code); // the second Ctrl-C: at once, whatever is left unwritten
}
// Exit once stdout has taken everything (a pipe may still hold a batch), without waiting for
// anything else that lingers (a keep-alive socket, a cancelled command's abandoned work).
process.stdout.write('', () => {
  process.exit(code);
});
