#!/usr/bin/env bash
# Services the test suite uses from the OS: PostgreSQL (the request log's store tests run against
# a throwaway cluster) and Chromium (the labelling UI's browser tests, driven by Playwright).
# Idempotent and quiet: installs only what is missing; a no-op when both are present.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
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
