/**
 * `sluice fetch … | head -1`: an output closed by its reader ends the run as it ends a Unix
 * filter: nothing more is started, what runs is cancelled, and the exit is quiet (141, as for a
 * process ended by SIGPIPE). In-process with a stdout that fails as a closed pipe does, and
 * spawned with a real pipe.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { within } from './_helpers/within.ts';
import {
  parseRecords,
  range,
  spawnCli,
  startCli,
  startServer,
  tempDir,
  until,
  type TestServer,
} from './cli-helpers.ts';

const { remove, file } = tempDir();
after(remove);

/** A stdout whose reader goes away after `lines` lines: writes then fail with EPIPE. */
class ClosingPipe extends Writable {
  text = '';
  readonly #lines: number;

  constructor(lines: number) {
    super();
    this.#lines = lines;
  }

  override _write(chunk: Buffer, _encoding: string, callback: (error?: Error) => void): void {
    if (this.text.split('\n').length > this.#lines) {
      callback(Object.assign(new Error('write EPIPE'), { code: 'EPIPE', syscall: 'write' }));
      return;
    }
    this.text += chunk.toString('utf8');
    callback();
  }
}

describe('sluice fetch: an output closed by its reader', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res, _body, s) => {
      if (req.url?.startsWith('/hang')) s.held.push(res);
      else if (req.url === '/slow-ok') setTimeout(() => res.end('ok'), 300);
      else res.end('ok');
    });
  });
  after(() => server.close());

  it('stops starting work, cancels what runs, and exits 141 without an error message', async () => {
    // The first record goes out; the reader goes; the second record's write finds the pipe
    // closed, while the other requests hang: the run must not wait for them.
    const input = [
      `${server.url}/ok`,
      `${server.url}/slow-ok`,
      ...range(200).map((i) => `${server.url}/hang-${i}`),
    ];
    const held = server.held.length;
    const stdout = new ClosingPipe(1);
    const running = startCli(['fetch', '-c', '4', file('closing.txt', input)], {
      stdout,
      env: { SLUICE_GRACE_MS: '60000', SLUICE_PROGRESS_INTERVAL: '60000' },
    });
    const run = await within(10_000, running.done, 'the end of the run');
    assert.equal(run.code, 141);
    assert.doesNotMatch(run.stderr, /EPIPE|cannot write|error/i);
    assert.match(
      run.stderr,
      /^sluice fetch: 2 done, 0 failed, [1-4] cancelled in [^\n]* \(output closed\)\n$/,
    );
    assert.ok(server.held.length - held <= 4, `${server.held.length - held} requests held`);
    assert.deepEqual(
      parseRecords(stdout.text).map((r) => r.index),
      [0],
    );
  });

  it(
    'exits 141 quietly when spawned with a pipe whose reader goes away',
    { timeout: 15_000 },
    async () => {
      const input = [
        `${server.url}/ok-first`,
        `${server.url}/slow-ok`,
        ...range(50).map((i) => `${server.url}/hang-spawned-${i}`),
      ];
      const spawned = spawnCli(['fetch', '-q', '-c', '2', file('spawned.txt', input)], {
        env: { SLUICE_GRACE_MS: '60000' },
      });
      await until(() => spawned.stdoutSoFar().includes('\n'), 10_000, 'the first record');
      spawned.child.stdout!.destroy(); // as head -1 does once it has its line
      const run = await within(10_000, spawned.done, 'the exit');
      assert.equal(run.code, 141);
      assert.equal(run.stderr, '');
    },
  );

  it(
    'exits 141 quietly when stderr goes to the same closed pipe (2>&1 | head -1)',
    { timeout: 15_000 },
    async () => {
      const input = range(50).map((i) => `${server.url}/hang-both-${i}`);
      const spawned = spawnCli(
        [
          'fetch',
          '-c',
          '2',
          file('both.txt', [`${server.url}/ok-both`, `${server.url}/slow-ok`, ...input]),
        ],
        { env: { SLUICE_GRACE_MS: '60000', SLUICE_PROGRESS_INTERVAL: '20' }, stderrToStdout: true },
      );
      await until(() => spawned.stdoutSoFar().includes('\n'), 10_000, 'the first line');
      spawned.child.stdout!.destroy();
      const run = await within(10_000, spawned.done, 'the exit');
      assert.equal(run.code, 141);
    },
  );
});
