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

/** Every operation of a `RedisSemaphore` (acquire, try, release, renew). */
export const SEMAPHORE_SCRIPT: Script = load('semaphore-4.lua');
