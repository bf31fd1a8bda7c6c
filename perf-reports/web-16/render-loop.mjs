import { launchBrowser } from "/work/main/web/tests/support.mjs";
const browser = await launchBrowser();
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
await page.goto("http://127.0.0.1:7555/?graph=debian&user=dbg" + (process.argv[2] ?? ""));
await page.waitForFunction(() => window.gitmind?.firstRender() !== null, null, { timeout: 200000, polling: 100 });
const renderFps = () => page.evaluate(() => new Promise((res) => { const v = window.gitmind.view; let n = 0; const t0 = performance.now(); const f = () => { n++; v.sigma.render(); if (performance.now() - t0 < 4000) requestAnimationFrame(f); else res(Math.round(10 * n / ((performance.now() - t0) / 1000)) / 10); }; requestAnimationFrame(f); }));
console.log("sizes as is", await renderFps());
for (const size of [3, 1.5, 0.7]) {
  await page.evaluate((size) => { const v = window.gitmind.view; v.graph.updateEachNodeAttributes((id, a) => ({ ...a, size }), { attributes: ["size"] }); }, size);
  await new Promise(r => setTimeout(r, 3000));
  console.log("size", size, await renderFps());
}
await page.evaluate(() => window.gitmind.view.sigma.setSetting("pickingDownSizingRatio", 8));
console.log("size 0.7 + picking /8", await renderFps());
await browser.close();
