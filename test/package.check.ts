/**
 * The package as users get it: a clean copy of the sources (no `dist/`) is packed with
 * `npm pack`, which builds it (`prepack`); the tarball is installed into a fresh project, and from
 * there the entry points are imported (ESM `import` and CommonJS `require`), the `sluice`
 * command is run, and a consumer file is type-checked with the type-checker's strictest library
 * checks under the common `lib` settings.
 *
 * Not part of `npm test`: it needs npm and the registry (or npm's cache) for the runtime
 * dependencies and the type-checker of the fresh project, and it takes about a minute. CI runs it
 * (`npm run test:package`, from `.ci/run`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'sluice-package-'));
after(() => {
  rmSync(work, { recursive: true, force: true });
});

const run = promisify(execFile);

/** Runs a command in `cwd`; rejects with its output if it fails. */
async function sh(cwd: string, command: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(command, args, {
      cwd,
      env: { ...process.env, NO_COLOR: '1' },
      maxBuffer: 64 * 2 ** 20,
      timeout: 180_000,
    });
    return stdout;
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(
      `${command} ${args.join(' ')} failed in ${cwd}:\n${stdout ?? ''}\n${stderr ?? ''}`,
      {
        cause: error,
      },
    );
  }
}

/** The version of a package installed at the root (the fresh project gets the same, from the cache). */
function installedVersion(name: string): string {
  const text = readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
};

/** What a consumer writes: every entry point, and the types most used from each. */
const CONSUMER = `
import { limit, map, Limiter, Semaphore, TimeoutError, type Permit, type LimiterOptions } from 'sluice';
import { createFetch, createExchange, type LimitedRequestInit, type LimitedFetch } from 'sluice/http';
import pLimit, { limitFunction, type LimitFunction } from 'sluice/limit';
import {
  LeaseLostError,
  RedisRateLimiter,
  RedisSemaphore,
  type RedisClient,
  type RedisPermit,
  type RedisRateLimiterOptions,
} from 'sluice/redis';

const run: LimitFunction = pLimit(2);
const twice = limitFunction(async (n: number) => n * 2, { concurrency: 1 });
const options: LimiterOptions = { concurrency: 2, rate: '10/s' };
const limiter = new Limiter(options);
const sem = new Semaphore(1);
const init: LimitedRequestInit = { method: 'GET', priority: 1, headers: { accept: 'text/plain' } };
const fetch: LimitedFetch = createFetch({ perOrigin: { concurrency: 2 } });
const exchange = createExchange();
const sharedOptions: RedisRateLimiterOptions = { rate: ['10/s', '500/min'], window: 'sliding' };
const sharedRate = (client: unknown): RedisRateLimiter => new RedisRateLimiter(client, 'api', sharedOptions);

export async function main(): Promise<number> {
  {
    await using permit: Permit = await sem.acquire();
    void permit.signal.aborted;
  }
  const response: Response = await fetch('http://127.0.0.1:1/', init);
  const text: string = await response.text();
  const sizes: number[] = await map([1, 2], async (n) => n + text.length, { concurrency: 1 });
  const answer: number = await run(async () => 42);
  const doubled: number = await twice(21);
  const timedOut: boolean = (sizes as unknown) instanceof TimeoutError;
  await Promise.all([limiter.close(), fetch.close(), exchange.close()]);
  return sizes.length + answer + doubled + limit(1).concurrency + Number(timedOut) + sharedRate.length;
}

export async function sharedSemaphore(client: RedisClient): Promise<number> {
  const sem = new RedisSemaphore(client, 'partner-api', { permits: 5, leaseMs: 10_000 });
  let fence = 0;
  {
    await using permit: RedisPermit = await sem.acquire({ weight: 1, timeout: 30_000 });
    fence = permit.fence + Number(permit.signal.reason instanceof LeaseLostError);
  }
  await sem.close();
  return fence;
}
`;

/** tsconfig.json settings a consumer is likely to have; each must type-check the consumer. */
const SETTINGS: Record<string, Record<string, unknown>> = {
  'the default lib (DOM included), nodenext': {
    target: 'es2023',
    module: 'nodenext',
    moduleResolution: 'nodenext',
  },
  'lib es2023 with Node types only, nodenext': {
    target: 'es2023',
    lib: ['es2023'],
    types: ['node'],
    module: 'nodenext',
    moduleResolution: 'nodenext',
  },
  'the default lib (DOM included), bundler': {
    target: 'es2022',
    module: 'esnext',
    moduleResolution: 'bundler',
  },
};

describe('the package', { timeout: 600_000 }, () => {
  const source = join(work, 'source');
  const project = join(work, 'project');
  let tarball = '';
  let files: string[] = [];

  before(async () => {
    // A clean copy: the files git tracks (or would), without dist/ and without any build output.
    const listed = await sh(ROOT, 'git', [
      'ls-files',
      '-z',
      '--cached',
      '--others',
      '--exclude-standard',
    ]);
    for (const file of listed.split('\0')) {
      if (file === '' || file.startsWith('dist/')) continue;
      mkdirSync(dirname(join(source, file)), { recursive: true });
      cpSync(join(ROOT, file), join(source, file));
    }
    // The build tools, as `npm ci` would have installed them.
    symlinkSync(join(ROOT, 'node_modules'), join(source, 'node_modules'), 'dir');
    const packed = JSON.parse(
      await sh(source, 'npm', ['pack', '--json', '--pack-destination', work]),
    ) as { filename: string; files: { path: string }[] }[];
    tarball = join(work, packed[0]!.filename);
    files = packed[0]!.files.map((file) => file.path).sort();

    mkdirSync(project);
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true }),
    );
    await sh(project, 'npm', [
      'install',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      tarball,
      `typescript@${installedVersion('typescript')}`,
      `@types/node@${installedVersion('@types/node')}`,
    ]);
  });

  it('packs the built code, its types, the licence and the README, and no sources or maps', () => {
    for (const file of [
      'LICENSE',
      'README.md',
      'package.json',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/http/index.js',
      'dist/http/index.d.ts',
      'dist/limit-default.js',
      'dist/limit-default.d.ts',
      'dist/redis/index.js',
      'dist/redis/index.d.ts',
      'dist/redis/scripts/rate-reserve-3.lua',
      'dist/redis/scripts/semaphore-4.lua',
      'dist/cli/bin.js',
    ]) {
      assert.ok(files.includes(file), `${file} is packed (packed: ${files.join(', ')})`);
    }
    const stray = files.filter(
      (file) =>
        !/^(dist\/.*\.(js|d\.ts)|dist\/redis\/scripts\/[\w-]+\.lua|LICENSE|README\.md|package\.json)$/.test(
          file,
        ),
    );
    assert.deepEqual(stray, []);
  });

  it('imports every entry point from ESM', async () => {
    const out = await sh(project, process.execPath, [
      '--input-type=module',
      '-e',
      `
      import { limit, Semaphore } from 'sluice';
      import { createFetch } from 'sluice/http';
      import pLimit, { limitFunction } from 'sluice/limit';
      import { RedisRateLimiter, RedisSemaphore, LeaseLostError } from 'sluice/redis';
      const fetch = createFetch();
      await fetch.close();
      console.log(await limit(1)(() => 1), await pLimit(1)(() => 2), await limitFunction(() => 3, { concurrency: 1 })(),
        new Semaphore(2).capacity, typeof createFetch, typeof RedisSemaphore, typeof RedisRateLimiter, new LeaseLostError('x').code);
      `,
    ]);
    assert.equal(out.trim(), '1 2 3 2 function function function ERR_SLUICE_LEASE_LOST');
  });

  it('requires every entry point from CommonJS', async () => {
    const out = await sh(project, process.execPath, [
      '-e',
      `
      const { limit } = require('sluice');
      const { createFetch } = require('sluice/http');
      const pLimit = require('sluice/limit').default;
      const { RedisRateLimiter, RedisSemaphore } = require('sluice/redis');
      Promise.all([limit(1)(() => 1), pLimit(1)(() => 2)]).then((values) => {
        console.log(values.join(' '), typeof createFetch, typeof RedisSemaphore, typeof RedisRateLimiter);
      });
      `,
    ]);
    assert.equal(out.trim(), '1 2 function function function');
  });

  it('runs the sluice command: --version and the demo', async () => {
    assert.equal(
      (await sh(project, 'npx', ['--no-install', 'sluice', '--version'])).trim(),
      manifest.version,
    );
    const demo = await sh(project, 'npx', ['--no-install', 'sluice', 'demo']);
    // Through sluice, the demo server refuses nothing.
    assert.match(demo, /100 posts through sluice[\s\S]*?rejections +0\n/);
  });

  for (const [name, settings] of Object.entries(SETTINGS)) {
    it(`type-checks a consumer with ${name}, library checks included`, async () => {
      const dir = join(project, name.replace(/\W+/g, '-'));
      mkdirSync(dir);
      writeFileSync(join(dir, 'consumer.mts'), CONSUMER);
      writeFileSync(
        join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: { ...settings, strict: true, skipLibCheck: false, noEmit: true },
          files: ['consumer.mts'],
        }),
      );
      await sh(dir, process.execPath, [
        join(project, 'node_modules', 'typescript', 'bin', 'tsc'),
        '-p',
        '.',
      ]);
    });
  }
});
