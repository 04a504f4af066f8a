/**
 * Runs every ```ts example in README.md as a program, so the examples cannot rot. Imports of
 * 'sluice' are pointed at the sources; each `// → text` comment is an output line the example must
 * print, in order.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const dir = mkdtempSync(join(tmpdir(), 'sluice-readme-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
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
    it(`the example at README.md:${example.line} runs and prints what it says`, async () => {
      const code = example.code
        .replaceAll(/from 'sluice'/g, `from '${source('index.ts')}'`)
        .replaceAll(
          /from 'sluice\/([\w-]+)'/g,
          (_, sub: string) => `from '${source(`${sub}/index.ts`)}'`,
        );
      const file = join(dir, `example-${example.line}.mts`);
      writeFileSync(file, code + '\nexport {};\n');
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', file], {
        cwd: root,
        timeout: 30_000,
      });
      const printed = stdout
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => line.trim());
      assert.deepEqual(printed, example.expected);
    });
  }
});
