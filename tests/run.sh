#!/usr/bin/env bash
# The one command that installs everything the tests need and runs them:
#   bash tests/run.sh            (extra arguments go to pytest)
# Idempotent: installs only what is missing. Needs root for apt-get (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."

# Real programs the integration tests start (Debian packages).
# curl: the control-socket tests drive it as a user would (Expect: 100-continue).
DEBIAN_PACKAGES=(nginx libnginx-mod-nchan chromium chromium-driver redis-server curl)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node 20 and npm for the npm package in js/ (Debian's nodejs where none is installed).
if ! command -v npm >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check fanout tests loadtest deploy/grafana
.venv/bin/ruff format --check fanout tests loadtest deploy/grafana
.venv/bin/mypy fanout
# Besides unit and integration tests, pytest runs the packaging check
# (tests/integration/test_packaging.py): `python -m build` of the sdist and the wheel,
# `twine check`, and the wheel installed into a fresh venv (its dependencies come from
# pip's cache, filled by the install above) running `fanout --version`,
# `fanout check-config config.toml` and a daemon.
.venv/bin/mypy --strict deploy/grafana/dashboard.py
# The browser client as an npm package (js/): dependencies from the lock file, the
# declarations checked by tsc over typed usage, then node's test runner against the
# real daemon (client, React hook, and `npm pack` installed into a fresh project).
(
    cd js
    npm ci --no-audit --no-fund --loglevel=error
    npx --no-install tsc --noEmit -p tsconfig.json
    FANOUT_PYTHON="$PWD/../.venv/bin/python" node --test --test-concurrency=1 test/*.test.mjs
)

exec .venv/bin/python -m pytest "$@"
