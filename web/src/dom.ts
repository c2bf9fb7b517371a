// Building the page with DOM APIs only. Every piece of text (ticket fields, comments,
// names, audit details) goes in as a Text node, never as markup: there is no HTML
// parser anywhere in this application, and under the CSP's `require-trusted-types-for
// 'script'` an HTML sink would throw anyway.

export type Child = Node | string | number | null | undefined | false | Child[];

type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/// An element with attributes, event handlers (`on<event>`) and children.
/// `style` is refused: the CSP allows no inline style, use a class.
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        el.addEventListener(name.slice(2), value as EventListener);
      } else if (name === 'style' || name.startsWith('on')) {
        throw new Error(`refusing attribute ${name}`);
      } else if (value === true) {
        el.setAttribute(name, '');
      } else {
        el.setAttribute(name, String(value));
      }
    }
  }
  append(el, ...children);
  return el;
}

/// Appends children, strings as Text nodes.
export function append(parent: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, ...c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
}

/// Replaces an element's children.
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

/// A form field with its label (and an optional hint), ids linked for screen readers.
let fieldCounter = 0;
export function field(
  label: string,
  control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement,
  hint?: string,
): HTMLDivElement {
  fieldCounter += 1;
  const id = control.id || `f${fieldCounter}`;
  control.id = id;
  const parts: Child[] = [h('label', { for: id }, label), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', { class: 'field' }, ...parts);
}

export function select(
  name: string,
  options: Array<[string, string]>,
  value: string | null | undefined,
  attrs: Attrs = {},
): HTMLSelectElement {
  const s = h('select', { name, ...attrs });
  for (const [v, label] of options) {
    const o = h('option', { value: v }, label);
    if (v === (value ?? '')) o.selected = true;
    s.append(o);
  }
  return s;
}

/// A date as the user's locale shows it; the raw value when it does not parse.
export function when(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/// A `<time>` element.
export function time(iso: string | null | undefined): HTMLElement {
  return h('time', iso ? { datetime: iso } : null, when(iso));
}
