/**
 * The Lua scripts of the shared gates, one file each in `scripts/` (copied beside the compiled
 * code by the build), read once when this module loads. Each file's header names its KEYS, its
 * ARGV and its reply; the key count is in its name.
 */
import { readFileSync } from 'node:fs';
import { Script } from './_client.ts';

function load(file: string): Script {
  return new Script(file, readFileSync(new URL(`./scripts/${file}`, import.meta.url), 'utf8'));
}

/** Books the earliest start a shared rate allows (`RedisRateLimiter`). */
export const RATE_RESERVE = load('rate-reserve-3.lua');
/** Gives a booking back if nothing was booked after it. */
export const RATE_UNDO = load('rate-undo-2.lua');
/** Pauses a shared rate; the longest pause wins. */
export const RATE_PAUSE = load('rate-pause-1.lua');
