// The Portcullis dashboard in a real browser, for the dashboard test.
// Usage: node dashboard_browser.mjs ADMIN_URL TOKEN REFUSED_URL SHOTS_DIR
// Signs in (a wrong token first), waits for the live stream, fetches REFUSED_URL from
// outside the page (a request the gateway refuses) and waits for its event to appear
// live, reads the inventory, downloads the OpenAPI export, and takes screenshots.
// Prints one JSON object with what it saw.
import { chromium } from 'playwright-core';
import { readFile } from 'node:fs/promises';

const [admin, token, refusedUrl, shots] = process.argv.slice(2);
const origin = new URL(admin).origin;
const seen = { requests: [], offsite: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 1100 } });
  const page = await context.newPage();
  page.on('request', (r) => {
    seen.requests.push(r.url());
    if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) seen.offsite.push(r.url());
  });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Script errors only: the refused sign-in and the signed-out check are 401s on purpose.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });

  const first = await page.goto(`${admin}/`);
  seen.loginCsp = first.headers()['content-security-policy'];
  seen.loginForm = await page.locator('form[action="/login"] input[name="token"]').count();
  await page.screenshot({ path: `${shots}/login.png` });

  await page.fill('input[name="token"]', 'wrong-token');
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  seen.wrongTokenMessage = await page.locator('.error').textContent();

  await page.fill('input[name="token"]', token);
  const [signedIn] = await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  seen.dashboardStatus = signedIn ? signedIn.status() : null;
  seen.dashboardCsp = (await page.request.get(`${admin}/`)).headers()['content-security-policy'];
  const cookie = (await context.cookies()).find((c) => c.name === 'portcullis_admin');
  seen.cookie = cookie ? { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, secure: cookie.secure } : null;
  seen.cookieVisibleToScript = await page.evaluate(() => document.cookie.includes('portcullis_admin'));

  await page.locator('#stream-state.live').waitFor({ timeout: 15000 });
  // A refused request, made outside the page; its event must appear live.
  const refused = await fetch(refusedUrl);
  seen.refusedStatus = refused.status;
  const requestId = refused.headers.get('x-request-id');
  const row = page.locator('#events tr', { hasText: 'encoded_slash' }).first();
  await row.waitFor({ timeout: 15000 });
  seen.liveRow = await row.textContent();
  seen.liveRequestId = requestId;

  // The inventory and offenders panels refresh every 5 s.
  await page.locator('#inventory tr.shadow').first().waitFor({ timeout: 15000 });
  seen.shadowRows = await page.locator('#inventory tr.shadow').allTextContents();
  seen.documentedRows = await page.locator('#inventory tr.documented').count();
  await page.locator('#by-route .bar').first().waitFor({ timeout: 15000 });
  seen.routeBars = await page.locator('#by-route .bar').allTextContents();
  seen.health = await page.locator('#health').textContent();
  seen.offenders = await page.locator('#offenders').textContent();
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#openapi')]);
  const exported = JSON.parse(await readFile(await download.path(), 'utf8'));
  seen.exported = { openapi: exported.openapi, paths: Object.keys(exported.paths || {}) };

  // Signing out ends the session: the admin API refuses the cookie from then on.
  await Promise.all([page.waitForNavigation(), page.click('form[action="/logout"] button')]);
  seen.afterLogout = (await page.request.get(`${admin}/admin/offenders`)).status();
  seen.errors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
