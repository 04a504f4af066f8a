/**
 * The real `sluice` executable, spawned as a child process: one record per input line, the exit
 * codes, and SIGINT mid-run (the first loses no record; the second exits at once).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  HEAP_GROWING_PERCENT,
  INTERRUPT_BUDGET,
  tune,
  YOUNG_GENERATION_CAP,
} from '../src/cli/tune.ts';
import {
  indexes,
  parseRecords,
  range,
  spawnCli,
  startServer,
  tempDir,
  until,
  type TestServer,
} from './cli-helpers.ts';

const { dir, remove } = tempDir();
after(remove);

describe("the executable's V8 tuning", () => {
  const budget = `--interrupt-budget=${INTERRUPT_BUDGET}`;
  const growing = `--heap-growing-percent=${HEAP_GROWING_PERCENT}`;
  const cap = `young generation capped at ${YOUNG_GENERATION_CAP}`;
  const cases: [
    name: string,
    execArgv: string[],
    nodeOptions: string | undefined,
    done: string[],
  ][] = [
    ['nothing given', [], undefined, [budget, growing, cap]],
    [
      'other flags given',
      ['--enable-source-maps'],
      '--max-old-space-size=512',
      [budget, growing, cap],
    ],
    ['a budget on the command line', ['--interrupt-budget=1000'], undefined, [growing, cap]],
    [
      'a budget in NODE_OPTIONS, with an underscore',
      [],
      '--trace-gc --interrupt_budget=5000',
      [growing, cap],
    ],
    ['a heap growing factor', ['--heap-growing-percent=50'], undefined, [budget, cap]],
    ['a semi-space size', [], '--max-semi-space-size=64', [budget, growing]],
    ['a semi-space growth factor', ['--semi_space_growth_factor=4'], undefined, [budget, growing]],
    ['a heap size', ['--max-heap-size=4096'], undefined, [budget, growing]],
  ];
  for (const [name, execArgv, nodeOptions, expected] of cases) {
    it(`with ${name}: ${expected.join(', ')}`, () => {
      const done: string[] = [];
      tune(execArgv, nodeOptions, {
        setFlag: (flag) => done.push(flag),
        capYoungGeneration: (bytes) => done.push(`young generation capped at ${bytes}`),
      });
      assert.deepEqual(done, expected);
    });
  }

  it('keeps the young generation at its cap, where V8 alone grows it fourfold, also after an idle spell', async () => {
    // In processes of their own: the flag stays set for the rest of a process. A busy spell keeps
    // 4 000 objects alive while it allocates 3 000 000, so that V8 grows the young generation to
    // its 32 MB maximum unless it is capped. After 6 s without allocating, V8 shrinks the space
    // at the next collection; a second busy spell grows it again, up to the cap.
    const code = `
      import { getHeapSpaceStatistics } from 'node:v8';
      import { capYoungGeneration, YOUNG_GENERATION_CAP } from './src/cli/tune.ts';
      if (process.argv.includes('cap')) capYoungGeneration(YOUNG_GENERATION_CAP);
      const size = () => getHeapSpaceStatistics().find((space) => space.space_name === 'new_space').space_size;
      const kept = new Array(4000);
      const busy = async () => {
        let largest = 0;
        for (let i = 0; i < 3e6; ) {
          for (const end = i + 10000; i < end; i++) kept[i % 4000] = { i, pair: [i, i + 1], text: 'x' + i };
          largest = Math.max(largest, size());
          await new Promise(setImmediate); // where the cap hears of the collections
        }
        return largest;
      };
      const first = await busy();
      await new Promise((resolve) => setTimeout(resolve, 6000));
      gc({ type: 'minor' });
      const idle = size();
      await new Promise((resolve) => setTimeout(resolve, 1500)); // the cap reads the size every second
      console.log(JSON.stringify({ first, idle, second: await busy() }));`;
    const sizes = async (...args: string[]): Promise<Record<string, number>> => {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--expose-gc', '--import', 'tsx', '--input-type=module', '--eval', code, '--', ...args],
        { cwd: new URL('..', import.meta.url), timeout: 30_000 },
      );
      return JSON.parse(stdout) as Record<string, number>;
    };
    const cap = YOUNG_GENERATION_CAP;
    const [free, capped] = await Promise.all([sizes(), sizes('cap')]);
    assert.ok(free.first! >= 4 * cap, `uncapped: ${JSON.stringify(free)}`);
    assert.equal(capped.first, cap);
    assert.ok(capped.idle! < cap / 2, `shrunk when idle: ${JSON.stringify(capped)}`);
    assert.ok(capped.second! > capped.idle! && capped.second! <= cap, JSON.stringify(capped));
  });
});

describe('sluice, spawned', { concurrency: true }, () => {
  let server: TestServer;
  before(async () => {
    server = await startServer((req, res, _body, s) => {
      if (req.url?.startsWith('/hang')) s.held.push(res);
      else if (req.url?.startsWith('/fail')) {
        res.statusCode = 503;
        res.end();
      } else setTimeout(() => res.end('ok'), req.url?.startsWith('/fast') ? 20 : 0);
    });
  });
  after(() => server.close());

  it('writes one record per input line, bad lines included, and exits 1', async () => {
    const input = join(dir, 'mixed.txt');
    const lines = [
      `${server.url}/a`,
      '{"url": "oops"',
      'http://[not-a-url',
      'ftp://example.com/x',
      `{"url":"${server.url}/b","id":2}`,
      `${server.url}/fail`,
    ];
    writeFileSync(input, `${lines.join('\n')}\n`);
    const out = join(dir, 'mixed.jsonl');
    const run = await spawnCli(['fetch', '--retries', '0', '-o', out, input]).done;
    assert.equal(run.code, 1);
    const records = parseRecords(readFileSync(out, 'utf8'));
    assert.deepEqual(indexes(records), range(lines.length));
    assert.deepEqual(
      records.sort((a, b) => (a.index as number) - (b.index as number)).map((r) => r.ok),
      [true, false, false, false, true, false],
    );
    assert.match(run.stderr, /sluice fetch: 6 done, 4 failed in /);
  });

  it('exits 0 when every line is ok, reading stdin', async () => {
    const run = await spawnCli(['fetch', '-q', '--ordered'], {
      stdin: `${server.url}/1\n${server.url}/2\n`,
    }).done;
    assert.equal(run.code, 0);
    assert.deepEqual(
      parseRecords(run.stdout).map((r) => r.index),
      [0, 1],
    );
    assert.equal(run.stderr, '');
  });

  it('exits 2 with one line on stderr for a bad option', async () => {
    const run = await spawnCli(['fetch', '--rate', '10 per second']).done;
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
    assert.match(
      run.stderr,
      /^sluice: [^\n]*Expected a rate like[^\n]*\(see sluice fetch --help\)\n$/,
    );
  });

  it('loses no record on a SIGINT mid-run, and exits 130', { timeout: 15_000 }, async () => {
    const lines = range(40).map((i) => `${server.url}/${i % 2 === 0 ? 'fast' : 'hang'}/sigint${i}`);
    const input = join(dir, 'sigint.txt');
    writeFileSync(input, `${lines.join('\n')}\n`);
    const spawned = spawnCli(['fetch', '-q', '-c', '4', input], {
      env: { SLUICE_GRACE_MS: '300' },
    });
    const hanging = (): number =>
      server.requests.filter((r) => r.url.startsWith('/hang/sigint')).length;
    await until(() => hanging() >= 3, 10_000, 'requests in flight');
    spawned.child.kill('SIGINT');
    const run = await spawned.done;
    assert.equal(run.code, 130);
    const records = parseRecords(run.stdout);
    assert.deepEqual(indexes(records), range(40));
    const errors = new Set(records.map((r) => r.error));
    assert.ok(errors.has(null), 'some finished');
    assert.ok(errors.has('cancelled'), 'some were cancelled');
    assert.ok(errors.has('not run'), 'some never ran');
    for (const record of records) {
      if (record.error === 'cancelled') assert.match(record.url as string, /\/hang\//);
      if (record.error === 'not run') assert.equal(record.attempts, 0);
    }
  });

  it('exits at once on a second SIGINT', { timeout: 15_000 }, async () => {
    const lines = range(6).map((i) => `${server.url}/hang/twice${i}`);
    const spawned = spawnCli(['fetch', '-q', '-c', '3', '-'], {
      stdin: `${lines.join('\n')}\n`,
      env: { SLUICE_GRACE_MS: '60000' },
    });
    const hanging = (): number =>
      server.requests.filter((r) => r.url.startsWith('/hang/twice')).length;
    await until(() => hanging() >= 3, 10_000, 'requests in flight');
    spawned.child.kill('SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = performance.now();
    spawned.child.kill('SIGINT');
    const run = await spawned.done;
    assert.equal(run.code, 130);
    assert.ok(performance.now() - started < 2000, `took ${performance.now() - started}ms`);
  });

  it(
    'runs shell commands with exec, a timeout killing what they started',
    { timeout: 15_000 },
    async () => {
      const pid = join(dir, 'e2e-child.pid');
      const run = await spawnCli(['exec', '-q', '--ordered', '--timeout', '300ms', '-'], {
        stdin: `echo hello\nsleep 30 & echo $! > ${pid}; wait\n`,
      }).done;
      assert.equal(run.code, 1);
      const records = parseRecords(run.stdout);
      assert.equal(records[0]!.stdout, 'hello\n');
      assert.equal(records[1]!.error, 'timed out after 300ms');
      const child = Number(readFileSync(pid, 'utf8'));
      await until(
        () => {
          try {
            process.kill(child, 0);
            return readFileSync(`/proc/${child}/stat`, 'utf8').includes(') Z');
          } catch {
            return true;
          }
        },
        2000,
        'the sleeping child to die',
      );
    },
  );
});
