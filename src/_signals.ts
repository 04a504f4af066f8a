/**
 * One abort listener per signal, however many waiters share it. A batch of 10 000 requests
 * commonly shares one signal; a listener each would cost memory and trip Node's
 * MaxListenersExceededWarning at the eleventh.
 *
 * A signal's watchers are a doubly linked list through the `Watch` nodes, not a Set. A Set that
 * requests join and leave at a high rate is rehashed into a new table every few hundred changes,
 * and V8 links each obsolete table to its successor (for iterators still walking it): once one
 * table has lived long enough to be promoted, the dead old one keeps the next young one alive,
 * which keeps the next, and every table keeps the callbacks it held, with everything they
 * capture, until a full collection. A node that leaves the list drops its links.
 *
 * Invariants: a node is in its signal's list until `stop()` or the abort, never after; a node
 * out of the list links to nothing; each callback runs at most once.
 */

/** What is told of an abort: an object, so that a waiter can be its own listener (no closure). */
export interface AbortListener {
  aborted(): void;
}

/** One watcher of a signal: `stop()` it once it no longer cares. */
export class Watch {
  prev: Watch | undefined = undefined;
  next: Watch | undefined = undefined;
  /** The list it is in; undefined once stopped or called. */
  list: Watchers | undefined;
  readonly listener: AbortListener;

  constructor(list: Watchers, listener: AbortListener) {
    this.list = list;
    this.listener = listener;
  }

  /** Stops watching (idempotent). The last watcher to leave removes the signal's listener. */
  stop(): void {
    const list = this.list;
    if (list === undefined) return;
    unlink(list, this);
    if (list.head === undefined && !list.dispatching) {
      watchers.delete(list.signal);
      list.signal.removeEventListener('abort', dispatch);
    }
  }
}

class Watchers {
  head: Watch | undefined = undefined;
  tail: Watch | undefined = undefined;
  /** Set while the abort calls the watchers (one that joins meanwhile is called too). */
  dispatching = false;
  readonly signal: AbortSignal;

  constructor(signal: AbortSignal) {
    this.signal = signal;
  }
}

const watchers = new WeakMap<AbortSignal, Watchers>();

function unlink(list: Watchers, watch: Watch): void {
  const { prev, next } = watch;
  if (prev === undefined) list.head = next;
  else prev.next = next;
  if (next === undefined) list.tail = prev;
  else next.prev = prev;
  watch.prev = watch.next = watch.list = undefined;
}

function dispatch(this: AbortSignal): void {
  const list = watchers.get(this);
  if (list === undefined) return;
  list.dispatching = true;
  // Take one at a time from the front: a callback may stop watchers behind it (a cancellation
  // that serves the line detaches the waiters it grants), and those must not be called.
  for (let watch = list.head; watch !== undefined; watch = list.head) {
    unlink(list, watch);
    watch.listener.aborted();
  }
  watchers.delete(this);
}

/** Calls `listener.aborted()` once when `signal` aborts, unless the returned watch is stopped first. */
export function watchAbort(signal: AbortSignal, listener: AbortListener): Watch {
  let list = watchers.get(signal);
  if (list === undefined) {
    list = new Watchers(signal);
    watchers.set(signal, list);
    signal.addEventListener('abort', dispatch, { once: true });
  }
  const watch = new Watch(list, listener);
  const tail = list.tail;
  if (tail === undefined) list.head = watch;
  else {
    tail.next = watch;
    watch.prev = tail;
  }
  list.tail = watch;
  return watch;
}

/** Calls `callback` once when `signal` aborts. Returns the function that stops watching. */
export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  const watch = watchAbort(signal, { aborted: callback });
  return () => {
    watch.stop();
  };
}
