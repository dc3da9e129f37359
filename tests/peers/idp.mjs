// A real OpenID provider (the `oidc-provider` package) for the Portcullis tests.
// Usage: node idp.mjs  -> prints "listening on http://127.0.0.1:PORT" once ready.
// With TLS_CERT and TLS_KEY (PEM file paths) set it serves https instead, and the issuer is
// https://127.0.0.1:PORT.
// Clients: `gateway-test` / `test-secret` (client_credentials). Access tokens are RFC 9068
// JWTs (ES256, typ at+jwt) for the resource https://api.test, and opaque tokens for
// https://opaque.test (checked through RFC 7662 introspection at /token/introspection).
// Browser logins: the confidential client `portal` / `portal-secret` (authorization code with
// PKCE, refresh tokens rotated on every use, RP-initiated logout). Its redirect URIs are set
// by POST /__portal {"redirect_uris": [...], "post_logout_redirect_uris": [...]}; access
// tokens for it live AT_TTL seconds (env, default 300). The login page takes any user name
// with the password `pw`; ticking "second factor" logs in with MFA (acr mfa, amr pwd+otp).
// GET /__stats counts token endpoint calls by grant type (successes and errors).
// Bound tokens: `dpop-client` / `dpop-secret` (client_credentials) must send a DPoP proof
// (RFC 9449) with its token request and gets JWTs bound to that key (cnf.jkt);
// `mtls-client` / `mtls-secret`, over https with a client certificate, gets JWTs bound to
// that certificate (RFC 8705, cnf.x5t#S256). Any client certificate is taken: binding, not
// client authentication, is what the tests need.
// Test control: POST /__rotate makes a new signing key current (the old one stays published).
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { X509Certificate, generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const RESOURCE = 'https://api.test';
const AT_TTL = Number(process.env.AT_TTL || 300);
let portal = { redirect_uris: [], post_logout_redirect_uris: [] };
const stats = {};
const count = (key) => { stats[key] = (stats[key] || 0) + 1; };
const OPAQUE_RESOURCE = 'https://opaque.test';

function newKey() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'ES256', use: 'sig' };
}

function provider(issuer, keys) {
  const p = new Provider(issuer, {
    clients: [{
      client_id: 'gateway-test',
      client_secret: 'test-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    }, {
      client_id: 'dpop-client',
      client_secret: 'dpop-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      dpop_bound_access_tokens: true,
      id_token_signed_response_alg: 'ES256',
    }, {
      client_id: 'mtls-client',
      client_secret: 'mtls-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      tls_client_certificate_bound_access_tokens: true,
      id_token_signed_response_alg: 'ES256',
    }, {
      client_id: 'portal',
      client_secret: 'portal-secret',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: portal.redirect_uris,
      post_logout_redirect_uris: portal.post_logout_redirect_uris,
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
      require_auth_time: true,
    }],
    findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id, name: id }) }),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    acrValues: ['pwd', 'mfa'],
    claims: { openid: ['sub'], profile: ['name'] },
    cookies: { keys: ['portcullis-test-idp-cookie-key'] },
    jwks: { keys },
    features: {
      clientCredentials: { enabled: true },
      dPoP: { enabled: true },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        getCertificate: (ctx) => {
          const peer = ctx.req.socket.getPeerCertificate?.();
          return peer && peer.raw ? new X509Certificate(peer.raw) : undefined;
        },
      },
      introspection: { enabled: true },
      revocation: { enabled: true },
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.body = `<!doctype html><html><body><h1>IdP sign-out</h1>${form}
            <button id="idp-logout" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button></body></html>`;
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => (resource === OPAQUE_RESOURCE
          ? { scope: 'items:read items:write', audience: OPAQUE_RESOURCE, accessTokenFormat: 'opaque', accessTokenTTL: 300 }
          : {
            scope: 'items:read items:write',
            audience: RESOURCE,
            accessTokenFormat: 'jwt',
            accessTokenTTL: client?.clientId === 'portal' ? AT_TTL : 300,
            jwt: { sign: { alg: 'ES256' } },
          }),
      },
    },
    scopes: ['items:read', 'items:write'],
  });
  p.proxy = false;
  p.on('grant.success', (ctx) => count(`${ctx.oidc.params.grant_type}`));
  p.on('grant.error', (ctx) => count(`${ctx.oidc.params?.grant_type}_error`));
  return p;
}

let keys = [newKey()];
let current;
const tls = process.env.TLS_CERT && process.env.TLS_KEY
  ? {
    cert: readFileSync(process.env.TLS_CERT),
    key: readFileSync(process.env.TLS_KEY),
    requestCert: true,
    rejectUnauthorized: false,
  }
  : null;
const scheme = tls ? 'https' : 'http';
const readBody = (req) => new Promise((resolve) => {
  let data = '';
  req.on('data', (c) => { data += c; if (data.length > 65536) req.destroy(); });
  req.on('end', () => resolve(data));
});

const loginPage = (uid, prompt) => `<!doctype html><html><body><h1>Test IdP sign-in</h1>
<p id="prompt">${prompt}</p>
<form method="post" action="/interaction/${uid}/login">
<input name="login" id="login" placeholder="user"><input name="password" id="password" type="password">
<label><input type="checkbox" name="otp" id="otp" value="1"> second factor</label>
<button type="submit" id="signin">Sign in</button></form></body></html>`;

async function interaction(req, res) {
  const match = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
  const uid = match[1];
  if (req.method === 'GET') {
    const details = await current.interactionDetails(req, res);
    if (details.prompt.name === 'consent') {
      // First-party client: no consent screen; grant what is asked for.
      const missing = details.prompt.details;
      const grant = details.grantId
        ? await current.Grant.find(details.grantId)
        : new current.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      await current.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(loginPage(uid, details.prompt.name));
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  if (form.get('password') !== 'pw' || !form.get('login')) {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(loginPage(uid, 'wrong password'));
    return;
  }
  const mfa = form.get('otp') === '1';
  await current.interactionFinished(req, res, {
    login: { accountId: form.get('login'), acr: mfa ? 'mfa' : 'pwd', amr: mfa ? ['pwd', 'otp'] : ['pwd'] },
  }, { mergeWithLastSubmission: false });
}

const handler = async (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    try { await interaction(req, res); } catch (e) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(e));
    }
    return;
  }
  if (req.method === 'GET' && req.url === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  if (req.method === 'POST' && req.url === '/__portal') {
    portal = JSON.parse(await readBody(req));
    current = provider(current.issuer, keys);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
    return;
  }
  if (req.method === 'POST' && req.url === '/__rotate') {
    keys = [newKey(), ...keys];
    current = provider(current.issuer, keys);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kid: keys[0].kid }));
    return;
  }
  current.callback()(req, res);
};
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  current = provider(`${scheme}://127.0.0.1:${port}`, keys);
  console.log(`listening on ${scheme}://127.0.0.1:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
