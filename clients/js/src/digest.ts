/**
 * The protocol's digest over `(id, version)` pairs: the wrapping sum of FNV-1a 64 of the id's
 * UTF-8 bytes, a zero byte and the version's 8 little-endian bytes, as 16 lowercase hex digits.
 * Compare it with the server's `digest` to find drift.
 */

const OFFSET = 0xcbf29ce484222325n;
const PRIME = 0x100000001b3n;
const MASK = 0xffffffffffffffffn;

function fnv1a(bytes: Uint8Array, hash: bigint): bigint {
  for (const byte of bytes) {
    hash ^= BigInt(byte);
    hash = (hash * PRIME) & MASK;
  }
  return hash;
}

/** The digest of live rows given as `(id, version)` pairs. */
export function computeDigest(rows: Iterable<{ id: string; version: number }>): { count: number; digest: string } {
  const encoder = new TextEncoder();
  let sum = 0n;
  let count = 0;
  const versionBytes = new Uint8Array(8);
  const view = new DataView(versionBytes.buffer);
  for (const row of rows) {
    let hash = fnv1a(encoder.encode(row.id), OFFSET);
    hash = fnv1a(new Uint8Array([0]), hash);
    view.setBigUint64(0, BigInt(row.version), true);
    hash = fnv1a(versionBytes, hash);
    sum = (sum + hash) & MASK;
    count++;
  }
  return { count, digest: sum.toString(16).padStart(16, "0") };
}
