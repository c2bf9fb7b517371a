// The ticket list (filters, paging) and the new-ticket form.

import { api, get } from '../api';
import { type Child, field, h, replace, select, time } from '../dom';
import { type Department, type Employee, PRIORITIES, STATUSES, type Ticket, type TicketPage } from '../model';
import { hasRole, isManager, me } from '../session';
import {
  type Ctx, PRIORITY_LABEL, STATUS_LABEL, formError, go, link, priorityBadge, section, statusBadge,
  submitting, table, title,
} from '../ui';

const PAGE = 20;

/// Departments and employees by id, for names instead of numbers (managers may read
/// them; for everyone else the lookups stay empty and ids are shown).
export interface Names {
  departments: Map<number, string>;
  employees: Map<number, Employee>;
}

let cachedNames: Promise<Names> | null = null;

export function names(fresh = false): Promise<Names> {
  if (fresh || !cachedNames) {
    cachedNames = (async () => {
      const n: Names = { departments: new Map(), employees: new Map() };
      if (!isManager()) return n; // unknown roles count as maybe: the server decides
      const [deps, emps] = await Promise.all([
        get<Department[]>('/api/departments').catch(() => []),
        get<Employee[]>('/api/employees').catch(() => []),
      ]);
      deps.forEach((d) => n.departments.set(d.id, d.name));
      emps.forEach((e) => n.employees.set(e.id, e));
      return n;
    })();
  }
  return cachedNames;
}

export function forgetNames(): void {
  cachedNames = null;
}

export function personName(n: Names, id: number | null | undefined): string {
  if (id === null || id === undefined) return '—';
  if (id === me().employee_id) return `${me().display_name || me().username || 'You'} (you)`;
  const e = n.employees.get(id);
  return e ? e.display_name : `#${id}`;
}

export function departmentName(n: Names, id: number | null | undefined): string {
  if (id === null || id === undefined) return '—';
  return n.departments.get(id) ?? `#${id}`;
}

const FILTERS = ['status', 'department_id', 'assignee_id', 'reporter_id'] as const;

export async function ticketListView(ctx: Ctx): Promise<void> {
  const q = ctx.query;
  const filters: Record<string, string> = {};
  for (const k of FILTERS) {
    const v = q.get(k);
    if (v) filters[k] = v;
  }
  // Cursors of the pages before this one, so "Previous" works without the server's help.
  const trail = (q.get('trail') ?? '').split(',').filter((c) => /^[A-Za-z0-9_-]+$/.test(c));
  const cursor = trail.length > 0 ? trail[trail.length - 1] : undefined;

  const n = await names();
  const myId = me().employee_id;
  const status = select('status', [['', 'Any status'], ...STATUSES.map((s): [string, string] => [s, STATUS_LABEL[s] ?? s])], filters.status);
  const controls: Child[] = [field('Status', status)];
  let department: HTMLSelectElement | null = null;
  if (n.departments.size > 0) {
    department = select('department_id',
      [['', 'Any department'], ...[...n.departments].map(([id, name]): [string, string] => [String(id), name])],
      filters.department_id);
    controls.push(field('Department', department));
  }
  const mine = select('mine', [
    ['', 'Everything I can see'],
    ...(myId !== undefined ? [['reported', 'Reported by me'] as [string, string]] : []),
    ...(myId !== undefined && hasRole('technician') ? [['assigned', 'Assigned to me'] as [string, string]] : []),
  ], filters.reporter_id && Number(filters.reporter_id) === myId ? 'reported'
    : filters.assignee_id && Number(filters.assignee_id) === myId ? 'assigned' : '');
  if (myId !== undefined) controls.push(field('Whose', mine));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter tickets' },
    ...controls,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply'),
      h('a', { href: link('/tickets'), class: 'button subtle' }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next: Record<string, string> = {};
    if (status.value) next.status = status.value;
    if (department?.value) next.department_id = department.value;
    if (mine.value === 'reported' && myId !== undefined) next.reporter_id = String(myId);
    if (mine.value === 'assigned' && myId !== undefined) next.assignee_id = String(myId);
    go('/tickets', next);
  });

  const results = h('div', { class: 'results' });
  replace(ctx.root,
    title('Tickets', h('a', { class: 'button primary', href: '#/new' }, 'New ticket')),
    form, results);

  await section(results,
    () => get<TicketPage>('/api/tickets', { ...filters, limit: PAGE, cursor }),
    (page) => {
      const pager: Child[] = [];
      if (trail.length > 0) {
        pager.push(h('a', { class: 'button', href: link('/tickets', { ...filters, trail: trail.slice(0, -1).join(',') }), rel: 'prev' }, '← Previous'));
      }
      if (page.next_cursor) {
        pager.push(h('a', { class: 'button', href: link('/tickets', { ...filters, trail: [...trail, page.next_cursor].join(',') }), rel: 'next' }, 'Next →'));
      }
      return [
        table<Ticket>('Tickets', [
          ['Ticket', (t) => h('a', { href: `#/tickets/${encodeURIComponent(t.id)}`, class: 'ticket-link' }, t.id)],
          ['Title', (t) => h('span', { class: 'ticket-title' }, t.title)],
          ['Status', (t) => statusBadge(t.status)],
          ['Priority', (t) => priorityBadge(t.priority)],
          ['Department', (t) => departmentName(n, t.department_id)],
          ['Assignee', (t) => personName(n, t.assignee_id)],
          ['Updated', (t) => time(t.updated_at)],
        ], page.items, Object.keys(filters).length > 0 ? 'No ticket matches these filters.' : 'No tickets yet.'),
        pager.length > 0 ? h('nav', { class: 'pager', 'aria-label': 'Pages' }, ...pager) : null,
      ];
    },
    'Loading tickets…');
}

export async function newTicketView(ctx: Ctx): Promise<void> {
  const n = await names();
  const titleInput = h('input', { name: 'title', required: true, maxlength: '200' });
  const description = h('textarea', { name: 'description', rows: '6', maxlength: '10000' });
  const priority = select('priority', PRIORITIES.map((p): [string, string] => [p, PRIORITY_LABEL[p] ?? p]), 'medium');
  let department: HTMLSelectElement | null = null;
  const fields = [field('Title', titleInput), field('Description', description), field('Priority', priority)];
  if (n.departments.size > 0) {
    department = select('department_id',
      [['', 'My department'], ...[...n.departments].map(([id, name]): [string, string] => [String(id), name])],
      me().department_id ? String(me().department_id) : (n.departments.size === 1 ? String([...n.departments.keys()][0]) : ''));
    fields.push(field('Department', department));
  }
  const form = h('form', { class: 'card' }, formError(), ...fields,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Create ticket'),
      h('a', { href: '#/tickets', class: 'button subtle' }, 'Cancel')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void submitting(form, async () => {
      if (!form.reportValidity()) return;
      const body: Record<string, unknown> = {
        title: titleInput.value,
        description: description.value,
        priority: priority.value,
      };
      if (department?.value) body.department_id = Number(department.value);
      const a = await api<Ticket>('/api/tickets', { method: 'POST', body });
      go(`/tickets/${encodeURIComponent(a.data.id)}`, { created: '1' });
    });
  });
  replace(ctx.root, title('New ticket'), form);
  titleInput.focus();
}
