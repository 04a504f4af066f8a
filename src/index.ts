export { Semaphore, Mutex, type SemaphoreOptions, type SemaphoreStats } from './semaphore.ts';
export { limit, limitFunction, type LimitFunction, type LimitOptions } from './limit.ts';
export type { AcquireOptions, Gate, Permit, ReleaseOutcome } from './gate.ts';
export type { Clock, TimerHandle } from './_clock.ts';
export {
  SluiceError,
  TimeoutError,
  ClosedError,
  QueueFullError,
  RetryError,
} from './errors.ts';
export { all, map, mapSettled, type MapContext, type MapOptions, type Mapper } from './map.ts';
export { mapIterable, type MapIterableOptions } from './map-iterable.ts';
