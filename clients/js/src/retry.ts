/** Retries: exponential backoff with full jitter, honouring the server's `Retry-After`. */

import { TransientError, isTransient } from "./errors.js";

/** How requests are retried. */
export interface RetryOptions {
  /** Attempts in total, the first included (default 6). */
  attempts?: number;
  /** First backoff in ms (default 200). */
  baseDelayMs?: number;
  /** Longest backoff in ms (default 10,000). */
  maxDelayMs?: number;
  /** A random number in [0, 1): injected so tests replay exactly (default Math.random). */
  random?: () => number;
  /** How to wait (default setTimeout); injected by tests. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Waits `ms`, or rejects when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The delay before retry number `attempt` (1 = the first retry): full jitter over the exponential cap. */
export function backoffDelay(attempt: number, options: RetryOptions = {}): number {
  const base = options.baseDelayMs ?? 200;
  const max = options.maxDelayMs ?? 10_000;
  const cap = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  const random = options.random ?? Math.random;
  return Math.floor(cap / 2 + random() * (cap / 2));
}

/**
 * Parses `Retry-After`: seconds, or an HTTP date. Returns milliseconds, or undefined when absent
 * or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Runs `task` until it succeeds, fails permanently, or runs out of attempts. */
export async function withRetry<T>(
  task: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
  signal?: AbortSignal,
): Promise<T> {
  const attempts = Math.max(1, options.attempts ?? 6);
  const wait = options.sleep ?? sleep;
  for (let attempt = 1; ; attempt++) {
    try {
      return await task(attempt);
    } catch (error) {
      if (!isTransient(error) || attempt >= attempts || signal?.aborted) throw error;
      const delay = Math.max(backoffDelay(attempt, options), (error as TransientError).retryAfterMs ?? 0);
      await wait(delay, signal);
    }
  }
}
