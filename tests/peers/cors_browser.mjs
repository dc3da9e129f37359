// A real browser making cross-origin calls, for the Portcullis CORS test.
// Usage: node cors_browser.mjs API_URL PAGE_URL...
// For each page: opens it in headless Chromium and, from that page, fetches API_URL with
// credentials and an Authorization header (so the browser sends a preflight first).
// Prints one JSON line per page: {page, status, body} when the page could read the answer,
// or {page, error} when the browser kept it from the page.
import { chromium } from 'playwright-core';

const [api, ...pages] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  for (const url of pages) {
    const page = await browser.newPage();
    await page.goto(url);
    const result = await page.evaluate(async (target) => {
      try {
        const response = await fetch(target, {
          method: 'POST',
          credentials: 'include',
          headers: { authorization: 'Bearer browser-token', 'content-type': 'application/json' },
          body: '{"from":"browser"}',
        });
        return { status: response.status, body: await response.text(),
          requestId: response.headers.get('x-request-id') };
      } catch (error) {
        return { error: String(error) };
      }
    }, api);
    console.log(JSON.stringify({ page: url, ...result }));
    await page.close();
  }
} finally {
  await browser.close();
}
