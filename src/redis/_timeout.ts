/**
 * The one bound on a Redis call, for every shared gate: a connection that stays open while Redis
 * says nothing (a stopped or overloaded server, a half-open connection after a partition) never
 * fails a call by itself, and every promise must settle.
 *
 * And the one place that notices such a silence: every gate made on one client shares its
 * `Silence`, which knows the calls still unanswered. Once calls wait and nothing has come back for
 * a whole timeout (since the oldest of them was sent, or since the last answer if later), Redis
 * is silent: a new call fails at once, unsent, instead of waiting a timeout of its own (a run of
 * thousands of requests would take a timeout per few of them to end) and piling onto a
 * connection that does not drain. The calls already sent are the probes: the first answer (Redis
 * resumed) or failure (the client gave the connection up) ends the silence.
 *
 * Invariants: the promise returned settles within about `ms` (a timer on the monotonic clock); an
 * answer that comes later goes to `late` (what Redis did still happened), an error that comes later
 * is dropped (the call was already failed); a call that fails for silence was not sent.
 */
import { later } from '../_clock.ts';
import { TimeoutError } from '../errors.ts';

/** The calls sent on one Redis client and not settled yet, and when anything last settled. */
export class Silence {
  /** Call -> when it was sent, oldest first (a Map keeps insertion order). */
  readonly #unanswered = new Map<object, number>();
  #heardAt = -Infinity;
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /**
   * How long Redis has said nothing while calls wait: since the oldest call unanswered was sent,
   * or since the last call settled if later (an answer shows that Redis was there when it came,
   * not that it still is); 0 while none waits.
   */
  silentFor(): number {
    for (const sentAt of this.#unanswered.values()) {
      return this.#now() - Math.max(sentAt, this.#heardAt);
    }
    return 0;
  }

  /** Counts `call` as unanswered until it settles. */
  track<T>(call: Promise<T>): Promise<T> {
    const key = {};
    this.#unanswered.set(key, this.#now());
    const settled = (): void => {
      this.#unanswered.delete(key);
      this.#heardAt = this.#now();
    };
    call.then(settled, settled);
    return call;
  }
}

const silences = new WeakMap<object, Silence>();

/** The `Silence` of the client a gate was given (as given: gates sharing a client share it). */
export function silenceOf(client: object): Silence {
  let silence = silences.get(client);
  if (silence === undefined) {
    silence = new Silence();
    silences.set(client, silence);
  }
  return silence;
}

/**
 * Sends the call (`send()`) and resolves with its answer, or rejects with its error, or with a
 * `TimeoutError` ("Redis did not answer within `ms`ms (`what`)") if it is not answered within
 * `ms`. Rejects at once, without sending it, when Redis has been silent for `ms` already.
 */
export function answerWithin<T>(
  silence: Silence,
  send: () => Promise<T>,
  ms: number,
  what: string,
  late?: (answer: T) => void,
): Promise<T> {
  const silent = silence.silentFor();
  if (silent >= ms) {
    return Promise.reject(
      new TimeoutError(
        `Redis has not answered for ${Math.round(silent)}ms: not sent (${what})`,
        ms,
      ),
    );
  }
  const call = silence.track(send());
  return new Promise<T>((resolve, reject) => {
    let timedOut = false;
    const stopTimer = later(
      ms,
      () => {
        timedOut = true;
        reject(new TimeoutError(`Redis did not answer within ${ms}ms (${what})`, ms));
      },
      true,
    );
    call.then(
      (answer) => {
        stopTimer();
        if (timedOut) late?.(answer);
        else resolve(answer);
      },
      (error: unknown) => {
        stopTimer();
        reject(error);
      },
    );
  });
}
