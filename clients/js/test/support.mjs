// Shared by the tests: the real fero-server binary (cargo-built, found under target/), the
// scripted Rust peer, RxDB databases on memory storage, and polling helpers.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { createRxDatabase } from "rxdb";
import { getRxStorageMemory } from "rxdb/plugins/storage-memory";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const ALICE = "alices-token";
export const BOB = "bobs-token";

/** A cargo-built binary: `$FERO_TARGET_DIR` or `target/`, debug before release. */
export function cargoBinary(name, { example = false, profiles = ["debug", "release"] } = {}) {
  const targetDir = process.env.FERO_TARGET_DIR ?? join(ROOT, "target");
  const candidates = profiles.map((profile) =>
    example ? join(targetDir, profile, "examples", name) : join(targetDir, profile, name),
  );
  const found = candidates.find((path) => existsSync(path));
  if (!found) {
    const build = example ? `cargo build -p fero-http --example ${name}` : `cargo build -p fero-server --bin ${name}`;
    throw new Error(`${name} not found in ${candidates.join(" or ")}: run \`${build}\` first`);
  }
  return found;
}

/**
 * Starts fero-server on a free port with an in-memory database; users alice and bob. `release`
 * prefers the release build (benchmarks); `$FERO_SERVER_BIN` overrides both.
 */
export async function startServer({ args = [], release = false } = {}) {
  const binary =
    process.env.FERO_SERVER_BIN ?? cargoBinary("fero-server", { profiles: release ? ["release", "debug"] : ["debug", "release"] });
  const child = spawn(binary, ["--db", ":memory:", "--listen", "127.0.0.1:0", ...args], {
    env: { ...process.env, FERO_TOKENS: `${ALICE}=alice,${BOB}=bob`, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolveUrl, reject) => {
    child.once("exit", (code) => reject(new Error(`fero-server exited (${code}) before listening`)));
    lines.on("line", (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) resolveUrl(match[1]);
    });
  });
  return {
    url,
    binary,
    /** The server's process id (benchmarks read its CPU time from /proc). */
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** The scripted fero Rust client (crates/fero-http/examples/scripted_peer.rs). */
export class RustPeer {
  static async start(url, token, collection) {
    const child = spawn(cargoBinary("scripted_peer", { example: true }), [url, token, collection], {
      env: { ...process.env, RUST_LOG: "error" },
      stdio: ["pipe", "pipe", "inherit"],
    });
    const peer = new RustPeer(child);
    const first = await peer.next();
    if (first !== "ready") throw new Error(`scripted_peer said ${first}`);
    return peer;
  }
  constructor(child) {
    this.child = child;
    this.waiting = [];
    this.buffered = [];
    createInterface({ input: child.stdout }).on("line", (line) => {
      const waiter = this.waiting.shift();
      if (waiter) waiter(line);
      else this.buffered.push(line);
    });
  }
  next() {
    if (this.buffered.length > 0) return Promise.resolve(this.buffered.shift());
    return new Promise((r) => this.waiting.push(r));
  }
  async command(line) {
    this.child.stdin.write(`${line}\n`);
    const answer = await this.next();
    if (answer.startsWith("error")) throw new Error(`scripted_peer: ${line}: ${answer}`);
    return answer;
  }
  async put(id, data) {
    return this.command(`put ${id} ${JSON.stringify(data)}`);
  }
  async dump() {
    return JSON.parse(await this.command("dump"));
  }
  async stop() {
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.stdin.end("quit\n");
    await exited;
  }
}

export const todoSchema = {
  version: 0,
  primaryKey: "id",
  type: "object",
  properties: {
    id: { type: "string", maxLength: 100 },
    title: { type: "string" },
    done: { type: "boolean" },
    version: { type: "number" },
  },
  required: ["id"],
};

let databases = 0;
/** An RxDB database on memory storage with a `todos` collection. */
export async function todoDatabase() {
  const db = await createRxDatabase({
    name: `test${databases++}${Date.now()}`,
    storage: getRxStorageMemory(),
    multiInstance: false,
  });
  await db.addCollections({ todos: { schema: todoSchema } });
  return db;
}

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(check, ms = 10_000, what = "condition") {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} not reached in ${ms} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The live rows of an RxDB collection as `{ id: { version, data } }`, like the peer's dump. */
export async function rxRows(collection) {
  const rows = {};
  for (const doc of await collection.find().exec()) {
    const { id, version, _deleted, _meta, _rev, _attachments, ...data } = doc.toJSON(true);
    rows[id] = { version, data };
  }
  return Object.fromEntries(Object.entries(rows).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** JSON with object keys sorted at every level: equal values give equal text. */
export function canonical(value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v,
  );
}
