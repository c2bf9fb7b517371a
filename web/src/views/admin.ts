// The administrators' area: employees, departments, sessions, the audit log.

import { api, get } from '../api';
import { type Child, field, h, replace, select, time } from '../dom';
import type { AuditEvent, AuditPage, Department, Employee, Session } from '../model';
import { ROLES } from '../session';
import { type Ctx, confirmButton, formError, go, link, say, section, submitting, table, title } from '../ui';
import { forgetNames } from './tickets';

export function adminNav(active: string): HTMLElement {
  const items: Array<[string, string]> = [
    ['/admin/employees', 'Employees'],
    ['/admin/departments', 'Departments'],
    ['/admin/sessions', 'Sessions'],
    ['/admin/audit', 'Audit log'],
  ];
  return h('nav', { class: 'subnav', 'aria-label': 'Administration' }, h('ul', null, items.map(([path, label]) =>
    h('li', null, h('a', { href: `#${path}`, 'aria-current': path === active ? 'page' : null }, label)))));
}

// ------------------------------------------------------------------ employees

function roleBoxes(selected: string[]): { box: HTMLFieldSetElement; value: () => string[] } {
  const inputs = ROLES.map((r) => {
    const i = h('input', { type: 'checkbox', name: 'roles', value: r });
    i.checked = selected.includes(r);
    return i;
  });
  const box = h('fieldset', { class: 'roles' }, h('legend', null, 'Roles'),
    inputs.map((i) => h('label', { class: 'check' }, i, ` ${i.value.replace('_', ' ')}`)));
  return { box, value: () => inputs.filter((i) => i.checked).map((i) => i.value) };
}

function departmentSelect(deps: Department[], value: number | null): HTMLSelectElement {
  return select('department_id', [['', 'No department'], ...deps.map((d): [string, string] => [String(d.id), d.name])], value === null ? '' : String(value));
}

export async function employeesView(ctx: Ctx): Promise<void> {
  const list = h('div');
  const createBox = h('div');
  replace(ctx.root, title('Employees'), adminNav('/admin/employees'), createBox, list);
  const load = async (): Promise<void> => {
    forgetNames();
    await section(list, () => Promise.all([get<Employee[]>('/api/employees'), get<Department[]>('/api/departments')]), ([emps, deps]) => {
      const depName = new Map(deps.map((d) => [d.id, d.name]));
      renderCreate(createBox, deps, load);
      return table<Employee>('Employees', [
        ['Name', (e) => h('span', null, h('strong', null, e.display_name), h('br'), h('span', { class: 'muted' }, e.username))],
        ['E-mail', (e) => e.email],
        ['Roles', (e) => e.roles.join(', ') || '—'],
        ['Department', (e) => (e.department_id === null ? '—' : depName.get(e.department_id) ?? `#${e.department_id}`)],
        ['Status', (e) => `${e.status}${e.is_oidc ? ' · SSO' : ''}`],
        ['', (e) => h('a', { class: 'button', href: `#/admin/employees/${e.id}` }, 'Manage')],
      ], emps, 'No employees.');
    }, 'Loading employees…');
  };
  await load();
}

function renderCreate(into: HTMLElement, deps: Department[], reload: () => Promise<void>): void {
  const username = h('input', { name: 'username', required: true, pattern: '[a-z0-9._\\-]{3,64}', autocapitalize: 'none' });
  const email = h('input', { name: 'email', type: 'email', required: true });
  const name = h('input', { name: 'display_name', required: true, maxlength: '100' });
  const roles = roleBoxes(['employee']);
  const dep = departmentSelect(deps, null);
  const form = h('form', { 'aria-label': 'Add an employee' }, formError(),
    h('div', { class: 'grid' }, field('User name', username, '3 to 64 of a–z, 0–9, . _ -'), field('E-mail', email), field('Display name', name), field('Department', dep)),
    roles.box,
    h('p', { class: 'hint' }, 'Employees added here sign in with single sign-on, or with a one-time password an operator issues (portcullis user create).'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add employee')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async () => {
      if (!form.reportValidity()) return;
      const e = await api<Employee>('/api/employees', {
        method: 'POST',
        body: { username: username.value.trim(), email: email.value.trim(), display_name: name.value, roles: roles.value(), department_id: dep.value ? Number(dep.value) : null },
      });
      say(`Added ${e.data.display_name}.`);
      await reload();
    });
  });
  replace(into, h('details', { class: 'card' }, h('summary', null, 'Add an employee'), form));
}

export async function employeeView(ctx: Ctx): Promise<void> {
  const id = Number(ctx.params[0]);
  const body = h('div');
  replace(ctx.root, title('Employee'), adminNav('/admin/employees'), body);
  await section(body, () => Promise.all([get<Employee>(`/api/employees/${id}`), get<Department[]>('/api/departments')]), ([e, deps]) => {
    replace(ctx.root.querySelector('.page-head') as HTMLElement, h('h1', { tabindex: '-1' }, e.display_name));
    const name = h('input', { name: 'display_name', required: true, maxlength: '100', value: e.display_name });
    const email = h('input', { name: 'email', type: 'email', required: true, value: e.email });
    const roles = roleBoxes(e.roles);
    const dep = departmentSelect(deps, e.department_id);
    const status = select('status', [['active', 'Active'], ['disabled', 'Disabled']], e.status);
    const timeout = h('input', { name: 'session_timeout_seconds', type: 'number', min: '300', max: '43200', step: '60', value: e.session_timeout_seconds ?? '' });
    const form = h('form', { class: 'card', 'aria-label': 'Edit employee' }, formError(),
      h('p', { class: 'muted' }, `${e.username}${e.is_oidc ? ' · signs in with SSO' : ''} · added ${new Date(e.created_at).toLocaleDateString()}`),
      h('div', { class: 'grid' }, field('Display name', name), field('E-mail', email), field('Department', dep), field('Status', status),
        field('Session idle timeout (seconds)', timeout, 'Empty: the default. 300 to 43200.')),
      roles.box,
      h('p', { class: 'hint' }, 'Changing roles or disabling ends the employee’s sessions.'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void submitting(form, async () => {
        if (!form.reportValidity()) return;
        await api(`/api/employees/${id}`, {
          method: 'PATCH',
          body: {
            display_name: name.value, email: email.value.trim(), roles: roles.value(), status: status.value,
            department_id: dep.value ? Number(dep.value) : null,
            session_timeout_seconds: timeout.value ? Number(timeout.value) : null,
          },
        });
        forgetNames();
        say('Saved.');
      });
    });
    const sessions = h('div');
    const loadSessions = (): Promise<void> => section(sessions, () => get<Session[]>(`/admin/users/${id}/sessions`), (list) => [
      sessionTable(list, loadSessions),
      list.length > 0 ? confirmButton('End all sessions', `End all ${list.length} sessions?`, async () => {
        await api(`/admin/users/${id}/sessions`, { method: 'DELETE' });
        say('Sessions ended.');
        await loadSessions();
      }) : null,
    ]);
    void loadSessions();
    return [
      form,
      h('section', { class: 'card', 'aria-labelledby': 'es-h' }, h('h2', { id: 'es-h' }, 'Sessions'), sessions),
      h('section', { class: 'card', 'aria-labelledby': 'danger-h' }, h('h2', { id: 'danger-h' }, 'Security'),
        h('div', { class: 'actions' },
          confirmButton('Reset two-step sign-in', 'Remove the authenticator and backup codes, and end every session?', async () => {
            await api(`/admin/users/${id}/mfa/reset`, { method: 'POST' });
            say('The authenticator was reset.');
            await loadSessions();
          }),
          confirmButton('Delete employee', `Delete ${e.username}?`, async () => {
            await api(`/api/employees/${id}`, { method: 'DELETE' });
            forgetNames();
            say(`Deleted ${e.username}.`);
            go('/admin/employees');
          }))),
    ];
  }, 'Loading the employee…');
}

function sessionTable(list: Session[], reload: () => Promise<void>, who?: Map<number, string>): HTMLElement {
  return table<Session>('Sessions', [
    ...(who ? [['Employee', (s: Session) => who.get(s.employee_id) ?? `#${s.employee_id}`] as [string, (s: Session) => Child]] : []),
    ['Started', (s) => time(s.created_at)],
    ['Method', (s) => `${s.auth_method}${s.mfa ? ' + second factor' : ''}`],
    ['From', (s) => s.source_ip ?? '—'],
    ['Browser', (s) => h('span', { class: 'ua' }, s.user_agent ?? '—')],
    ['Ends', (s) => time(s.expires_at)],
    ['', (s) => confirmButton('Revoke', 'Revoke this session?', async () => {
      await api(`/admin/sessions/${encodeURIComponent(s.session_id)}`, { method: 'DELETE' });
      say('Session revoked.');
      await reload();
    })],
  ], list, 'No active session.');
}

// ------------------------------------------------------------------ departments

export async function departmentsView(ctx: Ctx): Promise<void> {
  const list = h('div');
  const name = h('input', { name: 'name', required: true, maxlength: '100' });
  const form = h('form', { class: 'card inline-form', 'aria-label': 'Add a department' }, formError(), field('New department', name),
    h('button', { type: 'submit', class: 'primary' }, 'Add'));
  replace(ctx.root, title('Departments'), adminNav('/admin/departments'), form, list);
  const load = (): Promise<void> => section(list, () => get<Department[]>('/api/departments'), (deps) => table<Department>('Departments', [
    ['Name', (d) => renameForm(d, load)],
    ['Created', (d) => time(d.created_at)],
    ['', (d) => confirmButton('Delete', `Delete ${d.name}?`, async () => {
      await api(`/api/departments/${d.id}`, { method: 'DELETE' });
      forgetNames();
      say(`Deleted ${d.name}.`);
      await load();
    })],
  ], deps, 'No departments yet.'), 'Loading departments…');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async () => {
      if (!form.reportValidity()) return;
      await api('/api/departments', { method: 'POST', body: { name: name.value } });
      say(`Added ${name.value}.`);
      name.value = '';
      forgetNames();
      await load();
    });
  });
  await load();
}

function renameForm(d: Department, reload: () => Promise<void>): HTMLElement {
  const input = h('input', { name: 'name', required: true, maxlength: '100', value: d.name, 'aria-label': `Name of ${d.name}` });
  const form = h('form', { class: 'rename' }, formError(), input, h('button', { type: 'submit' }, 'Rename'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async () => {
      if (!form.reportValidity() || input.value === d.name) return;
      await api(`/api/departments/${d.id}`, { method: 'PATCH', body: { name: input.value } });
      forgetNames();
      say('Renamed.');
      await reload();
    });
  });
  return form;
}

// ------------------------------------------------------------------ sessions

export async function sessionsView(ctx: Ctx): Promise<void> {
  const list = h('div');
  replace(ctx.root, title('Active sessions'), adminNav('/admin/sessions'), list);
  const load = (): Promise<void> => section(list, async () => {
    const [sessions, emps] = await Promise.all([get<Session[]>('/admin/sessions'), get<Employee[]>('/api/employees').catch(() => [])]);
    return { sessions, who: new Map(emps.map((e) => [e.id, `${e.display_name} (${e.username})`])) };
  }, ({ sessions, who }) => sessionTable(sessions, load, who), 'Loading sessions…');
  await load();
}

// ------------------------------------------------------------------ audit log

const AUDIT_FILTERS = ['from', 'to', 'user_id', 'category', 'action', 'outcome', 'level', 'request_id', 'session_id', 'emitter'] as const;

/// `datetime-local` (the user's clock) to RFC 3339 UTC, and back.
function toRfc3339(local: string): string {
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
function toLocalInput(iso: string | null): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export async function auditView(ctx: Ctx): Promise<void> {
  const q = ctx.query;
  const filters: Record<string, string> = {};
  for (const k of AUDIT_FILTERS) {
    const v = q.get(k);
    if (v) filters[k] = v;
  }
  const trail = (q.get('trail') ?? '').split(',').filter((c) => /^[A-Za-z0-9_=-]+$/.test(c));
  const cursor = trail.length > 0 ? trail[trail.length - 1] : undefined;

  const from = h('input', { name: 'from', type: 'datetime-local', value: toLocalInput(filters.from ?? null) });
  const to = h('input', { name: 'to', type: 'datetime-local', value: toLocalInput(filters.to ?? null) });
  const user = h('input', { name: 'user_id', value: filters.user_id ?? '', autocapitalize: 'none' });
  const action = h('input', { name: 'action', value: filters.action ?? '', placeholder: 'login, ticket.update…', autocapitalize: 'none' });
  const requestId = h('input', { name: 'request_id', value: filters.request_id ?? '' });
  const sessionId = h('input', { name: 'session_id', value: filters.session_id ?? '' });
  const category = select('category', [['', 'Any'], ...['auth', 'user', 'maintenance', 'system', 'api', 'security'].map((c): [string, string] => [c, c])], filters.category);
  const outcome = select('outcome', [['', 'Any'], ['success', 'success'], ['failure', 'failure'], ['unknown', 'unknown']], filters.outcome);
  const level = select('level', [['', 'Any'], ...['info', 'warning', 'error', 'critical'].map((c): [string, string] => [c, c])], filters.level);
  const emitter = select('emitter', [['', 'Any'], ['proxy', 'proxy'], ['backend', 'backend'], ['cli', 'cli']], filters.emitter);
  // Folded on a phone unless a filter is set; open on wider screens.
  const open = Object.keys(filters).length > 0 || window.matchMedia('(min-width: 701px)').matches;
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the audit log' },
    h('details', { class: 'filter-box', open },
      h('summary', null, 'Filters'),
      h('div', { class: 'grid' },
        field('From', from), field('To', to), field('Action', action), field('User', user, 'An employee id, or the name tried at a failed sign-in'),
        field('Category', category), field('Outcome', outcome), field('Level', level), field('Emitter', emitter),
        field('Request id', requestId), field('Session id', sessionId))),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('a', { class: 'button subtle', href: link('/admin/audit') }, 'Clear'),
      h('button', { type: 'button', onclick: (ev: Event) => void exportCsv(ev, filters) }, 'Export CSV')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next: Record<string, string> = {};
    const set = (k: string, v: string): void => {
      if (v.trim()) next[k] = v.trim();
    };
    set('from', from.value ? toRfc3339(from.value) : '');
    set('to', to.value ? toRfc3339(to.value) : '');
    set('user_id', user.value);
    set('action', action.value);
    set('category', category.value);
    set('outcome', outcome.value);
    set('level', level.value);
    set('emitter', emitter.value);
    set('request_id', requestId.value);
    set('session_id', sessionId.value);
    go('/admin/audit', next);
  });
  const count = h('p', { class: 'muted', 'aria-live': 'polite' });
  const list = h('div');
  replace(ctx.root, title('Audit log'), adminNav('/admin/audit'), form, count, list);
  void get<{ count: number }>('/admin/audit/logs/count', filters)
    .then((c) => replace(count, `${c.count} matching event${c.count === 1 ? '' : 's'}, newest first.`))
    .catch(() => count.replaceChildren());
  await section(list, () => get<AuditPage>('/admin/audit/logs', { ...filters, limit: 50, cursor }), (page) => {
    const pager: Child[] = [];
    if (trail.length > 0) pager.push(h('a', { class: 'button', rel: 'prev', href: link('/admin/audit', { ...filters, trail: trail.slice(0, -1).join(',') }) }, '← Newer'));
    if (page.next_cursor) pager.push(h('a', { class: 'button', rel: 'next', href: link('/admin/audit', { ...filters, trail: [...trail, page.next_cursor].join(',') }) }, 'Older →'));
    return [
      table<AuditEvent>('Audit events', [
        ['Time', (e) => time(str(e['@timestamp']))],
        ['Action', (e) => h('code', { class: 'action' }, str(e['event.action']))],
        ['Outcome', (e) => h('span', { class: `badge outcome-${str(e['event.outcome']).replace(/[^a-z]/g, '')}` }, str(e['event.outcome']))],
        ['User', (e) => str(e['user.id']) || '—'],
        ['From', (e) => str(e['source.ip']) || '—'],
        ['Details', (e) => details(e)],
      ], page.items, 'No event matches.'),
      pager.length > 0 ? h('nav', { class: 'pager', 'aria-label': 'Pages' }, ...pager) : null,
    ];
  }, 'Loading events…');
}

function str(v: unknown): string {
  if (v === null || v === undefined) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/// The whole event as indented JSON text (never markup), folded.
function details(e: AuditEvent): HTMLElement {
  const d = e['portcullis.details'];
  const short = d && typeof d === 'object'
    ? Object.entries(d as Record<string, unknown>).slice(0, 3).map(([k, v]) => `${k}: ${str(v)}`).join(', ')
    : '';
  return h('details', { class: 'event' }, h('summary', null, short || 'Event'), h('pre', null, JSON.stringify(e, null, 2)));
}

async function exportCsv(ev: Event, filters: Record<string, string>): Promise<void> {
  const button = ev.currentTarget as HTMLButtonElement;
  button.disabled = true;
  try {
    const a = await api<Blob>('/admin/audit/logs/export', { query: filters, blob: true });
    const url = URL.createObjectURL(a.data);
    const link = h('a', { href: url, download: `portcullis-audit-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.csv`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
    say('The export is downloading.');
  } catch (e) {
    say(e instanceof Error ? e.message : String(e), 'error');
  } finally {
    button.disabled = false;
  }
}
