// A real OpenID provider (the `oidc-provider` package) for the Portcullis tests.
// Usage: node idp.mjs  -> prints "listening on http://127.0.0.1:PORT" once ready.
// With TLS_CERT and TLS_KEY (PEM file paths) set it serves https instead, and the issuer is
// https://127.0.0.1:PORT.
// Clients: `gateway-test` / `test-secret` (client_credentials). Access tokens are RFC 9068
// JWTs (ES256, typ at+jwt) for the resource https://api.test, and opaque tokens for
// https://opaque.test (checked through RFC 7662 introspection at /token/introspection).
// Test control: POST /__rotate makes a new signing key current (the old one stays published).
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const RESOURCE = 'https://api.test';
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
    }],
    jwks: { keys },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => (resource === OPAQUE_RESOURCE
          ? { scope: 'items:read items:write', audience: OPAQUE_RESOURCE, accessTokenFormat: 'opaque', accessTokenTTL: 300 }
          : {
            scope: 'items:read items:write',
            audience: RESOURCE,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 300,
            jwt: { sign: { alg: 'ES256' } },
          }),
      },
    },
    scopes: ['items:read', 'items:write'],
  });
  p.proxy = false;
  return p;
}

let keys = [newKey()];
let current;
const tls = process.env.TLS_CERT && process.env.TLS_KEY
  ? { cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) }
  : null;
const scheme = tls ? 'https' : 'http';
const handler = (req, res) => {
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
