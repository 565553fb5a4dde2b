// W4-js: pull N rows (bench-spec items: name 20, email 30, body 100 chars) from a real
// fero-server into RxDB's memory storage in Node, through replicateFero. Prints one JSON line per
// measurement: the raw pull (FeroClient pages, nothing stored) and the RxDB pull. Besides wall
// time each line gives the CPU seconds the bench process spent (`client_cpu_s`, its GC helper
// threads included), its main JavaScript thread alone (`client_main_cpu_s`) and the server
// (`server_cpu_s`), from /proc: on a machine shared with other work these vary far less than wall
// time, and the main thread's figure is the wall time the client needs on a core of its own.
// `client_main_runqueue_s` is the time the main thread was ready to run but waited for a CPU
// (/proc schedstat): on a shared machine `items_per_s_without_runqueue`, the rate once that wait is
// taken out, comes nearer to what a machine of its own gives (still pessimistic: the server and
// the GC threads the main thread waits for waited for a CPU too). Each run starts from a fresh database (removed afterwards, so a
// run does not carry the rows of the runs before it in its heap).
//   node bench/w4-pull.mjs [--n 100000] [--batch 5000] [--runs 3] [--profile FILE]
// `--profile FILE` writes a CPU profile of the last run's RxDB pull (open it in Chrome DevTools).
import { Session } from "node:inspector/promises";
import { performance } from "node:perf_hooks";
import { readFileSync, writeFileSync } from "node:fs";

import { createRxDatabase } from "rxdb";
import { getRxStorageMemory } from "rxdb/plugins/storage-memory";
import { FeroClient, memoryStore } from "../dist/index.js";
import { replicateFero } from "../dist/rxdb.js";
import { ALICE, startServer } from "../test/support.mjs";

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const N = arg("n", 100_000);
const BATCH = arg("batch", 5000);
const RUNS = arg("runs", 3);
// Loopback, as fero's own W4: no compression (`--gzip` to measure with it).
const ENCODING = process.argv.includes("--gzip") ? undefined : "identity";
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

/** CPU seconds (user + system) of process `pid` (or one of its threads), from /proc. */
const processCpu = (pid, thread = undefined) => {
  const stat = readFileSync(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100 Hz)
};
/** Seconds the main thread waited on a run queue (ready, no CPU free), from /proc schedstat. */
const runqueueWait = () => Number(readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, "utf8").split(" ")[1]) / 1e9;
const clientCpu = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};
/** Starts a stopwatch of wall time and both processes' CPU time. */
const stopwatch = (serverPid) => {
  const wall = performance.now();
  const client = clientCpu();
  const main = processCpu(process.pid, process.pid);
  const waited = runqueueWait();
  const server = processCpu(serverPid);
  return () => ({
    seconds: (performance.now() - wall) / 1000,
    client_main_runqueue_s: +(runqueueWait() - waited).toFixed(2),
    client_cpu_s: +(clientCpu() - client).toFixed(2),
    client_main_cpu_s: +(processCpu(process.pid, process.pid) - main).toFixed(2),
    server_cpu_s: +(processCpu(serverPid) - server).toFixed(2),
  });
};

const rss = () => {
  const status = readFileSync("/proc/self/status", "utf8");
  return Number(status.match(/VmHWM:\s+(\d+)/)[1]) / 1024;
};

const server = await startServer({ args: ["--body-limit", String(16 * 1024 * 1024)], release: true });
console.error(`server: ${server.binary}`);
try {
  // Seeded in pages, so the bench process does not hold N rows of its own while it measures
  // (a web client would not: they would only add to the heap its garbage collector traces).
  const seeder = await FeroClient.create({ url: server.url, token: ALICE, store: memoryStore(), pushBatchCount: 5000, pushBatchBytes: 8 * 1024 * 1024 });
  const seeded = performance.now();
  for (let at = 0; at < N; at += 5000) {
    const changes = [];
    for (let i = at; i < Math.min(N, at + 5000); i++) changes.push({ id: `item-${String(i).padStart(7, "0")}`, base_version: null, data: item(i) });
    await seeder.push("items", changes);
  }
  console.error(`seeded ${N} rows in ${((performance.now() - seeded) / 1000).toFixed(2)} s`);

  for (let run = 0; run < RUNS; run++) {
    // Raw pull: pages parsed, nothing stored.
    const raw = await FeroClient.create({ url: server.url, token: ALICE, store: memoryStore(), acceptEncoding: ENCODING });
    let stop = stopwatch(server.pid);
    let checkpoint = null;
    let rows = 0;
    for (;;) {
      const page = await raw.pull("items", checkpoint, BATCH);
      rows += page.items.length;
      checkpoint = page.checkpoint;
      if (!page.has_more) break;
    }
    let time = stop();
    console.log(JSON.stringify({ workload: "W4-js-raw", n: rows, batch: BATCH, seconds: +time.seconds.toFixed(3), items_per_s: Math.round(rows / time.seconds), client_cpu_s: time.client_cpu_s, client_main_cpu_s: time.client_main_cpu_s, server_cpu_s: time.server_cpu_s }));

    // Into RxDB's memory storage through replicateFero (push side on, as an app runs it).
    const db = await createRxDatabase({ name: `w4js${run}${Date.now()}`, storage: getRxStorageMemory(), multiInstance: false });
    await db.addCollections({ items: { schema } });
    const session = PROFILE && run === RUNS - 1 ? new Session() : undefined;
    if (session) {
      session.connect();
      await session.post("Profiler.enable");
      await session.post("Profiler.start");
    }
    stop = stopwatch(server.pid);
    const replication = await replicateFero({
      collection: db.items,
      url: server.url,
      token: ALICE,
      store: memoryStore(),
      live: false,
      acceptEncoding: ENCODING,
      pullBatchSize: BATCH,
    });
    await replication.awaitInitialReplication();
    time = stop();
    if (session) {
      const { profile } = await session.post("Profiler.stop");
      writeFileSync(PROFILE, JSON.stringify(profile));
      session.disconnect();
    }
    const count = await db.items.count().exec();
    if (count !== N) throw new Error(`RxDB holds ${count} rows, expected ${N}`);
    console.log(
      JSON.stringify({
        workload: "W4-js",
        n: count,
        batch: BATCH,
        seconds: +time.seconds.toFixed(3),
        items_per_s: Math.round(count / time.seconds),
        client_cpu_s: time.client_cpu_s,
        client_main_cpu_s: time.client_main_cpu_s,
        client_main_runqueue_s: time.client_main_runqueue_s,
        items_per_s_without_runqueue: Math.round(count / (time.seconds - time.client_main_runqueue_s)),
        server_cpu_s: time.server_cpu_s,
        peak_rss_mb: +rss().toFixed(1),
      }),
    );
    await replication.cancel();
    await db.remove();
  }
} finally {
  await server.stop();
}
