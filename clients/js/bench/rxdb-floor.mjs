// The floor under any RxDB replication of W4-js: the same bench-spec rows, parsed from the JSON
// text of pages of 5,000, written straight into the collection's memory storage instance with
// `bulkWrite` (no replication protocol), and with `--meta` also one replication meta document
// per row into a second instance, as RxDB's replication stores beside every pulled document
// when a push handler is configured. Prints wall time, the CPU seconds of the process and of its
// main thread, and the main thread's wait for a CPU (as in w4-pull.mjs).
//   node bench/rxdb-floor.mjs [--n 100000] [--batch 5000] [--runs 3] [--meta]
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { createRxDatabase } from "rxdb";
import { getRxStorageMemory } from "rxdb/plugins/storage-memory";

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
const META = process.argv.includes("--meta");

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
  properties: { id: { type: "string", maxLength: 20 }, name: { type: "string" }, email: { type: "string" }, body: { type: "string" }, version: { type: "number" } },
  required: ["id"],
};
// Shaped like RxDB's replication meta instance: composed id, the item's id, the document.
const metaSchema = {
  version: 0,
  primaryKey: "id",
  type: "object",
  properties: { id: { type: "string", maxLength: 30 }, itemId: { type: "string", maxLength: 20 }, isCheckpoint: { type: "string", maxLength: 1 }, docData: { type: "object" } },
  required: ["id"],
};

// The pages as the server sends them (bytes), parsed inside the timed part.
const pages = [];
for (let at = 0; at < N; at += BATCH) {
  const items = [];
  for (let i = at; i < Math.min(N, at + BATCH); i++) {
    items.push({ id: `item-${String(i).padStart(7, "0")}`, sync_id: i + 1, version: 1, updated_at: 1700000000000 + i, deleted: false, data: item(i) });
  }
  pages.push(Buffer.from(JSON.stringify({ items, checkpoint: { last_sync_id: at + items.length }, has_more: at + items.length < N })));
}

for (let run = 0; run < RUNS; run++) {
  const db = await createRxDatabase({ name: `floor${run}${Date.now()}`, storage: getRxStorageMemory(), multiInstance: false });
  await db.addCollections({ items: { schema }, meta: { schema: metaSchema } });
  const fork = db.items.storageInstance;
  const meta = db.meta.storageInstance;
  const start = performance.now();
  const cpu = process.cpuUsage();
  const main = mainCpu();
  const waited = runqueueWait();
  let lwt = Date.now();
  for (const bytes of pages) {
    const page = JSON.parse(new TextDecoder().decode(bytes));
    const rows = page.items.map((row) => {
      const doc = row.data;
      doc.id = row.id;
      doc.version = row.version;
      doc._deleted = row.deleted;
      doc._meta = { lwt: ++lwt };
      doc._rev = "1-floor";
      doc._attachments = {};
      return { document: doc };
    });
    await fork.bulkWrite(rows, "floor");
    if (META) {
      const metaRows = rows.map(({ document }) => ({
        document: { id: `${document.id}|0`, itemId: document.id, isCheckpoint: "0", docData: document, _deleted: false, _meta: { lwt: ++lwt }, _rev: "1-floor", _attachments: {} },
      }));
      await meta.bulkWrite(metaRows, "floor-meta");
    }
  }
  const count = await db.items.count().exec(); // also lets the storage finish its lazy index writes
  const seconds = (performance.now() - start) / 1000;
  const { user, system } = process.cpuUsage(cpu);
  const runqueue = runqueueWait() - waited;
  if (count !== N) throw new Error(`RxDB holds ${count} rows, expected ${N}`);
  console.log(
    JSON.stringify({
      workload: META ? "rxdb-floor-with-meta" : "rxdb-floor",
      n: N,
      batch: BATCH,
      seconds: +seconds.toFixed(3),
      items_per_s: Math.round(N / seconds),
      cpu_s: +((user + system) / 1e6).toFixed(2),
      main_cpu_s: +(mainCpu() - main).toFixed(2),
      main_runqueue_s: +runqueue.toFixed(2),
      items_per_s_without_runqueue: Math.round(N / (seconds - runqueue)),
    }),
  );
  await db.remove();
}
