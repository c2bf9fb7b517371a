// Builds the web application into dist/:
//   dist/index.html            names the bundle, with Subresource Integrity hashes
//   dist/assets/app-<hash>.js  one ES module (esbuild: TypeScript, bundled, minified)
//   dist/assets/app-<hash>.css the stylesheet
//
//   node build.mjs                       build (checks the sources for HTML sinks first)
//   node build.mjs --check-sinks-only    only the sink check
//
// The proxy's CSP allows scripts and styles only from the page's own origin, no inline
// code, and (Trusted Types) no HTML from strings; this script refuses sources that would
// need any of that, so a violation shows here, not in a user's browser.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, 'src');
const dist = path.join(here, 'dist');

// DOM APIs that parse strings as markup or code, and inline style. The application
// builds the DOM with createElement and text nodes only.
const FORBIDDEN = [
  [/\.innerHTML\b/, 'innerHTML'],
  [/\.outerHTML\b/, 'outerHTML'],
  [/\binsertAdjacentHTML\b/, 'insertAdjacentHTML'],
  [/\bdocument\.write(ln)?\b/, 'document.write'],
  [/\bcreateContextualFragment\b/, 'createContextualFragment'],
  [/\bparseFromString\b/, 'DOMParser.parseFromString'],
  [/\bsetHTMLUnsafe\b|\bparseHTMLUnsafe\b/, 'setHTMLUnsafe'],
  [/\beval\s*\(/, 'eval'],
  [/\bnew\s+Function\s*\(/, 'new Function'],
  [/\bset(Timeout|Interval)\s*\(\s*['"`]/, 'string timer'],
  [/setAttribute\(\s*['"](style|on[a-z]+|srcdoc)['"]/, 'inline style/handler attribute'],
  [/\.srcdoc\b/, 'srcdoc'],
  [/javascript:/i, 'javascript: URL'],
];

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]);
}

function checkSinks() {
  const problems = [];
  for (const file of walk(src)) {
    if (!/\.(ts|css)$/.test(file)) continue;
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, ''); // comments may name what is forbidden
      for (const [re, what] of FORBIDDEN) {
        if (re.test(code)) problems.push(`${path.relative(here, file)}:${i + 1}: ${what} is not allowed: ${line.trim()}`);
      }
    });
  }
  if (problems.length > 0) {
    console.error(problems.join('\n'));
    process.exit(1);
  }
}

const sri = (bytes) => `sha384-${createHash('sha384').update(bytes).digest('base64')}`;
const short = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

async function build() {
  const { build: esbuild } = await import('esbuild');
  rmSync(dist, { recursive: true, force: true });
  mkdirSync(path.join(dist, 'assets'), { recursive: true });

  const result = await esbuild({
    entryPoints: [path.join(src, 'main.ts')],
    bundle: true,
    format: 'esm',
    target: ['es2022'],
    minify: true,
    legalComments: 'none',
    write: false,
    charset: 'utf8',
    logLevel: 'warning',
  });
  const js = Buffer.from(result.outputFiles[0].contents);
  const cssResult = await esbuild({
    entryPoints: [path.join(src, 'styles.css')],
    bundle: true,
    minify: true,
    write: false,
    logLevel: 'warning',
  });
  const css = Buffer.from(cssResult.outputFiles[0].contents);

  // The bundle itself must hold no sink either (a dependency could bring one).
  const bundled = js.toString('utf8');
  for (const sink of ['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write']) {
    if (bundled.includes(sink)) {
      console.error(`the bundle contains ${sink}`);
      process.exit(1);
    }
  }

  const jsName = `app-${short(js)}.js`;
  const cssName = `app-${short(css)}.css`;
  writeFileSync(path.join(dist, 'assets', jsName), js);
  writeFileSync(path.join(dist, 'assets', cssName), css);

  // No inline script or style anywhere in the page; the favicon is an empty data: URL
  // (img-src allows data:) so the browser does not ask for /favicon.ico.
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="color-scheme" content="light dark">
<title>Portcullis</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/${cssName}" integrity="${sri(css)}" crossorigin="anonymous">
<script type="module" src="/assets/${jsName}" integrity="${sri(js)}" crossorigin="anonymous"></script>
</head>
<body>
<div id="app"><noscript><p>The Portcullis ticket system needs JavaScript.</p></noscript></div>
</body>
</html>
`;
  writeFileSync(path.join(dist, 'index.html'), html);
  console.log(`built dist/index.html, dist/assets/${jsName} (${js.length} bytes), dist/assets/${cssName} (${css.length} bytes)`);
}

checkSinks();
if (!process.argv.includes('--check-sinks-only')) await build();
