"""Fuzz target: the TOML configuration and its `[[rules]]` (trust/config.py, policy_file.py).

Input: the text of a configuration file. It is written to a scratch directory (which also holds
a real root.json and a CA file, so relative `root`, `root_ca` and `ca` paths can resolve) and read
by `load_config(config_file=...)` and, as a `--policy` file, by `load_policy_file`; both either
return or raise a `TrustpullError`. A policy that loads is then asked which rule covers a few
references (`match`, `explain`), which runs the scope and tag-glob matching.
Seeds: configurations built at run time from the real-world trust data: one rule per real GUN,
with that root's key IDs as `root_keys` and pins, and reference-vector names as scopes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from _common import REFERENCE_VECTORS, main, realworld_files
from _instrument import instrumented

with instrumented():
    from trust.config import load_config, load_policy_file
    from trust.errors import TrustpullError
    from trust.notary.keys import PublicKey
    from trust.reference import parse

MAX_LEN = 4096
REFS = [
    parse(text)
    for text in (
        "alpine",
        "docker.io/library/alpine:3.19",
        "127.0.0.1:5000/ns/app:1.0",
        "registry.example.com:5000/team/app/sub:v1.2-rc",
        "localhost/x@sha256:" + "a" * 64,
    )
]

_SCRATCH: Path | None = None


def scratch() -> Path:
    """One directory per process with `root.json` and `ca.pem` beside the config file."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="trustpull-fuzz-policy-"))
        roots = [p for p in realworld_files("root.json")]
        (_SCRATCH / "root.json").write_bytes(roots[0].read_bytes() if roots else b"{}")
        certs = list(realworld_files("*.crt"))
        (_SCRATCH / "ca.pem").write_bytes(certs[0].read_bytes() if certs else b"")
    return _SCRATCH


def _roots() -> Iterator[tuple[str, list[str]]]:
    """(GUN, canonical root key IDs) of every real-world root.json."""
    for path in realworld_files("*root.json"):
        try:
            signed = json.loads(path.read_bytes())["signed"]
            ids = []
            gun = None
            for keyid in signed["roles"]["root"]["keyids"]:
                key = PublicKey.from_json(signed["keys"][keyid])
                ids.append(key.canonical_id)
                cert = key.certificates()[0]
                gun = gun or cert.subject.rfc4514_string().removeprefix("CN=")
        except (ValueError, KeyError, TypeError, IndexError, TrustpullError):
            continue
        if gun:
            yield gun, ids


def _rule(index: int, gun: str, ids: list[str]) -> str:
    registry, _, repository = gun.partition("/")
    return (
        f'[[rules]]\nname = "r{index}"\nregistry = "{registry}"\nrepository = "{repository}"\n'
        f'tag = "1.*"\nsigners = ["targets/releases", "targets/ci"]\nthreshold = 1\n'
        f'root_keys = {json.dumps(ids)}\ntofu = false\nmin_validity = "1d12h"\n'
        f'trust_server = "https://notary.{registry.split(":")[0]}"\n'
    )


def seeds() -> Iterator[bytes]:
    roots = list(_roots())
    for index, (gun, ids) in enumerate(roots):
        yield _rule(index, gun, ids).encode()
    by_gun: dict[str, list[str]] = {}
    for gun, ids in roots:
        by_gun.setdefault(gun, []).extend(i for i in ids if i not in by_gun.get(gun, []))
    pins = "\n".join(f'"{gun}" = {json.dumps(ids)}' for gun, ids in by_gun.items())
    yield (
        '[auth]\nrealms = ["https://auth.example.com/token"]\n\n[engine]\nsocket = '
        '"/run/docker.sock"\n\n'
        '[limits]\nretries = 2\nread_timeout = 1.5\n\n[trust_servers]\n"docker.io" = '
        '"https://notary.docker.io/"\n\n[trust_pinning]\ndisable_tofu = true\n'
        f'ca = {{ "docker.io/" = "ca.pem" }}\n\n[trust_pinning.certs]\n{pins}\n\n'
        '[[trust_sources]]\nscope = "registry.example.com/team"\ntype = "tuf"\n'
        'metadata_url = "https://tuf.example.com/metadata"\nroot = "root.json"\n\n'
        '[[rules]]\nregistry = "registry.example.com"\nnamespace = "team"\n'
        'trust_source = "registry.example.com/team"\n\n'
        '[[rules]]\nregistry = "docker.io"\nrefuse = true\n\n'
        '[[rules]]\nallow_unsigned = true\nroot_ca = "ca.pem"\n'
    ).encode()
    names = (
        json.loads(REFERENCE_VECTORS.read_bytes())["cases"] if REFERENCE_VECTORS.is_file() else []
    )
    for index, case in enumerate(names[:80]):
        expected = case.get("expected") or {}
        domain, path = expected.get("domain"), expected.get("derived_path")
        if isinstance(domain, str) and domain and isinstance(path, str) and path:
            yield (
                f'[[rules]]\nregistry = "{domain}"\nrepository = "{path}"\n'
                f'tag = "[a-z]*?"\nsigners = ["targets/r{index}"]\n'
            ).encode()


def one_input(data: bytes) -> None:
    path = scratch() / "config.toml"
    path.write_bytes(data)
    for load in (
        lambda: load_config({}, config_file=path).policy,
        lambda: load_policy_file(path)[0],
    ):
        try:
            policy = load()
        except TrustpullError:
            continue
        if policy is None:
            continue
        for ref in REFS:
            try:
                policy.match(ref)
                policy.explain(ref)
            except TrustpullError:
                pass


if __name__ == "__main__":
    try:
        main(one_input)
    finally:
        if _SCRATCH is not None:
            for child in _SCRATCH.iterdir():
                os.unlink(child)
            _SCRATCH.rmdir()
