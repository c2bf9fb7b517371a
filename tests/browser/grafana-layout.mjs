// Renders each Grafana dashboard's panel layout (dashboards/grafana/dashboards/*.json)
// as a page of its own and screenshots it in Chromium: no Grafana can run here, so this
// is not Grafana's look, but it is the dashboard's real grid (each panel at its
// `gridPos` on Grafana's 24 columns, rows as headings), each panel's title, type and
// queries, and — given a snapshot of live query results — each query's series drawn
// from what a real Prometheus answered (tests/observability/live_test.py writes one
// with PORTCULLIS_PANEL_SNAPSHOT=<file>: `query_range` of every panel query over its
// run, against the product under traffic).
//
//   node tests/browser/grafana-layout.mjs OUT_DIR [SNAPSHOT.json]
//
// Writes OUT_DIR/grafana-<dashboard>.png (and the .html it rendered, in a temporary
// folder). `make screenshots` runs it.

import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const boards = path.join(root, 'dashboards/grafana/dashboards');
const [outDir, snapshotFile] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: node tests/browser/grafana-layout.mjs OUT_DIR [SNAPSHOT.json]');
  process.exit(64);
}
const snapshot = snapshotFile ? JSON.parse(readFileSync(snapshotFile, 'utf8')) : null;
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const ROW_PX = 34; // one grid unit of height, as Grafana's default
const COLORS = ['#73bf69', '#f2cc0c', '#5794f2', '#ff780a', '#b877d9', '#f2495c', '#37872d', '#8ab8ff'];

function panelsOf(board) {
  const out = [];
  for (const p of board.panels ?? []) {
    out.push(p);
    for (const inner of p.panels ?? []) out.push(inner);
  }
  return out;
}

/// The series a query returned: [{name, points: [[t, v], …]}].
function seriesOf(uid, panel, target) {
  const result = snapshot?.[uid]?.[String(panel.id)]?.[target.refId];
  if (!result) return null;
  return result.map((s) => ({
    name: Object.entries(s.metric ?? {}).filter(([k]) => k !== '__name__').map(([k, v]) => `${k}=${v}`).join(', ') || target.expr,
    points: (s.values ?? []).map(([t, v]) => [Number(t), Number(v)]).filter(([, v]) => Number.isFinite(v)),
  }));
}

function sparkline(series, width, height) {
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return '<p class="nodata">no data</p>';
  const t0 = Math.min(...all.map(([t]) => t));
  const t1 = Math.max(...all.map(([t]) => t));
  const vmax = Math.max(...all.map(([, v]) => v), 0);
  const vmin = Math.min(...all.map(([, v]) => v), 0);
  const x = (t) => (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * (width - 50)) + 45;
  const y = (v) => height - 14 - (vmax === vmin ? 0 : ((v - vmin) / (vmax - vmin)) * (height - 24));
  const fmt = (v) => (v !== 0 && (Math.abs(v) >= 1000 || Math.abs(v) < 0.01) ? v.toExponential(1) : Number(v.toPrecision(3)).toString());
  const lines = series.slice(0, COLORS.length).map((s, i) => {
    const d = s.points.map(([t, v], j) => `${j ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    return `<path d="${d}" fill="none" stroke="${COLORS[i]}" stroke-width="1.5"><title>${esc(s.name)}</title></path>`;
  }).join('');
  return `<svg viewBox="0 0 ${width} ${height}" width="100%" height="${height}" preserveAspectRatio="none">
    <line x1="45" y1="${y(vmin)}" x2="${width - 5}" y2="${y(vmin)}" class="axis"/>
    <text x="40" y="12" text-anchor="end" class="tick">${esc(fmt(vmax))}</text>
    <text x="40" y="${height - 12}" text-anchor="end" class="tick">${esc(fmt(vmin))}</text>
    ${lines}</svg>`;
}

function legend(series) {
  return `<ul class="legend">${series.slice(0, 4).map((s, i) => `<li><span class="swatch c${i}"></span>${esc(s.name)}</li>`).join('')}${series.length > 4 ? `<li>… ${series.length - 4} more</li>` : ''}</ul>`;
}

function panelBody(uid, panel, widthPx, heightPx) {
  const targets = panel.targets ?? [];
  if (!snapshot) {
    return `<ol class="queries">${targets.map((t) => `<li><code>${esc(t.expr ?? '')}</code></li>`).join('')}</ol>`;
  }
  const series = targets.flatMap((t) => seriesOf(uid, panel, t) ?? []);
  if (panel.type === 'stat' || panel.type === 'gauge' || panel.type === 'bargauge') {
    const last = series.map((s) => s.points.at(-1)?.[1]).filter((v) => v !== undefined);
    const shown = last.length ? last.slice(0, 4).map((v) => Number(v.toPrecision(4))).join(' · ') : 'no data';
    return `<p class="stat">${esc(shown)}</p>${legend(series)}`;
  }
  if (panel.type === 'table') {
    return `<table>${series.slice(0, 6).map((s) => `<tr><td>${esc(s.name)}</td><td>${esc(Number((s.points.at(-1)?.[1] ?? NaN).toPrecision(4)))}</td></tr>`).join('')}</table>`;
  }
  return sparkline(series, widthPx - 16, Math.max(40, heightPx - 90)) + legend(series);
}

function page(file) {
  const board = JSON.parse(readFileSync(path.join(boards, file), 'utf8'));
  const width = 1600;
  const col = width / 24;
  const panels = panelsOf(board);
  const bottom = Math.max(...panels.map((p) => p.gridPos.y + p.gridPos.h));
  const cells = panels.map((p) => {
    const g = p.gridPos;
    const box = `left:${g.x * col}px;top:${g.y * ROW_PX}px;width:${g.w * col - 8}px;height:${g.h * ROW_PX - 8}px`;
    if (p.type === 'row') return `<div class="row" style="${box}">${esc(p.title)}</div>`;
    return `<div class="panel" style="${box}"><h2>${esc(p.title)}</h2><span class="type">${esc(p.type)}</span>${panelBody(board.uid, p, g.w * col - 8, g.h * ROW_PX - 8)}</div>`;
  }).join('\n');
  const source = snapshot
    ? `data: Prometheus query_range of every panel query during tests/observability/live_test.py (${esc(snapshot._meta?.taken_at ?? '')}, ${esc(snapshot._meta?.range ?? '')})`
    : 'layout only (no live data)';
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>${esc(board.title)}</title><style>
body { margin: 0; background: #111217; color: #ccccdc; font: 13px system-ui, sans-serif; }
header { padding: 12px 16px; border-bottom: 1px solid #2c3235; }
header h1 { margin: 0; font-size: 18px; color: #fff; } header p { margin: 4px 0 0; color: #8e8e99; }
.grid { position: relative; margin: 12px 8px; width: ${width}px; height: ${bottom * ROW_PX}px; }
.panel, .row { position: absolute; box-sizing: border-box; }
.panel { background: #181b1f; border: 1px solid #2c3235; border-radius: 3px; padding: 6px 8px; overflow: hidden; }
.row { color: #fff; font-weight: 600; font-size: 15px; border-bottom: 1px solid #2c3235; }
h2 { margin: 0 0 2px; font-size: 13px; color: #fff; font-weight: 500; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.type { position: absolute; top: 6px; right: 8px; font-size: 10px; color: #8e8e99; }
.queries { margin: 4px 0; padding-left: 18px; } code { font-size: 11px; color: #9fa7b3; word-break: break-all; }
.stat { font-size: 30px; color: #73bf69; margin: 6px 0; }
.legend { list-style: none; margin: 2px 0 0; padding: 0; font-size: 10px; color: #9fa7b3; }
.legend li { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.swatch { display: inline-block; width: 10px; height: 3px; margin-right: 4px; vertical-align: middle; }
${COLORS.map((c, i) => `.c${i} { background: ${c}; }`).join('\n')}
.axis { stroke: #2c3235; } .tick { fill: #8e8e99; font-size: 10px; } .nodata { color: #8e8e99; }
table { font-size: 11px; border-collapse: collapse; } td { padding: 1px 6px; border-bottom: 1px solid #2c3235; }
footer { margin: 8px 16px 16px; color: #8e8e99; }
</style></head><body>
<header><h1>${esc(board.title)}</h1><p>${esc(board.description ?? '')}</p></header>
<div class="grid">${cells}</div>
<footer>Panel layout of dashboards/grafana/dashboards/${esc(file)} (${panels.filter((p) => p.type !== 'row').length} panels) drawn by tests/browser/grafana-layout.mjs, not by Grafana; ${source}.</footer>
</body></html>`;
  return { html, name: file.replace(/^portcullis-/, '').replace(/\.json$/, ''), width: width + 16 };
}

const work = mkdtempSync(path.join(tmpdir(), 'grafana-layout-'));
const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  for (const file of readdirSync(boards).filter((f) => f.endsWith('.json')).sort()) {
    const { html, name, width } = page(file);
    const htmlPath = path.join(work, `${name}.html`);
    writeFileSync(htmlPath, html);
    const p = await browser.newPage({ viewport: { width, height: 900 } });
    await p.goto(`file://${htmlPath}`);
    const out = path.join(outDir, `grafana-${name}.png`);
    await p.screenshot({ path: out, fullPage: true });
    await p.close();
    console.log(`wrote ${out}`);
  }
} finally {
  await browser.close();
  if (existsSync(work)) rmSync(work, { recursive: true, force: true });
}
