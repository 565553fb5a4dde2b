/**
 * `replicateFero`: an RxDB collection replicated with a fero server through RxDB's
 * `replicateRxCollection`. The design (why versions never go stale, why a second edit never
 * conflicts with its own first) is told in this package's README.
 */

import { replicateRxCollection, RxReplicationState } from "rxdb/plugins/replication";
import type { RxCollection, RxConflictHandler, RxConflictHandlerInput, RxReplicationWriteToMasterRow, WithDeleted } from "rxdb";
import { Subject } from "rxjs";

import { FeroClient, type FeroClientOptions } from "./client.js";
import { FeroError, ResyncRequiredError } from "./errors.js";
import { MAX_PAGE_SIZE, type Change, type ChangeResult, type Checkpoint, type FeroDocument, type MutationId } from "./types.js";

/** What a conflict resolves to: the server's state, the local edit (pushed again), or a merge. */
export type ConflictStrategy<T> =
  | "server-wins"
  | "client-wins"
  | ((input: RxConflictHandlerInput<T>) => WithDeleted<T> | Promise<WithDeleted<T>>);

/** Options of `replicateFero`. */
export interface ReplicateFeroOptions<T> extends Omit<FeroClientOptions, "url" | "token"> {
  /** The RxDB collection to replicate. */
  collection: RxCollection<T>;
  /** The server's base URL. */
  url: string;
  /** The user's bearer token. */
  token: string;
  /** The collection's name on the server (default: the RxDB collection's name). */
  remoteCollection?: string;
  /** The document field holding fero's `version` (default `version`; declare it in the schema as a number). */
  versionField?: string;
  /**
   * Rows per pull request (default and most: 5,000, the server's largest page). Larger pages
   * cost RxDB less per row in a first sync (measured in BENCHMARKS.md, W4-js).
   */
  pullBatchSize?: number;
  /** Rows RxDB hands the push handler at once (default 500); the client splits by bytes too. */
  pushBatchSize?: number;
  /** Keep pulling on change-stream notices (default true). */
  live?: boolean;
  /** How conflicts resolve (default `server-wins`, fero's version rule). */
  conflict?: ConflictStrategy<T>;
  /** Install fero's conflict handler on the collection (default true). */
  installConflictHandler?: boolean;
  /** RxDB's replication identifier (default `fero:<url>:<collection>`). */
  replicationIdentifier?: string;
  /** Milliseconds before RxDB retries a failed handler (default 1,000). */
  retryTime?: number;
  /** Run only in the leader tab (needs RxDB's leader-election plugin; default false). */
  waitForLeadership?: boolean;
  /** Start at once (default true). */
  autoStart?: boolean;
}

/** A fero replication: RxDB's state plus the fero client and what fero refused. */
export interface FeroReplicationState<T> extends RxReplicationState<T, Checkpoint> {
  /** The protocol client the replication uses. */
  readonly client: FeroClient;
  /** Changes the server rejected for good (`invalid_id`, ...): the local copy was reverted. */
  readonly rejected$: Subject<{ id: string; code: string; message: string }>;
  /** Full resyncs done after 410 `resync_required`. */
  readonly resyncs: number;
}

const RX_INTERNAL = new Set(["_deleted", "_meta", "_rev", "_attachments"]);

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    return a.length === other.length && a.every((value, i) => deepEqual(value, other[i]));
  }
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** Whether two states hold the same content, ignoring the version and RxDB's bookkeeping. */
function sameContent(a: Record<string, unknown>, b: Record<string, unknown>, versionField: string): boolean {
  if (!!a._deleted !== !!b._deleted) return false;
  if (a._deleted) return true;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) {
    if (key === versionField || RX_INTERNAL.has(key)) continue;
    if (!deepEqual(a[key], b[key])) return false;
  }
  return true;
}

/**
 * RxDB conflict handler following fero's version rule. Two states are equal when version,
 * deletion and content agree. A conflict whose server state has the same content as the local
 * one is the device's own write coming back: the server's state (with its new version) wins.
 * Otherwise the server's version is always at least the local base, so the highest version —
 * the server's — wins (`server-wins`, fero's `HighestVersionWins` with the tie to the server);
 * `client-wins` and a merge function keep local content on the server's version, to be pushed
 * again on it.
 */
export function feroConflictHandler<T>(versionField = "version", strategy: ConflictStrategy<T> = "server-wins"): RxConflictHandler<T> {
  return {
    isEqual(a, b) {
      const x = a as Record<string, unknown>;
      const y = b as Record<string, unknown>;
      return x[versionField] === y[versionField] && sameContent(x, y, versionField);
    },
    async resolve(input) {
      const local = input.newDocumentState as Record<string, unknown>;
      const server = input.realMasterState as Record<string, unknown>;
      if (sameContent(local, server, versionField) || strategy === "server-wins") return input.realMasterState;
      const kept = strategy === "client-wins" ? input.newDocumentState : await strategy(input);
      return { ...(kept as Record<string, unknown>), [versionField]: server[versionField] } as WithDeleted<T>;
    },
  };
}

/**
 * Replicates `collection` with a fero server: pull pages into RxDB, push local writes with
 * exactly-once mutation ids, live through the change stream, tombstones as `_deleted`, 410
 * answered by a full resync. Resolves once the replication is set up (not synced: await
 * `awaitInitialReplication()` for that).
 */
export async function replicateFero<T>(options: ReplicateFeroOptions<T>): Promise<FeroReplicationState<T>> {
  const { collection } = options;
  const name = options.remoteCollection ?? collection.name;
  const versionField = options.versionField ?? "version";
  const primaryPath = collection.schema.primaryPath as string;
  const client = await FeroClient.create(options);
  if (options.installConflictHandler ?? true) {
    (collection as unknown as { conflictHandler: RxConflictHandler<T> }).conflictHandler = feroConflictHandler<T>(
      versionField,
      options.conflict,
    );
  }

  const remoteEvents = new Subject<"RESYNC">();
  const rejected$ = new Subject<{ id: string; code: string; message: string }>();
  // Mutation ids of pushes not yet answered, by change: a push that failed (lost answer) and is
  // handed to us again by RxDB goes out with the same ids and gets the original answer.
  const outstanding = new Map<string, MutationId>();
  let resync: Set<string> | undefined;
  let resyncs = 0;

  const toDocument = (item: FeroDocument): WithDeleted<T> => {
    // The page was parsed once by `response.json()` and is ours: the data object becomes the
    // document in place, no copy.
    const data = item.data;
    const doc = (data !== null && typeof data === "object" && !Array.isArray(data) ? data : {}) as Record<string, unknown>;
    doc[primaryPath] = item.id;
    doc[versionField] = item.version;
    doc._deleted = item.deleted;
    return doc as WithDeleted<T>;
  };

  const toChange = (row: RxReplicationWriteToMasterRow<T>): Omit<Change, "mutation_id"> & { key: string } => {
    const state = row.newDocumentState as Record<string, unknown>;
    const assumed = row.assumedMasterState as Record<string, unknown> | undefined;
    const base = assumed && typeof assumed[versionField] === "number" ? (assumed[versionField] as number) : null;
    const data: Record<string, unknown> = {};
    for (const key in state) {
      if (key === primaryPath || key === versionField || RX_INTERNAL.has(key)) continue;
      data[key] = state[key];
    }
    const id = String(state[primaryPath]);
    const deleted = !!state._deleted;
    const key = `${id}\u0000${base}\u0000${deleted}\u0000${JSON.stringify(data)}`;
    return { id, base_version: base, deleted, data, key };
  };

  const pullHandler = async (checkpoint: Checkpoint | undefined, batchSize: number) => {
    let page;
    try {
      page = await client.pull(name, checkpoint ?? null, batchSize);
    } catch (error) {
      if (!(error instanceof ResyncRequiredError)) throw error;
      // 410: pull everything again; rows not seen by the end were purged on the server.
      resync = new Set();
      resyncs++;
      page = await client.pull(name, null, batchSize);
    }
    const documents: WithDeleted<T>[] = new Array(page.items.length);
    for (let i = 0; i < page.items.length; i++) {
      const item = page.items[i]!;
      resync?.add(item.id);
      documents[i] = toDocument(item);
    }
    if (resync && !page.has_more) {
      const seen = resync;
      resync = undefined;
      const local = await collection.find().exec();
      for (const doc of local) {
        const json = doc.toJSON() as Record<string, unknown>;
        if (!seen.has(String(json[primaryPath])) && typeof json[versionField] === "number") {
          documents.push({ ...json, _deleted: true } as WithDeleted<T>);
        }
      }
    }
    return { documents, checkpoint: page.checkpoint };
  };

  const pushHandler = async (rows: RxReplicationWriteToMasterRow<T>[]): Promise<WithDeleted<T>[]> => {
    const changes = rows.map(toChange);
    const inputs = changes.map(({ key, ...change }) => ({ ...change, mutation_id: outstanding.get(key) }));
    const withIds = await client.assignMutationIds(inputs);
    withIds.forEach((change, i) => outstanding.set(changes[i]!.key, change.mutation_id));
    const results: ChangeResult[] = await client.push(name, withIds);
    const masters: WithDeleted<T>[] = [];
    const recreate: number[] = [];
    results.forEach((result, i) => {
      outstanding.delete(changes[i]!.key);
      const row = rows[i]!;
      if (result.status === "accepted") {
        // The accepted write is the new master state: RxDB records its version now, whatever
        // order the change stream's pull and this answer arrive in.
        masters.push({ ...(row.newDocumentState as object), [versionField]: result.version } as WithDeleted<T>);
      } else if (result.status === "conflict") {
        if (result.server) masters.push(toDocument(result.server));
        else recreate.push(i);
      } else {
        rejected$.next({ id: changes[i]!.id, code: result.code, message: result.message });
        const back = row.assumedMasterState ?? ({ ...(row.newDocumentState as object), _deleted: true } as WithDeleted<T>);
        masters.push(back);
      }
    });
    if (recreate.length > 0) {
      // The server has no such row (purged): the edit creates it again.
      const again = recreate.map((i) => ({ ...changes[i]!, key: undefined, base_version: null }));
      const answers = await client.push(name, again.map(({ key: _key, ...change }) => change));
      answers.forEach((result, j) => {
        const row = rows[recreate[j]!]!;
        if (result.status === "accepted") {
          masters.push({ ...(row.newDocumentState as object), [versionField]: result.version } as WithDeleted<T>);
        } else if (result.status === "conflict" && result.server) {
          masters.push(toDocument(result.server));
        }
      });
    }
    return masters;
  };

  const state = replicateRxCollection<T, Checkpoint>({
    collection,
    replicationIdentifier: options.replicationIdentifier ?? `fero:${client.url}:${name}`,
    live: options.live ?? true,
    retryTime: options.retryTime ?? 1000,
    waitForLeadership: options.waitForLeadership ?? false,
    autoStart: options.autoStart ?? true,
    pull: {
      handler: pullHandler,
      batchSize: Math.min(MAX_PAGE_SIZE, options.pullBatchSize ?? MAX_PAGE_SIZE),
      stream$: remoteEvents.asObservable(),
    },
    push: { handler: pushHandler, batchSize: options.pushBatchSize ?? 500 },
  }) as FeroReplicationState<T>;

  let stream: { close(): void } | undefined;
  if (options.live ?? true) {
    stream = client.changes({
      onChange: (notice) => {
        if (notice.collection === name) remoteEvents.next("RESYNC");
      },
      onOpen: () => remoteEvents.next("RESYNC"),
      onError: (error: FeroError) => {
        if (error.kind === "permanent") state.subjects.error.next(error as never);
      },
    });
  }
  const cancel = state.cancel.bind(state);
  Object.assign(state, {
    client,
    rejected$,
    cancel: async () => {
      stream?.close();
      return cancel();
    },
  });
  Object.defineProperty(state, "resyncs", { get: () => resyncs });
  return state;
}
