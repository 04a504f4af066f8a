/**
 * The summary line `sluice fetch` and `sluice exec` print at the end: what was done, failed,
 * cancelled, not run and resumed, and the rate of what ran, after a whole run and after Ctrl-C.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  cli,
  indexes,
  range,
  startCli,
  startServer,
  tempDir,
  until,
  type CliRun,
  type TestServer,
} from './cli-helpers.ts';

const { dir, remove, file } = tempDir();
after(remove);

interface Summary {
  command: string;
  done: number;
  failed: number;
  cancelled: number;
  notRun: number;
  resumed: number;
  seconds: number;
  rate: number;
  interrupted: boolean;
}

/** Reads the summary, the last line on stderr (plain, not a terminal). */
function summary(run: CliRun): Summary {
  const last = run.stderr.trimEnd().split('\n').at(-1)!;
  const match =
    /^sluice (\w+): (\d+) done, (\d+) failed(?:, (\d+) cancelled)?(?:, (\d+) not run)?(?:, (\d+) resumed)?(?:, \d+ 429s)? in ([\d.]+)(ms|s) \(([\d.]+) (?:req|jobs)\/s\)( \(interrupted\))?$/.exec(
      last,
    );
  assert.ok(match !== null, `not a summary: ${JSON.stringify(last)}`);
  const n = (i: number): number => Number(match[i] ?? 0);
  return {
    command: match[1]!,
    done: n(2),
    failed: n(3),
    cancelled: n(4),
    notRun: n(5),
    resumed: n(6),
    seconds: match[8] === 'ms' ? n(7) / 1000 : n(7),
    rate: n(9),
    interrupted: match[10] !== undefined,
  };
}

/** The rate is that of what ran: done over the time taken (as printed, so roughly). */
function assertRateOfWhatRan(s: Summary): void {
  const expected = s.done / s.seconds;
  assert.ok(
    Math.abs(s.rate - expected) <= 0.15 * expected + 0.1,
    `${s.rate}/s for ${s.done} done in ${s.seconds}s`,
  );
}

describe('the summary line', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res, _body, s) => {
      if (req.url?.startsWith('/hang')) s.held.push(res);
      else if (req.url?.startsWith('/fail')) res.writeHead(500).end();
      else setTimeout(() => res.end('ok'), 30);
    });
  });
  after(() => server.close());

  it('counts what was done and failed after a whole run', async () => {
    const input = [...range(5).map((i) => `${server.url}/ok${i}`), `${server.url}/fail`];
    const run = await cli(['fetch', '--retries', '0', file('whole.txt', input)]);
    assert.equal(run.code, 1);
    const s = summary(run);
    assert.deepEqual(
      [s.done, s.failed, s.cancelled, s.notRun, s.resumed, s.interrupted],
      [6, 1, 0, 0, 0, false],
    );
    assertRateOfWhatRan(s);
  });

  it('counts what was done, failed, cancelled and not run after Ctrl-C, and the rate of what ran', async () => {
    // Six at once: three end, then six hang (the window refilled), the other fourteen wait.
    const input = [
      `${server.url}/ok-a`,
      `${server.url}/fail-b`,
      `${server.url}/ok-c`,
      ...range(20).map((i) => `${server.url}/hang-${i}`),
    ];
    const held = server.held.length;
    const running = startCli(['fetch', '-c', '6', '--retries', '0', file('ctrl-c.txt', input)], {
      env: { SLUICE_GRACE_MS: '50', SLUICE_PROGRESS_INTERVAL: '60000' },
    });
    await until(() => server.held.length >= held + 6, 5000, 'six requests held');
    running.interrupt();
    const run = await running.done;
    assert.equal(run.code, 130);
    assert.deepEqual(indexes(run.records), range(input.length));
    const s = summary(run);
    assert.deepEqual([s.done, s.failed, s.cancelled, s.notRun, s.interrupted], [3, 1, 6, 14, true]);
    assertRateOfWhatRan(s);
  });

  it('counts the lines copied from --resume apart, and not in the rate', async () => {
    const input = range(4).map((i) => `${server.url}/resumed-${i}`);
    const source = file('resumed.txt', input);
    const previous = join(dir, 'previous.jsonl');
    await cli(['fetch', '-q', '-o', previous, file('half.txt', input.slice(0, 2))]);
    const run = await cli(['fetch', '--resume', previous, source]);
    assert.equal(run.code, 0);
    const s = summary(run);
    assert.deepEqual([s.done, s.failed, s.resumed], [2, 0, 2]);
    assertRateOfWhatRan(s);
  });

  it('is the same for sluice exec after Ctrl-C', { timeout: 15_000 }, async () => {
    // Five at once: three end, then five sleep (the window refilled), the other five wait.
    const sleeping = (i: number): string => `touch ${join(dir, `sleeping-${i}`)}; sleep 30`;
    const input = ['true', 'false', 'true', ...range(10).map(sleeping)];
    const running = startCli(['exec', '-c', '5', file('exec.txt', input)], {
      env: { SLUICE_GRACE_MS: '50', SLUICE_PROGRESS_INTERVAL: '60000' },
    });
    await until(
      () => readdirSync(dir).filter((name) => name.startsWith('sleeping-')).length >= 5,
      5000,
      'five commands sleeping',
    );
    running.interrupt();
    const run = await running.done;
    assert.equal(run.code, 130);
    assert.deepEqual(indexes(run.records), range(input.length));
    const s = summary(run);
    assert.equal(s.command, 'exec');
    assert.deepEqual([s.done, s.failed, s.cancelled, s.notRun, s.interrupted], [3, 1, 5, 5, true]);
    assertRateOfWhatRan(s);
  });
});
