// Type-checks every Grafana dashboard of dashboards/grafana/dashboards/ against the
// types of @grafana/schema, with the TypeScript compiler:
//
//   node tests/observability/typecheck-dashboards.mjs
//
// Importing the JSON (resolveJsonModule) would widen every string to `string`, so
// enum-typed fields ("drawStyle": "lines", a misspelt "graphTooltip"…) and unknown
// keys would pass. Instead each dashboard is written into a generated .ts file as an
// object literal assigned to a declared type, which gives TypeScript's literal and
// excess-property checks:
//   - the whole dashboard as `Dashboard` (schemaVersion, templating, annotations, links, time…);
//   - each panel as its plugin's own types: `timeseries`, `stat` and `bargauge` options
//     and field config from @grafana/schema's panelcfg types, rows as `RowPanel`;
//   - each query as a Prometheus query (refId, expr, legendFormat, range/instant…).
// The schema's string enums are compared by their values (`Json<T>` below), as the
// JSON spells them. Unknown panel types fail. Also checked here: schemaVersion ≥ 39,
// unique panel ids and dashboard uids, the data source variable, every query non-empty.
// Needs `npm ci` in tests/observability (scripts/observability-deps.sh does it).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const boardsDir = process.env.DASHBOARDS_DIR ?? path.join(root, 'dashboards/grafana/dashboards');
const tsc = path.join(here, 'node_modules/typescript/bin/tsc');

const panelcfg = (name, file) =>
  `@grafana/schema/dist/esm/raw/composable/${name}/panelcfg/x/${file}_types.gen`;

const PANEL_TYPES = {
  timeseries: 'TimeSeries',
  stat: 'Stat',
  bargauge: 'BarGauge',
};

const prelude = `
import type * as G from '@grafana/schema';
import type * as TimeSeries from '${panelcfg('timeseries', 'TimeSeriesPanelCfg')}';
import type * as Stat from '${panelcfg('stat', 'StatPanelCfg')}';
import type * as BarGauge from '${panelcfg('bargauge', 'BarGaugePanelCfg')}';

/** A type as JSON spells it: string enums by their values, numeric enums by theirs. */
type Json<T> =
  T extends string ? (string extends T ? string : \`\${T}\`)
  : T extends number ? (\`\${T}\` extends \`\${infer N extends number}\` ? N : number)
  : T extends boolean | null | undefined ? T
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;

/** A Prometheus data source query as Grafana stores it. */
interface PromQuery {
  refId: string;
  expr: string;
  datasource?: G.DataSourceRef;
  legendFormat?: string;
  editorMode?: 'code' | 'builder';
  range?: boolean;
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  intervalFactor?: number;
  exemplar?: boolean;
  hide?: boolean;
}

type FieldConfigOf<F> = Omit<Json<G.FieldConfigSource>, 'defaults'> & {
  defaults: Omit<Json<G.FieldConfig>, 'custom'> & { custom?: Json<F> };
};

/** A panel of one plugin: its options and field config typed by that plugin. */
type PanelOf<Kind extends string, O, F = Record<string, never>> =
  Omit<Json<G.Panel>, 'type' | 'options' | 'fieldConfig' | 'targets'> & {
    type: Kind;
    options: Json<O>;
    fieldConfig: FieldConfigOf<F>;
    targets: PromQuery[];
  };

type TimeSeriesPanel = PanelOf<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>;
type StatPanel = PanelOf<'stat', Stat.Options>;
type BarGaugePanel = PanelOf<'bargauge', BarGauge.Options>;
type Row = Omit<Json<G.RowPanel>, 'panels'> & { panels: unknown[] };
`;

const problems = [];
const files = readdirSync(boardsDir).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) problems.push(`no dashboards in ${boardsDir}`);

const work = mkdtempSync(path.join(here, '.typecheck-'));
const uids = new Map();
let panelsChecked = 0;
let queriesChecked = 0;
try {
  for (const file of files) {
    const board = JSON.parse(readFileSync(path.join(boardsDir, file), 'utf8'));
    // Checks the types cannot express.
    if (!(board.schemaVersion >= 39)) problems.push(`${file}: schemaVersion ${board.schemaVersion} < 39`);
    if (!board.uid) problems.push(`${file}: no uid`);
    else if (uids.has(board.uid)) problems.push(`${file}: uid ${board.uid} also in ${uids.get(board.uid)}`);
    else uids.set(board.uid, file);
    const vars = board.templating?.list ?? [];
    if (!vars.some((v) => v.type === 'datasource' && v.name === 'datasource' && v.query === 'prometheus')) {
      problems.push(`${file}: no "datasource" variable of type prometheus`);
    }
    const ids = new Set();
    const lines = [prelude, `export const dashboard: Json<G.Dashboard> = ${JSON.stringify(board, null, 2)};`];
    for (const [i, panel] of (board.panels ?? []).entries()) {
      const where = `${file}: panel ${panel.id} "${panel.title}"`;
      if (ids.has(panel.id)) problems.push(`${where}: duplicate id`);
      ids.add(panel.id);
      if (panel.type === 'row') {
        lines.push(`export const panel_${i}: Row = ${JSON.stringify(panel, null, 2)};`);
        continue;
      }
      const typeName = PANEL_TYPES[panel.type];
      if (!typeName) {
        problems.push(`${where}: panel type ${panel.type} has no type check here`);
        continue;
      }
      if (JSON.stringify(panel.datasource) !== JSON.stringify({ type: 'prometheus', uid: '${datasource}' })) {
        problems.push(`${where}: data source is not the dashboard's \${datasource}`);
      }
      if (!panel.targets?.length) problems.push(`${where}: no query`);
      for (const t of panel.targets ?? []) {
        if (!t.expr?.trim()) problems.push(`${where}: query ${t.refId} is empty`);
        queriesChecked += 1;
      }
      lines.push(`export const panel_${i}: ${typeName}Panel = ${JSON.stringify(panel, null, 2)};`);
      panelsChecked += 1;
    }
    writeFileSync(path.join(work, file.replace(/\.json$/, '.ts')), lines.join('\n\n') + '\n');
  }
  writeFileSync(path.join(work, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: 'es2022',
      module: 'esnext',
      moduleResolution: 'bundler',
      skipLibCheck: true,
      types: [],
    },
    include: ['*.ts'],
  }, null, 2));
  const run = spawnSync(process.execPath, [tsc, '-p', path.join(work, 'tsconfig.json'), '--pretty', 'false'], {
    encoding: 'utf8',
  });
  if (run.error) problems.push(`tsc did not run: ${run.error.message}`);
  else if (run.status !== 0) {
    // Report positions against the generated file's name, which is the dashboard's.
    const out = (run.stdout + run.stderr).replaceAll(work + path.sep, '')
      .replaceAll(path.relative(process.cwd(), work) + path.sep, '');
    problems.push(`tsc (line numbers are in the generated <dashboard>.ts):\n${out.trim()}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

if (problems.length > 0) {
  for (const p of problems) console.error(`typecheck-dashboards: ${p}`);
  process.exit(1);
}
console.log(`ok: ${files.length} dashboards, ${panelsChecked} panels, ${queriesChecked} queries type-check against @grafana/schema`);
