#!/usr/bin/env bash
# `make scan`: every external scanner against the running system on loopback, one after
# the other, each starting and stopping its own `portcullis up`
# (docs/security-testing.md, "External scanners"). Runs them all even when one fails,
# then prints each one's result and wall time; exits 1 if any failed.
# Usage: scripts/scan-all.sh [path/to/portcullis] [scanner ...]
#   scanners: testssl sslyze observatory wapiti smugglex (default: all, in this order)
set -uo pipefail
bin=${1:-target/debug/portcullis}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
scanners=("$@")
[ "${#scanners[@]}" -gt 0 ] || scanners=(testssl sslyze observatory wapiti smugglex)
for s in "${scanners[@]}"; do
  case $s in
    testssl|sslyze|observatory|wapiti|smugglex) ;;
    *) echo "scan-all: unknown scanner $s (testssl sslyze observatory wapiti smugglex)" >&2; exit 2 ;;
  esac
done

results=()
failed=0
for s in "${scanners[@]}"; do
  echo "=== $s"
  start=$(date +%s)
  rc=0
  "$here/scan-$s.sh" "$bin" || rc=$?
  secs=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then verdict=passed; else verdict="FAILED (exit $rc)"; failed=1; fi
  results+=("$(printf '%-12s %-18s %4d s' "$s" "$verdict" "$secs")")
done
echo "=== summary"
printf '%s\n' "${results[@]}"
exit "$failed"
