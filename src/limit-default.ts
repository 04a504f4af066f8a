/**
 * `sluice/limit`: `limit` as the default export, so that code written for p-limit switches with its
 * import line alone: `import pLimit, { limitFunction } from 'sluice/limit';`.
 */
import { limit } from './limit.ts';

export { limitFunction, type LimitFunction, type LimitOptions } from './limit.ts';
export default limit;
