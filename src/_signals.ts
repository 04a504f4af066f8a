/**
 * One abort listener per signal, however many waiters share it. A batch of 10 000 requests
 * commonly shares one signal; a listener each would cost memory and trip Node's
 * MaxListenersExceededWarning at the eleventh.
 */

const watchers = new WeakMap<AbortSignal, Set<() => void>>();

function dispatch(this: AbortSignal): void {
  const callbacks = watchers.get(this);
  if (callbacks === undefined) return;
  // Iterate the live set: a callback may stop watching others (a cancellation that serves the
  // line detaches the waiters it grants), and those must not be called.
  for (const callback of callbacks) {
    callbacks.delete(callback);
    callback();
  }
  watchers.delete(this);
}

/** Calls `callback` once when `signal` aborts. Returns the function that stops watching. */
export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  let callbacks = watchers.get(signal);
  if (callbacks === undefined) {
    callbacks = new Set();
    watchers.set(signal, callbacks);
    signal.addEventListener('abort', dispatch, { once: true });
  }
  callbacks.add(callback);
  return () => {
    const current = watchers.get(signal);
    if (current === undefined || !current.delete(callback)) return;
    if (current.size === 0) {
      watchers.delete(signal);
      signal.removeEventListener('abort', dispatch);
    }
  };
}
