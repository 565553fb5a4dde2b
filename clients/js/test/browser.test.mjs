// A real browser: Debian's chromium driven by puppeteer-core. The todo example (RxDB on
// IndexedDB) open in two browser contexts syncs live through fero-server; one goes offline,
// edits, comes back, and both converge.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import puppeteer from "puppeteer-core";
import { ALICE, eventually, startServer } from "./support.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TODO = join(dirname(fileURLToPath(import.meta.url)), "..", "examples", "todo");
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

let site;
let siteOrigin;
let server;
let browser;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
  site = createServer(async (request, response) => {
    const path = normalize(new URL(request.url, "http://x").pathname).replace(/^\/+/, "") || "index.html";
    try {
      const body = await readFile(join(TODO, path));
      response.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  siteOrigin = `http://127.0.0.1:${site.address().port}`;
  // The page and the API are on different origins (different ports): CORS is what lets it in.
  server = await startServer({ args: ["--cors-origin", siteOrigin] });
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await new Promise((r) => (site ? site.close(r) : r()));
});

async function openApp() {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${siteOrigin}/index.html#url=${encodeURIComponent(server.url)}&token=${ALICE}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 20_000 }).catch((error) => {
    throw new Error(`the app did not start: ${errors.join("; ") || error}`);
  });
  return { context, page, errors };
}

const list = (app) => app.page.evaluate(() => window.todo.list());
const titles = async (app) => (await list(app)).map((t) => `${t.id}:${t.title}`).join(",");

test("two browser contexts sync live; one goes offline, edits, comes back, and both converge", async () => {
  const a = await openApp();
  const b = await openApp();

  const start = Date.now();
  await a.page.evaluate(() => window.todo.add("t1", "buy milk"));
  await eventually(async () => (await titles(b)) === "t1:buy milk", 10_000, "B sees A's todo");
  console.log(`BROWSER_LIVE_MS ${Date.now() - start}`);
  // The DOM shows it too.
  await b.page.waitForSelector('li[data-id="t1"]', { timeout: 5000 });

  // B goes offline and edits; A edits meanwhile.
  await b.page.setOfflineMode(true);
  await b.page.evaluate(async () => {
    await window.todo.rename("t1", "buy oat milk");
    await window.todo.add("t2", "written offline");
  });
  await a.page.evaluate(() => window.todo.add("t3", "written online"));
  await eventually(async () => (await titles(a)).includes("t3"), 5000, "A has t3");
  assert.ok(!(await titles(a)).includes("t2"), "B's offline edit cannot have reached A");

  await b.page.setOfflineMode(false);
  const expected = "t1:buy oat milk,t2:written offline,t3:written online";
  await eventually(async () => (await titles(a)) === expected && (await titles(b)) === expected, 20_000, "both converge");
  const [la, lb] = [await list(a), await list(b)];
  assert.deepEqual(la, lb, "same rows and versions on both");
  assert.equal(la.find((t) => t.id === "t1").version, 2);
  assert.deepEqual(a.errors, []);
  await a.context.close();
  await b.context.close();
});
