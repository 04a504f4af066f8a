import type { TestContext } from 'node:test';

/**
 * Collects the exceptions thrown on their own (a listener's, rethrown by the HTTP client) until
 * the test ends, instead of letting them end it; the test's other handlers come back after it.
 */
export function catchUncaught(t: TestContext): unknown[] {
  const thrown: unknown[] = [];
  const saved = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  process.on('uncaughtException', (error) => thrown.push(error));
  t.after(() => {
    process.removeAllListeners('uncaughtException');
    for (const listener of saved) process.on('uncaughtException', listener);
  });
  return thrown;
}
