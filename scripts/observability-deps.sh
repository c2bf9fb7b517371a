#!/usr/bin/env bash
# Installs what the observability checks need, skipping whatever is already there
# (idempotent): Debian's `prometheus` (prometheus, promtool) and
# `prometheus-alertmanager` (alertmanager, amtool), and the npm packages of
# tests/observability/ (TypeScript and @grafana/schema, pinned by its lock file).
#
# The Debian packages come with services of their own; we never use them (the checks
# and the live test run their own processes with their own configurations), so they
# are kept from starting during the install and stopped if they run anyway.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

need_apt=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v amtool >/dev/null && { command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null; } \
  || need_apt+=(prometheus-alertmanager)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v openssl >/dev/null || need_apt+=(openssl)

if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  # policy-rc.d exit 101 = "action forbidden": invoke-rc.d starts no service.
  guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 0755 /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  trap '[ -n "$guard" ] && $sudo rm -f "$guard"' EXIT
  echo "observability-deps: apt-get install ${need_apt[*]}"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" >/dev/null
  # On a machine with systemd the units may still be enabled and started: stop and
  # disable them, we run our own processes.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for unit in prometheus prometheus-alertmanager prometheus-node-exporter; do
      $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi

# The Debian package names the Alertmanager binary `prometheus-alertmanager`.
if ! command -v alertmanager >/dev/null && ! command -v prometheus-alertmanager >/dev/null; then
  echo "observability-deps: alertmanager missing after install" >&2
  exit 1
fi

# PyYAML for the checks' rule and provisioning readers.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyyaml
# openssl for the live test's certificate.
command -v openssl >/dev/null || { echo "observability-deps: openssl missing (apt-get install openssl)" >&2; exit 1; }

# TypeScript + @grafana/schema for the dashboard type check (pinned by the lock file).
if [ ! -x "$root/tests/observability/node_modules/.bin/tsc" ]; then
  (cd "$root/tests/observability" && npm ci --no-audit --no-fund --loglevel=error)
fi
