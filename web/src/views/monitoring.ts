// The monitoring dashboard (`/monitoring/dashboard`, also `#/monitoring`): the figures
// of `/monitoring/health`, `/monitoring/errors` and `/monitoring/performance` as
// charts, for administrators and developers. Charts are SVG built with DOM APIs
// (createElementNS, attributes, text nodes): no markup from strings, no inline style
// (colours come from classes in styles.css), so the page runs under the strict CSP.

import { api } from '../api';
import { type Child, h, replace, time } from '../dom';
import { type Ctx, errorBox, loading, title } from '../ui';

// ------------------------------------------------------------------ answers

interface SinkHealth {
  name: string;
  status: string;
  lag_events: number;
  delivery_errors: number;
  last_delivery_at: string | null;
  last_error: { at: string; kind: string } | null;
}

interface Health {
  status: string;
  version: string;
  checks: Record<string, string>;
  database: { status: string; engine: string; latency_ms: number };
  audit: { emitter: string; spool: { events: number; bytes: number; max_bytes: number; fill_ratio: number }; sinks: SinkHealth[] };
  upstreams: Array<{ name: string; status: string }>;
  proxy: { window_minutes: number; upstream_errors: number; last_error_at: string | null };
  policy: { digest: string };
}

interface ErrorGroup {
  problem_type: string | null;
  route: string | null;
  count: number;
  statuses: number[];
  actions: string[];
  emitters: string[];
  first_seen: string;
  last_seen: string;
  last_request_id: string | null;
}

interface Errors {
  from: string;
  minutes: number;
  events: number;
  truncated: boolean;
  groups: ErrorGroup[];
}

interface RoutePerformance {
  method: string;
  route: string;
  window_requests: number;
  total_requests: number;
  p50_ms: number;
  p90_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
}

interface Performance {
  ring_requests: number;
  routes: RoutePerformance[];
}

// ------------------------------------------------------------------ SVG

const SVG = 'http://www.w3.org/2000/svg';

/// An SVG element with attributes and children (text as Text nodes).
function s<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {},
  ...children: Array<Node | string>
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

const BAR_HEIGHT = 18;
const BAR_GAP = 8;
const LABEL_WIDTH = 300;
const CHART_WIDTH = 760;

function short(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/// A horizontal bar chart: one bar per row, its label on the left, its value at its end.
function barChart(label: string, rows: Array<{ label: string; value: number; cls: string; title: string }>, unit: string): SVGSVGElement {
  const max = Math.max(1, ...rows.map((r) => r.value));
  const span = CHART_WIDTH - LABEL_WIDTH - 70;
  const height = rows.length * (BAR_HEIGHT + BAR_GAP) + BAR_GAP;
  const svg = s('svg', { viewBox: `0 0 ${CHART_WIDTH} ${height}`, class: 'chart', role: 'img', 'aria-label': label });
  rows.forEach((r, i) => {
    const y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP);
    const w = Math.max(2, (r.value / max) * span);
    svg.append(
      s('text', { x: LABEL_WIDTH - 8, y: y + BAR_HEIGHT - 4, class: 'chart-label', 'text-anchor': 'end' }, short(r.label, 44)),
      s('rect', { x: LABEL_WIDTH, y, width: w.toFixed(1), height: BAR_HEIGHT, rx: 2, class: `bar ${r.cls}` }, s('title', {}, r.title)),
      s('text', { x: (LABEL_WIDTH + w + 6).toFixed(1), y: y + BAR_HEIGHT - 4, class: 'chart-value' }, `${r.value}${unit}`),
    );
  });
  return svg;
}

/// Latency per route: for each route a p50, p95 and p99 bar, on one scale.
function latencyChart(routes: RoutePerformance[]): SVGSVGElement {
  const max = Math.max(1, ...routes.map((r) => r.p99_ms));
  const span = CHART_WIDTH - LABEL_WIDTH - 130;
  const band = 3 * 7 + BAR_GAP * 2;
  const height = routes.length * band + 30;
  const svg = s('svg', { viewBox: `0 0 ${CHART_WIDTH} ${height}`, class: 'chart', role: 'img', 'aria-label': 'Latency percentiles per route' });
  const series: Array<[keyof RoutePerformance, string]> = [['p50_ms', 'p50'], ['p95_ms', 'p95'], ['p99_ms', 'p99']];
  routes.forEach((r, i) => {
    const y0 = 6 + i * band;
    svg.append(s('text', { x: LABEL_WIDTH - 8, y: y0 + 15, class: 'chart-label', 'text-anchor': 'end' }, short(`${r.method} ${r.route}`, 44)));
    series.forEach(([key, name], j) => {
      const v = r[key] as number;
      const w = Math.max(1, (v / max) * span);
      const y = y0 + j * 7;
      svg.append(s('rect', { x: LABEL_WIDTH, y, width: w.toFixed(1), height: 6, class: `bar ${name}` }, s('title', {}, `${name} ${v} ms`)));
    });
    svg.append(s('text', { x: (LABEL_WIDTH + (r.p99_ms / max) * span + 6).toFixed(1), y: y0 + 15, class: 'chart-value' }, `p95 ${r.p95_ms} ms`));
  });
  // Legend.
  const ly = height - 12;
  series.forEach(([, name], j) => {
    const x = LABEL_WIDTH + j * 80;
    svg.append(s('rect', { x, y: ly - 8, width: 12, height: 8, class: `bar ${name}` }), s('text', { x: x + 16, y: ly, class: 'chart-label' }, name));
  });
  return svg;
}

/// A gauge: how full the spool is.
function fillBar(ratio: number): SVGSVGElement {
  const pct = Math.min(1, Math.max(0, ratio));
  const cls = pct >= 0.9 ? 'bad' : pct >= 0.5 ? 'warn' : 'good';
  return s(
    'svg',
    { viewBox: '0 0 200 16', class: 'gauge', role: 'img', 'aria-label': `Spool ${(pct * 100).toFixed(1)} % full` },
    s('rect', { x: 0, y: 0, width: 200, height: 16, rx: 3, class: 'gauge-track' }),
    s('rect', { x: 0, y: 0, width: Math.max(1, pct * 200).toFixed(1), height: 16, rx: 3, class: `bar ${cls}` }),
  );
}

// ------------------------------------------------------------------ sections

function slug(type: string | null): string {
  return type ? type.replace(/^urn:portcullis:problem:/, '') : '(no problem type)';
}

function bytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

function pill(text: string): HTMLElement {
  const cls = text === 'ok' ? 'good' : text === 'behind' || text === 'nearly-full' || text === 'degraded' ? 'warn' : 'bad';
  return h('span', { class: `pill ${cls}` }, text);
}

function healthSection(hl: Health): HTMLElement {
  const sinks = hl.audit.sinks.map((k) =>
    h('tr', null,
      h('td', { 'data-label': 'Sink' }, k.name),
      h('td', { 'data-label': 'State' }, pill(k.status)),
      h('td', { 'data-label': 'Lag' }, `${k.lag_events} events`),
      h('td', { 'data-label': 'Errors' }, String(k.delivery_errors)),
      h('td', { 'data-label': 'Last delivery' }, time(k.last_delivery_at)),
      h('td', { 'data-label': 'Last error' }, k.last_error ? [k.last_error.kind, ' ', time(k.last_error.at)] : '—')));
  return h('section', { class: 'card', 'aria-labelledby': 'mon-health', 'data-section': 'health' },
    h('h2', { id: 'mon-health' }, 'Health ', pill(hl.status)),
    h('dl', { class: 'mon-facts' },
      h('dt', null, 'Database'), h('dd', null, pill(hl.database.status), ` ${hl.database.engine}, ${hl.database.latency_ms} ms`),
      h('dt', null, 'Upstreams'), h('dd', null, hl.upstreams.map((u) => h('span', { class: 'upstream' }, `${u.name} `, pill(u.status), ' '))),
      h('dt', null, 'Proxy → upstream errors'), h('dd', null, `${hl.proxy.upstream_errors} in the last ${hl.proxy.window_minutes} min`,
        hl.proxy.last_error_at ? [' (latest ', time(hl.proxy.last_error_at), ')'] : ''),
      h('dt', null, 'Audit spool'), h('dd', null, fillBar(hl.audit.spool.fill_ratio),
        ` ${hl.audit.spool.events} events, ${bytes(hl.audit.spool.bytes)} of ${bytes(hl.audit.spool.max_bytes)}`),
      h('dt', null, 'Policy bundle'), h('dd', null, h('code', null, hl.policy.digest)),
      h('dt', null, 'Version'), h('dd', null, hl.version)),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'cards' },
        h('caption', null, `Audit sinks (emitter ${hl.audit.emitter})`),
        h('thead', null, h('tr', null, ['Sink', 'State', 'Lag', 'Errors', 'Last delivery', 'Last error'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, sinks))));
}

function errorsSection(e: Errors, pick: HTMLSelectElement): HTMLElement {
  const rows = e.groups.slice(0, 15).map((g) => ({
    label: `${slug(g.problem_type)} · ${g.route ?? '(no route)'}`,
    value: g.count,
    cls: g.statuses.some((st) => st >= 500) ? 'bad' : 'warn',
    title: `${g.actions.join(', ')} — ${g.statuses.join(', ')} — last ${g.last_seen}`,
  }));
  const body: Child = e.groups.length === 0
    ? h('p', { class: 'empty' }, 'No failures in this window.')
    : [barChart('Failures by problem type and route', rows, ''),
      h('div', { class: 'table-wrap' },
        h('table', { class: 'cards' },
          h('caption', { class: 'visually-hidden' }, 'Failures by problem type and route'),
          h('thead', null, h('tr', null, ['Problem', 'Route', 'Count', 'Status', 'Actions', 'Latest', 'Request id'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', null, e.groups.map((g) => h('tr', null,
            h('td', { 'data-label': 'Problem' }, slug(g.problem_type)),
            h('td', { 'data-label': 'Route' }, g.route ?? '—'),
            h('td', { 'data-label': 'Count' }, String(g.count)),
            h('td', { 'data-label': 'Status' }, g.statuses.join(', ') || '—'),
            h('td', { 'data-label': 'Actions' }, g.actions.join(', ')),
            h('td', { 'data-label': 'Latest' }, time(g.last_seen)),
            h('td', { 'data-label': 'Request id' }, h('code', null, g.last_request_id ?? '—')))))))];
  return h('section', { class: 'card', 'aria-labelledby': 'mon-errors', 'data-section': 'errors' },
    h('div', { class: 'section-head' }, h('h2', { id: 'mon-errors' }, 'Recent errors'), h('label', null, 'Window ', pick)),
    h('p', { class: 'muted small' }, `${e.events} failure events since `, time(e.from), e.truncated ? ' (only the newest were read)' : ''),
    body);
}

function performanceSection(p: Performance): HTMLElement {
  const routes = p.routes.slice(0, 20);
  const body: Child = routes.length === 0
    ? h('p', { class: 'empty' }, 'No requests yet.')
    : [latencyChart(routes),
      h('div', { class: 'table-wrap' },
        h('table', { class: 'cards' },
          h('caption', { class: 'visually-hidden' }, 'Latency per route'),
          h('thead', null, h('tr', null, ['Route', 'Requests', 'p50', 'p90', 'p95', 'p99', 'max'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', null, p.routes.map((r) => h('tr', null,
            h('td', { 'data-label': 'Route' }, `${r.method} ${r.route}`),
            h('td', { 'data-label': 'Requests' }, `${r.window_requests} (${r.total_requests} since start)`),
            ...(['p50_ms', 'p90_ms', 'p95_ms', 'p99_ms', 'max_ms'] as const).map((k) => h('td', { 'data-label': k.replace('_ms', '') }, `${r[k]} ms`)))))))];
  return h('section', { class: 'card', 'aria-labelledby': 'mon-perf', 'data-section': 'performance' },
    h('h2', { id: 'mon-perf' }, 'Latency per route'),
    h('p', { class: 'muted small' }, `Percentiles over each route's latest ${p.ring_requests} requests, as the backend timed them.`),
    body);
}

// ------------------------------------------------------------------ view

const WINDOWS: Array<[number, string]> = [[15, '15 minutes'], [60, '1 hour'], [360, '6 hours'], [1440, '1 day'], [10080, '1 week']];
const REFRESH_MS = 30_000;

export async function monitoringView(ctx: Ctx): Promise<void> {
  const pick = h('select', { name: 'minutes' });
  for (const [m, label] of WINDOWS) pick.append(h('option', { value: String(m) }, label));
  pick.value = ctx.query.get('minutes') ?? '60';
  const content = h('div', { class: 'monitoring' }, loading('Loading the figures…'));
  const updated = h('p', { class: 'muted small', 'aria-live': 'off' });
  replace(ctx.root, title('Monitoring'), updated, content);

  const load = async (): Promise<void> => {
    const [health, errors, perf] = await Promise.all([
      api<Health>('/monitoring/health'),
      api<Errors>('/monitoring/errors', { query: { minutes: pick.value } }),
      api<Performance>('/monitoring/performance'),
    ]);
    replace(content, healthSection(health.data), errorsSection(errors.data, pick), performanceSection(perf.data));
    replace(updated, 'Updated ', time(new Date().toISOString()), '; refreshed every 30 s.');
    content.dataset.loaded = 'true';
  };
  const refresh = async (): Promise<void> => {
    try {
      await load();
    } catch (e) {
      replace(content, errorBox(e, () => void refresh()));
    }
  };
  pick.addEventListener('change', () => void refresh());
  await load();
  const timer = window.setInterval(() => {
    if (!ctx.root.isConnected) {
      window.clearInterval(timer);
      return;
    }
    if (document.visibilityState === 'visible') void refresh();
  }, REFRESH_MS);
}
