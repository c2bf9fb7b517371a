// OIDC single sign-on in a real browser: Debian's Chromium (driven by
// playwright-core) signs in at the test OpenID provider and must land on the
// return path *signed in*. The provider (http://127.0.0.1:…) and Portcullis
// (https://localhost:…) are different sites, as in production, so the
// redirect back is a cross-site navigation: this is where SameSite=Strict
// session cookies go missing unless the callback hands over to a same-site
// page (backend/src/auth/oidc.rs, `continue_to`).
//
//   PORTCULLIS_BIN=target/debug/portcullis node --test tests/browser/
//
// Needs node, Chromium (/usr/bin/chromium, or CHROMIUM) and the npm packages
// of this folder and of ../oidc-provider. Without Chromium the test is skipped
// locally and fails when CI is set.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const bin = path.resolve(root, process.env.PORTCULLIS_BIN ?? 'target/debug/portcullis');
const missing = [chromiumPath, bin].filter((p) => !existsSync(p));
if (missing.length > 0 && process.env.CI) {
  throw new Error(`browser test needs ${missing.join(' and ')}`);
}

const freePort = () => new Promise((resolve, reject) => {
  const server = net.createServer();
  server.on('error', reject);
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});

/// Starts a process and resolves with it once `ready(line)` is true for a line of its stdout.
async function started(cmd, args, options, ready, what) {
  const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const result = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${log}`)), 60_000);
    let buffered = '';
    child.stdout.on('data', (d) => {
      buffered += d;
      log += d;
      for (const line of buffered.split('\n')) {
        const value = ready(line);
        if (value) {
          clearTimeout(timer);
          resolve(value);
        }
      }
    });
    child.on('exit', (code) => reject(new Error(`${what} exited (${code}):\n${log}`)));
  });
  return { child, result, log: () => log };
}

async function waitReady(url, what) {
  for (let i = 0; i < 600; i += 1) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} never became ready at ${url}`);
}

const children = [];
let dir;
let browser;
let app;

before(async () => {
  if (missing.length > 0) return;
  dir = mkdtempSync(path.join(tmpdir(), 'portcullis-browser-'));
  const [https, admin, backend] = [await freePort(), await freePort(), await freePort()];
  app = `https://localhost:${https}`;
  const secret = 'browser-test-client-secret-0123456789';

  const idpConfig = path.join(dir, 'idp.json');
  writeFileSync(idpConfig, JSON.stringify({
    clients: [{
      client_id: 'portcullis',
      client_secret: secret,
      redirect_uris: [`${app}/auth/oidc/callback`],
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
    }],
    accounts: {
      'alice-browser': {
        preferred_username: 'alice-browser',
        email: 'alice-browser@example.org',
        email_verified: true,
        name: 'Alice Browser',
        groups: ['MAINT-EMPLOYEE'],
      },
    },
  }));
  const idp = await started(
    'node', ['provider.js', '0', idpConfig], { cwd: path.join(root, 'tests/oidc-provider') },
    (line) => line.startsWith('READY ') && line.slice(6).trim(), 'the OpenID provider',
  );
  children.push(idp.child);
  const issuer = idp.result;
  await waitReady(`${issuer}/.well-known/openid-configuration`, 'the OpenID provider');

  const secretFile = path.join(dir, 'client-secret');
  writeFileSync(secretFile, secret, { mode: 0o600 });
  const config = path.join(dir, 'portcullis.yaml');
  writeFileSync(config, `state_dir: ${path.join(dir, 'var')}
log: {format: text, level: warn}
proxy:
  listen: {https: '127.0.0.1:${https}', http: null, admin: '127.0.0.1:${admin}'}
shared:
  policy_dir: '${path.join(root, 'policies')}'
backend:
  listen: '127.0.0.1:${backend}'
  admin_listen: null
  identity:
    oidc:
      - name: idp
        issuer: '${issuer}'
        client_id: portcullis
        client_secret_file: '${secretFile}'
        redirect_uri: '${app}/auth/oidc/callback'
audit:
  ingest_url: 'http://127.0.0.1:${backend}/internal/audit/ingest'
`);
  const up = spawn(bin, ['--config', config, 'up'], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(up);
  await waitReady(`http://127.0.0.1:${admin}/health/ready`, 'portcullis');

  browser = await chromium.launch({
    executablePath: chromiumPath,
    // As root in a sandbox-less container; no calls home (the network is closed).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(children.filter((c) => c.exitCode === null).map((c) => once(c, 'exit')));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('SSO sign-in lands on the return path signed in', { skip: missing.length > 0 && `missing ${missing.join(', ')}` }, async () => {
  // The proxy's certificate is the self-signed one it generated for localhost.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(`${app}/auth/oidc/login?provider=idp&return_to=/api/tickets`);
  // The provider's sign-in form.
  assert.match(page.url(), /^http:\/\/127\.0\.0\.1:\d+\/interaction\//);
  const provider = new URL(page.url()).origin;
  const landed = page.waitForResponse((r) => r.url() === `${app}/api/tickets`);
  await page.fill('input[name=login]', 'alice-browser');
  await page.click('button');
  const response = await landed;
  // Signed in: the proxy accepted the session cookie and the backend answered.
  assert.equal(response.status(), 200, await response.text());
  const body = await response.json();
  assert.ok(Array.isArray(body.items ?? body), JSON.stringify(body));

  const cookies = await context.cookies(app);
  const access = cookies.find((c) => c.name === '__Host-portcullis-access');
  assert.ok(access, JSON.stringify(cookies.map((c) => c.name)));
  assert.equal(access.sameSite, 'Strict');
  assert.equal(access.httpOnly, true);
  assert.equal(access.secure, true);
  // Nothing in the page's storage.
  const stored = await page.evaluate(() => localStorage.length + sessionStorage.length);
  assert.equal(stored, 0);

  // Why the hand-over page exists: a navigation that the provider's page
  // starts towards the application is cross-site, and the browser sends the
  // Strict cookie with it no more than with the provider's redirect.
  await page.goto(`${provider}/.well-known/openid-configuration`);
  const crossSite = page.waitForResponse((r) => r.url() === `${app}/api/tickets`);
  await page.evaluate((url) => { window.location.href = url; }, `${app}/api/tickets`);
  assert.equal((await crossSite).status(), 401);
  await context.close();
});
