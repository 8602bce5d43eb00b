#!/usr/bin/env bash
# Runs every test: installs what is missing (apt, pip), lints, type-checks, then pytest with the
# real servers (dockerd, docker-registry, notary-server) that the integration tests start.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict on trust/ and cli/)"
mypy
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
python fuzz/run.py smoke  # == fuzz smoke: every fuzz/ target for 4 s (fuzz/README.md)
