// A real OpenID provider (panva/oidc-provider) for the backend's OIDC tests.
// TEST USE ONLY: fixed cookie keys, no consent screen, password-less login.
//
//   node provider.js PORT CONFIG.json
//
// PORT 0 picks a free port. When listening, one line goes to stdout:
//   READY http://127.0.0.1:<port>
// CONFIG.json: { "clients": [ client metadata … ], "accounts": { "<id>": { claims … } } }.
// `accounts` is re-read on every lookup, so a test can change a user's groups
// between two sign-ins by rewriting the file.
//
// Login: the authorization endpoint redirects to /interaction/<uid>; a form
// POST of `login=<account id>` to /interaction/<uid>/login signs that account
// in (an unknown id is refused with access_denied), with an optional
// `amr=pwd,mfa` for the ID token's amr claim. Consent is implied.

import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const [, , portArg = '0', configFile] = process.argv;
if (!configFile) {
  console.error('usage: node provider.js PORT CONFIG.json');
  process.exit(64);
}

const readConfig = () => JSON.parse(readFileSync(configFile, 'utf8'));

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const server = http.createServer();
server.listen(Number(portArg), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: readConfig().clients,
    jwks: { keys: [signingKey()] },
    cookies: { keys: ['portcullis-test-only-cookie-key'] },
    pkce: { required: () => true },
    claims: {
      // `amr` is set when a test signs in with `amr=…` (see the login form below).
      openid: ['sub', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    features: {
      devInteractions: { enabled: false },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    // The backend listens on loopback; oidc-provider refuses outgoing requests
    // to special-use addresses (SSRF protection) unless its dispatcher goes.
    fetch: (url, options) => {
      const { dispatcher: _ignored, ...rest } = options;
      return globalThis.fetch(url, rest);
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    async findAccount(_ctx, id) {
      const account = readConfig().accounts?.[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...readConfig().accounts?.[id] };
        },
      };
    },
    // Every test client is first-party: grant what it asks for, no consent screen.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const existing = await ctx.oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile groups');
      await grant.save();
      return grant;
    },
  });
  provider.on('backchannel.error', (_ctx, err, client) => {
    console.error(`back-channel logout to ${client.clientId} failed: ${err.message}`);
  });
  provider.on('server_error', (_ctx, err) => console.error(err));

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    const m = url.pathname.match(/^\/interaction\/([\w-]+)(\/login)?$/);
    if (!m) {
      callback(req, res);
      return;
    }
    try {
      const details = await provider.interactionDetails(req, res);
      if (req.method === 'GET' && !m[2]) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(`<!doctype html><title>Test sign-in</title>
<form method="post" action="/interaction/${escapeHtml(details.uid)}/login">
<label>Account <input name="login" autofocus></label><button>Sign in</button></form>`);
        return;
      }
      if (req.method !== 'POST' || !m[2]) {
        res.writeHead(405).end();
        return;
      }
      const form = await readForm(req);
      const login = form.get('login') ?? '';
      // Optional `amr` (comma-separated, RFC 8176 values): how the test user
      // "authenticated", passed on in the ID token's amr claim.
      const amr = (form.get('amr') ?? '').split(',').filter(Boolean);
      const known = Boolean(readConfig().accounts?.[login]);
      const result = known
        ? { login: { accountId: login, ...(amr.length > 0 ? { amr } : {}) } }
        : { error: 'access_denied', error_description: 'unknown test account' };
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    } catch (err) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}`);
    }
  });

  console.log(`READY ${issuer}`);
});
