/**
 * A durable device id and mutation sequence. The server answers a replayed mutation id with
 * its original result, so a device must never reuse a `(device, seq)` pair for another change:
 * the sequence is reserved in blocks, and a block's end is saved before any of it is used, so a
 * crash skips numbers rather than repeating them.
 */

/** Where the device id and sequence are kept: synchronous or asynchronous key-value storage. */
export interface KeyValueStore {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, value: string): void | Promise<void>;
}

/** Keeps values in memory only: a new device on every start. For tests and benchmarks. */
export function memoryStore(): KeyValueStore {
  const values = new Map<string, string>();
  return { get: (key) => values.get(key), set: (key, value) => void values.set(key, value) };
}

/** The browser's `localStorage` (durable per origin and profile), or memory where there is none. */
export function defaultStore(): KeyValueStore {
  const storage = (globalThis as { localStorage?: Storage }).localStorage;
  if (!storage) return memoryStore();
  return { get: (key) => storage.getItem(key), set: (key, value) => storage.setItem(key, value) };
}

/** How many sequence numbers are reserved with one write. */
export const SEQ_BLOCK = 1000;

function randomId(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A device's id and its next mutation sequence numbers. */
export class DeviceIdentity {
  private next = 0;
  private reservedEnd = 0;
  private reserving: Promise<void> | undefined;

  private constructor(
    /** The device id sent in every mutation id. */
    readonly device: string,
    private readonly store: KeyValueStore,
    private readonly seqKey: string,
  ) {}

  /**
   * Loads (or creates and saves) the device id under `${prefix}device`, and its sequence under
   * `${prefix}seq`. Give each client instance that may run at once (two tabs, two processes)
   * its own prefix or store.
   */
  static async load(store: KeyValueStore = defaultStore(), prefix = "fero:"): Promise<DeviceIdentity> {
    const deviceKey = `${prefix}device`;
    let device = await store.get(deviceKey);
    if (!device) {
      device = `web-${randomId()}`;
      await store.set(deviceKey, device);
    }
    const identity = new DeviceIdentity(device, store, `${prefix}seq:${device}`);
    const saved = Number((await store.get(identity.seqKey)) ?? 0);
    identity.next = Number.isFinite(saved) ? saved + 1 : 1;
    identity.reservedEnd = identity.next - 1;
    return identity;
  }

  /** `count` fresh mutation ids, in order. */
  async take(count: number): Promise<number[]> {
    const seqs: number[] = [];
    while (seqs.length < count) {
      if (this.next > this.reservedEnd) {
        await this.reserve(Math.max(SEQ_BLOCK, count - seqs.length));
        continue;
      }
      seqs.push(this.next++);
    }
    return seqs;
  }

  private async reserve(size: number): Promise<void> {
    if (this.reserving) return this.reserving;
    const end = Math.max(this.reservedEnd, this.next - 1) + size;
    this.reserving = Promise.resolve(this.store.set(this.seqKey, String(end))).then(() => {
      this.reservedEnd = end;
      this.reserving = undefined;
    });
    return this.reserving;
  }
}
