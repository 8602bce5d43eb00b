#!/usr/bin/env bash
# Install what the tests need, idempotently: the real servers (Debian packages) and trustpull
# with its test extras. Called by the project's test command on fresh CI machines.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
# htpasswd (apache2-utils) and tinyproxy: the authentication tests' Basic registry and proxy.
# docker-compose (Debian's 1.29): the compose override test runs the real client.
for binary in dockerd docker-registry notary-server htpasswd tinyproxy docker-compose; do
    command -v "$binary" >/dev/null 2>&1 || missing+=("$binary")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: missing ${missing[*]}; installing Debian packages" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends notary docker-registry docker.io \
        apache2-utils tinyproxy docker-compose
fi

python3 -m pip install --quiet --disable-pip-version-check -e "${here}[test]"
