// W4-js without a server: replicateFero fed pre-serialized pull pages by an in-process `fetch`
// (the same JSON a fero-server answers), into RxDB's memory storage. Isolates the client and
// RxDB from HTTP and the server, for profiling. Prints wall time and the CPU seconds of the process and of its
// main thread, and the main thread's wait for a CPU (as in w4-pull.mjs); `--profile FILE` writes a CPU profile of the last run (open it in Chrome DevTools).
//   node bench/w4-inprocess.mjs [--n 100000] [--batch 5000] [--runs 3] [--profile FILE]
import { Session } from "node:inspector/promises";
import { readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { createRxDatabase } from "rxdb";
import { getRxStorageMemory } from "rxdb/plugins/storage-memory";
import { memoryStore } from "../dist/index.js";
import { replicateFero } from "../dist/rxdb.js";

/** CPU seconds (user + system) of this process's main thread, from /proc. */
const mainCpu = () => {
  const stat = readFileSync(`/proc/${process.pid}/task/${process.pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
/** Seconds the main thread waited on a run queue (ready, no CPU free), from /proc schedstat. */
const runqueueWait = () => Number(readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, "utf8").split(" ")[1]) / 1e9;
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const N = arg("n", 100_000);
const BATCH = arg("batch", 5000);
const RUNS = arg("runs", 3);
// `--profile FILE`: a CPU profile of the timed part of the last run only (open it in Chrome's DevTools).
const PROFILE = process.argv.includes("--profile") ? process.argv[process.argv.indexOf("--profile") + 1] : undefined;

const text = (seed, length) => {
  let s = "";
  let x = seed;
  while (s.length < length) {
    x = (x * 1103515245 + 12345) % 2147483648;
    s += String.fromCharCode(97 + (x % 26));
  }
  return s;
};
const item = (i) => ({ name: text(i, 20), email: `${text(i + 7, 20)}@example.org`.slice(0, 30), body: text(i + 13, 100) });

const schema = {
  version: 0,
  primaryKey: "id",
  type: "object",
  properties: {
    id: { type: "string", maxLength: 20 },
    name: { type: "string" },
    email: { type: "string" },
    body: { type: "string" },
    version: { type: "number" },
  },
  required: ["id"],
};

// The server's answer text per page, keyed by the page's first sync id.
const pages = new Map();
for (let at = 0; at < N; at += BATCH) {
  const items = [];
  for (let i = at; i < Math.min(N, at + BATCH); i++) {
    items.push({ id: `item-${String(i).padStart(7, "0")}`, sync_id: i + 1, version: 1, updated_at: 1700000000000 + i, deleted: false, data: item(i) });
  }
  const last = Math.min(N, at + BATCH);
  pages.set(at, JSON.stringify({ items, checkpoint: { last_sync_id: last, updated_at: 1700000000000 + last - 1, cursor: null }, has_more: last < N }));
}
const fetchPages = async (url, init) => {
  const { checkpoint, limit } = JSON.parse(init.body);
  if (limit !== BATCH) throw new Error(`limit ${limit}`);
  const at = checkpoint?.last_sync_id ?? 0;
  const body = pages.get(at) ?? JSON.stringify({ items: [], checkpoint: checkpoint ?? { last_sync_id: 0 }, has_more: false });
  return new Response(body, { status: 200, headers: { "content-type": "application/json", "fero-protocol": "1", "fero-collection": "items" } });
};

for (let run = 0; run < RUNS; run++) {
  const db = await createRxDatabase({ name: `w4in${run}${Date.now()}`, storage: getRxStorageMemory(), multiInstance: false });
  await db.addCollections({ items: { schema } });
  const session = PROFILE && run === RUNS - 1 ? new Session() : undefined;
  if (session) {
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
  }
  const t0 = performance.now();
  const cpu = process.cpuUsage();
  const main = mainCpu();
  const waited = runqueueWait();
  const replication = await replicateFero({
    collection: db.items,
    url: "http://in-process",
    token: "t",
    store: memoryStore(),
    live: false,
    fetch: fetchPages,
    pullBatchSize: BATCH,
  });
  await replication.awaitInitialReplication();
  const seconds = (performance.now() - t0) / 1000;
  const { user, system } = process.cpuUsage(cpu);
  const mainSeconds = mainCpu() - main;
  const runqueue = runqueueWait() - waited;
  if (session) {
    const { profile } = await session.post("Profiler.stop");
    writeFileSync(PROFILE, JSON.stringify(profile));
    session.disconnect();
  }
  const count = await db.items.count().exec();
  if (count !== N) throw new Error(`RxDB holds ${count} rows, expected ${N}`);
  console.log(
    JSON.stringify({
      workload: "W4-js-inprocess",
      n: count,
      batch: BATCH,
      seconds: +seconds.toFixed(3),
      items_per_s: Math.round(count / seconds),
      cpu_s: +((user + system) / 1e6).toFixed(2),
      main_cpu_s: +mainSeconds.toFixed(2),
      main_runqueue_s: +runqueue.toFixed(2),
      items_per_s_without_runqueue: Math.round(count / (seconds - runqueue)),
    }),
  );
  await replication.cancel();
  await db.remove();
}
