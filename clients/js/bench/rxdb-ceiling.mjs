// The ceiling beside W4-js, measured on the same machine at the same time: RxDB's own
// replicateRxCollection pulling the same N rows from an in-process handler (no network, no
// JSON) into memory storage, as in peer-rxdb.md's W1 (pull-only), and with a push handler
// configured (as replicateFero runs it: RxDB then also stores per-document replication meta).
// Each line also gives the process's CPU seconds (`cpu_s`, GC threads included) and its main
// thread's (`main_cpu_s`, the wall time on a core of its own), and the time the main thread
// waited for a CPU (`main_runqueue_s`, /proc schedstat) with the rate once that wait is taken out
// (`items_per_s_without_runqueue`, as in w4-pull.mjs); each database is
// removed after its run so the second does not carry the first one's rows in its heap.
//   node bench/rxdb-ceiling.mjs [--n 100000] [--batch 5000]
import { readFileSync } from "node:fs";

import { createRxDatabase } from "rxdb";
import { replicateRxCollection } from "rxdb/plugins/replication";
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
const schema = {
  version: 0,
  primaryKey: "id",
  type: "object",
  properties: { id: { type: "string", maxLength: 20 }, name: { type: "string" }, email: { type: "string" }, body: { type: "string" }, version: { type: "number" } },
  required: ["id"],
};

for (const withPush of [false, true]) {
  const rows = Array.from({ length: N }, (_, i) => ({
    id: `item-${String(i).padStart(7, "0")}`,
    name: "n".repeat(20),
    email: "e".repeat(30),
    body: "b".repeat(100),
    version: 1,
    _deleted: false,
  }));
  const db = await createRxDatabase({ name: `ceiling${withPush}${Date.now()}`, storage: getRxStorageMemory(), multiInstance: false });
  await db.addCollections({ items: { schema } });
  const start = performance.now();
  const cpu = process.cpuUsage();
  const main = mainCpu();
  const waited = runqueueWait();
  const replication = replicateRxCollection({
    collection: db.items,
    replicationIdentifier: "ceiling",
    live: false,
    waitForLeadership: false,
    pull: {
      batchSize: BATCH,
      handler: async (checkpoint) => {
        const at = checkpoint?.at ?? 0;
        return { documents: rows.slice(at, at + BATCH), checkpoint: { at: Math.min(N, at + BATCH) } };
      },
    },
    push: withPush ? { handler: async () => [] } : undefined,
  });
  await replication.awaitInitialReplication();
  const seconds = (performance.now() - start) / 1000;
  const { user, system } = process.cpuUsage(cpu);
  const runqueue = runqueueWait() - waited;
  const count = await db.items.count().exec();
  if (count !== N) throw new Error(`RxDB holds ${count} rows, expected ${N}`);
  console.log(
    JSON.stringify({
      workload: withPush ? "rxdb-ceiling-with-push" : "rxdb-ceiling-pull-only",
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
  await replication.cancel();
  await db.remove();
}
