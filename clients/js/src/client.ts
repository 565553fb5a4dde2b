/** `FeroClient`: pull, push, digest and the change stream of fero's protocol v1 over `fetch`. */

import { DeviceIdentity, type KeyValueStore } from "./device.js";
import { FeroError, PermanentError, ResyncRequiredError, TransientError } from "./errors.js";
import { parseRetryAfter, sleep, withRetry, backoffDelay, type RetryOptions } from "./retry.js";
import {
  COLLECTION_HEADER,
  MAX_PAGE_SIZE,
  PROTOCOL_HEADER,
  PROTOCOL_VERSION,
  type Change,
  type ChangeInput,
  type ChangeNotice,
  type ChangeResult,
  type Checkpoint,
  type DigestResponse,
  type PullResponse,
} from "./types.js";

/** How a client is set up. */
export interface FeroClientOptions {
  /** The server's base URL, e.g. `http://127.0.0.1:7700`. */
  url: string;
  /** The bearer token (sent in the `Authorization` header, never in a URL). */
  token: string;
  /** The device identity; default: loaded from `store` (or `localStorage`). */
  device?: DeviceIdentity;
  /** Where the device id and sequence live when `device` is not given. */
  store?: KeyValueStore;
  /** Key prefix of the device id and sequence in `store` (default `fero:`). */
  storePrefix?: string;
  /** Retry policy of pull, push and digest. */
  retry?: RetryOptions;
  /** Most changes in one push request (default 500, at most 5,000). */
  pushBatchCount?: number;
  /** Largest push body in bytes (default 1 MiB; keep it under the server's body limit, 4 MiB by default). */
  pushBatchBytes?: number;
  /** The `fetch` to use (default `globalThis.fetch`); tests inject failures through it. */
  fetch?: typeof fetch;
  /**
   * `Accept-Encoding` to send (Node only; browsers choose it themselves). Default: the
   * platform's (gzip). `"identity"` turns compression off, which is faster on loopback.
   */
  acceptEncoding?: string;
}

/** The result of one `changes()` subscription: stop it with `close()`. */
export interface ChangeStream {
  /** Ends the stream and its reconnects. */
  close(): void;
}

/** Callbacks of the change stream. */
export interface ChangeStreamHandlers {
  /** A collection moved. */
  onChange(notice: ChangeNotice): void;
  /** The stream is (re)connected: notices are not replayed, so pull every collection now. */
  onOpen?(): void;
  /** The stream failed and will reconnect after backoff. */
  onError?(error: FeroError): void;
}

const encoder = new TextEncoder();

/** A client of one fero server for one user. */
export class FeroClient {
  readonly url: string;
  readonly device: DeviceIdentity;
  private readonly token: string;
  private readonly retry: RetryOptions;
  private readonly fetchImpl: typeof fetch;
  private readonly pushBatchCount: number;
  private readonly pushBatchBytes: number;
  private readonly acceptEncoding: string | undefined;

  private constructor(options: FeroClientOptions, device: DeviceIdentity) {
    this.url = options.url.replace(/\/+$/, "");
    this.token = options.token;
    this.device = device;
    this.retry = options.retry ?? {};
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.pushBatchCount = Math.min(MAX_PAGE_SIZE, Math.max(1, options.pushBatchCount ?? 500));
    this.pushBatchBytes = Math.max(1024, options.pushBatchBytes ?? 1024 * 1024);
    this.acceptEncoding = options.acceptEncoding;
  }

  /** A client; loads or creates the durable device identity first. */
  static async create(options: FeroClientOptions): Promise<FeroClient> {
    const device = options.device ?? (await DeviceIdentity.load(options.store, options.storePrefix));
    return new FeroClient(options, device);
  }

  /**
   * One page of `collection` after `checkpoint` (`null`: from the start), `limit` 1 to 5,000.
   * Throws `ResyncRequiredError` on 410: pull again with `null`.
   */
  async pull<T = unknown>(
    collection: string,
    checkpoint: Checkpoint | null,
    limit = 1000,
    signal?: AbortSignal,
  ): Promise<PullResponse<T>> {
    const body = JSON.stringify({ checkpoint, limit: Math.min(MAX_PAGE_SIZE, Math.max(1, limit)) });
    return withRetry(
      () => this.request<PullResponse<T>>("POST", `/v1/collections/${collection}/pull`, collection, body, signal),
      this.retry,
      signal,
    );
  }

  /** The server's digest of `collection`: live row count and hash of `(id, version)`. */
  async digest(collection: string, signal?: AbortSignal): Promise<DigestResponse> {
    return withRetry(
      () => this.request<DigestResponse>("GET", `/v1/collections/${collection}/digest`, collection, undefined, signal),
      this.retry,
      signal,
    );
  }

  /**
   * Gives each change without a mutation id a fresh one from the device's durable sequence.
   * Call it once per change and keep the result: resending a change with the same ids after a
   * lost answer is what makes the server answer the replay with its original result.
   */
  async assignMutationIds<T>(changes: ChangeInput<T>[]): Promise<Change<T>[]> {
    const missing = changes.filter((change) => !change.mutation_id).length;
    const seqs = missing > 0 ? await this.device.take(missing) : [];
    let next = 0;
    return changes.map((change) =>
      change.mutation_id ? (change as Change<T>) : { ...change, mutation_id: { device: this.device.device, seq: seqs[next++]! } },
    );
  }

  /**
   * Pushes `changes` (oldest first), split into requests of at most `pushBatchCount` changes and
   * `pushBatchBytes` bytes; a 413 splits a request further. Each request is retried with the
   * same mutation ids, so a lost answer is replayed to the same result. Returns one result per
   * change, in order.
   */
  async push<T = unknown>(collection: string, changes: ChangeInput<T>[], signal?: AbortSignal): Promise<ChangeResult<T>[]> {
    const withIds = await this.assignMutationIds(changes);
    const results: ChangeResult<T>[] = [];
    for (const batch of this.batches(withIds)) {
      results.push(...(await this.pushBatch<T>(collection, batch, signal)));
    }
    return results;
  }

  /** Splits changes into batches by count and by encoded size. */
  private *batches<T>(changes: Change<T>[]): Generator<{ changes: Change<T>[]; parts: string[] }> {
    let current: Change<T>[] = [];
    let parts: string[] = [];
    let bytes = 14;
    for (const change of changes) {
      const part = JSON.stringify(change);
      const size = encoder.encode(part).length + 1;
      if (current.length > 0 && (current.length >= this.pushBatchCount || bytes + size > this.pushBatchBytes)) {
        yield { changes: current, parts };
        current = [];
        parts = [];
        bytes = 14;
      }
      current.push(change);
      parts.push(part);
      bytes += size;
    }
    if (current.length > 0) yield { changes: current, parts };
  }

  private async pushBatch<T>(
    collection: string,
    batch: { changes: Change<T>[]; parts: string[] },
    signal?: AbortSignal,
  ): Promise<ChangeResult<T>[]> {
    const body = `{"changes":[${batch.parts.join(",")}]}`;
    try {
      const answer = await withRetry(
        () => this.request<{ results: ChangeResult<T>[] }>("POST", `/v1/collections/${collection}/push`, collection, body, signal),
        this.retry,
        signal,
      );
      if (answer.results.length !== batch.changes.length) {
        throw new PermanentError(
          `collection ${collection}: the server answered ${answer.results.length} results for ${batch.changes.length} changes`,
          { collection },
        );
      }
      return answer.results;
    } catch (error) {
      if (error instanceof FeroError && error.code === "body_too_large" && batch.changes.length > 1) {
        const half = Math.ceil(batch.changes.length / 2);
        const first = await this.pushBatch<T>(collection, { changes: batch.changes.slice(0, half), parts: batch.parts.slice(0, half) }, signal);
        const second = await this.pushBatch<T>(collection, { changes: batch.changes.slice(half), parts: batch.parts.slice(half) }, signal);
        return [...first, ...second];
      }
      throw error;
    }
  }

  /**
   * Listens on `GET /v1/changes` through `fetch`, with the token in the `Authorization` header
   * (`EventSource` cannot send one, and a token in a URL ends up in logs). Reconnects with
   * backoff until `close()`; `onOpen` runs on every (re)connect.
   */
  changes(handlers: ChangeStreamHandlers): ChangeStream {
    const controller = new AbortController();
    const run = async () => {
      let failures = 0;
      while (!controller.signal.aborted) {
        try {
          const response = await this.fetchImpl(`${this.url}/v1/changes`, {
            headers: this.headers(),
            signal: controller.signal,
          });
          if (!response.ok || !response.body) throw await errorOf(response, undefined);
          failures = 0;
          handlers.onOpen?.();
          await readEvents(response.body, (event, data) => {
            if (event === "change") handlers.onChange(JSON.parse(data) as ChangeNotice);
          });
          throw new TransientError("the change stream ended (server shutting down?); reconnecting");
        } catch (error) {
          if (controller.signal.aborted) return;
          const failure = toFeroError(error, undefined);
          handlers.onError?.(failure);
          failures++;
          const retryAfter = failure instanceof TransientError ? failure.retryAfterMs ?? 0 : 0;
          const delay = Math.max(retryAfter, backoffDelay(Math.min(failures, 8), this.retry));
          try {
            await sleep(failure.kind === "permanent" ? Math.max(delay, 5000) : delay, controller.signal);
          } catch {
            return;
          }
        }
      }
    };
    void run();
    return { close: () => controller.abort() };
  }

  private headers(json = false): Record<string, string> {
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.token}`,
      [PROTOCOL_HEADER]: String(PROTOCOL_VERSION),
    };
    if (json) headers["content-type"] = "application/json";
    if (this.acceptEncoding) headers["accept-encoding"] = this.acceptEncoding;
    return headers;
  }

  private async request<R>(method: string, path: string, collection: string, body: string | undefined, signal?: AbortSignal): Promise<R> {
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.url}${path}`, {
        method,
        headers: this.headers(body !== undefined),
        body,
        signal,
      });
    } catch (error) {
      throw toFeroError(error, collection);
    }
    if (!response.ok) throw await errorOf(response, collection);
    const named = response.headers.get(COLLECTION_HEADER);
    if (named !== null && named !== collection) {
      throw new PermanentError(`asked for collection ${collection}, the answer names ${named} (misrouted?)`, { collection });
    }
    try {
      return (await response.json()) as R;
    } catch (error) {
      throw new TransientError(`collection ${collection}: the answer to ${method} ${path} was cut off or not JSON`, {
        collection,
        cause: error,
      });
    }
  }
}

function toFeroError(error: unknown, collection: string | undefined): FeroError {
  if (error instanceof FeroError) return error;
  return new TransientError(
    `${collection ? `collection ${collection}: ` : ""}the request failed on the network (${String((error as Error)?.message ?? error)}); retrying`,
    { collection, cause: error },
  );
}

/** The typed error of a failed answer, from its status and JSON error body. */
async function errorOf(response: Response, collection: string | undefined): Promise<FeroError> {
  let code: string | undefined;
  let message = `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    code = body.error?.code;
    if (body.error?.message) message = body.error.message;
  } catch {
    // Not the protocol's error body (a proxy's page): the status decides.
  }
  const where = collection ? `collection ${collection}: ` : "";
  const status = response.status;
  if (status === 410) return new ResyncRequiredError(`${where}${message}`, { collection });
  if (status === 429 || status === 408 || status >= 500) {
    return new TransientError(`${where}${message}`, {
      status,
      code,
      collection,
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
    });
  }
  return new PermanentError(`${where}${message}`, { status, code, collection });
}

/** Reads Server-Sent Events from a byte stream, calling `onEvent(event, data)` per event. */
export async function readEvents(body: ReadableStream<Uint8Array>, onEvent: (event: string, data: string) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (data.length > 0) onEvent(event, data.join("\n"));
        event = "message";
        data = [];
      } else if (line.startsWith(":")) {
        continue;
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
    }
  }
}
