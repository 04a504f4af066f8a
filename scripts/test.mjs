#!/usr/bin/env node
// Runs the test files with node:test through tsx. Node 20's `--test` does not glob `.ts` files,
// so the files are listed here: the arguments if given, else every test/**/*.test.ts.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
const files =
  args.length > 0
    ? args
    : readdirSync('test', { recursive: true, encoding: 'utf8' })
        .filter((file) => file.endsWith('.test.ts'))
        .map((file) => join('test', file))
        .sort();

const reporter = process.env.TEST_REPORTER ?? 'spec';
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', `--test-reporter=${reporter}`, ...files],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
