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
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
