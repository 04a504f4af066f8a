/**
 * undici, loaded on first use. Loading it takes about 70 ms and 11 MB of heap at start, and a run
 * that sends only plain `http:` requests (through `_h1.ts`) never needs it. @internal
 */
import { createRequire } from 'node:module';
import type * as UndiciModule from 'undici';

type Undici = typeof UndiciModule;

let loaded: Undici | undefined;

export function undici(): Undici {
  return (loaded ??= createRequire(import.meta.url)('undici') as Undici);
}
