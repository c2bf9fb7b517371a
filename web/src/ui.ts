// Shared pieces of the interface: loading and error states, the status line, inline
// confirmation, tables that turn into cards on a phone.

import { ApiError, describe } from './api';
import { type Child, h, replace } from './dom';

export interface Ctx {
  /// The route's own container; it is detached when the user navigates away.
  root: HTMLElement;
  /// Path parameters (`#/tickets/:id` → [id]).
  params: string[];
  query: URLSearchParams;
}

/// Status messages for screen readers and sighted users alike (`role=status`).
let saidAt = 0;

export function say(message: string, kind: 'ok' | 'error' = 'ok'): void {
  const el = document.getElementById('status');
  if (!el) return;
  saidAt = Date.now();
  replace(el, h('p', { class: `flash ${kind}` }, message));
  window.setTimeout(() => {
    if (el.textContent === message) el.replaceChildren();
  }, 8000);
}

/// On navigation: a message said just before (it explains the move) stays, older ones go.
export function clearStaleStatus(): void {
  if (Date.now() - saidAt > 1500) document.getElementById('status')?.replaceChildren();
}

export function loading(what = 'Loading…'): HTMLElement {
  return h('p', { class: 'loading', role: 'status', 'aria-live': 'polite' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), what);
}

/// An error box with what went wrong and, when given, a way to try again.
export function errorBox(e: unknown, retry?: () => void): HTMLElement {
  const parts: Child[] = [h('p', null, describe(e))];
  if (e instanceof ApiError && e.problem.request_id) {
    parts.push(h('p', { class: 'muted small' }, `Reference: ${e.problem.request_id}`));
  }
  if (retry) parts.push(h('button', { type: 'button', onclick: () => retry() }, 'Try again'));
  return h('div', { class: 'error', role: 'alert' }, ...parts);
}

/// Runs `load`, showing a loading state in `into`, then what `render` builds, or an
/// error with a retry.
export async function section<T>(
  into: HTMLElement,
  load: () => Promise<T>,
  render: (data: T) => Child,
  what?: string,
): Promise<void> {
  into.setAttribute('aria-busy', 'true');
  replace(into, loading(what));
  try {
    const data = await load();
    replace(into, render(data));
  } catch (e) {
    replace(into, errorBox(e, () => void section(into, load, render, what)));
  } finally {
    into.removeAttribute('aria-busy');
  }
}

/// A button that asks once more before acting (no `confirm()` dialogs).
export function confirmButton(label: string, question: string, act: () => Promise<void> | void, cls = 'danger'): HTMLElement {
  const box = h('span', { class: 'confirm' });
  const ask = (): void => {
    const yes = h('button', { type: 'button', class: cls, onclick: () => void run() }, 'Yes');
    const no = h('button', { type: 'button', onclick: () => reset(true) }, 'No');
    replace(box, h('span', { class: 'question' }, question), ' ', yes, ' ', no);
    yes.focus();
  };
  const first = h('button', { type: 'button', class: cls, onclick: ask }, label);
  const reset = (focus: boolean): void => {
    replace(box, first);
    if (focus) first.focus();
  };
  const run = async (): Promise<void> => {
    replace(box, h('span', { class: 'muted' }, 'Working…'));
    try {
      await act();
    } catch (e) {
      say(describe(e), 'error');
      reset(true);
    }
  };
  reset(false);
  return box;
}

/// A table; on narrow screens CSS lays each row out as a card, using `data-label`.
export function table<T>(
  caption: string,
  columns: Array<[string, (row: T) => Child]>,
  rows: T[],
  empty = 'Nothing here yet.',
): HTMLElement {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'cards' },
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', null, h('tr', null, columns.map(([name]) => h('th', { scope: 'col' }, name)))),
      h(
        'tbody',
        null,
        rows.map((row) => h('tr', null, columns.map(([name, cell]) => h('td', { 'data-label': name }, cell(row))))),
      ),
    ),
  );
}

/// Disables a form's controls while `work` runs; shows its error inside the form.
/// `work` may return the control to focus once the form is usable again.
export async function submitting(form: HTMLFormElement, work: () => Promise<void | HTMLElement>): Promise<void> {
  const controls = Array.from(form.elements) as Array<HTMLInputElement | HTMLButtonElement>;
  const errors = form.querySelector<HTMLElement>('.form-error');
  errors?.replaceChildren();
  const wasDisabled = controls.map((c) => c.disabled);
  controls.forEach((c) => {
    c.disabled = true;
  });
  form.setAttribute('aria-busy', 'true');
  let focus: void | HTMLElement = undefined;
  try {
    focus = await work();
  } catch (e) {
    if (errors) {
      replace(errors, errorBox(e));
      errors.querySelector<HTMLElement>('.error')?.setAttribute('tabindex', '-1');
      errors.querySelector<HTMLElement>('.error')?.focus();
    } else {
      say(describe(e), 'error');
    }
  } finally {
    controls.forEach((c, i) => {
      c.disabled = wasDisabled[i] ?? false;
    });
    form.removeAttribute('aria-busy');
  }
  if (focus) focus.focus();
}

export function formError(): HTMLElement {
  return h('div', { class: 'form-error' });
}

export function badge(text: string, kind: string): HTMLElement {
  return h('span', { class: `badge ${kind}` }, text);
}

export const STATUS_LABEL: Record<string, string> = {
  open: 'Open',
  in_progress: 'In progress',
  resolved: 'Resolved',
  closed: 'Closed',
  reopened: 'Reopened',
};

export const PRIORITY_LABEL: Record<string, string> = {
  low: 'Low',
  medium: 'Medium',
  high: 'High',
  critical: 'Critical',
};

export function statusBadge(s: string): HTMLElement {
  return badge(STATUS_LABEL[s] ?? s, `status-${s.replace(/[^a-z_]/g, '')}`);
}

export function priorityBadge(p: string): HTMLElement {
  return badge(PRIORITY_LABEL[p] ?? p, `priority-${p.replace(/[^a-z]/g, '')}`);
}

/// `#/path?query` for links.
export function link(path: string, query?: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return `#${path}${s ? `?${s}` : ''}`;
}

export function go(path: string, query?: Record<string, string | number | null | undefined>): void {
  const target = link(path, query);
  if (location.hash === target) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = target;
}

/// The page heading of a route; focused after navigation so screen readers announce it.
export function title(text: string, ...extra: Child[]): HTMLElement {
  document.title = `${text} · Portcullis`;
  return h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, text), ...extra);
}
