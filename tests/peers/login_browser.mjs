// Browser sessions through the gateway in a real browser, for the session tests.
// Usage: node login_browser.mjs STATE_FILE GATEWAY_URL IDP_URL STEP[,STEP...]
// Runs the named steps in order with one browser context whose cookies are loaded from and
// saved to STATE_FILE (so the Rust test can stop the IdP, or switch gateways, between runs),
// and prints one JSON object: what each step saw.
import { chromium } from 'playwright-core';
import { existsSync, writeFileSync } from 'node:fs';

const [stateFile, gw, idp, stepList] = process.argv.slice(2);
const steps = stepList.split(',');
const out = {};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const contextOptions = { ignoreHTTPSErrors: true };
const xhr = { headers: { accept: 'application/json' }, maxRedirects: 0 };

// Logs in on `page` (already at the IdP's sign-in form) as `user`, with a second factor
// when `mfa`, and waits until the browser is back at the gateway.
async function signIn(page, user, mfa) {
  await page.locator('#login').waitFor({ timeout: 15000 });
  await page.fill('#login', user);
  await page.fill('#password', 'pw');
  if (mfa) await page.check('#otp');
  try {
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(gw), { timeout: 15000 }),
      page.click('#signin'),
    ]);
  } catch (e) {
    throw new Error(`${e.message}\nat ${page.url()}: ${(await page.content()).slice(0, 600)}`);
  }
  await page.waitForLoadState('load');
}

function hops(page) {
  const seen = [];
  page.on('response', (r) => seen.push({ url: r.url(), status: r.status() }));
  return seen;
}

const sessionCookie = async (context) => (await context.cookies(gw)).find((c) => c.name === '__Host-portcullis');

const run = {
  // Nothing yet: a fetch gets 401, a navigation goes to the IdP, signing in lands back on
  // the page first asked for; the cookie's flags.
  async login(context) {
    const unauth = await context.request.get(`${gw}/app/data`, xhr);
    out.xhrWithoutSession = { status: unauth.status(), body: await unauth.json().catch(() => null) };
    const page = await context.newPage();
    const seen = hops(page);
    await page.goto(`${gw}/app/page?x=1`);
    out.firstHop = seen[0];
    out.atIdp = page.url().startsWith(idp);
    out.authorizeUrl = seen.find((h) => h.url.startsWith(`${idp}/auth`))?.url;
    await signIn(page, 'alice', false);
    out.landed = page.url();
    out.callback = seen.find((h) => h.url.includes('/auth/callback'));
    const cookie = await sessionCookie(context);
    out.cookie = cookie && {
      httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite,
      path: cookie.path, expires: cookie.expires, size: cookie.value.length,
    };
    out.cookieVisibleToScript = await page.evaluate(() => document.cookie.includes('portcullis'));
    const after = await context.request.get(`${gw}/app/data`, xhr);
    out.xhrWithSession = after.status();
    await page.close();
  },

  // Two tabs start logging in before either finishes; both land where they started.
  async twoTabs(context) {
    await context.clearCookies();
    const [a, b] = [await context.newPage(), await context.newPage()];
    await a.goto(`${gw}/app/tab-a`);
    await b.goto(`${gw}/app/tab-b`);
    out.pendingCookies = (await context.cookies(gw)).filter((c) => c.name.startsWith('__Host-portcullis-login-')).length;
    await signIn(b, 'bob', false);
    await signIn(a, 'bob', false);
    out.tabs = [a.url(), b.url()];
    out.tabsStatus = (await context.request.get(`${gw}/app/data`, xhr)).status();
  },

  // The callback URL of a finished login, used again here and from a fresh browser.
  async replay(context) {
    const page = await context.newPage();
    const seen = hops(page);
    await context.clearCookies();
    await page.goto(`${gw}/app/replay`);
    await signIn(page, 'carol', false);
    const callback = seen.find((h) => h.url.includes('/auth/callback')).url;
    out.replaySameBrowser = (await page.goto(callback)).status();
    const fresh = await browser.newContext(contextOptions);
    const other = await fresh.newPage();
    out.replayOtherBrowser = (await other.goto(callback)).status();
    out.replayOtherCookie = Boolean(await sessionCookie(fresh));
    await fresh.close();
  },

  // A session cookie with one character changed is no session at all.
  async tamper(context) {
    const cookie = await sessionCookie(context);
    const chars = cookie.value.split('');
    chars[20] = chars[20] === 'A' ? 'B' : 'A';
    const forged = await browser.newContext(contextOptions);
    await forged.addCookies([{ ...cookie, value: chars.join('') }]);
    out.tamperedXhr = (await forged.request.get(`${gw}/app/data`, xhr)).status();
    const page = await forged.newPage();
    const seen = hops(page);
    await page.goto(`${gw}/app/page`);
    out.tamperedNavigation = seen[0]?.status;
    await forged.close();
  },

  // Requests every 500 ms for 10 s: past the access token's expiry nothing fails.
  async keepWorking(context) {
    const statuses = [];
    const until = Date.now() + 10000;
    while (Date.now() < until) {
      statuses.push((await context.request.get(`${gw}/app/data`, xhr)).status());
      await new Promise((r) => setTimeout(r, 500));
    }
    out.keepWorking = statuses;
  },

  // Waits out the token's lifetime untouched, then sends 20 requests at once.
  async parallel(context) {
    await new Promise((r) => setTimeout(r, 9000));
    const before = await (await fetch(`${idp}/__stats`)).json();
    const answers = await Promise.all(Array.from({ length: 20 },
      () => context.request.get(`${gw}/app/data`, xhr)));
    const after = await (await fetch(`${idp}/__stats`)).json();
    out.parallelStatuses = answers.map((a) => a.status());
    out.parallelRefreshes = (after.refresh_token || 0) - (before.refresh_token || 0);
    out.parallelRefreshErrors = (after.refresh_token_error || 0) - (before.refresh_token_error || 0);
  },

  // As `parallel`, with 20 more at once on the gateway at $GW2 (sharing the session store).
  async parallelBoth(context) {
    await new Promise((r) => setTimeout(r, 9000));
    const answers = await Promise.all([gw, process.env.GW2].flatMap((base) => Array.from({ length: 20 },
      () => context.request.get(`${base}/app/data`, xhr))));
    out.parallelStatuses = answers.map((a) => a.status());
  },

  // Waits out the token's lifetime; then a fetch and a navigation (the IdP is down by now).
  async afterExpiry(context) {
    await new Promise((r) => setTimeout(r, 9000));
    const answer = await context.request.get(`${gw}/app/data`, xhr);
    out.expiredXhr = answer.status();
    const navigation = await context.request.get(`${gw}/app/page`, {
      headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate' }, maxRedirects: 0,
    });
    out.expiredNavigation = { status: navigation.status(), location: navigation.headers().location };
  },

  // Unsafe requests: from the gateway's own page (allowed), from another origin (refused).
  async csrf(context) {
    const page = await context.newPage();
    await page.goto(`${gw}/app/page`);
    out.sameOriginPost = await page.evaluate(async () => (await fetch('/app/data', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
    })).status);
    await page.goto(`${idp}/.well-known/openid-configuration`);
    out.crossOriginPost = await page.evaluate(async (target) => {
      try {
        await fetch(target, { method: 'POST', credentials: 'include', mode: 'no-cors', body: 'x' });
        return 'sent';
      } catch (e) { return String(e); }
    }, `${gw}/app/data`);
    out.forgedPost = (await context.request.post(`${gw}/app/data`, {
      headers: { origin: 'https://evil.test', 'sec-fetch-site': 'cross-site' }, data: '{}', maxRedirects: 0,
    })).status();
  },

  // A route that needs MFA: a fetch gets the RFC 9470 challenge, a navigation signs in again.
  async stepUp(context) {
    const challenge = await context.request.get(`${gw}/secure/data`, xhr);
    out.stepUpXhr = { status: challenge.status(), auth: challenge.headers()['www-authenticate'] };
    const page = await context.newPage();
    const seen = hops(page);
    await page.goto(`${gw}/secure/page`);
    out.stepUpAuthorize = seen.find((h) => h.url.startsWith(`${idp}/auth`))?.url;
    out.stepUpAsked = await page.locator('#login').count();
    await signIn(page, 'alice', true);
    out.stepUpLanded = { url: page.url(), status: seen.filter((h) => h.url === page.url()).pop()?.status };
    out.stepUpXhrAfter = (await context.request.get(`${gw}/secure/data`, xhr)).status();
  },

  // Logout: a confirm page, then the IdP's own sign-out; the old cookie is dead after.
  async logout(context) {
    const before = await sessionCookie(context);
    const page = await context.newPage();
    await page.goto(`${gw}/auth/logout`);
    out.logoutConfirm = await page.locator('form[method="post"] #logout').count();
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(idp)), page.click('#logout')]);
    out.endSessionUrl = page.url();
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(gw)), page.click('#idp-logout')]);
    out.afterLogout = page.url();
    out.cookieAfterLogout = Boolean(await sessionCookie(context));
    out.xhrAfterLogout = (await context.request.get(`${gw}/app/data`, xhr)).status();
    const replayed = await browser.newContext(contextOptions);
    await replayed.addCookies([before]);
    out.oldCookieAfterLogout = (await replayed.request.get(`${gw}/app/data`, xhr)).status();
    await replayed.close();
    // The IdP's session ended too: logging in asks for credentials again.
    await page.goto(`${gw}/app/page`);
    out.idpAsksAgain = page.url().startsWith(idp) && (await page.locator('#login').count()) === 1;
  },

  // `portcullis demo --login`: its development IdP, its items page, adding an item, signing out.
  async demo(context) {
    const page = await context.newPage();
    await page.goto(`${gw}/api/app`);
    out.demoAtIdp = page.url().startsWith(idp);
    await page.selectOption('#user', 'alice');
    await Promise.all([page.waitForURL(`${gw}/api/app`), page.click('#signin')]);
    out.demoUser = await page.locator('#user').textContent();
    await page.fill('#name', 'from-the-browser');
    await Promise.all([page.waitForURL(`${gw}/api/app`), page.click('#add')]);
    out.demoItems = await page.locator('#items li').allTextContents();
    out.demoCookie = Boolean(await sessionCookie(context));
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(gw) && !u.toString().includes('/auth/')), page.click('#logout')]);
    out.demoAfterLogout = (await context.request.get(`${gw}/api/app`, xhr)).status();
  },

  // Just a fetch (another gateway instance sharing the session store).
  async fetch(context) {
    out.fetch = (await context.request.get(`${gw}/app/data`, xhr)).status();
  },
};

try {
  const context = await browser.newContext({
    ...contextOptions, storageState: existsSync(stateFile) ? stateFile : undefined,
  });
  for (const step of steps) {
    try { await run[step](context); } catch (e) { out[`${step}Error`] = String(e); break; }
  }
  writeFileSync(stateFile, JSON.stringify(await context.storageState()));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
