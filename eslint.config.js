// @ts-check
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', '**/*.html'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: {
        projectService: {
          allowDefaultProject: [
            '*.js',
            'bench/*.mjs',
            'bench/cases/*.mjs',
            'scripts/*.mjs',
            'bench/peers/*.mjs',
          ],
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Numbers in template literals are how every message here says "got `0`".
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      // With noUncheckedIndexedAccess every indexed read is `T | undefined`; `!` marks the reads a
      // bounds check right there makes safe, and is no less honest than a cast.
      '@typescript-eslint/no-non-null-assertion': 'off',
      // Re-raising what was caught is not "throwing a non-Error".
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
    },
  },
  {
    // Every timer of the library is armed through src/_clock.ts (`Timer`, `later`, `every`),
    // which arms a delay longer than Node's timers take (2^31 - 1 ms) in steps.
    files: ['src/**/*.ts'],
    ignores: ['src/_clock.ts'],
    rules: {
      'no-restricted-globals': [
        'error',
        ...['setTimeout', 'setInterval', 'setImmediate'].map((name) => ({
          name,
          message: 'Arm timers through src/_clock.ts (Timer, later, every).',
        })),
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector:
            "CallExpression[callee.property.name='setTimeout'][callee.object.property.name=/clock/i]",
          message:
            'Arm timers on a clock through Timer (src/_clock.ts), which never asks too much.',
        },
        {
          selector:
            "CallExpression[callee.property.name='setTimeout'][callee.object.name=/clock/i]",
          message:
            'Arm timers on a clock through Timer (src/_clock.ts), which never asks too much.',
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts', 'examples/**/*.ts'],
    rules: {
      // node:test's describe/it return promises that the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
