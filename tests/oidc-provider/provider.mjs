// A real OpenID provider on loopback for headway's OIDC tests: oidc-provider 9
// with clients, people and signing keys from a config file the Rust harness
// (tests/it/support/oidc.rs) writes, its own login page, and test hooks under
// /test/. Knows nothing about headway.
//
//   node provider.mjs CONFIG.json
//
// CONFIG.json: { port (0 picks a free one), state_dir (signing and cookie keys,
// kept across restarts), clients: [{ client_id, client_secret, redirect_uris,
// token_endpoint_auth_method, id_token_signed_response_alg? }], users_file
// (re-read on every account lookup), id_token_claims (bool) }.
//
// Prints one line to stdout, `listening http://127.0.0.1:PORT`, once it serves;
// everything else goes to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

// stdout carries the one `listening` line the harness waits for; oidc-provider
// prints its notices with console.info, so they go to stderr like the rest.
console.log = console.error;
console.info = console.error;

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
fs.mkdirSync(config.state_dir, { recursive: true });

function writeAtomically(file, text) {
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, text, { mode: 0o600 });
  fs.renameSync(temporary, file);
}

// Signing keys (RS256, the default for ID tokens, and ES256) and cookie keys are
// made on the first start and reused afterwards, so a restart keeps the JWKS.
function loadOrCreateKeys() {
  const file = path.join(config.state_dir, 'keys.json');
  if (fs.existsSync(file)) {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }
  const jwk = (type, options, alg) => {
    const { privateKey } = crypto.generateKeyPairSync(type, options);
    const key = privateKey.export({ format: 'jwk' });
    return { ...key, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}` };
  };
  const keys = {
    jwks: {
      keys: [
        jwk('rsa', { modulusLength: 2048 }, 'RS256'),
        jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
      ],
    },
    cookies: [crypto.randomBytes(32).toString('base64url')],
  };
  writeAtomically(file, JSON.stringify(keys, null, 2));
  return keys;
}

const keys = loadOrCreateKeys();

// People, read again on every lookup so a test can change someone between logins.
function people() {
  return JSON.parse(fs.readFileSync(config.users_file, 'utf8'));
}

function account(person) {
  return {
    accountId: person.sub,
    async claims() {
      const claims = { sub: person.sub };
      for (const name of ['email', 'email_verified', 'name', 'preferred_username', 'picture', 'groups']) {
        if (person[name] !== undefined && person[name] !== null) {
          claims[name] = person[name];
        }
      }
      return claims;
    },
  };
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><h1>${escapeHtml(title)}</h1>
${body}
</body></html>
`;
}

function loginForm(uid, clientId, error) {
  const message = error ? `<p class="error">${escapeHtml(error)}</p>\n` : '';
  return page('Sign in', `<p>to continue to ${escapeHtml(clientId)}</p>
${message}<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label>Login <input name="login" autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 64 * 1024) {
      throw new Error('form too large');
    }
  }
  return new URLSearchParams(text);
}

// What the test last asked the token endpoint to do to ID tokens (POST /test/tamper).
const TAMPERS = ['none', 'bad-signature', 'wrong-audience', 'expired', 'wrong-issuer'];
let tamper = 'none';

async function tamperWith(idToken, issuer) {
  if (tamper === 'bad-signature') {
    // Flip bits of the first signature byte: same length, still base64url, no
    // longer what the key signed.
    const [header, payload, signature] = idToken.split('.');
    const bytes = Buffer.from(signature, 'base64url');
    bytes[0] ^= 0xff;
    return `${header}.${payload}.${bytes.toString('base64url')}`;
  }
  const header = jose.decodeProtectedHeader(idToken);
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  switch (tamper) {
    case 'wrong-audience':
      claims.aud = 'someone-else';
      break;
    case 'expired':
      claims.iat = now - 2 * 3600;
      claims.exp = now - 3600;
      break;
    case 'wrong-issuer':
      claims.iss = `${issuer}/not-the-issuer`;
      break;
    default:
      throw new Error(`unknown tamper ${tamper}`);
  }
  // Re-signed with the provider's own key, so only the changed claim is wrong.
  const jwk = keys.jwks.keys.find((key) => key.kid === header.kid);
  const key = await jose.importJWK(jwk, header.alg);
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader(header)
    .sign(key);
}

const server = http.createServer();
server.on('error', (error) => {
  console.error(`provider: cannot listen on 127.0.0.1:${config.port}: ${error.message}`);
  process.exit(1);
});
server.listen(config.port || 0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients.map((client) => {
      const metadata = {
        client_id: client.client_id,
        redirect_uris: client.redirect_uris,
        token_endpoint_auth_method: client.token_endpoint_auth_method || 'client_secret_basic',
        response_types: ['code'],
        grant_types: ['authorization_code'],
      };
      if (metadata.token_endpoint_auth_method !== 'none') {
        metadata.client_secret = client.client_secret;
      }
      if (client.id_token_signed_response_alg) {
        metadata.id_token_signed_response_alg = client.id_token_signed_response_alg;
      }
      return metadata;
    }),
    jwks: keys.jwks,
    cookies: { keys: keys.cookies },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'picture'],
      groups: ['groups'],
    },
    scopes: ['openid'],
    // false: claims of the requested scopes are in the ID token too; true is the
    // specification's rule for the code flow (userinfo only).
    conformIdTokenClaims: !config.id_token_claims,
    // The default: PKCE (S256 only) is required of public clients and optional for
    // confidential ones.
    pkce: { required: (ctx, client) => client.clientAuthMethod === 'none' },
    features: {
      devInteractions: { enabled: false },
    },
    async findAccount(ctx, sub) {
      const person = people().find((p) => p.sub === sub);
      return person ? account(person) : undefined;
    },
    clientBasedCORS: () => false,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    async renderError(ctx, out, error) {
      ctx.type = 'html';
      const text = Object.entries(out).map(([k, v]) => `<p>${escapeHtml(k)}: ${escapeHtml(v)}</p>`).join('\n');
      ctx.body = page('Error', text);
      if (!(error instanceof errors.OIDCProviderError)) {
        console.error('provider: error page:', error);
      }
    },
  });
  provider.on('server_error', (ctx, error) => console.error('provider: server error:', error));

  // Test hooks, loopback only like everything here.
  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/tamper' && ctx.method === 'POST') {
      let body = '';
      for await (const chunk of ctx.req) body += chunk;
      body = body.trim();
      if (!TAMPERS.includes(body)) {
        ctx.status = 400;
        ctx.body = `unknown tamper "${body}"; one of ${TAMPERS.join(', ')}\n`;
        return;
      }
      tamper = body;
      ctx.status = 204;
      return;
    }
    await next();
    if (ctx.path === '/token' && ctx.status === 200 && tamper !== 'none' && ctx.body?.id_token) {
      ctx.body = { ...ctx.body, id_token: await tamperWith(ctx.body.id_token, issuer) };
    }
  });

  // Grants what the client asked for (scopes, and claims of a `claims`
  // parameter) and finishes the interaction: login and consent at once.
  async function finish(ctx, details, accountId) {
    const { params } = details;
    // The session's grant when the same person signs in again, else a new one.
    const existing = details.grantId && await provider.Grant.find(details.grantId);
    const grant = existing?.accountId === accountId
      ? existing
      : new provider.Grant({ accountId, clientId: params.client_id });
    grant.addOIDCScope(params.scope);
    if (params.claims) {
      const requested = JSON.parse(params.claims);
      grant.addOIDCClaims([...Object.keys(requested.userinfo || {}), ...Object.keys(requested.id_token || {})]);
    }
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    ctx.respond = false;
  }

  // The login page: one form; a correct password finishes login and consent at
  // once. Someone already signed in who only needs to consent (a client they
  // have not used yet) is never asked: consent is implied, as for first-party
  // clients of most providers.
  provider.use(async (ctx, next) => {
    const match = /^\/interaction\/([^/]+)(\/login)?$/.exec(ctx.path);
    if (!match) {
      return next();
    }
    try {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      const { uid, params, prompt, session } = details;
      if (uid !== match[1]) {
        throw new errors.InvalidRequest('interaction does not match its cookie');
      }
      if (!match[2] && ctx.method === 'GET') {
        if (prompt.name !== 'login' && session?.accountId) {
          await finish(ctx, details, session.accountId);
          return;
        }
        ctx.type = 'html';
        ctx.body = loginForm(uid, params.client_id);
        return;
      }
      if (!match[2] || ctx.method !== 'POST') {
        ctx.status = 405;
        return;
      }
      const form = await readForm(ctx.req);
      const person = people().find((p) => p.login === form.get('login'));
      if (!person || person.password !== form.get('password')) {
        ctx.type = 'html';
        ctx.body = loginForm(uid, params.client_id, 'Wrong login or password.');
        return;
      }
      await finish(ctx, details, person.sub);
    } catch (error) {
      console.error(`provider: ${ctx.method} ${ctx.path}:`, error.message);
      ctx.status = error.statusCode || 500;
      ctx.type = 'html';
      ctx.body = page('Error', `<p>${escapeHtml(error.name)}: ${escapeHtml(error.message)}</p>`);
    }
  });

  server.on('request', provider.callback());
  process.stdout.write(`listening ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
