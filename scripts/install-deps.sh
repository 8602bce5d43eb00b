#!/usr/bin/env bash
# Install what the README's commands need, idempotently and quietly, then stop:
#   1. the Debian packages that are missing (the real servers; python3-venv when the base
#      python3 has no ensurepip), with one `apt-get update` only when something is missing;
#   2. the project virtual environment .venv/ in the checkout (git-ignored), created once from
#      the `python3` on PATH (Debian's /usr/bin/python3 is externally managed, PEP 668: nothing
#      is ever pip-installed into it);
#   3. trustpull, editable, into .venv: again only when pyproject.toml (or the wanted extras)
#      changed since the last install, which a stamp file in .venv records.
# Every step's output goes to a log file that is printed only when the step fails.
#
# Usage: scripts/install-deps.sh [sandbox|test]   (default test: every server and the test extras;
# sandbox: dockerd, registry and Notary server, and trustpull without the test extras)
set -euo pipefail

mode="${1:-test}"
case "$mode" in
    sandbox | test) ;;
    *) echo "usage: $0 [sandbox|test]" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${here}/.venv"
log="$(mktemp "${TMPDIR:-/tmp}/trustpull-install.XXXXXX")"
trap 'rm -f "$log"' EXIT

# step DESCRIPTION COMMAND...: say what is done, run it into the log; on failure show the log.
step() {
    local what="$1"
    shift
    echo "install-deps: ${what}" >&2
    : >"$log"
    if ! "$@" >"$log" 2>&1; then
        echo "install-deps: FAILED: ${what}; its output:" >&2
        cat "$log" >&2
        exit 1
    fi
}

python="$(command -v python3 || true)"

# -- 1. Debian packages: only the missing ones.
packages=()
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || packages+=("$2")
}
need dockerd docker.io
need docker-registry docker-registry
need notary-server notary
if [ "$mode" = test ]; then
    # htpasswd and tinyproxy: the authentication tests' Basic registry and proxy;
    # podman: the engine tests against podman's Docker-compatible API;
    # docker-compose (Debian's 1.29): the compose override and engine proxy tests' real client.
    need htpasswd apache2-utils
    need tinyproxy tinyproxy
    need podman podman
    need docker-compose docker-compose
    # busybox-static: the engine proxy tests' runnable image needs a statically linked
    # /bin/busybox (Debian's plain `busybox` package is dynamically linked)
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" \
        || packages+=(busybox-static)
fi
[ -n "$python" ] || packages+=(python3)
if [ -z "$python" ] || ! "$python" -c "import ensurepip" >/dev/null 2>&1; then
    packages+=(python3-venv) # Debian keeps ensurepip (what `python3 -m venv` needs) apart
fi
if [ "${#packages[@]}" -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    step "apt-get update (missing: ${packages[*]})" "${sudo[@]}" apt-get update
    step "apt-get install ${packages[*]}" "${sudo[@]}" apt-get install -y --no-install-recommends \
        "${packages[@]}"
    python="$(command -v python3 || true)"
fi
if [ -z "$python" ] || ! "$python" -c "import ensurepip" >/dev/null 2>&1; then
    echo "install-deps: ${python:-python3} has no ensurepip: it cannot create .venv" >&2
    exit 1
fi

# -- 2. The virtual environment: created once; again only if its interpreter no longer runs.
if ! "${venv}/bin/python" -c "" >/dev/null 2>&1; then
    rm -rf "$venv"
    base="$("$python" -c "import sys; print(sys.executable, sys.version.split()[0])")"
    step "creating the virtual environment ${venv} (from ${base})" "$python" -m venv "$venv"
fi

# -- 3. trustpull into the venv, when pyproject.toml or the extras changed.
stamp="${venv}/.trustpull-installed"
hash="$(sha256sum "${here}/pyproject.toml" | cut -d" " -f1)"
installed="$(cat "$stamp" 2>/dev/null || true)"
if [ "$installed" != "${hash} test" ] && { [ "$mode" = test ] || [ "$installed" != "${hash} sandbox" ]; }; then
    spec="$here"
    [ "$mode" = sandbox ] || spec="${here}[test]"
    step "pip install -e '${spec}' into .venv" \
        "${venv}/bin/python" -m pip install --disable-pip-version-check -e "$spec"
    echo "${hash} ${mode}" >"$stamp"
fi
