#!/usr/bin/env bash
# Services the test suite uses from the OS: PostgreSQL (the request log's store tests run against
# a throwaway cluster), Chromium (the labelling UI's browser tests, driven by Playwright) and
# Prometheus's promtool (checks and unit-tests deploy/'s config and alert rules).
# Idempotent and quiet: installs only what is missing; a no-op when all are present.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo -n "$0" "$@"
    fi
    echo ".ci/services.sh: need root to install ${missing[*]}; the tests that use them will skip" >&2
    exit 0
fi
echo ">> installing ${missing[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
