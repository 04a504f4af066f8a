/**
 * Every gate of sluice runs the one gate contract (test/contract/gate.ts): the in-memory ones
 * through both their paths, a limiter's own concurrency, a limiter that keeps its concurrency or
 * its rate with a gate it was given (synchronous or not), a rate limiter, and a keyed limiter's
 * gate for a key (its share of the global concurrency included), and an adaptive limit held still
 * (min = max = initial: a limit that moves cannot be held to a fixed capacity).
 */
import { adaptive, KeyedLimiter, Limiter, Mutex, RateLimiter, Semaphore } from '../src/index.ts';
import { asyncOnly, gateContract } from './contract/gate.ts';

gateContract('Semaphore', (capacity, clock) => {
  const sem = new Semaphore(capacity, { clock });
  return {
    gate: sem,
    held: () => sem.held,
    waiting: () => sem.waiting,
    setCapacity: (n) => (sem.capacity = n),
  };
});

gateContract('a Semaphore through its asynchronous path only', (capacity, clock) => {
  const sem = new Semaphore(capacity, { clock });
  return { gate: asyncOnly(sem), held: () => sem.held, waiting: () => sem.waiting };
});

gateContract(
  'Mutex',
  (_capacity, clock) => {
    const mutex = new Mutex({ clock });
    return { gate: mutex, held: () => mutex.held, waiting: () => mutex.waiting };
  },
  { maxCapacity: 1 },
);

gateContract("a Limiter's own concurrency", (capacity, clock) => {
  const limiter = new Limiter({ concurrency: capacity, clock });
  return {
    gate: limiter,
    // Permits out, by weight: running tasks' and acquire()'s.
    held: () => limiter.held,
    waiting: () => limiter.stats().pending,
    setCapacity: (n) => {
      limiter.concurrency = n;
    },
  };
});

gateContract('a Limiter whose concurrency is a Semaphore it was given', (capacity, clock) => {
  const sem = new Semaphore(capacity, { clock });
  const limiter = new Limiter({ concurrency: sem, clock });
  return {
    gate: limiter,
    held: () => sem.held,
    waiting: () => sem.waiting,
    setCapacity: (n) => (sem.capacity = n),
  };
});

gateContract(
  'a Limiter whose concurrency is a gate with only an asynchronous path',
  (capacity, clock) => {
    const sem = new Semaphore(capacity, { clock });
    const limiter = new Limiter({ concurrency: asyncOnly(sem), clock });
    // Its tryAcquire() never answers (the gate has no synchronous path): the asynchronous one.
    return { gate: asyncOnly(limiter), held: () => sem.held, waiting: () => sem.waiting };
  },
);

gateContract(
  'RateLimiter (spaced, a burst of the capacity)',
  (capacity, clock) => {
    const rate = new RateLimiter({ rate: `${capacity}/1000ms`, burst: capacity, clock });
    return { gate: rate, waiting: () => rate.waiting };
  },
  { kind: 'rate', window: 1000 },
);

gateContract(
  'RateLimiter (sliding)',
  (capacity, clock) => {
    const rate = new RateLimiter({ rate: `${capacity}/1000ms`, window: 'sliding', clock });
    return { gate: rate, waiting: () => rate.waiting };
  },
  { kind: 'rate', window: 1000 },
);

gateContract(
  'a Limiter whose rate is a RateLimiter it was given',
  (capacity, clock) => {
    const rate = new RateLimiter({ rate: `${capacity}/1000ms`, window: 'sliding', clock });
    const limiter = new Limiter({ rate, clock });
    return { gate: limiter, waiting: () => rate.waiting };
  },
  { kind: 'rate', window: 1000 },
);

gateContract(
  "a KeyedLimiter's gate for a key, within the global concurrency",
  (capacity, clock) => {
    const keyed = new KeyedLimiter({ concurrency: capacity, perKey: { concurrency: 100 }, clock });
    const gate = keyed.limiterFor('a');
    return {
      gate,
      held: () => keyed.activeCount, // the global permits held: this key's
      waiting: () => gate.stats().pending,
      setCapacity: (n) => (keyed.concurrency = n),
    };
  },
);

gateContract('an adaptive limit held still (min = max = initial)', (capacity, clock) => {
  const gate = adaptive({ min: capacity, max: capacity, initial: capacity, clock });
  return { gate, held: () => gate.held, waiting: () => gate.waiting };
});

gateContract('a Limiter whose concurrency is an adaptive limit held still', (capacity, clock) => {
  const gate = adaptive({ min: capacity, max: capacity, initial: capacity, clock });
  const limiter = new Limiter({ concurrency: gate, clock });
  return { gate: limiter, held: () => gate.held, waiting: () => gate.waiting };
});
