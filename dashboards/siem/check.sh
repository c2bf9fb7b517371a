#!/bin/sh
# Validates the Sigma rules in rules/ and converts them, offline:
#   1. `sigma check` with every validator except the two that download MITRE data
#      (ATT&CK and D3FEND tags), failing on any issue;
#   2. `sigma convert` to Lucene (rules without correlations: Lucene has no aggregation)
#      and to ES|QL (every rule, correlations included), with pipeline.yml: the events
#      already use ECS names, so the pipeline only sets the index `portcullis-audit-*`.
# Needs sigma-cli and the Elasticsearch backend:
#   pip install sigma-cli pysigma-backend-elasticsearch
# SIGMA=/path/to/sigma overrides the command. Exits non-zero on any problem.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
sigma=${SIGMA:-sigma}
if ! command -v "$sigma" >/dev/null 2>&1; then
    echo "check.sh: '$sigma' not found; pip install sigma-cli pysigma-backend-elasticsearch" >&2
    exit 2
fi
cd "$here"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT INT TERM

echo "== sigma check"
"$sigma" check --fail-on-error --fail-on-issues -x attacktag -x d3_fendtag rules/

echo "== sigma convert -t lucene (every rule but the correlations: Lucene cannot aggregate)"
# A rule file may hold a base rule and a correlation over it (one file, so that the
# reference resolves); Lucene gets each non-correlation document on its own.
mkdir "$out/lucene"
for f in rules/*.yml; do
    awk -v dir="$out/lucene" -v stem="$(basename "$f" .yml)" '
        BEGIN { n = 0 }
        /^---[[:space:]]*$/ { n++; next }
        { docs[n] = docs[n] $0 "\n" }
        END {
            for (i = 0; i <= n; i++)
                if (docs[i] != "" && docs[i] !~ /(^|\n)correlation:/)
                    printf "%s", docs[i] > (dir "/" stem "-" i ".yml")
        }' "$f"
done
"$sigma" convert --fail-unsupported -t lucene -p pipeline.yml -o "$out/lucene.txt" "$out/lucene"
cat "$out/lucene.txt"

echo "== sigma convert -t esql (every rule)"
"$sigma" convert --fail-unsupported -t esql -p pipeline.yml -o "$out/esql.txt" rules/
cat "$out/esql.txt"

# Every rule file must give at least one ES|QL query: one that silently converts to
# nothing is a problem.
files=$(ls rules/*.yml | wc -l)
queries=$(grep -c '^from ' "$out/esql.txt" || true)
if [ "$queries" -lt "$files" ]; then
    echo "check.sh: $files rule files but only $queries ES|QL queries" >&2
    exit 1
fi
echo "ok: $files rule files checked and converted"
