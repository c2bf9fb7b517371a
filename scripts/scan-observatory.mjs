// The MDN HTTP Observatory's scan (npm @mdn/mdn-http-observatory) of one page of a
// server on a port of our choosing. Its CLI (`mdn-http-observatory-scan HOST`) knows
// only ports 80 and 443, and `scan()` drops the retriever's port options, so this
// does what `scan()` does (src/scanner/index.js, algorithm version 4) with
// `retrieve(host, {httpsPort, httpPort, path})`: the same tests, score and grade.
// It also keeps the observatory's own CA bundle out: the caller sets
// NODE_EXTRA_CA_CERTS to the test CA, so `verified` is true only if our chain checks.
//
// Usage: node scripts/scan-observatory.mjs PKG_DIR HOST HTTPS_PORT HTTP_PORT|- PATH
// Prints one JSON document: {scan: {grade, score, verified, ...}, tests: {...}}.
import { pathToFileURL } from "node:url";
import path from "node:path";

const [pkgDir, host, httpsPort, httpPort, pagePath] = process.argv.slice(2);
const from = (file) => import(pathToFileURL(path.join(pkgDir, "src", file)).href);
const { retrieve } = await from("retriever/retriever.js");
const { ALL_TESTS, NUM_TESTS, ALGORITHM_VERSION } = await from("constants.js");
const { MINIMUM_SCORE_FOR_EXTRA_CREDIT } = await from("grader/charts.js");
const { getGradeForScore, getScoreModifier } = await from("grader/grader.js");

const options = { httpsPort, path: pagePath };
// Without a plain-HTTP listener the observatory finds "no HTTP" (a pass), as for a
// site that answers nothing on port 80. A closed port stands in for it.
options.httpPort = httpPort === "-" ? "9" : httpPort;

const r = await retrieve(host, options);
if (!r.responses.auto) {
  console.log(JSON.stringify({ error: "The site seems to be down." }));
  process.exit(1);
}
const { status } = r.responses.auto;
if (status < 200 || (status >= 400 && ![401, 403].includes(status))) {
  console.log(JSON.stringify({ error: `unexpected HTTP status ${status}` }));
  process.exit(1);
}
const results = ALL_TESTS.map((test) => test(r));
let passed = 0;
let withExtra = 100;
let uncurved = 100;
for (const result of results) {
  if (result.result) {
    result.scoreModifier = getScoreModifier(result.result);
    passed += result.pass ? 1 : 0;
    withExtra += result.scoreModifier;
    if (result.scoreModifier < 0) uncurved += result.scoreModifier;
  }
}
const final = getGradeForScore(uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT ? withExtra : uncurved);
const tests = Object.fromEntries(results.map((t) => [t.constructor.name, t]));
console.log(
  JSON.stringify(
    {
      scan: {
        algorithmVersion: ALGORITHM_VERSION,
        url: r.session?.url?.href ?? null,
        grade: final.grade,
        score: final.score,
        statusCode: status,
        verified: r.responses.auto.verified ?? false,
        testsPassed: passed,
        testsFailed: NUM_TESTS - passed,
        testsQuantity: NUM_TESTS,
        responseHeaders: r.responses.auto.headers,
      },
      tests,
    },
    null,
    2,
  ),
);
