/**
 * Typed errors, as fero-http's: every failure is transient (retry with backoff), permanent
 * (retrying the same request cannot help) or resync (drop the local copy and pull from scratch).
 */

/** What a caller should do about a failure. */
export type ErrorKind = "transient" | "permanent" | "resync";

/** Base of every error this package throws. */
export class FeroError extends Error {
  /** What to do about it. */
  readonly kind: ErrorKind;
  /** The HTTP status, when the server answered. */
  readonly status?: number;
  /** The protocol's error code (`page_too_large`, `unauthorized`, ...), when there is one. */
  readonly code?: string;
  /** The collection the request was for, when it was for one. */
  readonly collection?: string;

  constructor(
    kind: ErrorKind,
    message: string,
    options: { status?: number; code?: string; collection?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FeroError";
    this.kind = kind;
    this.status = options.status;
    this.code = options.code;
    this.collection = options.collection;
  }
}

/** The network failed, the server is busy or failing: retry later (after `retryAfterMs`). */
export class TransientError extends FeroError {
  /** The server's `Retry-After`, in milliseconds, when it sent one. */
  readonly retryAfterMs?: number;
  constructor(
    message: string,
    options: { status?: number; code?: string; collection?: string; cause?: unknown; retryAfterMs?: number } = {},
  ) {
    super("transient", message, options);
    this.name = "TransientError";
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** The request is wrong or not allowed (bad token, bad input): fix it, do not retry. */
export class PermanentError extends FeroError {
  constructor(message: string, options: { status?: number; code?: string; collection?: string; cause?: unknown } = {}) {
    super("permanent", message, options);
    this.name = "PermanentError";
  }
}

/**
 * 410 `resync_required`: the checkpoint is behind the server's tombstone purge horizon. Drop
 * the local copy's checkpoint and pull the collection from the beginning.
 */
export class ResyncRequiredError extends FeroError {
  constructor(message: string, options: { collection?: string; cause?: unknown } = {}) {
    super("resync", message, { ...options, status: 410, code: "resync_required" });
    this.name = "ResyncRequiredError";
  }
}

/** Whether `error` is worth retrying. */
export function isTransient(error: unknown): error is TransientError {
  return error instanceof FeroError && error.kind === "transient";
}
