// A real OpenID Connect provider for the tests: oauth2-mock-server's issuer and service (discovery,
// JWKS, token endpoint with the password, client-credentials and authorization-code + PKCE grants),
// served under a Keycloak-like realm path, plus a few controls the tests need.
//
// Started by tests/oidc_server.py. Prints one JSON line on stdout once listening:
//   {"issuer": "http://127.0.0.1:PORT/realms/test", "control": "http://127.0.0.1:PORT/control"}
//
// Environment: OIDC_REALM_PATH (default /realms/test), OIDC_CONFIG (JSON, see `config` below).
//
// Controls (JSON in, JSON out):
//   POST /control/config  {users: {name: password}, clientId, clientSecret, audience, codeUser}
//                         (codeUser: who signs in through /authorize, the authorization-code flow)
//   POST /control/keys    {alg: "RS256" | "ES256" | ...}          -> {kid}   (a new signing key)
//   POST /control/token   {kid?, expiresIn?, claims?: {...}}        -> {token} (signed by the provider)
//   GET  /control/stats                                              -> requests per endpoint
import http from 'node:http';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';
import basicAuth from 'basic-auth';

const realm = (process.env.OIDC_REALM_PATH || '/realms/test').replace(/\/$/, '');
// Like Keycloak with direct access grants on: only these users and this confidential client may use
// the password grant; an empty users map accepts any username and password (the mock's own way).
let config = { users: {}, clientId: null, clientSecret: null, audience: null, codeUser: null, ...JSON.parse(process.env.OIDC_CONFIG || '{}') };
const stats = {};

const issuer = new OAuth2Issuer();
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer);

service.on('beforeTokenSigning', (token, req) => {
  const p = token.payload;
  const body = req.body || {};
  if (body.grant_type === 'password' && p.amr) {
    // Keycloak's access token names the user in preferred_username and the client in azp.
    p.preferred_username = body.username;
    p.azp = clientOf(req).id;
  }
  if (body.grant_type === 'authorization_code' && config.codeUser) {
    // Both the access token and the ID token name the user who "signed in" at /authorize.
    p.preferred_username = config.codeUser;
    p.sub = config.codeUser;
  }
  if (p.aud === undefined && config.audience) p.aud = config.audience;
});

service.on('beforeResponse', (response, req) => {
  const body = req.body || {};
  if (body.grant_type !== 'password') return;
  const client = clientOf(req);
  if (config.clientId && (client.id !== config.clientId || client.secret !== config.clientSecret)) {
    response.statusCode = 401;
    response.body = { error: 'unauthorized_client', error_description: 'Invalid client or Invalid client credentials' };
  } else if (Object.keys(config.users).length && config.users[body.username] !== body.password) {
    response.statusCode = 401;
    response.body = { error: 'invalid_grant', error_description: 'Invalid user credentials' };
  }
});

function clientOf(req) {
  const basic = basicAuth(req);
  if (basic) return { id: basic.name, secret: basic.pass };
  return { id: req.body?.client_id, secret: req.body?.client_secret };
}

async function readJson(req) {
  let raw = '';
  for await (const chunk of req) raw += chunk;
  return raw ? JSON.parse(raw) : {};
}

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function control(req, res, path) {
  if (req.method === 'GET' && path === '/stats') return send(res, 200, stats);
  const body = await readJson(req);
  if (path === '/config') {
    config = { ...config, ...body };
    return send(res, 200, {});
  }
  if (path === '/keys') {
    const jwk = await issuer.keys.generate(body.alg || 'RS256');
    return send(res, 200, { kid: jwk.kid });
  }
  if (path === '/token') {
    const token = await issuer.buildToken({
      kid: body.kid,
      expiresIn: body.expiresIn,
      scopesOrTransform: (_header, payload) => Object.assign(payload, body.claims || {}),
    });
    return send(res, 200, { token });
  }
  return send(res, 404, { error: 'unknown control' });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname.startsWith('/control/')) {
    control(req, res, url.pathname.slice('/control'.length)).catch((e) => send(res, 500, { error: String(e) }));
    return;
  }
  if (!url.pathname.startsWith(realm + '/')) return send(res, 404, { error: 'not found' });
  const inner = url.pathname.slice(realm.length);
  stats[inner] = (stats[inner] || 0) + 1;
  req.url = inner + url.search;
  service.requestHandler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  issuer.url = `http://127.0.0.1:${port}${realm}`;
  process.stdout.write(JSON.stringify({ issuer: issuer.url, control: `http://127.0.0.1:${port}/control` }) + '\n');
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
// Exit with the test run even if it could not signal us.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
