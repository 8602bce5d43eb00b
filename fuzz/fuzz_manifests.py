"""Fuzz target: image references in Dockerfiles, compose and Kubernetes files (trust/manifests.py).

Input: one selector byte (Dockerfile, compose, k8s, auto-detected YAML, or a reference list),
then the file's text (UTF-8, invalid bytes replaced). Collection either returns image sites or
raises a `TrustpullError`; for Dockerfiles and YAML, every site that can be rewritten is then
pinned with `rewrite` (what `resolve --write` does), which must also return or raise a typed
error, and the rewritten file must read back with the same number of sites.
Seeds: files built at run time around the image names of shared/realworld/reference-vectors.json
and the real GUNs of the trust data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from _common import REFERENCE_VECTORS, main
from _instrument import instrumented

with instrumented():
    from trust.errors import TrustpullError
    from trust.manifests import (
        ImageSite,
        pinned_text,
        refs_from_dockerfile,
        refs_from_list,
        rewrite,
        yaml_sites,
    )

KINDS = ("dockerfile", "compose", "k8s", "auto", "list")
MAX_LEN = 4096
DIGEST = "sha256:" + "0" * 64
#: The compose interpolation environment (fixed, so a run does not depend on the machine's).
ENV = {"IMG": "registry.example.com/app:1.0", "TAG": "2.0"}
BUILD_ARGS = {"BASE": "alpine"}


def _images() -> list[str]:
    cases = json.loads(REFERENCE_VECTORS.read_bytes())["cases"]
    found = [c["input"] for c in cases if isinstance(c.get("input"), str) and c.get("expected")]
    return found[:60]


def seeds() -> Iterator[bytes]:
    images = _images()
    for index in range(0, len(images), 3):
        a, b, c = (images[(index + k) % len(images)] for k in range(3))
        yield (
            b"\0"
            + (
                f"# syntax=docker/dockerfile:1\nARG BASE={a}\nFROM --platform=$BUILDPLATFORM "
                f"${{BASE}} AS build\nRUN echo \\\n  hi\nFROM {b}\nFROM build\nFROM scratch\n"
                f"COPY --from={c} /x /y\n"
            ).encode()
        )
        yield (
            b"\1"
            + (
                f'services:\n  web:\n    image: "{a}"\n  db:\n    image: {b}\n'
                f"  x:\n    image: ${{IMG:-{c}}}\n    build: .\n"
            ).encode()
        )
        yield (
            b"\2"
            + (
                f"apiVersion: batch/v1\nkind: CronJob\nspec:\n  jobTemplate:\n    spec:\n"
                f"      template:\n        spec:\n          initContainers:\n"
                f"          - image: {a}\n          containers:\n          - name: c\n"
                f"            image: '{b}'\n---\napiVersion: v1\nkind: List\nitems:\n"
                f"- spec:\n    containers: [{{image: {c}}}]\n"
            ).encode()
        )
        yield b"\4" + f"{a}\n# comment\n{b}  # trailing\n\n{c}\n".encode()


def _sites(kind: str, text: str) -> tuple[str, list[ImageSite]]:
    if kind == "dockerfile":
        return kind, refs_from_dockerfile(text, "Dockerfile", BUILD_ARGS)
    if kind == "list":
        return kind, refs_from_list(text, "images.txt")
    return yaml_sites(text, "file.yaml", kind, env=ENV)


def one_input(data: bytes) -> None:
    if not data:
        return
    kind = KINDS[data[0] % len(KINDS)]
    text = data[1:].decode("utf-8", "replace")
    try:
        found, sites = _sites(kind, text)
    except TrustpullError:
        return
    if found == "list":
        return
    changes = {s: pinned_text(s.text, "1.0", DIGEST) for s in sites if s.fixed is None}
    if not changes:
        return
    try:
        rewritten = rewrite(text, "file", changes)
    except TrustpullError:
        return
    # What `resolve --write` wrote must read back, with the same number of sites.
    again = _sites(found, rewritten)[1]
    if len(again) != len(sites):
        raise AssertionError(f"rewrite changed the number of image sites: {rewritten!r}")


if __name__ == "__main__":
    main(one_input)
