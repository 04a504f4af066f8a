/**
 * What the CLI uses of the HTTP layer, besides what `sluice/http` exports: starting a call with
 * a sink of its own (no promise per line), what it reads of a call, and the rules it checks its
 * input by before anything runs (a header value that cannot be sent, a method that may not be).
 */
export { exchangeWith, type Call, type CallSink } from './exchange.ts';
export { forbiddenMethod } from './_call.ts';
export { BAD_VALUE } from './_h1.ts';
export { KeptBody } from './_body.ts';
