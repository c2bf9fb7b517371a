// One ticket: its fields, editing (with If-Match; a conflict shows both versions and
// loses nothing), transitions, assignment and approval for those who may, comments
// and the hash-chained history.

import { ApiError, api, get } from '../api';
import { type Child, field, h, replace, select, time } from '../dom';
import { type Comment, type HistoryEntry, NEXT_STATUS, PRIORITIES, type Ticket, etagOf } from '../model';
import { hasRole, isManager, me } from '../session';
import {
  type Ctx, PRIORITY_LABEL, STATUS_LABEL, errorBox, formError, loading, priorityBadge, say, section,
  statusBadge, submitting, title,
} from '../ui';
import { type Names, departmentName, names, personName } from './tickets';

interface Draft {
  title: string;
  description: string;
  priority: string;
}

const FIELDS: Array<[keyof Draft, string]> = [['title', 'Title'], ['description', 'Description'], ['priority', 'Priority']];

export async function ticketView(ctx: Ctx): Promise<void> {
  const id = ctx.params[0] ?? '';
  const head = h('div');
  const body = h('div', { class: 'ticket' });
  replace(ctx.root, head, body);
  replace(head, title(id));
  await section(body, async () => {
    const [a, n] = await Promise.all([api<Ticket>(`/api/tickets/${encodeURIComponent(id)}`), names()]);
    return { ticket: a.data, etag: a.etag ?? etagOf(a.data), n };
  }, ({ ticket, n }) => {
    const page = new TicketPage(ticket, n, head);
    if (ctx.query.get('created')) {
      say(`Ticket ${ticket.id} created.`);
      // Said once: a reload or a link to this page does not say it again.
      history.replaceState(null, '', `#/tickets/${encodeURIComponent(ticket.id)}`);
    }
    return page.root;
  }, 'Loading the ticket…');
}

class TicketPage {
  readonly root = h('div');
  private readonly summary = h('section', { class: 'card', 'aria-labelledby': 'summary-h' });
  private readonly actions = h('section', { class: 'card', 'aria-labelledby': 'actions-h' });
  private readonly comments = h('section', { class: 'card', 'aria-labelledby': 'comments-h' });
  private readonly history = h('section', { class: 'card', 'aria-labelledby': 'history-h' });
  private editing = false;

  constructor(private ticket: Ticket, private readonly n: Names, private readonly head: HTMLElement) {
    this.root.append(this.summary, this.actions, this.comments, this.history);
    this.renderTicket();
    void this.loadComments();
    void this.loadHistory();
  }

  private setTicket(t: Ticket): void {
    this.ticket = t;
    this.renderTicket();
    void this.loadHistory();
  }

  private renderTicket(): void {
    const t = this.ticket;
    replace(this.head, title(t.title, h('p', { class: 'muted ticket-id' }, t.id)));
    if (!this.editing) this.renderSummary();
    this.renderActions();
  }

  private renderSummary(): void {
    const t = this.ticket;
    replace(this.summary,
      h('div', { class: 'section-head' },
        h('h2', { id: 'summary-h', tabindex: '-1' }, 'Details'),
        h('button', { type: 'button', onclick: () => this.edit(null) }, 'Edit')),
      h('dl', { class: 'facts' },
        h('dt', null, 'Status'), h('dd', null, statusBadge(t.status)),
        h('dt', null, 'Priority'), h('dd', null, priorityBadge(t.priority)),
        h('dt', null, 'Department'), h('dd', null, departmentName(this.n, t.department_id)),
        h('dt', null, 'Reporter'), h('dd', null, personName(this.n, t.reporter_id)),
        h('dt', null, 'Assignee'), h('dd', null, personName(this.n, t.assignee_id)),
        h('dt', null, 'Approved'), h('dd', null, t.approved_at ? [personName(this.n, t.approved_by), ', ', time(t.approved_at)] : 'Not yet'),
        h('dt', null, 'Created'), h('dd', null, time(t.created_at)),
        h('dt', null, 'Updated'), h('dd', null, time(t.updated_at), ` (version ${t.version})`)),
      h('h3', null, 'Description'),
      h('p', { class: 'description' }, t.description || h('span', { class: 'muted' }, 'No description.')));
  }

  // ------------------------------------------------------------ editing

  /// The edit form, with `mine` (the user's unsaved values) when coming back from a conflict.
  private edit(mine: Draft | null, base: Ticket = this.ticket): void {
    this.editing = true;
    const d = mine ?? { title: base.title, description: base.description, priority: base.priority };
    const titleInput = h('input', { name: 'title', required: true, maxlength: '200', value: d.title });
    const description = h('textarea', { name: 'description', rows: '8', maxlength: '10000' });
    description.value = d.description;
    const priority = select('priority', PRIORITIES.map((p): [string, string] => [p, PRIORITY_LABEL[p] ?? p]), d.priority);
    const form = h('form', { class: 'edit', 'aria-label': 'Edit ticket' }, formError(),
      field('Title', titleInput), field('Description', description), field('Priority', priority),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Save'),
        h('button', { type: 'button', class: 'subtle', onclick: () => this.stopEditing() }, 'Cancel')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void submitting(form, async () => {
        if (!form.reportValidity()) return;
        const draft: Draft = { title: titleInput.value, description: description.value, priority: priority.value };
        await this.save(draft, base);
      });
    });
    replace(this.summary, h('h2', { id: 'summary-h' }, 'Edit ticket'), form);
    titleInput.focus();
  }

  private stopEditing(): void {
    this.editing = false;
    this.renderSummary();
  }

  /// Sends only the fields changed against `base`, with `base`'s ETag.
  private async save(draft: Draft, base: Ticket): Promise<void> {
    const patch: Partial<Draft> = {};
    for (const [k] of FIELDS) if (draft[k] !== base[k]) patch[k] = draft[k];
    if (Object.keys(patch).length === 0) {
      this.stopEditing();
      return;
    }
    try {
      const a = await api<Ticket>(`/api/tickets/${encodeURIComponent(base.id)}`, { method: 'PATCH', body: patch, ifMatch: etagOf(base) });
      this.editing = false;
      this.setTicket(a.data);
      say('Saved.');
      this.summary.querySelector<HTMLElement>('h2')?.focus();
    } catch (e) {
      if (e instanceof ApiError && e.status === 412) {
        const current = (await api<Ticket>(`/api/tickets/${encodeURIComponent(base.id)}`)).data;
        this.ticket = current;
        this.renderActions();
        this.conflict(draft, base, current);
        return;
      }
      throw e;
    }
  }

  /// Someone saved first: both versions side by side, nothing lost.
  private conflict(mine: Draft, base: Ticket, theirs: Ticket): void {
    const rows: Child[] = FIELDS.map(([k, label]) => {
      const differs = mine[k] !== theirs[k];
      const changedByThem = base[k] !== theirs[k];
      const show = (v: string): Child => (k === 'priority' ? PRIORITY_LABEL[v] ?? v : v || h('span', { class: 'muted' }, '(empty)'));
      return h('tr', { class: differs ? 'differs' : null },
        h('th', { scope: 'row' }, label, differs ? h('span', { class: 'visually-hidden' }, ' (differs)') : null),
        h('td', { 'data-label': 'Your version' }, h('div', { class: 'value' }, show(mine[k]))),
        h('td', { 'data-label': `Current version ${theirs.version}` }, h('div', { class: 'value' }, show(theirs[k])),
          changedByThem ? h('span', { class: 'badge changed' }, 'changed by someone else') : null));
    });
    const panel = h('div', { class: 'conflict', role: 'alert', tabindex: '-1' },
      h('h2', { id: 'summary-h' }, 'This ticket was changed while you were editing'),
      h('p', null, `Someone saved version ${theirs.version} after you opened version ${base.version}. Your changes are not saved yet and are kept below. Choose what to keep.`),
      h('div', { class: 'table-wrap' }, h('table', { class: 'cards compare' },
        h('caption', { class: 'visually-hidden' }, 'Your version and the current version'),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col' }, 'Your version'), h('th', { scope: 'col' }, `Current version (${theirs.version})`))),
        h('tbody', null, rows))),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', onclick: () => this.edit(mine, theirs) }, 'Edit my version again'),
        h('button', { type: 'button', onclick: (ev: Event) => this.overwrite(ev, mine, theirs) }, 'Save my version over theirs'),
        h('button', { type: 'button', class: 'subtle', onclick: () => { this.stopEditing(); say('Your changes were discarded.'); } }, 'Discard mine, keep theirs')));
    replace(this.summary, panel);
    panel.focus();
  }

  private overwrite(ev: Event, mine: Draft, theirs: Ticket): void {
    const button = ev.currentTarget as HTMLButtonElement;
    button.disabled = true;
    this.save(mine, theirs).catch((e) => {
      button.disabled = false;
      say(e instanceof Error ? e.message : String(e), 'error');
    });
  }

  // ------------------------------------------------------------ workflow

  private renderActions(): void {
    const t = this.ticket;
    const parts: Child[] = [h('h2', { id: 'actions-h' }, 'Workflow')];
    const mine = me();
    const privileged = isManager() || hasRole('technician') || !mine.known;
    // Reporters without another role may only close or reopen (tickets.rego).
    const targets = (NEXT_STATUS[t.status] ?? []).filter((s) => privileged || s === 'closed' || s === 'reopened');
    if (targets.length > 0) {
      parts.push(h('div', { class: 'actions' }, targets.map((s) =>
        h('button', { type: 'button', onclick: (ev: Event) => this.act(ev, `/transitions`, { to: s }, `Moved to ${STATUS_LABEL[s] ?? s}.`, 'POST') },
          transitionLabel(s)))));
    } else {
      parts.push(h('p', { class: 'muted' }, 'No further step from here.'));
    }
    if (isManager()) {
      const technicians = [...this.n.employees.values()].filter((e) => e.roles.includes('technician') && e.status === 'active');
      if (technicians.length > 0 || !mine.known) {
        const who = technicians.length > 0
          ? select('assignee_id', [['', 'Choose a technician'], ...technicians.map((e): [string, string] => [String(e.id), `${e.display_name} (${e.username})`])],
            t.assignee_id ? String(t.assignee_id) : '', { required: true })
          : h('input', { name: 'assignee_id', type: 'number', min: '1', required: true });
        const form = h('form', { class: 'inline-form', 'aria-label': 'Assign' }, formError(), field('Assign to', who),
          h('button', { type: 'submit' }, 'Assign'));
        form.addEventListener('submit', (ev) => {
          ev.preventDefault();
          void submitting(form, async () => {
            if (!form.reportValidity()) return;
            await this.send('/assignment', { assignee_id: Number(who.value) }, 'Assigned.', 'PUT');
          });
        });
        parts.push(form);
      } else {
        parts.push(h('p', { class: 'muted' }, 'No active technician to assign.'));
      }
      if (!t.approved_at) {
        parts.push(h('div', { class: 'actions' },
          h('button', { type: 'button', onclick: (ev: Event) => this.act(ev, '/approval', undefined, 'Approved.', 'POST') }, 'Approve')));
      }
    }
    replace(this.actions, ...parts);
  }

  private act(ev: Event, path: string, body: unknown, done: string, method: string): void {
    const button = ev.currentTarget as HTMLButtonElement;
    button.disabled = true;
    this.send(path, body, done, method).catch((e) => {
      button.disabled = false;
      if (e instanceof ApiError && e.status === 412) {
        say('The ticket changed meanwhile; it is shown as it is now. Try again.', 'error');
        void this.reload();
      } else {
        say(e instanceof Error ? e.message : String(e), 'error');
      }
    });
  }

  private async send(path: string, body: unknown, done: string, method: string): Promise<void> {
    const a = await api<Ticket>(`/api/tickets/${encodeURIComponent(this.ticket.id)}${path}`, { method, body, ifMatch: etagOf(this.ticket) });
    this.setTicket(a.data);
    say(done);
  }

  private async reload(): Promise<void> {
    const a = await api<Ticket>(`/api/tickets/${encodeURIComponent(this.ticket.id)}`);
    if (!this.editing) this.setTicket(a.data);
  }

  // ------------------------------------------------------------ comments

  private async loadComments(): Promise<void> {
    const list = h('div');
    const text = h('textarea', { name: 'body', rows: '4', required: true, maxlength: '5000' });
    const form = h('form', { class: 'comment-form' }, formError(), field('Add a comment', text),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Comment')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void submitting(form, async () => {
        if (!form.reportValidity()) return;
        await api<Comment>(`/api/tickets/${encodeURIComponent(this.ticket.id)}/comments`, { method: 'POST', body: { body: text.value } });
        text.value = '';
        say('Comment added.');
        await renderList();
        void this.loadHistory();
      });
    });
    const renderList = (): Promise<void> => section(list,
      () => get<Comment[]>(`/api/tickets/${encodeURIComponent(this.ticket.id)}/comments`),
      (comments) => comments.length === 0
        ? h('p', { class: 'empty' }, 'No comments yet.')
        : h('ol', { class: 'comments' }, comments.map((c) => h('li', { class: 'comment' },
          h('p', { class: 'meta' }, h('strong', null, personName(this.n, c.author_id)), ' · ', time(c.created_at)),
          h('p', { class: 'comment-body' }, c.body)))),
      'Loading comments…');
    replace(this.comments, h('h2', { id: 'comments-h' }, 'Comments'), list, form);
    await renderList();
  }

  // ------------------------------------------------------------ history

  private async loadHistory(): Promise<void> {
    const list = h('div');
    replace(this.history, h('h2', { id: 'history-h' }, 'History'), list);
    replace(list, loading('Loading the history…'));
    try {
      const entries = await get<HistoryEntry[]>(`/api/tickets/${encodeURIComponent(this.ticket.id)}/history`);
      replace(list, entries.length === 0 ? h('p', { class: 'empty' }, 'No history.') : h('ol', { class: 'history' },
        [...entries].reverse().map((e) => h('li', null,
          h('p', { class: 'meta' }, h('strong', null, historyAction(e.action)), ' by ', personName(this.n, e.actor_id), ' · ', time(e.created_at)),
          snapshotFacts(e.snapshot),
          h('details', null, h('summary', null, 'Integrity'),
            h('p', { class: 'hash' }, `#${e.sequence} hash ${e.hash}`),
            h('p', { class: 'hash' }, `previous ${e.prev_hash}`))))));
    } catch (e) {
      replace(list, errorBox(e, () => void this.loadHistory()));
    }
  }
}

function transitionLabel(to: string): string {
  switch (to) {
    case 'in_progress': return 'Start work';
    case 'resolved': return 'Mark resolved';
    case 'closed': return 'Close';
    case 'reopened': return 'Reopen';
    default: return `Move to ${STATUS_LABEL[to] ?? to}`;
  }
}

function historyAction(a: string): string {
  const known: Record<string, string> = {
    create: 'Created', created: 'Created', update: 'Edited', updated: 'Edited', transition: 'Status changed',
    assign: 'Assigned', assignment: 'Assigned', approve: 'Approved', approval: 'Approved', comment: 'Commented',
  };
  return known[a] ?? a;
}

/// The ticket as the entry recorded it: a few fields, as text.
function snapshotFacts(snapshot: string): HTMLElement | null {
  let s: Record<string, unknown>;
  try {
    s = JSON.parse(snapshot) as Record<string, unknown>;
  } catch {
    return null;
  }
  const facts: Child[] = [];
  for (const k of ['title', 'status', 'priority', 'assignee_id']) {
    if (k in s) {
      const v = s[k];
      facts.push(h('dt', null, k.replace('_id', '').replace('_', ' ')),
        h('dd', null, k === 'status' ? STATUS_LABEL[String(v)] ?? String(v) : v === null ? '—' : String(v)));
    }
  }
  return facts.length > 0 ? h('dl', { class: 'facts small' }, facts) : null;
}
