// The todo example: RxDB on IndexedDB (the free Dexie storage) replicated with fero-server by
// `replicateFero`. The server URL and token come from the page's fragment
// (`index.html#url=http://127.0.0.1:7700&token=...`): a fragment never leaves the browser.
import { createRxDatabase } from "rxdb";
import { getRxStorageDexie } from "rxdb/plugins/storage-dexie";
import { replicateFero } from "../../src/rxdb.js";

const params = new URLSearchParams(location.hash.slice(1));
const url = params.get("url") ?? "http://127.0.0.1:7700";
const token = params.get("token") ?? "";

const db = await createRxDatabase({ name: "fero-todo", storage: getRxStorageDexie() });
await db.addCollections({
  todos: {
    schema: {
      version: 0,
      primaryKey: "id",
      type: "object",
      properties: {
        id: { type: "string", maxLength: 100 },
        title: { type: "string" },
        done: { type: "boolean" },
        version: { type: "number" },
      },
      required: ["id", "title", "done"],
    },
  },
});
const replication = await replicateFero({ collection: db.todos, url, token, retryTime: 500 });
const status = document.getElementById("status")!;
replication.error$.subscribe((error) => (status.textContent = `sync error: ${error.message}`));
replication.active$.subscribe((active) => (status.textContent = active ? "syncing…" : "in sync"));

const list = document.getElementById("list")!;
db.todos.find({ sort: [{ id: "asc" }] }).$.subscribe((docs) => {
  list.replaceChildren(
    ...docs.map((doc) => {
      const item = document.createElement("li");
      item.dataset.id = doc.id;
      item.className = doc.done ? "done" : "";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = doc.done;
      box.onchange = () => doc.incrementalPatch({ done: box.checked });
      const text = document.createElement("span");
      text.textContent = ` ${doc.title} `;
      const remove = document.createElement("button");
      remove.textContent = "×";
      remove.onclick = () => doc.remove();
      item.append(box, text, remove);
      return item;
    }),
  );
});

document.getElementById("add")!.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("title") as HTMLInputElement;
  if (!input.value.trim()) return;
  await db.todos.insert({ id: `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`, title: input.value.trim(), done: false });
  input.value = "";
});

// For scripted use (the browser test drives the app through these).
Object.assign(window, {
  todo: {
    add: (id: string, title: string) => db.todos.insert({ id, title, done: false }).then(() => undefined),
    rename: async (id: string, title: string) => void (await db.todos.findOne(id).exec())?.incrementalPatch({ title }),
    remove: async (id: string) => void (await db.todos.findOne(id).exec())?.remove(),
    list: async () =>
      (await db.todos.find({ sort: [{ id: "asc" }] }).exec()).map((d) => ({ id: d.id, title: d.title, done: d.done, version: d.version })),
    inSync: () => replication.awaitInSync(),
  },
});
document.body.dataset.ready = "true";
