#!/usr/bin/env bash
# The main job on a local sandbox: a signed image and its verified pull, then a tampered answer
# that is refused with nothing pulled. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
exec python -m fixtures.sandbox
