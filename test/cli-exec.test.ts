/**
 * `sluice exec`, run in-process: records of real shell commands, output caps, retries, the
 * concurrency, timeouts that kill a whole process group, and interrupts.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cli, indexes, range, startCli, tempDir, until } from './cli-helpers.ts';

const { dir, remove } = tempDir();
after(remove);

/** Whether a process is alive (a zombie awaiting its reaper counts as dead). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function pidIn(path: string): number {
  return Number(readFileSync(path, 'utf8').trim());
}

describe('sluice exec', () => {
  it('runs one command per line and records its code, signal, stdout and stderr', async () => {
    const run = await cli(['exec', '-q', '--ordered', '-'], {
      stdin: [
        'echo out',
        'echo err >&2; exit 3',
        '',
        'kill -TERM $$',
        'printf "%s" "$HOME_TEST"',
      ].join('\n'),
      env: { HOME_TEST: 'from the env' },
    });
    assert.equal(run.code, 1);
    assert.deepEqual(indexes(run.records), [0, 1, 3, 4]);
    const [echo, exit3, killed, env] = run.records;
    assert.deepEqual(
      { ...echo, ms: 0 },
      {
        index: 0,
        cmd: 'echo out',
        code: 0,
        signal: null,
        ok: true,
        attempts: 1,
        ms: 0,
        stdout: 'out\n',
        stderr: '',
        error: null,
      },
    );
    assert.equal(exit3!.code, 3);
    assert.equal(exit3!.ok, false);
    assert.equal(exit3!.stderr, 'err\n');
    assert.equal(exit3!.error, 'exit code 3');
    assert.equal(killed!.code, null);
    assert.equal(killed!.signal, 'SIGTERM');
    assert.equal(killed!.error, 'killed by SIGTERM');
    assert.equal(env!.stdout, 'from the env');
  });

  it('exits 0 when every command succeeds, and runs them in the working directory', async () => {
    const run = await cli(['exec', '-q', '-'], { stdin: 'pwd\ntrue\n', cwd: dir });
    assert.equal(run.code, 0);
    assert.equal(run.records.find((r) => r.index === 0)!.stdout, `${dir}\n`);
  });

  it('keeps the first 64 KiB of output and says how much there was', async () => {
    const run = await cli(['exec', '-q', '-'], {
      stdin: "head -c 100000 /dev/zero | tr '\\0' a\n",
    });
    const stdout = run.records[0]!.stdout as string;
    assert.ok(stdout.startsWith('a'.repeat(65536)));
    assert.equal(
      stdout.slice(65536),
      '\n[sluice: output truncated: 100000 bytes, the first 65536 kept]',
    );
    assert.equal(run.records[0]!.ok, true);
  });

  it('retries a failing command with --retries', async () => {
    const marker = join(dir, 'retried');
    const cmd = `if [ -f ${marker} ]; then echo second; else touch ${marker}; exit 1; fi`;
    const run = await cli(['exec', '-q', '--retries', '2', '-'], { stdin: `${cmd}\n` });
    assert.equal(run.code, 0);
    assert.equal(run.records[0]!.attempts, 2);
    assert.equal(run.records[0]!.stdout, 'second\n');
  });

  it('waits for --rate and the concurrency with every retry, as with a first attempt', async () => {
    const log = join(dir, 'starts.log');
    // Each command fails twice, then succeeds; every start appends its instant (ns) to the log.
    const cmd = (i: number): string => {
      const count = join(dir, `tries${i}`);
      return `date +%s%N >> ${log}; n=$(cat ${count} 2>/dev/null || echo 0); echo $((n + 1)) > ${count}; [ "$n" -ge 2 ]`;
    };
    const run = await cli(['exec', '-q', '-c', '4', '--rate', '20/s', '--retries', '2', '-'], {
      stdin: range(4).map(cmd).join('\n'),
    });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(
      run.records.map((record) => record.attempts),
      [3, 3, 3, 3],
    );
    const starts = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((ns) => Number(ns) / 1e6)
      .sort((a, b) => a - b);
    assert.equal(starts.length, 12);
    // 20/s spaces starts 50 ms apart; the shell's own start adds its jitter (the tolerance of
    // the other rate tests: 5%).
    for (let i = 10; i < starts.length; i++) {
      assert.ok(starts[i]! - starts[i - 10]! >= 475, `starts ${i - 10}..${i} within 475 ms`);
    }
  });

  it('starts no retry after an interrupt: a command backing off is recorded as cancelled', async () => {
    const log = join(dir, 'backoff.log');
    // The retry's jitter is drawn from Math.random: at its top, the backoff before the second
    // attempt is 200 ms, so an interrupt 50 ms after the first attempt began lands in it (a full
    // jitter near 0 could start the retry before the interrupt).
    const random = Math.random;
    Math.random = () => 0.999;
    try {
      const running = startCli(['exec', '-q', '--retries', '3', '-'], {
        stdin: `echo x >> ${log}; exit 1\n`,
        env: { SLUICE_GRACE_MS: '100' },
      });
      await until(() => existsSync(log), 5000, 'the first attempt');
      await new Promise((resolve) => setTimeout(resolve, 50));
      running.interrupt();
      const run = await running.done;
      assert.equal(run.code, 130);
      assert.deepEqual(
        run.records.map((record) => [record.attempts, record.error]),
        [[1, 'cancelled']],
      );
    } finally {
      Math.random = random;
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(readFileSync(log, 'utf8'), 'x\n', 'one attempt, and no other after');
  });

  it('does not retry without --retries', async () => {
    const run = await cli(['exec', '-q', '-'], { stdin: 'exit 1\n' });
    assert.equal(run.code, 1);
    assert.equal(run.records[0]!.attempts, 1);
  });

  it('runs at most --concurrency commands at once', async () => {
    const slots = join(dir, 'slots');
    const cmd = (i: number): string =>
      `mkdir -p ${slots} && touch ${slots}/${i} && ls ${slots} | wc -l > ${slots}.peak${i} && sleep 0.05 && rm ${slots}/${i}`;
    const run = await cli(['exec', '-q', '-c', '2', '-'], { stdin: range(8).map(cmd).join('\n') });
    assert.equal(run.code, 0);
    const peaks = range(8).map((i) => Number(readFileSync(`${slots}.peak${i}`, 'utf8')));
    assert.equal(Math.max(...peaks), 2);
  });

  it('spaces command starts by --rate', async () => {
    const started = performance.now();
    const run = await cli(['exec', '-q', '-c', '4', '--rate', '20/s', '-'], {
      stdin: 'true\ntrue\ntrue\ntrue\n',
    });
    assert.equal(run.code, 0);
    assert.ok(performance.now() - started >= 140, `took ${performance.now() - started}ms`);
  });

  it(
    "kills a timed-out command's whole process group, what it started included",
    { timeout: 15_000 },
    async () => {
      const child = join(dir, 'child.pid');
      const parent = join(dir, 'parent.pid');
      const cmd = `sleep 30 & echo $! > ${child}; echo $$ > ${parent}; wait`;
      const started = performance.now();
      const run = await cli(['exec', '-q', '--timeout', '300ms', '-'], { stdin: `${cmd}\n` });
      assert.ok(performance.now() - started < 5000);
      assert.equal(run.code, 1);
      assert.equal(run.records[0]!.error, 'timed out after 300ms');
      assert.equal(run.records[0]!.signal, 'SIGTERM');
      await until(() => !alive(pidIn(child)) && !alive(pidIn(parent)), 2000, 'both to die');
    },
  );

  it('kills with SIGKILL a command that ignores SIGTERM', { timeout: 15_000 }, async () => {
    const child = join(dir, 'stubborn.pid');
    const cmd = `trap '' TERM; sleep 30 & echo $! > ${child}; wait; wait`;
    const run = await cli(['exec', '-q', '--timeout', '200ms', '-'], { stdin: `${cmd}\n` });
    assert.equal(run.records[0]!.error, 'timed out after 200ms');
    assert.equal(run.records[0]!.signal, 'SIGKILL');
    await until(() => !alive(pidIn(child)), 2000, 'the child to die');
  });

  it(
    'ends a timed-out record, and frees its slot, even when a process that left the group keeps the output open',
    { timeout: 20_000 },
    async () => {
      const escaped = join(dir, 'escaped.pid');
      // setsid puts sleep in a session (and process group) of its own: the group kill misses it,
      // and it holds stdout and stderr open for 30 s.
      const cmd = `setsid sleep 30 & echo $! > ${escaped}; wait`;
      try {
        const started = performance.now();
        const run = await cli(['exec', '-q', '-c', '1', '--ordered', '--timeout', '300ms', '-'], {
          stdin: `${cmd}\necho next\n`,
        });
        const took = performance.now() - started;
        assert.equal(run.records[0]!.error, 'timed out after 300ms');
        // The slot was given back: the next command ran.
        assert.equal(run.records[1]!.stdout, 'next\n');
        // Within the timeout, the SIGKILL grace and the output grace, with room for a busy machine.
        assert.ok(took < 300 + 500 + 1000 + 3000, `took ${Math.round(took)}ms`);
      } finally {
        if (existsSync(escaped)) process.kill(pidIn(escaped), 'SIGKILL');
      }
    },
  );

  it(
    'ends the record of a command that exited, when what it left in the background keeps the output open, and kills that',
    { timeout: 20_000 },
    async () => {
      const left = join(dir, 'left.pid');
      const cmd = `sleep 30 & echo $! > ${left}; echo done`;
      const started = performance.now();
      const run = await cli(['exec', '-q', '-'], { stdin: `${cmd}\n` });
      const took = performance.now() - started;
      const record = run.records[0]!;
      assert.equal(run.code, 0);
      assert.equal(record.ok, true);
      assert.equal(record.code, 0);
      assert.equal(record.stdout, 'done\n');
      assert.match(
        record.stderr as string,
        /^\[sluice: the output was still open 1000ms after the command exited: stopped reading it, and killed what was left of its process group\]$/,
      );
      assert.ok(took < 1000 + 3000, `took ${Math.round(took)}ms`);
      await until(() => !alive(pidIn(left)), 2000, 'what was left running to die');
    },
  );

  it(
    'stops reading, after the grace, the output of a process that left the group of a command that exited',
    {
      timeout: 20_000,
    },
    async () => {
      const escaped = join(dir, 'escaped-after-exit.pid');
      const cmd = `setsid sleep 30 & echo $! > ${escaped}; echo done`;
      try {
        const started = performance.now();
        const run = await cli(['exec', '-q', '-'], { stdin: `${cmd}\n` });
        assert.ok(performance.now() - started < 1000 + 3000);
        assert.equal(run.records[0]!.stdout, 'done\n');
        assert.equal(run.records[0]!.ok, true);
      } finally {
        if (existsSync(escaped)) process.kill(pidIn(escaped), 'SIGKILL');
      }
    },
  );

  it('waits for output a command writes in the background shortly after it exits', async () => {
    const run = await cli(['exec', '-q', '-'], { stdin: '(sleep 0.2; echo late) & echo early\n' });
    assert.equal(run.records[0]!.stdout, 'early\nlate\n');
    assert.equal(run.records[0]!.stderr, '');
  });

  it('runs the first line of a file that starts with a UTF-8 byte order mark without the mark', async () => {
    const file = join(dir, 'bom-jobs.txt');
    writeFileSync(file, '\uFEFFecho first\necho second\n');
    const run = await cli(['exec', '-q', '--ordered', file]);
    assert.equal(run.code, 0);
    assert.deepEqual(
      run.records.map((r) => [r.cmd, r.stdout]),
      [
        ['echo first', 'first\n'],
        ['echo second', 'second\n'],
      ],
    );
  });

  it('records a command that cannot start as failed', async () => {
    const run = await cli(['exec', '-q', '-'], { stdin: 'true\n', cwd: join(dir, 'missing') });
    assert.equal(run.code, 1);
    assert.match(run.records[0]!.error as string, /^cannot run the command: /);
  });

  it('skips commands recorded ok by --resume', async () => {
    const previous = join(dir, 'exec-previous.jsonl');
    writeFileSync(
      previous,
      `${JSON.stringify({ index: 0, cmd: 'echo one', code: 0, ok: true, stdout: 'earlier\n' })}\n`,
    );
    const run = await cli(['exec', '-q', '--ordered', '--resume', previous, '-'], {
      stdin: 'echo one\necho two\n',
    });
    assert.equal(run.code, 0);
    assert.equal(run.records[0]!.stdout, 'earlier\n');
    assert.equal(run.records[1]!.stdout, 'two\n');
  });

  it(
    'on an interrupt, lets commands finish within the grace period, then kills them',
    { timeout: 15_000 },
    async () => {
      const pids = join(dir, 'pids');
      const lines = range(5).map((i) => `mkdir -p ${pids}; echo $$ > ${pids}/${i}; exec sleep 30`);
      const running = startCli(['exec', '-q', '-c', '2', '--ordered', '-'], {
        stdin: lines.join('\n'),
        env: { SLUICE_GRACE_MS: '100' },
      });
      await until(() => existsSync(pids) && readdirSync(pids).length === 2, 5000, 'two commands');
      running.interrupt();
      const run = await running.done;
      assert.equal(run.code, 130);
      assert.deepEqual(
        run.records.map((r) => [r.index, r.error]),
        [
          [0, 'cancelled'],
          [1, 'cancelled'],
          [2, 'not run'],
          [3, 'not run'],
          [4, 'not run'],
        ],
      );
      for (const name of readdirSync(pids)) {
        await until(() => !alive(pidIn(join(pids, name))), 2000, `command ${name} to die`);
      }
    },
  );
});
