/**
 * The Lua scripts of the shared gates, read once when sluice/redis is first imported. Each lives
 * in its own file under `scripts/` (the build copies them beside the compiled code), named
 * `<name>-<number of keys>.lua`, with a header naming its KEYS, ARGV and reply.
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
/** Every operation of a `RedisSemaphore` (acquire, try, release, renew). */
export const SEMAPHORE_SCRIPT: Script = load('semaphore-4.lua');
/** Takes or refuses a change of a shared adaptive limit, and answers each client's share. */
export const ADAPTIVE_SCRIPT: Script = load('adaptive-2.lua');
