/**
 * fero's sync protocol v1 for JavaScript: `FeroClient` (pull, push, digest, change stream),
 * typed errors, durable device identity, retries. The RxDB plugin is in `@fero/client/rxdb`.
 */
export * from "./types.js";
export * from "./errors.js";
export { DeviceIdentity, memoryStore, defaultStore, SEQ_BLOCK, type KeyValueStore } from "./device.js";
export { withRetry, backoffDelay, parseRetryAfter, type RetryOptions } from "./retry.js";
export { computeDigest } from "./digest.js";
export { FeroClient, readEvents, type FeroClientOptions, type ChangeStream, type ChangeStreamHandlers } from "./client.js";
