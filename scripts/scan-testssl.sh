#!/usr/bin/env bash
# TLS audit with testssl.sh (Debian package testssl.sh): the same run as `make tls-audit`
# (scripts/tls-audit.sh: `portcullis up` with a throw-away CA that testssl is told to
# trust via --add-ca, the full default testssl run, fails on any HIGH or CRITICAL
# finding, on SSLv2/SSLv3/TLS 1.0/TLS 1.1, and on a cipher without forward secrecy),
# installing testssl.sh first if it is missing, for `make scan`.
# Usage: scripts/scan-testssl.sh [path/to/portcullis]   (about 1.5 min)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install-scan-tools.sh" testssl >/dev/null
exec "$here/tls-audit.sh" "${1:-target/debug/portcullis}"
