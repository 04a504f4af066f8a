import assert from 'node:assert/strict';
import type { HttpClient } from '../../src/http/index.ts';
import { within } from './within.ts';

/**
 * Asserts that `client` is at rest: its limiter idle (a body read to its end gives its slot back
 * once its stream closes, a turn later), and each origin's limiter holding nothing,
 * running nothing, with nothing waiting or between attempts.
 */
export async function assertAtRest(
  client: HttpClient,
  origins: readonly string[],
  closed = false,
): Promise<void> {
  await within(2_000, client.limiter.onIdle(), 'the limiter going idle');
  assert.equal(client.limiter.activeCount, 0, 'slots held');
  assert.equal(client.limiter.pendingCount, 0, 'calls waiting');
  if (closed) return; // a closed keyed limiter shows no origin's limiter any more
  for (const origin of origins) {
    const stats = client.limiter.limiterFor(origin).stats();
    assert.deepEqual(
      {
        active: stats.active,
        held: stats.held,
        pending: stats.pending,
        retrying: stats.retrying,
        timedOutActive: stats.timedOutActive,
      },
      { active: 0, held: 0, pending: 0, retrying: 0, timedOutActive: 0 },
      `the limiter of ${origin}`,
    );
  }
}
