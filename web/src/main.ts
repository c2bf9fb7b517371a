// The Portcullis ticket system: a single-page application on hash routes
// (`/#/tickets/TCK-2026-000001`), served as static files under a strict CSP.

// First, before any other module runs: take the only Trusted Types policy name the CSP
// allows (imports are evaluated in order).
import './trusted-types';

import { onSessionEnded, onSignedInElsewhere, signOut } from './api';
import { h, replace } from './dom';
import { displayName, isAdmin, isOperator, me, probe, setAnonymous } from './session';
import { type Ctx, clearStaleStatus, errorBox, go, loading } from './ui';
import { accountView, mySessionsView } from './views/account';
import { auditView, departmentsView, employeeView, employeesView, sessionsView } from './views/admin';
import { monitoringView } from './views/monitoring';
import { signInView } from './views/signin';
import { ticketView } from './views/ticket';
import { forgetNames, newTicketView, ticketListView } from './views/tickets';

type View = (ctx: Ctx) => Promise<void>;

interface Route {
  pattern: RegExp;
  view: View;
  /// Only for signed-in users (the default) / administrators / administrators and developers.
  anonymous?: boolean;
  admin?: boolean;
  operator?: boolean;
}

const routes: Route[] = [
  { pattern: /^\/signin$/, view: (ctx) => signInView(ctx, renderShell), anonymous: true },
  { pattern: /^\/tickets$/, view: ticketListView },
  { pattern: /^\/new$/, view: newTicketView },
  { pattern: /^\/tickets\/([A-Za-z0-9-]+)$/, view: ticketView },
  { pattern: /^\/account$/, view: accountView },
  { pattern: /^\/account\/sessions$/, view: mySessionsView },
  { pattern: /^\/admin\/employees$/, view: employeesView, admin: true },
  { pattern: /^\/admin\/employees\/(\d+)$/, view: employeeView, admin: true },
  { pattern: /^\/admin\/departments$/, view: departmentsView, admin: true },
  { pattern: /^\/admin\/sessions$/, view: sessionsView, admin: true },
  { pattern: /^\/admin\/audit$/, view: auditView, admin: true },
  { pattern: /^\/monitoring$/, view: monitoringView, operator: true },
];

/// The server's page for the monitoring dashboard: the application opened there starts
/// on `#/monitoring`.
const DASHBOARD_PATH = '/monitoring/dashboard';

const app = document.getElementById('app') as HTMLElement;
const nav = h('nav', { id: 'nav', 'aria-label': 'Main' });
const menu = h('button', { type: 'button', class: 'menu-toggle', 'aria-expanded': 'false', 'aria-controls': 'nav' }, 'Menu');
const userBox = h('div', { class: 'user' });
const main = h('main', { id: 'main', tabindex: '-1' });

function skipToMain(ev: Event): void {
  ev.preventDefault();
  main.focus();
}

replace(app,
  h('a', { class: 'skip', href: '#main', onclick: skipToMain }, 'Skip to content'),
  h('header', { class: 'bar' },
    h('a', { class: 'brand', href: '#/tickets' }, 'Portcullis'),
    menu, nav, userBox),
  h('div', { id: 'status', role: 'status', 'aria-live': 'polite' }),
  main);

menu.addEventListener('click', () => {
  const open = menu.getAttribute('aria-expanded') !== 'true';
  menu.setAttribute('aria-expanded', String(open));
  nav.classList.toggle('open', open);
});

let shellSignedIn = false;

/// The header for the current user: navigation and sign-out.
async function renderShell(): Promise<void> {
  const m = me();
  shellSignedIn = m.authenticated;
  if (!m.authenticated) {
    nav.replaceChildren();
    userBox.replaceChildren();
    menu.hidden = true;
    return;
  }
  menu.hidden = false;
  const items: Array<[string, string]> = [['/tickets', 'Tickets'], ['/new', 'New ticket'], ['/account', 'Account'], ['/account/sessions', 'My sessions']];
  if (isAdmin()) items.push(['/admin/employees', 'Administration']);
  if (isOperator()) items.push(['/monitoring', 'Monitoring']);
  replace(nav, h('ul', null, items.map(([path, label]) => h('li', null, h('a', { href: `#${path}`, 'data-path': path }, label)))));
  const signOutButton = h('button', { type: 'button', class: 'subtle', onclick: () => void doSignOut() }, 'Sign out');
  replace(userBox, h('span', { class: 'who' }, displayName()), ' ', signOutButton);
  markCurrent();
}

function markCurrent(): void {
  const path = currentPath();
  for (const a of Array.from(nav.querySelectorAll<HTMLAnchorElement>('a[data-path]'))) {
    const p = a.dataset.path ?? '';
    const current = path === p || (p !== '/tickets' && p !== '/account' && path.startsWith(p)) || (p === '/tickets' && path.startsWith('/tickets/'))
      || (p === '/admin/employees' && path.startsWith('/admin/'));
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function doSignOut(): Promise<void> {
  const sso = me().oidc_provider || me().auth_method === 'oidc';
  if (sso) {
    // RP-initiated logout: the backend ends the session, then sends the browser to
    // the provider's end-session page (a top-level navigation, not a fetch).
    setAnonymous();
    location.assign('/auth/oidc/logout');
    return;
  }
  await signOut();
  setAnonymous();
  forgetNames();
  await renderShell();
  go('/signin', { reason: 'signed-out' });
}

function currentPath(): string {
  const raw = location.hash.replace(/^#/, '') || (location.pathname === DASHBOARD_PATH ? '/monitoring' : '/tickets');
  const q = raw.indexOf('?');
  return q >= 0 ? raw.slice(0, q) : raw;
}

let rendering = 0;

async function render(): Promise<void> {
  rendering += 1;
  const mine = rendering;
  const raw = location.hash.replace(/^#/, '') || (location.pathname === DASHBOARD_PATH ? '/monitoring' : '');
  if (!raw || raw === '/') {
    go(me().authenticated ? '/tickets' : '/signin');
    return;
  }
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  nav.classList.remove('open');
  menu.setAttribute('aria-expanded', 'false');
  clearStaleStatus();
  if (shellSignedIn !== me().authenticated) await renderShell();
  markCurrent();

  let route: Route | undefined;
  let params: string[] = [];
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (m) {
      route = r;
      params = m.slice(1).map((p) => decodeURIComponent(p));
      break;
    }
  }
  const root = h('div', { class: 'view' });
  replace(main, root);
  if (!route) {
    replace(root, h('h1', { tabindex: '-1' }, 'Not found'), h('p', null, 'There is no such page. ', h('a', { href: '#/tickets' }, 'Go to the tickets')));
    return;
  }
  if (!route.anonymous && !me().authenticated) {
    go('/signin', { next: raw });
    return;
  }
  if (route.anonymous && me().authenticated) {
    go('/tickets');
    return;
  }
  if (route.admin && !isAdmin()) {
    replace(root, h('h1', { tabindex: '-1' }, 'Not allowed'), h('p', null, 'This area is for administrators.'));
    return;
  }
  if (route.operator && !isOperator()) {
    replace(root, h('h1', { tabindex: '-1' }, 'Not allowed'), h('p', null, 'This area is for administrators and developers.'));
    return;
  }
  try {
    await route.view({ root, params, query });
  } catch (e) {
    if (mine === rendering) replace(root, errorBox(e, () => void render()));
  }
  if (mine === rendering) {
    // Move focus to the new page's heading, so keyboard and screen-reader users start there.
    const heading = root.querySelector<HTMLElement>('h1');
    if (heading && !root.contains(document.activeElement)) heading.focus();
  }
}

onSessionEnded(() => {
  if (!me().authenticated) return;
  setAnonymous();
  forgetNames();
  void renderShell();
  go('/signin', { reason: 'ended', next: currentPath() });
});

onSignedInElsewhere(() => {
  if (me().authenticated) return;
  void probe().then(async () => {
    await renderShell();
    if (me().authenticated && currentPath() === '/signin') go('/tickets');
  });
});

window.addEventListener('hashchange', () => void render());

async function start(): Promise<void> {
  replace(main, loading('Starting…'));
  try {
    await probe();
  } catch (e) {
    replace(main, errorBox(e, () => void start()));
    return;
  }
  await renderShell();
  await render();
}

void start();
