/**
 * Runs every ```ts example in README.md as a program, so the examples cannot rot. Imports of
 * 'sluice' are pointed at the sources; each `// → text` comment is an output line the example must
 * print, in order. An example that imports 'sluice/redis' runs against a redis-server of the
 * test's own, at the URL the example names (skipped where redis-server is missing, outside CI).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { needsRedis, RedisServer } from './_helpers/redis.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const dir = mkdtempSync(join(tmpdir(), 'sluice-readme-'));
/** The address the Redis examples name, and the server they get instead. */
const EXAMPLE_REDIS = 'redis://127.0.0.1:6379';
let redis: Promise<RedisServer> | undefined;
after(async () => {
  rmSync(dir, { recursive: true, force: true });
  await (await redis)?.stop();
});

interface Example {
  line: number;
  code: string;
  expected: string[];
}

function examples(markdown: string): Example[] {
  const found: Example[] = [];
  const fence = /^```ts\n([\s\S]*?)^```$/gm;
  for (let match = fence.exec(markdown); match !== null; match = fence.exec(markdown)) {
    const code = match[1]!;
    const expected = [...code.matchAll(/\/\/ → (.*)$/gm)].map((m) => m[1]!.trim());
    found.push({ line: markdown.slice(0, match.index).split('\n').length, code, expected });
  }
  return found;
}

const source = (module: string) => pathToFileURL(join(root, 'src', module)).href;

describe('README examples', () => {
  const all = examples(readme);
  it('has examples to run', () => {
    assert.ok(all.length >= 5, `found ${all.length}`);
  });
  for (const example of all) {
    const usesRedis = example.code.includes("from 'sluice/redis'");
    const name = `the example at README.md:${example.line} runs and prints what it says`;
    it(name, usesRedis ? needsRedis : {}, async () => {
      let code = example.code
        .replaceAll(/from 'sluice'/g, `from '${source('index.ts')}'`)
        .replaceAll(
          /from 'sluice\/([\w-]+)'/g,
          (_, sub: string) => `from '${source(`${sub}/index.ts`)}'`,
        )
        // The example runs from a directory of its own: its dependencies are found from here.
        .replaceAll("from 'redis'", `from '${import.meta.resolve('redis')}'`);
      if (usesRedis) {
        const server = await (redis ??= RedisServer.start());
        code = code.replaceAll(EXAMPLE_REDIS, server.url);
      }
      const file = join(dir, `example-${example.line}.mts`);
      writeFileSync(file, code + '\nexport {};\n');
      const env = usesRedis
        ? { ...process.env, REDIS_URL: (await (redis ??= RedisServer.start())).url }
        : process.env;
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', file], {
        cwd: root,
        timeout: 30_000,
        env,
      });
      const printed = stdout
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => line.trim());
      assert.deepEqual(printed, example.expected);
    });
  }
});
