// FeroClient against a real fero-server: pull, push, digest, exactly-once replays, batching,
// typed errors and retries.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  FeroClient,
  PermanentError,
  ResyncRequiredError,
  TransientError,
  computeDigest,
  memoryStore,
  withRetry,
  backoffDelay,
  parseRetryAfter,
} from "../dist/index.js";
import { ALICE, startServer } from "./support.mjs";

let server;
before(async () => {
  server = await startServer({ args: ["--body-limit", "65536"] });
});
after(async () => server?.stop());

const client = (options = {}) => FeroClient.create({ url: server.url, token: ALICE, store: memoryStore(), ...options });

test("push, pull and digest agree with the server", async () => {
  const fero = await client();
  const results = await fero.push("notes", [
    { id: "a", base_version: null, data: { text: "one" } },
    { id: "b", base_version: null, data: { text: "two" } },
  ]);
  assert.deepEqual(results.map((r) => r.status), ["accepted", "accepted"]);
  const [deleted] = await fero.push("notes", [{ id: "b", base_version: 1, deleted: true }]);
  assert.equal(deleted.status, "accepted");
  const page = await fero.pull("notes", null, 10);
  assert.deepEqual(page.items.map((i) => [i.id, i.version, i.deleted]), [["a", 1, false], ["b", 2, true]]);
  assert.equal(page.has_more, false);
  const next = await fero.pull("notes", page.checkpoint, 10);
  assert.equal(next.items.length, 0);
  const live = page.items.filter((i) => !i.deleted);
  assert.deepEqual(await fero.digest("notes"), computeDigest(live));
});

test("mutation ids come from a durable sequence that survives a restart", async () => {
  const store = memoryStore();
  const first = await client({ store });
  const [one, two] = await first.assignMutationIds([{ id: "x", base_version: null }, { id: "y", base_version: null }]);
  const again = await client({ store });
  const [three] = await again.assignMutationIds([{ id: "z", base_version: null }]);
  assert.equal(again.device.device, first.device.device);
  assert.ok(one.mutation_id.seq < two.mutation_id.seq && two.mutation_id.seq < three.mutation_id.seq);
});

test("a lost push response is replayed with the same mutation id and gets the same answer", async () => {
  let dropped = 0;
  const lossy = async (url, init) => {
    const response = await fetch(url, init);
    if (String(url).endsWith("/push") && dropped === 0) {
      dropped++;
      await response.arrayBuffer(); // the server committed; the answer never arrives
      throw new TypeError("fetch failed: connection reset");
    }
    return response;
  };
  const fero = await client({ fetch: lossy, retry: { baseDelayMs: 1 } });
  await fero.push("replay", [{ id: "r", base_version: null, data: { n: 1 } }]);
  const [edit] = await fero.push("replay", [{ id: "r", base_version: 1, data: { n: 2 } }]);
  assert.equal(dropped, 1);
  // The first push was committed, its answer lost, and the retry was answered from the stored
  // result: base 1 holds, so the edit was accepted as version 2, not a self-conflict.
  assert.equal(edit.status, "accepted");
  const page = await fero.pull("replay", null, 10);
  assert.deepEqual(page.items.map((i) => [i.id, i.version, i.data]), [["r", 2, { n: 2 }]]);

  // Replaying an answered change (same mutation id, stale base) gets its original answer.
  const [original] = await fero.push("replay", [{ id: "q", base_version: null, data: {} }]);
  const [replayed] = await fero.push("replay", [
    { id: "q", base_version: null, data: {}, mutation_id: original.mutation_id },
  ]);
  assert.deepEqual(replayed, original);
});

test("pushes are split by count and by bytes; a 413 splits further", async () => {
  const bodies = [];
  const counting = async (url, init) => {
    if (String(url).endsWith("/push")) bodies.push(init.body.length);
    return fetch(url, init);
  };
  const byCount = await client({ fetch: counting, pushBatchCount: 40 });
  const small = Array.from({ length: 100 }, (_, i) => ({ id: `c${i}`, base_version: null, data: { i } }));
  const results = await byCount.push("batches", small);
  assert.equal(results.length, 100);
  assert.ok(results.every((r) => r.status === "accepted"));
  assert.equal(bodies.length, 3);

  bodies.length = 0;
  const byBytes = await client({ fetch: counting, pushBatchBytes: 20_000 });
  const big = Array.from({ length: 60 }, (_, i) => ({ id: `b${i}`, base_version: null, data: { pad: "x".repeat(1000) } }));
  assert.ok((await byBytes.push("batches", big)).every((r) => r.status === "accepted"));
  assert.ok(bodies.length >= 3 && bodies.every((n) => n <= 20_000), `${bodies}`);

  // The server's limit is 64 KiB here: a 1 MiB batch gets 413 and is halved until it fits.
  bodies.length = 0;
  const tooBig = await client({ fetch: counting });
  const huge = Array.from({ length: 100 }, (_, i) => ({ id: `h${i}`, base_version: null, data: { pad: "y".repeat(2000) } }));
  const answers = await tooBig.push("batches", huge);
  assert.ok(answers.every((r) => r.status === "accepted"));
  assert.deepEqual(answers.map((r) => r.id), huge.map((c) => c.id));
  assert.ok(bodies.length > 2);
});

test("errors are typed: permanent, resync, transient with Retry-After", async () => {
  const wrongToken = await FeroClient.create({ url: server.url, token: "nope", store: memoryStore() });
  await assert.rejects(wrongToken.pull("notes", null), (e) => e instanceof PermanentError && e.code === "unauthorized" && e.status === 401);
  const fero = await client();
  await assert.rejects(fero.pull("Bad Name", null), (e) => e instanceof PermanentError && e.code === "invalid_collection");

  const gone = await client({
    fetch: async () => new Response(JSON.stringify({ error: { code: "resync_required", message: "behind horizon" } }), { status: 410 }),
  });
  await assert.rejects(gone.pull("notes", { last_sync_id: 3 }), (e) => e instanceof ResyncRequiredError && e.kind === "resync");

  // 503 with Retry-After: 2, then success: the wait honours the header over a shorter backoff.
  const waits = [];
  let calls = 0;
  const flaky = await client({
    retry: { sleep: async (ms) => void waits.push(ms), random: () => 0 },
    fetch: async (url, init) =>
      ++calls === 1
        ? new Response("busy", { status: 503, headers: { "retry-after": "2" } })
        : fetch(url, init),
  });
  const page = await flaky.pull("notes", null, 1);
  assert.equal(page.items.length, 1);
  assert.deepEqual(waits, [2000]);
});

test("backoff grows exponentially with jitter, capped", () => {
  const options = { baseDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(backoffDelay(1, { ...options, random: () => 0 }), 50);
  assert.equal(backoffDelay(1, { ...options, random: () => 0.999 }), 99);
  assert.equal(backoffDelay(3, { ...options, random: () => 0 }), 200);
  assert.equal(backoffDelay(10, { ...options, random: () => 0 }), 500);
  assert.equal(parseRetryAfter("3"), 3000);
  assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
  assert.equal(parseRetryAfter(null), undefined);
});

test("withRetry gives up after its attempts, and never retries a permanent error", async () => {
  let tries = 0;
  await assert.rejects(
    withRetry(async () => { tries++; throw new TransientError("down"); }, { attempts: 3, sleep: async () => {} }),
    TransientError,
  );
  assert.equal(tries, 3);
  tries = 0;
  await assert.rejects(withRetry(async () => { tries++; throw new PermanentError("bad"); }, { sleep: async () => {} }), PermanentError);
  assert.equal(tries, 1);
});

test("the change stream announces a push to another device over fetch with the token in a header", async () => {
  const listener = await client();
  const writer = await client();
  const notices = [];
  let opened;
  const isOpen = new Promise((r) => (opened = r));
  const stream = listener.changes({ onChange: (n) => notices.push(n), onOpen: opened });
  await isOpen;
  const [result] = await writer.push("stream", [{ id: "s", base_version: null, data: {} }]);
  const deadline = Date.now() + 5000;
  while (notices.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  stream.close();
  assert.deepEqual(notices[0], { collection: "stream", sync_id: result.sync_id });
});
