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

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check fanout tests loadtest
.venv/bin/ruff format --check fanout tests loadtest
.venv/bin/mypy fanout
exec .venv/bin/python -m pytest "$@"
