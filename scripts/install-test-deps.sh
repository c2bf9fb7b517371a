#!/usr/bin/env bash
# Installs what `make run` / `make test` need on a fresh Debian 12 machine of
# this kind, skipping whatever is already there. Idempotent.
set -euo pipefail
need_apt=()
command -v cmake >/dev/null || python3 -m pip install --quiet cmake
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v testssl >/dev/null || need_apt+=(testssl.sh)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v rsyslogd >/dev/null || need_apt+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so ] || need_apt+=(rsyslog-openssl)
command -v node >/dev/null || need_apt+=(nodejs npm)
# The browser tests drive Debian's Chromium (playwright-core never downloads one).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Python tools: API fuzzing, the second Rego engine, Sigma rule checks.
py_need=()
python3 -c 'import schemathesis' 2>/dev/null || py_need+=(schemathesis)
python3 -c 'import regopy' 2>/dev/null || py_need+=(regopy)
command -v sigma >/dev/null || py_need+=(sigma-cli pysigma-backend-elasticsearch)
if [ "${#py_need[@]}" -gt 0 ]; then
  python3 -m pip install --quiet --disable-pip-version-check "${py_need[@]}"
fi
# JWT attack token generator (crates.io; a few minutes to build the first time).
command -v jwt-hack >/dev/null || cargo install --locked --quiet jwt-hack
# The OpenID provider used by the OIDC tests (pinned by its lock file).
if [ ! -d tests/oidc-provider/node_modules ]; then
  (cd tests/oidc-provider && npm ci --no-audit --no-fund --loglevel=error)
fi
# playwright-core for the browser tests (pinned by its lock file).
if [ ! -d tests/browser/node_modules ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
# The S3 server the attachment tests store objects in (moto's server mode), in a venv of
# its own so its pinned dependencies stay out of the system's Python.
moto_venv="$HOME/.cache/portcullis-tools/moto"
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
