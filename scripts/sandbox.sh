#!/usr/bin/env bash
# The main job on a local sandbox: a signed image and its verified pull, then a tampered answer
# that is refused with nothing pulled. Installs what is missing first (Debian packages, and the
# project virtual environment .venv/ with trustpull in it), then runs from that environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh sandbox
export PATH="${PWD}/.venv/bin:${PATH}"
exec .venv/bin/python -m fixtures.sandbox
