#!/usr/bin/env bash
# Runs every test: installs what is missing (Debian packages; the project virtual environment
# .venv/ with trustpull and its test extras), lints, type-checks, then pytest with the real
# servers (dockerd, docker-registry, notary-server, podman) that the integration tests start.
# Everything runs from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
export PATH="${PWD}/.venv/bin:${PATH}"
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict on trust/ and cli/)"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@"
.venv/bin/python fuzz/run.py smoke  # == fuzz smoke: every fuzz/ target for 4 s (fuzz/README.md)
