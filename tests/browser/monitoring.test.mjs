// The monitoring dashboard (`/monitoring/dashboard`, a view of the web application) in
// Debian's Chromium, driven by playwright-core, through the real proxy with its
// enforced CSP:
//
//  - an administrator signs in; traffic runs (tickets listed and read); an employee is
//    refused at the monitoring routes (the proxy's policy denies, audited with the
//    problem type); the dashboard then draws the health (spool gauge, sinks), the
//    refusals grouped by problem type and route, and the latency per route as SVG
//    charts, with the same figures as the JSON endpoints; no CSP violation in the page
//    or at the proxy's collector, no console error, no unexpected error response;
//  - with PORTCULLIS_SCREENSHOTS=<folder>: docs' screenshot `monitoring-dashboard.png`.
//
//   (cd web && npm ci && npm run build)
//   PORTCULLIS_BIN=target/debug/portcullis node --test tests/browser/monitoring.test.mjs
//
// Needs node, Chromium (/usr/bin/chromium, or CHROMIUM), the built application and the
// npm packages of this folder. Without them the test is skipped locally and fails when
// CI is set.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import { chromium, request as pwRequest } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const bin = path.resolve(root, process.env.PORTCULLIS_BIN ?? 'target/debug/portcullis');
const webDist = path.resolve(root, process.env.PORTCULLIS_WEB_DIR ?? 'web/dist');
const policyDir = path.resolve(root, process.env.PORTCULLIS_POLICY_DIR ?? 'policies');
const missing = [chromiumPath, bin, path.join(webDist, 'index.html')].filter((p) => !existsSync(p));
if (missing.length > 0 && process.env.CI) {
  throw new Error(`browser test needs ${missing.join(' and ')} (build the application: make web)`);
}
const skip = missing.length > 0 && `missing ${missing.join(', ')}`;
const shots = process.env.PORTCULLIS_SCREENSHOTS;
const PASSWORD = 'a long and new passphrase 42';

const freePort = () => new Promise((resolve, reject) => {
  const server = net.createServer();
  server.on('error', reject);
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});

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

async function eventually(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

let child;
let dir;
let server;
let browser;

async function startPortcullis() {
  dir = mkdtempSync(path.join(tmpdir(), 'portcullis-mon-'));
  const [https, admin, backend] = [await freePort(), await freePort(), await freePort()];
  const config = path.join(dir, 'portcullis.yaml');
  writeFileSync(config, `state_dir: ${path.join(dir, 'var')}
log: {format: text, level: warn}
proxy:
  listen: {https: '127.0.0.1:${https}', http: null, admin: '127.0.0.1:${admin}'}
shared:
  policy_dir: '${policyDir}'
backend:
  listen: '127.0.0.1:${backend}'
  admin_listen: null
  web_dir: '${webDist}'
audit:
  ingest_url: 'http://127.0.0.1:${backend}/internal/audit/ingest'
`);
  let log = '';
  child = spawn(bin, ['--config', config, 'up'], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.on('data', (d) => { log += d; });
  await Promise.race([
    waitReady(`http://127.0.0.1:${admin}/health/ready`, 'portcullis'),
    once(child, 'exit').then(([code]) => { throw new Error(`portcullis exited (${code}):\n${log}`); }),
  ]);
  return { app: `https://localhost:${https}`, metricsUrl: `http://127.0.0.1:${admin}/metrics`, config };
}

/// `portcullis user create`: returns the one-time password.
function createUser(name, role) {
  const r = spawnSync(bin, ['--config', server.config, 'user', 'create', name, '--email', `${name}@example.org`,
    '--display-name', `${name[0].toUpperCase()}${name.slice(1)}`, '--role', role], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const m = /one-time password: (\S+)/.exec(r.stdout + r.stderr);
  assert.ok(m, r.stdout + r.stderr);
  return m[1];
}

/// An API client signed in as `name` (first sign-in: the one-time password replaced).
async function apiAs(name, oneTime) {
  const api = await pwRequest.newContext({ ignoreHTTPSErrors: true, baseURL: server.app });
  const r = await api.post('/auth/login', {
    data: { username: name, password: oneTime, new_password: PASSWORD, client: 'api' },
  });
  assert.equal(r.status(), 200, await r.text());
  const { access_token: token } = await r.json();
  await api.dispose();
  return pwRequest.newContext({
    ignoreHTTPSErrors: true, baseURL: server.app, extraHTTPHeaders: { authorization: `Bearer ${token}` },
  });
}

async function cspViolations() {
  const text = await (await fetch(server.metricsUrl)).text();
  return text.split('\n').filter((l) => l.startsWith('portcullis_csp_violations_total{'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

before(async () => {
  if (skip) return;
  server = await startPortcullis();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the monitoring dashboard draws health, errors and latency as charts under the enforced CSP', { skip, timeout: 180_000 }, async () => {
  const violationsBefore = await cspViolations();
  const admin = await apiAs('morgan', createUser('morgan', 'administrator'));
  const employee = await apiAs('emil', createUser('emil', 'employee'));

  // Traffic: a ticket, read a few times; the employee refused at the monitoring routes.
  const dept = await admin.post('/api/departments', { data: { name: 'Facilities' } });
  assert.equal(dept.status(), 201, await dept.text());
  const departmentId = (await dept.json()).id;
  const created = await admin.post('/api/tickets', { data: { title: 'Projector flickers', department_id: departmentId } });
  assert.equal(created.status(), 201, await created.text());
  const { id } = await created.json();
  for (let i = 0; i < 10; i += 1) assert.equal((await admin.get(`/api/tickets/${id}`)).status(), 200);
  // (The dashboard page too: an employee gets the proxy's refusal, not the page.)
  for (const p of ['/monitoring/errors', '/monitoring/performance', '/monitoring/dashboard']) {
    const r = await employee.get(p);
    assert.equal(r.status(), 403, p);
    assert.match(r.headers()['content-type'], /application\/problem\+json/);
    assert.equal((await r.json()).type, 'urn:portcullis:problem:forbidden');
  }

  // The refusals reach the audit table through the proxy's ingest.
  const errors = await eventually('the refusals grouped', async () => {
    const r = await admin.get('/monitoring/errors');
    assert.equal(r.status(), 200);
    const body = await r.json();
    return body.groups.find((g) => g.problem_type === 'urn:portcullis:problem:forbidden'
      && g.route === 'monitoring' && g.emitters.includes('proxy')) && body;
  });
  const forbidden = errors.groups.find((g) => g.problem_type === 'urn:portcullis:problem:forbidden');
  assert.deepEqual(forbidden.statuses, [403]);
  assert.ok(forbidden.actions.includes('policy.deny'), JSON.stringify(forbidden));
  const perf = await (await admin.get('/monitoring/performance')).json();
  const read = perf.routes.find((r) => r.route === '/api/tickets/{id}' && r.method === 'GET');
  assert.ok(read && read.window_requests >= 10, JSON.stringify(perf));

  // The page, as the administrator signed in through the browser.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const seen = { console: [], responses: [], pageErrors: [] };
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(`${e.effectiveDirective} ${e.blockedURI} ${e.sample}`);
    });
  });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') seen.console.push(m.text()); });
  page.on('pageerror', (e) => seen.pageErrors.push(e.message));
  page.on('response', (r) => {
    if (r.status() >= 400) seen.responses.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
  });
  // Signed in through the sign-in page, then the dashboard's own address (the proxy
  // lets only administrators and developers have it).
  await page.goto(`${server.app}/`);
  await page.getByLabel('User name').fill('morgan');
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Tickets' }).waitFor();
  const response = await page.goto(`${server.app}/monitoring/dashboard`);
  assert.equal(response.status(), 200);
  const csp = response.headers()['content-security-policy'];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  await page.getByRole('heading', { level: 1, name: 'Monitoring' }).waitFor();
  await page.locator('.monitoring[data-loaded="true"]').waitFor();
  assert.equal(new URL(page.url()).pathname, '/monitoring/dashboard');

  const drawn = await page.evaluate(() => {
    const section = (name) => document.querySelector(`[data-section="${name}"]`);
    const bars = (name) => Array.from(section(name)?.querySelectorAll('svg.chart rect.bar') ?? []);
    const labels = (name) => Array.from(section(name)?.querySelectorAll('svg.chart text.chart-label') ?? []).map((t) => t.textContent);
    return {
      svgNamespace: document.querySelector('svg.chart')?.namespaceURI,
      errorBars: bars('errors').length,
      errorLabels: labels('errors'),
      latencyBars: bars('performance').length,
      latencyLabels: labels('performance'),
      barWidths: bars('performance').map((b) => Number(b.getAttribute('width'))),
      gauge: section('health')?.querySelectorAll('svg.gauge rect').length ?? 0,
      health: section('health')?.textContent ?? '',
      inlineStyles: document.querySelectorAll('[style]').length,
    };
  });
  assert.equal(drawn.svgNamespace, 'http://www.w3.org/2000/svg');
  assert.ok(drawn.errorBars >= 1, JSON.stringify(drawn));
  assert.ok(drawn.errorLabels.includes('forbidden · monitoring'), JSON.stringify(drawn.errorLabels));
  // p50, p95 and p99 per route, each bar with a width.
  assert.ok(drawn.latencyBars >= 3, JSON.stringify(drawn));
  assert.ok(drawn.latencyLabels.includes('GET /api/tickets/{id}'), JSON.stringify(drawn.latencyLabels));
  assert.ok(drawn.barWidths.every((w) => w > 0), JSON.stringify(drawn.barWidths));
  assert.equal(drawn.gauge, 2);
  assert.match(drawn.health, /database/);
  assert.match(drawn.health, /Audit spool/);
  assert.equal(drawn.inlineStyles, 0);

  // The window selector asks again.
  const asked = page.waitForResponse((r) => r.url().includes('/monitoring/errors?minutes=1440'));
  await page.getByLabel('Window').selectOption('1440');
  assert.equal((await asked).status(), 200);
  await page.locator('[data-section="errors"] svg.chart').waitFor();

  if (shots) {
    await page.waitForTimeout(300);
    await page.screenshot({ path: path.join(shots, 'monitoring-dashboard.png'), fullPage: true });
  }

  // Clean: no violation in the page or at the collector, no console error, and the only
  // error answer is the sign-in probe's (anonymous until signed in).
  assert.deepEqual(await page.evaluate(() => window.__violations), []);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await cspViolations(), violationsBefore, 'no CSP report at the collector');
  assert.deepEqual(seen.pageErrors, []);
  assert.deepEqual(seen.console.filter((m) => !/^Failed to load resource/.test(m)), []);
  assert.deepEqual(seen.responses.filter((r) => !/^401 GET \/auth\/session$|^401 POST \/auth\/refresh$/.test(r)), []);
  await context.close();

  await Promise.all([admin.dispose(), employee.dispose()]);
});
