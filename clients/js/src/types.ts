/** Wire types of fero's sync protocol, version 1 (docs/protocol.md in the fero repository). */

/** The protocol version this package speaks. */
export const PROTOCOL_VERSION = 1;
/** Header carrying the protocol version on every request and answer. */
export const PROTOCOL_HEADER = "fero-protocol";
/** Header naming the collection of a collection endpoint's answer. */
export const COLLECTION_HEADER = "fero-collection";
/** Largest pull `limit` and most changes in one push the server accepts. */
export const MAX_PAGE_SIZE = 5000;

/** Where a client stands in a collection's feed. `cursor` is opaque: store it, send it back. */
export interface Checkpoint {
  last_sync_id: number;
  updated_at?: number | null;
  cursor?: string | null;
}

/** A row as the server sends it. A tombstone has `deleted: true`. */
export interface FeroDocument<T = unknown> {
  id: string;
  sync_id: number;
  version: number;
  updated_at: number;
  deleted: boolean;
  data: T;
}

/** One pulled page. */
export interface PullResponse<T = unknown> {
  items: FeroDocument<T>[];
  checkpoint: Checkpoint;
  has_more: boolean;
}

/** A device's id for one change: `device` is stable, `seq` increases per change. */
export interface MutationId {
  device: string;
  seq: number;
}

/** A change to push: made on `base_version` (`null` creates). */
export interface Change<T = unknown> {
  id: string;
  base_version: number | null;
  mutation_id: MutationId;
  deleted?: boolean;
  data?: T;
}

/** A change without its mutation id: the client assigns one. */
export type ChangeInput<T = unknown> = Omit<Change<T>, "mutation_id"> & { mutation_id?: MutationId };

/** The server's answer for one pushed change. */
export type ChangeResult<T = unknown> =
  | { id: string; mutation_id: MutationId; status: "accepted"; version: number; sync_id: number }
  | { id: string; mutation_id: MutationId; status: "conflict"; server: FeroDocument<T> | null }
  | { id: string; mutation_id: MutationId; status: "rejected"; code: string; message: string };

/** The answer to a push: one result per change, in request order. */
export interface PushResponse<T = unknown> {
  results: ChangeResult<T>[];
}

/** A collection's digest: live row count and the order-independent hash of `(id, version)`. */
export interface DigestResponse {
  count: number;
  digest: string;
}

/** A notice of the change stream: `collection` moved to `sync_id`. */
export interface ChangeNotice {
  collection: string;
  sync_id: number;
}
