"""Classic builds and BuildKit (engine-proxy.md §2.4): every base verified and pinned."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from trust.errors import InputError
from trust.proxy import gojson
from trust.proxy.context import ContextStream
from trust.proxy.decide import (
    HEX64,
    DeciderBase,
    Refused,
    StreamScanner,
    auth_for,
    names_for,
    registry_config,
)
from trust.proxy.framing import HTTPRefusal
from trust.proxy.routes import Query, booleanish
from trust.proxy.upstream import vpath
from trust.proxy.verify import Pin
from trust.reference import Reference, parse

if TYPE_CHECKING:
    from trust.proxy.server import Exchange

__all__ = ["BUILDKIT_MESSAGE", "BuildRoutes"]


class BuildRoutes(DeciderBase):
    """`POST /build` read, pinned and pre-pulled; BuildKit refused unless allowed."""

    def on_ping(self, ex: Exchange) -> None:
        """Unless BuildKit is allowed, the ping says `Builder-Version: 1`, so that clients
        that follow it (docker CLI, compose) use the classic builder the proxy reads."""
        if self.config.allow_buildkit:
            ex.conn.forward(ex)
        else:
            ex.conn.forward(ex, answer_headers=((b"builder-version", b"1"),))

    def on_session(self, ex: Exchange) -> None:
        self._buildkit(ex)

    def on_grpc(self, ex: Exchange) -> None:
        self._buildkit(ex)

    def _buildkit(self, ex: Exchange) -> None:
        if not self.config.allow_buildkit:
            raise Refused(403, BUILDKIT_MESSAGE, kind="BuildKit")
        self._buildkit_allowed(ex)
        upgrade = ex.head.wants_upgrade()
        ex.conn.forward(ex, upgrade=upgrade)

    def on_build(self, ex: Exchange) -> None:
        q = ex.target.query
        if q.get("version") == "2":
            if not self.config.allow_buildkit:
                raise Refused(403, BUILDKIT_MESSAGE, kind="BuildKit")
            self._buildkit_allowed(ex)
            ex.conn.forward(ex)
            return
        if q.get("remote"):
            raise Refused(
                403,
                f"trustpull: build from remote context {q.get('remote')} refused: "
                "the proxy cannot see what the engine fetches; build from a local "
                "directory (the docker CLI clones git URLs and downloads URL contexts "
                "itself) [RemoteContext]",
                kind="RemoteContext",
            )
        cache_from = self._cache_sources(ex, q.get("cachefrom"))
        verified_at = time.monotonic()  # before any verification of this build's bases
        for name in q.all("t"):
            self._refuse_shadowing(ex, name)
        build_args: dict[str, str] = {}
        raw_args = q.get("buildargs")
        if raw_args:
            parsed = gojson.loads(raw_args.encode())
            if not isinstance(parsed, gojson.Obj):
                raise HTTPRefusal(400, "trustpull: buildargs must be a JSON object")
            for key, value in parsed:
                if isinstance(value, str):
                    build_args[key] = value
                elif value is not None:
                    raise HTTPRefusal(400, "trustpull: buildargs values must be strings")
        auths = registry_config(ex.header("X-Registry-Config"))
        context = ContextStream(
            ex.conn.body_pieces(ex),
            q.get("dockerfile") or "Dockerfile",
            self.config.max_dockerfile,
            self.config.build_spool_max,
        )
        pins: list[tuple[Reference, Pin]] = []

        def body() -> Iterator[bytes]:
            """The context as the engine gets it: everything but the Dockerfile while it
            arrives; the Dockerfile, pinned, once its bases verified and were pulled."""
            try:
                yield from context.members()
            except Refused as refusal:
                # Part of the context is already on its way to the engine, re-written: not
                # even audit mode can forward it as the client sent it.
                self._log(
                    ex,
                    verdict="refused",
                    status=refusal.status,
                    reason=refusal.message,
                    kind=refusal.kind,
                )
                raise HTTPRefusal(refusal.status, refusal.message, kind=refusal.kind) from None
            try:
                text, found = self._pin_dockerfile(ex, context, build_args, auths)
                for ref, pin in found:
                    self._prepull(ex, ref, pin, auths, verified_at)
            except Refused as refusal:
                if self.proxy.enforcing:
                    raise
                self._log(ex, verdict="would-refuse", reason=refusal.message, kind=refusal.kind)
                text, found = context.dockerfile, []  # audit: built as the client asked
            pins.extend(found)
            yield from context.finish(text)

        query = Query(tuple((k, v) for k, v in q.pairs if k != "pull"))
        if cache_from is not None:
            query = query.replaced(cachefrom=cache_from)
        local_origin = (
            self.config.allow_load or self.config.allow_import or self.config.allow_commit
        )
        if local_origin or any_image_is_cache(str(self.engine_version_info().get("Version"))):
            query = query.replaced(nocache="1")
        names = q.all("t")
        scanner = StreamScanner()
        status = ex.conn.forward(
            ex, target=ex.target.encode(query=query), body=body(), tee=scanner.feed
        )
        if status == 200 and scanner.error is None:
            for image_id in scanner.aux_ids[-1:] or scanner.built_ids[-1:] or _quiet_id(q, scanner):
                full = image_id if image_id.startswith("sha256:") else self._full_id(ex, image_id)
                if full:
                    self.ledger.add(full, "build", names_for(names), ex.conn.peer.uid)
        self._log(
            ex,
            verdict="built",
            digest=",".join(p.digest for _, p in pins),
            reference=",".join(names) or None,
        )

    def _cache_sources(self, ex: Exchange, raw: str) -> str | None:
        """§2.4 step 6: the `cachefrom` to forward (None: as sent). Each image must be admitted
        and is forwarded by its ID, so a retag before the build cannot change which image the
        builder takes steps from; one not present is left out, as the engine skips it."""
        if raw in ("", "null"):
            return None
        names = gojson.loads(raw.encode())
        if (
            not isinstance(names, list)
            or isinstance(names, gojson.Obj)
            or not all(isinstance(name, str) for name in names)
        ):
            raise HTTPRefusal(400, "trustpull: cachefrom must be a JSON list of image names")
        ids: list[str] = []
        for name in names:
            image = self.inspect_image(ex, name) if name else None
            if image is None:
                continue
            if not self.admitted(ex, image):
                raise Refused(
                    403,
                    f"trustpull: cache source {name} refused: image {image.get('Id')} is not "
                    "verified (no signed digest, not a build through the proxy) [CacheFrom]",
                    kind="CacheFrom",
                    reference=name,
                )
            ids.append(str(image["Id"]))
        return gojson.dumps(ids).decode()

    def _refuse_shadowing(self, ex: Exchange, name: str) -> None:
        """A build must not put its result under a currently signed tag (§2.4 step 7). When
        the trust server cannot say, the build goes on: a create of a signed name is pinned to
        the signed digest anyway (§2.5), so a shadowing tag is never what runs."""
        try:
            ref = parse(name)
        except InputError:
            return  # the engine refuses the name itself
        try:
            verified = self.verify(ex, ref, what="build tag")
        except Refused as refusal:
            if refusal.not_signed or refusal.status == 503:
                return
            raise
        if verified.pins:
            raise Refused(
                403,
                f"trustpull: build tag {ref} refused: that tag is signed for "
                f"{verified.pins[0].digest}; a build must not shadow a signed tag [Shadow]",
                kind="Shadow",
                reference=str(ref),
            )

    def _full_id(self, ex: Exchange, short: str) -> str | None:
        image = self.inspect_image(ex, short)
        return str(image["Id"]) if image else None

    def _pin_dockerfile(
        self,
        ex: Exchange,
        context: ContextStream,
        build_args: dict[str, str],
        auths: dict[str, Any],
    ) -> tuple[bytes, list[tuple[Reference, Pin]]]:
        """The Dockerfile with every base pinned, and the pins. A `FROM` base a rule accepts
        unsigned is pinned to the ID of the image whose ONBUILD triggers were read: by name, a
        retag in between (an admitted image with a `from=` trigger) would be what builds."""
        from trust.manifests import ImageSite, refs_from_dockerfile
        from trust.proxy.classic import check_forwarded

        raw = context.dockerfile
        dockerfile = context.name
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Refused(
                400, "trustpull: the Dockerfile is not UTF-8 [Context]", kind="Context"
            ) from None
        try:
            literals: list[ImageSite] = []
            sites = refs_from_dockerfile(text, dockerfile, build_args, literals)
        except InputError as error:
            raise Refused(
                400,
                f"trustpull: cannot read the Dockerfile: {error.message} [Context]",
                kind="Context",
            ) from None
        _refuse_unreported_from(text, {site.text for site in sites}, dockerfile)
        lines = text.split("\n")
        pins: list[tuple[Reference, Pin]] = []
        allowed: set[str] = set()  # each image reference as the forwarded text names it
        for site in sites:
            try:
                ref = parse(site.text)
            except InputError as error:
                raise Refused(
                    400,
                    f"trustpull: build base {site.text} refused: {error.message} [Input]",
                    kind="Input",
                ) from None
            verified = self.verify(ex, ref, what="build base")
            if verified.unsigned is not None:
                if site.kind not in ("from", "argument"):
                    allowed.add(site.text)  # accepted unsigned as it is written
                    continue
                pinned = self._check_unsigned_base(ex, ref, auths)
                pin = None
            else:
                pin = verified.pins[0]
                pinned = f"{ref.name}@{pin.digest}"
            index = site.line - 1
            new_line = _pin_line(lines[index], site.text, pinned)
            if new_line is None:
                raise Refused(
                    400,
                    f"trustpull: {dockerfile}:{site.line}: cannot pin this FROM line "
                    "to a digest (write it on one line) [Context]",
                    kind="Context",
                )
            lines[index] = new_line
            allowed.add(pinned)
            if pin is not None:
                pins.append((ref, pin))
        for literal in literals:  # FROM $X resolved to scratch or a stage: written out
            if literal.fixed is None:
                index = literal.line - 1
                lines[index] = _pin_line(lines[index], literal.text, literal.text) or lines[index]
        forwarded = "\n".join(lines)
        try:  # the text as the engine's own parser will read it: nothing left unpinned
            check_forwarded(forwarded, allowed, dockerfile)
            # and as current BuildKit's grammar (the proxy's reader) reads it, for engines
            # whose classic builder vendors a newer parser than 20.10's
            for again in refs_from_dockerfile(forwarded, dockerfile, build_args):
                if again.text not in allowed:
                    raise InputError(f"{again.origin}: {again.text} is not a pinned image")
        except InputError as error:
            raise Refused(
                400,
                f"trustpull: the engine would read the Dockerfile otherwise: {error.message} "
                "[Context]",
                kind="Context",
            ) from None
        return forwarded.encode(), pins

    def _prepull(
        self,
        ex: Exchange,
        ref: Reference,
        pin: Pin,
        auths: dict[str, Any],
        verified_at: float = float("-inf"),
    ) -> None:
        self._pull_for_build(ex, ref, pin.digest, auths, f"verified ({pin.digest})")
        _refuse_onbuild_from(ref, self.inspect_image(ex, f"{ref.name}@{pin.digest}") or {})
        if pin.tag:
            self._tag_verified(ex, ref.name, pin, verified_at)

    def _check_unsigned_base(self, ex: Exchange, ref: Reference, auths: dict[str, Any]) -> str:
        """A base a rule accepts unsigned runs its ONBUILD triggers in this build too: the
        image the engine will use (the local one, else pulled by its tag as the engine would
        pull it) is read first, so a trigger cannot pull another image unverified."""
        image = self.inspect_image(ex, str(ref))
        if image is None:
            self._pull_for_build(ex, ref, ref.digest or ref.tag or "latest", auths, "accepted")
            image = self.inspect_image(ex, str(ref)) or {}
        _refuse_onbuild_from(ref, image)
        image_id = image.get("Id")
        if not isinstance(image_id, str) or not HEX64.fullmatch(image_id):
            raise Refused(
                403,
                f"trustpull: build base {ref} accepted unsigned but not found after its pull "
                "[Engine]",
                kind="Engine",
                reference=str(ref),
            )
        return image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"

    def _pull_for_build(
        self, ex: Exchange, ref: Reference, tag: str, auths: dict[str, Any], how: str
    ) -> None:
        headers = {"X-Registry-Auth": auth_for(ref.domain, auths)}
        query = Query((("fromImage", ref.name), ("tag", tag)))
        status, _, pieces, close = self.proxy.upstream.stream(
            "POST", vpath(ex.target.version, "/images/create") + "?" + query.encode(), headers
        )
        try:
            scanner = StreamScanner()
            for piece in pieces:
                scanner.feed(piece)
        finally:
            close()
        if status >= 400 or scanner.error is not None:
            raise Refused(
                403 if status < 500 else 503,
                f"trustpull: build base {ref} {how} but could "
                f"not be pulled: {scanner.error or status} [Engine]",
                kind="Engine",
                reference=str(ref),
            )


def any_image_is_cache(version: str) -> bool:
    """Whether the classic builder of dockerd `version` takes any local image whose parent
    and step config match as a cached step (§2.4 step 6): before 25.0.2 and 24.0.9
    (GHSA-xw73-rw38-6vjc, moby/moby@3e230cfdcc98) it does, so an image made on the engine
    behind the proxy's back (with a predefined build arg such as `http_proxy`, which the
    step's cache key leaves out) would be what a proxied build produces (X40s). A version
    that does not parse counts as old."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        return True
    major, minor, patch = (int(part) for part in match.groups())
    if major != 24 or minor != 0:
        return (major, minor, patch) < (25, 0, 2)
    return patch < 9


def _quiet_id(q: Query, scanner: StreamScanner) -> list[str]:
    """A quiet build's image ID (`q=1`: dockerd 20.10 sends no aux message then, and holds
    back every step's output, sent only with an error): the ID the engine's last message
    is, only when the build was quiet (else a RUN step's output could be that message)."""
    last = (scanner.last_stream or "").strip()
    if booleanish(q.first("q")) and HEX64.fullmatch(last):
        return [last]
    return []


def _refuse_onbuild_from(ref: Reference, image: dict[str, Any]) -> None:
    """Base images' ONBUILD triggers run as instructions of the child build (§2.4 step 5): one
    that copies or mounts `from=` anything is refused (stricter than the spec, which allows a
    trigger pinned to an admitted digest: a trigger cannot be pinned by rewriting)."""
    from trust.proxy.classic import onbuild_copies_from

    triggers = (image.get("Config") or {}).get("OnBuild") or []
    if any(
        re.search(r"from=", str(t), re.IGNORECASE) or onbuild_copies_from(str(t)) for t in triggers
    ):
        raise Refused(
            403,
            f"trustpull: build base {ref} has ONBUILD triggers that copy from other "
            "images, which the proxy cannot verify [OnBuild]",
            kind="OnBuild",
            reference=str(ref),
        )


_FROM_FLAG = re.compile(r"(?i)(?:--from=|--mount=\S*?\bfrom=)([^\s,]+)")


_STAGE_NAME = re.compile(r"(?im)^\s*FROM\s+.*\s+AS\s+(\S+)\s*$")


def _refuse_unreported_from(text: str, reported: set[str], dockerfile: str) -> None:
    """Fail closed on `COPY --from=IMAGE` / `RUN --mount=…,from=IMAGE` that the Dockerfile
    reader did not report as image references: the classic builder would pull them itself."""
    stages = {m.group(1).lower() for m in _STAGE_NAME.finditer(text)}
    for match in _FROM_FLAG.finditer(text):
        value = match.group(1).strip("\"'")
        if value.isdigit() or value.lower() in stages or value in reported:
            continue
        raise Refused(
            400,
            f"trustpull: {dockerfile}: --from={value} names an image the proxy cannot verify "
            "here; use a build stage FROM a signed image instead [Context]",
            kind="Context",
            reference=value,
        )


BUILDKIT_MESSAGE = (
    "trustpull proxy: BuildKit builds are refused because the proxy cannot verify the images "
    "BuildKit pulls; use the classic builder (DOCKER_BUILDKIT=0), or pin each FROM to the digest "
    "`trustpull resolve NAME:TAG` prints and set allow_buildkit"
)


_FROM_LINE = re.compile(r"^(\s*FROM\s+(?:--\S+\s+)*)(\S+)(.*)$", re.IGNORECASE)


def _pin_line(line: str, text: str, pinned: str) -> str | None:
    """`line` with the image reference `text` replaced by `pinned`, or None when the proxy
    cannot do that exactly (a continued line, a reference written with variables): the build
    is then refused, never forwarded unpinned."""
    if line.rstrip().endswith("\\"):
        return None
    m = _FROM_LINE.match(line)
    if m is not None and not line.lstrip().lower().startswith(("copy", "run")):
        return m.group(1) + pinned + m.group(3)
    needle = f"--from={text}"
    if line.count(needle) == 1:
        return line.replace(needle, f"--from={pinned}")
    return None
