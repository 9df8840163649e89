// The web page in a real browser (Debian's chromium, driven by playwright-core), against a
// running service: open a project, upload photos and a corrupt file through the file picker,
// see thumbnails and an error appear; drop the page's WebSocket, upload another photo through
// the API while it is down, and see the page catch up. Prints one JSON line with what it saw.
//
// Environment: GALLERY_URL, GALLERY_PROJECT, GALLERY_PHOTOS (comma-separated paths; the last
// one is uploaded while the page is offline), GALLERY_CORRUPT (a path), GALLERY_SCREENSHOT (a
// path), GALLERY_TOKEN (optional), CHROMIUM (default /usr/bin/chromium).
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const base = env("GALLERY_URL");
const project = env("GALLERY_PROJECT");
const photos = env("GALLERY_PHOTOS").split(",");
const corrupt = env("GALLERY_CORRUPT");
const screenshot = env("GALLERY_SCREENSHOT");
const token = process.env.GALLERY_TOKEN || "";
const timeout = 60_000;

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const seen = { console_errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") seen.console_errors.push(m.text()); });
  page.on("pageerror", (e) => seen.console_errors.push(String(e)));
  await page.goto(base + "/");
  await page.getByLabel("Project").fill(project);
  if (await page.locator("#token-field").isVisible()) {
    await page.getByLabel("Token").fill(token);
  }
  await page.getByRole("button", { name: "Open" }).click();
  await page.waitForFunction(() => document.body.dataset.live === "true", null, { timeout });

  // Two photos and a corrupt file through the file picker.
  const first = photos.slice(0, -1);
  await page.locator("#files").setInputFiles([...first, corrupt]);
  const thumbsLoaded = (n) => page.waitForFunction(
    (n) => [...document.querySelectorAll(".tile img")].filter((i) => i.complete && i.naturalWidth > 0).length >= n,
    n, { timeout });
  await thumbsLoaded(first.length);
  await page.waitForFunction(() => document.querySelector('.tile[data-state="error"] .why')?.textContent.length > 0, null, { timeout });
  seen.error_text = await page.locator('.tile[data-state="error"] .why').first().textContent();
  seen.progress = await page.locator("#uploads progress").evaluateAll((bars) => bars.map((b) => b.value));

  // Placeholders: every done tile has its ThumbHash painted as its background, decoded by the
  // page; report each one's mean colour so the test compares it with the Rust decoder's.
  await page.waitForFunction(
    (n) => [...document.querySelectorAll('.tile[data-state="done"]')].filter((t) => t.dataset.placeholder).length >= n,
    first.length, { timeout });
  seen.placeholders = await page.evaluate(async () => {
    const out = [];
    for (const tile of document.querySelectorAll('.tile[data-state="done"]')) {
      const url = tile.querySelector(".thumb").style.backgroundImage.replace(/^url\("?|"?\)$/g, "");
      const img = new Image();
      img.src = url;
      await img.decode();
      const canvas = document.createElement("canvas");
      [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
      const g = canvas.getContext("2d");
      g.drawImage(img, 0, 0);
      const px = g.getImageData(0, 0, canvas.width, canvas.height).data;
      const mean = [0, 0, 0];
      for (let i = 0; i < px.length; i += 4) for (let c = 0; c < 3; c++) mean[c] += px[i + c];
      out.push({
        thumbhash: tile.dataset.placeholder,
        width: canvas.width,
        height: canvas.height,
        mean: mean.map((m) => m / (px.length / 4)),
      });
    }
    return out;
  });
  // The same photo again: the page sends its SHA-256 and the api says the project has it.
  await page.locator("#files").setInputFiles([first[0]]);
  await page.waitForFunction(
    () => [...document.querySelectorAll("#uploads .msg")].some((m) => m.textContent === "already in this project"),
    null, { timeout });
  seen.duplicate_tiles = await page.locator(".tile").count();

  // The connection drops; a photo is uploaded meanwhile (through the API, as another client
  // would); the page reconnects with ?since and shows it.
  await page.evaluate(() => window.gallery.dropConnection(3000));
  await page.waitForFunction(() => document.body.dataset.live === "false", null, { timeout });
  const last = photos[photos.length - 1];
  const auth = token ? { authorization: "Bearer " + token } : {};
  const link = await (await fetch(base + "/images/", {
    method: "POST",
    headers: { "content-type": "application/json", ...auth },
    body: JSON.stringify({ filename: basename(last), project_id: project }),
  })).json();
  const form = new FormData();
  for (const [k, v] of Object.entries(link.params)) form.append(k, v);
  form.append("file", new Blob([readFileSync(last)], { type: link.params["Content-Type"] }), basename(last));
  const sent = await fetch(link.upload_link, { method: "POST", body: form });
  if (!sent.ok) throw new Error(`uploading while offline: HTTP ${sent.status}`);
  await fetch(`${base}/images/${link.image_id}/complete`, { method: "POST", headers: auth });
  await page.waitForFunction(() => document.body.dataset.live === "true", null, { timeout });
  await page.waitForFunction(
    (id) => { const img = document.querySelector(`.tile[data-image-id="${id}"] img`); return img && img.complete && img.naturalWidth > 0; },
    link.image_id, { timeout });
  seen.caught_up = link.image_id;

  // The larger view opens on click and closes from the keyboard.
  await page.locator(`.tile[data-image-id="${link.image_id}"] button`).click();
  await page.waitForFunction(() => { const i = document.getElementById("viewer-img"); return i.complete && i.naturalWidth > 0; }, null, { timeout });
  seen.viewer_width = await page.locator("#viewer-img").evaluate((i) => i.naturalWidth);
  await page.keyboard.press("Escape");

  seen.tiles = await page.locator(".tile").evaluateAll((tiles) => tiles.map((t) => ({
    state: t.dataset.state,
    thumb: !!t.querySelector("img"),
    alt: t.querySelector("img")?.alt ?? null,
  })));
  await page.screenshot({ path: screenshot, fullPage: true });
  // The viewer deletes the failed image (after the confirmation): its tile goes.
  page.once("dialog", (d) => d.accept());
  await page.locator('.tile[data-state="error"] button').click();
  await page.getByRole("button", { name: "Delete" }).click();
  await page.waitForFunction(() => !document.querySelector('.tile[data-state="error"]'), null, { timeout });
  seen.tiles_after_delete = await page.locator(".tile").count();
  // Phone width: nothing overflows sideways.
  await page.setViewportSize({ width: 375, height: 800 });
  seen.phone_overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  // The API docs page renders /openapi.json (under the same CSP, console watched).
  await page.setViewportSize({ width: 1100, height: 900 });
  await page.goto(base + "/docs");
  await page.waitForSelector('#doc[aria-busy="false"]', { timeout });
  seen.docs = await page.evaluate(() => ({
    operations: document.querySelectorAll("section.op").length,
    websocket: !!document.getElementById("op-subscribe"),
    ws_message_fields: document.querySelectorAll("#schema-WsMessage tbody tr").length,
  }));
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
