"""What the proxy does per endpoint (engine-proxy.md §2): verify, rewrite to digests, or refuse.

Every decision goes through `Decider.handle`; refusals are `HTTPRefusal`s carrying an Engine API
status (§3.1) and a message naming the reference, the rule and trustpull's error kind. In audit
mode a trust refusal is logged as `would-refuse` and the original request is forwarded unchanged.

Longer than 500 lines because it is engine-proxy.md §2 as code: one decision per route
family (pull and import, build, create and start, tag, load, commit, plugins, swarm), each
next to the parsing rules the engine applies to it, so a reviewer can check a route in one place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import re
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trust.errors import (
    InputError,
    NetworkError,
    TrustpullError,
)
from trust.proxy import gojson
from trust.proxy.framing import HTTPRefusal
from trust.proxy.routes import Query, check_single_keys
from trust.proxy.upstream import EngineDown, image_path, vpath
from trust.proxy.verify import (
    Kept,
    Pin,
    Verified,
    request_credentials,
    rule_for,
    verify_reference,
)
from trust.reference import Reference, parse

if TYPE_CHECKING:
    from trust.policy import Policy
    from trust.proxy.server import DecisionLog, Exchange, Proxy
    from trust.settings import ProxyConfig, Settings

__all__ = ["Decider", "Ledger", "build_proxy", "sanitize"]

_HEX64 = re.compile(r"(sha256:)?[0-9a-f]{64}")
_HEXPREFIX = re.compile(r"(sha256:)?[0-9a-f]{1,64}")
#: Substrings that change `docker run`'s exit code (§3.1): never in a refusal message.
_EXIT_CHANGING = re.compile(
    r"permission denied|no such file or directory|executable file not found|"
    r"system cannot find the file specified|is a directory",
    re.IGNORECASE,
)


def compare_versions(a: str, b: str) -> int:
    """moby's versions.compare: numeric by component, missing or non-numeric parts are 0."""
    left, right = a.split("."), b.split(".")
    for i in range(max(len(left), len(right))):
        x = left[i] if i < len(left) else "0"
        y = right[i] if i < len(right) else "0"
        xi = int(x) if x.isdigit() else 0
        yi = int(y) if y.isdigit() else 0
        if xi != yi:
            return 1 if xi > yi else -1
    return 0


def sanitize(message: str) -> str:
    return _EXIT_CHANGING.sub(lambda m: m.group(0).replace(" ", "_"), message)


class Refused(HTTPRefusal):
    """A trust decision refusal (audit mode forwards these instead)."""

    @property
    def exit_kind_is_trust_failure(self) -> bool:
        """A verification or policy failure (not merely "not signed")."""
        return self.kind not in ("NoTrustData", "NoSuchTag", "NotSigned")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str,
        reference: str | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(status, sanitize(message), kind=kind)
        self.reference = reference
        self.rule = rule
        #: trustpull's exit code for the same verdict in the CLI (None: no CLI equivalent).
        self.exit_code: int | None = None


def _status_for(error: TrustpullError) -> int:
    if isinstance(error, NetworkError):
        return 503
    if isinstance(error, InputError):
        return 400
    if error.exit_code in (4, 5, 7, 9):
        return 403
    return 500


@dataclass
class Ledger:
    """Images that entered the engine through the proxy without a signature (§2.11)."""

    path: str | None = None
    entries: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        entry = json.loads(line)
                        self.entries.setdefault(entry["id"], set()).update(entry.get("names") or [])

    def add(self, image_id: str, origin: str, names: list[str], uid: int) -> None:
        with self.lock:
            self.entries.setdefault(image_id, set()).update(names)
            if self.path:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as handle:
                    record = {
                        "id": image_id,
                        "origin": origin,
                        "names": names,
                        "time": time.time(),
                        "uid": uid,
                    }
                    handle.write(json.dumps(record) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())

    def has(self, image_id: str) -> bool:
        return image_id in self.entries

    def names(self, image_id: str) -> set[str]:
        return self.entries.get(image_id, set())


class Decider:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.ledger = Ledger(self.config.ledger)
        self._tag_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._admitted: dict[str, float] = {}
        #: Bounded concurrency of verifications (each may fetch from the trust server).
        self._verifying = threading.BoundedSemaphore(16)
        #: Trust server connections, tokens and verified results kept between requests.
        self._kept = Kept(proxy.settings.limits)
        self._api_range: tuple[str, str] | None = None

    # -------------------------------------------------------------------- dispatch

    def handle(self, ex: Exchange) -> None:
        match = ex.match
        enforcing = self.proxy.enforcing
        if match is None:
            if ex.head.method in ("GET", "HEAD") or not enforcing:
                ex.conn.forward(ex)
                return
            self._log(ex, verdict="refused", reason="unknown route")
            raise HTTPRefusal(
                403,
                f"trustpull: {ex.head.method} {ex.target.path} is not a known Engine API route; "
                "refused so that a new endpoint cannot become an unverified entry point",
                kind="UnknownRoute",
            )
        route = match.route
        if ex.target.version is not None:
            self._check_version(ex.target.version)
        if route.interpreted:
            check_single_keys(ex.target.query)
        upgrade = ex.head.wants_upgrade()
        if upgrade is not None and upgrade != b"tcp" and not self.config.allow_buildkit:
            self._refuse_or_audit(
                ex,
                Refused(
                    403,
                    f"trustpull: Upgrade: {upgrade.decode(errors='replace')} is refused "
                    "(BuildKit sessions and HTTP/2 bypass verification; set allow_buildkit)",
                    kind="BuildKit",
                ),
                forward_upgrade=upgrade,
            )
            return
        handler = getattr(self, "on_" + route.name.replace(".", "_"), None)
        if handler is None:
            if route.name in ("containers.attach", "exec.start") and upgrade == b"tcp":
                ex.conn.forward(ex, upgrade=b"tcp")
            elif upgrade is not None and self.config.allow_buildkit:
                ex.conn.forward(ex, upgrade=upgrade)
            else:
                ex.conn.forward(ex)
            return
        try:
            handler(ex)
        except Refused as refusal:
            self._refuse_or_audit(ex, refusal)

    def _check_version(self, version: str) -> None:
        """The engine's version gate, answered as the engine would (§1.1): the proxy must not
        act on a request the engine then refuses, nor forward one it cannot judge."""
        if self._api_range is None:
            answer = self.proxy.upstream.call("GET", "/version")
            info = answer.json() if answer.status == 200 else None
            if not isinstance(info, dict):
                raise EngineDown(f"GET /version answered {answer.status}")
            self._api_range = (str(info.get("MinAPIVersion") or "1.12"), str(info["ApiVersion"]))
        low, high = self._api_range
        if compare_versions(version, high) > 0:
            raise HTTPRefusal(
                400,
                f"client version {version} is too new. Maximum supported API version is {high}",
                kind="Version",
            )
        if compare_versions(version, low) < 0:
            raise HTTPRefusal(
                400,
                f"client version {version} is too old. Minimum supported API version is {low}, "
                "please upgrade your client to a newer version",
                kind="Version",
            )

    def _refuse_or_audit(
        self, ex: Exchange, refusal: Refused, forward_upgrade: bytes | None = None
    ) -> None:
        if self.proxy.enforcing:
            self._log(
                ex,
                verdict="refused",
                reason=refusal.message,
                reference=refusal.reference,
                rule=refusal.rule,
                kind=refusal.kind,
                exit_code=refusal.exit_code,
                status=refusal.status,
            )
            raise refusal
        self._log(
            ex,
            verdict="would-refuse",
            reason=refusal.message,
            reference=refusal.reference,
            rule=refusal.rule,
            kind=refusal.kind,
            exit_code=refusal.exit_code,
        )
        body = ex.body if ex.body_read else None
        ex.conn.forward(ex, body=body, upgrade=forward_upgrade)

    def _log(self, ex: Exchange, **fields: Any) -> None:
        self.proxy.log.write(
            uid=ex.conn.peer.uid,
            pid=ex.conn.peer.pid,
            method=ex.head.method,
            path=ex.target.path,
            route=ex.route,
            **fields,
        )

    # -------------------------------------------------------------------- verification

    def verify(
        self, ex: Exchange, ref: Reference, *, all_tags: bool = False, what: str = "pull"
    ) -> Verified:
        if ref.domain != ref.domain.lower():
            raise Refused(
                400,
                f"trustpull: {what} of {ref} refused: the registry host must be lower case "
                "(its policy scope and trust data would differ) [Input]",
                kind="Input",
                reference=str(ref),
            )
        with self._verifying:
            try:
                return verify_reference(
                    self.proxy.settings,
                    self.proxy.policy,
                    ref,
                    all_tags=all_tags,
                    credentials=request_credentials(ref, ex.header),
                    kept=self._kept,
                )
            except TrustpullError as error:
                refusal = Refused(
                    _status_for(error),
                    f"trustpull: {what} of {ref} refused: {error.message} [{error.kind}]",
                    kind=error.kind,
                    reference=str(ref),
                )
                refusal.exit_code = error.exit_code
                refusal.rule = rule_for(self.proxy.policy, ref, self.proxy.settings)
                raise refusal from None

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._tag_locks.setdefault(key, threading.Lock())

    def inspect_image(self, ex: Exchange, name: str) -> dict[str, Any] | None:
        answer = self.proxy.upstream.call("GET", image_path(ex.target.version, name, "/json"))
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise HTTPRefusal(answer.status if answer.status >= 400 else 502, answer.message)
        value = answer.json()
        return value if isinstance(value, dict) else None

    def admitted(self, ex: Exchange, image: dict[str, Any]) -> bool:
        """§0.2: one RepoDigest whose digest verifies for its repository, or a ledger image."""
        image_id = str(image.get("Id") or "")
        if self.ledger.has(image_id):
            return True
        cached = self._admitted.get(image_id)
        if cached is not None and time.monotonic() - cached < self.config.verify_cache_ttl:
            return True
        unreachable: Refused | None = None
        for repo_digest in image.get("RepoDigests") or []:
            try:
                ref = parse(str(repo_digest))
            except InputError:
                continue
            try:
                self.verify(ex, ref, what="use")
            except Refused as refusal:
                if refusal.status == 503:
                    unreachable = refusal
                continue
            self._admitted[image_id] = time.monotonic()
            return True
        if unreachable is not None:
            raise unreachable
        return False

    # -------------------------------------------------------------------- pull / import

    def on_images_create(self, ex: Exchange) -> None:
        q = ex.target.query
        from_image = q.get("fromImage")
        if not from_image:
            src = q.get("fromSrc")
            if not self.config.allow_import:
                raise Refused(
                    403,
                    f"trustpull: import into {q.get('repo') or '(no name)'} refused: "
                    "import creates an unverified image; set allow_import [Import]",
                    kind="Import",
                    reference=q.get("repo") or None,
                )
            if src != "-" and not self.config.allow_import_url:
                raise Refused(
                    403,
                    "trustpull: import from a URL refused: the engine would fetch "
                    "it unseen; set allow_import_url [Import]",
                    kind="Import",
                )
            self._log(ex, verdict="allowed", reason="import allowed by config")
            scanner = _StreamScanner()
            if ex.conn.forward(ex, tee=scanner.feed) == 200 and scanner.error is None:
                for image_id in scanner.status_ids[-1:]:
                    self.ledger.add(image_id, "import", [], ex.conn.peer.uid)
            return
        if from_image.endswith(":"):
            from_image = from_image[:-1]
        try:
            ref = parse(from_image, default_tag=False)
            tag = q.get("tag")
            if tag:
                if ":" in tag:
                    ref = ref.trimmed().with_digest(tag)
                else:
                    ref = ref.with_tag(tag)
        except InputError as error:
            raise Refused(
                400,
                f"trustpull: pull of {from_image} refused: {error.message} [Input]",
                kind="Input",
                reference=from_image,
            ) from None
        all_tags = ref.tag is None and ref.digest is None
        verified = self.verify(ex, ref, all_tags=all_tags)
        platform = q.first("platform")
        if verified.unsigned is not None:
            self._log(
                ex,
                verdict="unsigned-accepted",
                reference=str(ref),
                rule=verified.rule,
                reason=verified.unsigned,
            )
            query = Query((("fromImage", ref.name), ("tag", ref.digest or ref.tag or "latest")))
            if platform is not None:
                query = query.replaced(platform=platform)
            self._pull_stream(ex, ref, [], verified, query)
            return
        if not verified.pins:
            raise Refused(
                403,
                f"trustpull: pull of {ref} refused: no signed tags [NoSuchTag]",
                kind="NoSuchTag",
                reference=str(ref),
            )
        self._log(
            ex,
            verdict="verified",
            reference=str(ref),
            digest=",".join(p.digest for p in verified.pins),
            rule=verified.rule,
        )
        self._pull_stream(ex, ref, list(verified.pins), verified, None, platform=platform)

    def _auth_headers(self, ex: Exchange) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, value in ex.head.headers:
            if key == b"x-registry-auth" or key.startswith(b"x-meta-") or key == b"user-agent":
                headers[key.decode("latin-1")] = value.decode("latin-1")
        return headers

    def _pull_stream(
        self,
        ex: Exchange,
        ref: Reference,
        pins: list[Pin],
        verified: Verified,
        unsigned_query: Query | None,
        platform: str | None = None,
    ) -> None:
        conn = ex.conn
        upstream = self.proxy.upstream
        version = ex.target.version
        headers = self._auth_headers(ex)
        started = False

        def line(value: dict[str, Any]) -> bytes:
            return json.dumps(value).encode() + b"\r\n"

        def start() -> None:
            nonlocal started
            if not started:
                conn.respond_head(
                    ex,
                    200,
                    [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
                )
                started = True

        def fail(message: str) -> None:
            start()
            conn.respond_data(ex, line({"errorDetail": {"message": message}, "error": message}))
            conn.respond_end(ex)

        jobs: list[tuple[Pin | None, Query]] = []
        if unsigned_query is not None:
            jobs.append((None, unsigned_query))
        for each in pins:
            query = Query((("fromImage", ref.name), ("tag", each.digest)))
            if platform is not None:
                query = query.replaced(platform=platform)
            jobs.append((each, query))
        for index, (pin, query) in enumerate(jobs, start=1):
            lock = (
                self._lock_for(f"{ref.name}:{pin.tag}")
                if pin is not None and pin.tag
                else contextlib.nullcontext()
            )
            with lock:
                status, _, pieces, close = upstream.stream(
                    "POST", vpath(version, "/images/create") + "?" + query.encode(), headers
                )
                try:
                    if status >= 400:
                        body = b"".join(pieces)
                        message = _message_of(body) or f"engine answered HTTP {status}"
                        if not started:
                            conn.respond_json(ex, status, {"message": message})
                            return
                        fail(message)
                        return
                    start()
                    if index == 1:
                        for notice in verified.notices:
                            conn.respond_data(ex, line({"status": f"trustpull: WARNING: {notice}"}))
                    if pin is None:
                        conn.respond_data(
                            ex, line({"status": f"trustpull: WARNING: {verified.unsigned}"})
                        )
                    else:
                        signers = ", ".join(pin.signers)
                        what = ref.trimmed().with_tag(pin.tag) if pin.tag else ref
                        by = f" (signed by {signers})" if signers else ""
                        conn.respond_data(
                            ex,
                            line({"status": f"trustpull: verified {what} -> {pin.digest}{by}"}),
                        )
                        shown = f"{ref.trimmed().with_tag(pin.tag)}" if pin.tag else ref.name
                        conn.respond_data(
                            ex,
                            line(
                                {"status": f"Pull ({index} of {len(jobs)}): {shown}@{pin.digest}"}
                            ),
                        )
                    scanner = _StreamScanner()
                    for piece in pieces:
                        scanner.feed(piece)
                        conn.respond_data(ex, piece)
                    if scanner.error is not None:
                        conn.respond_end(ex)
                        return
                finally:
                    close()
                if pin is None or ref.digest is not None or not pin.tag:
                    continue
                source = f"{ref.name}@{pin.digest}"
                answer = upstream.call(
                    "POST",
                    image_path(version, source, "/tag")
                    + "?"
                    + Query((("repo", ref.name), ("tag", pin.tag))).encode(),
                )
                if answer.status != 201:
                    fail(
                        f"trustpull: pulled {source} but could not tag it as {ref.name}:{pin.tag}: "
                        f"{answer.message}"
                    )
                    return
                conn.respond_data(ex, line({"status": f"Tagging {source} as {ref.name}:{pin.tag}"}))
        start()
        conn.respond_end(ex)

    # -------------------------------------------------------------------- create / start

    def _admit_image_text(
        self, ex: Exchange, text: str, *, mount: bool = False
    ) -> tuple[str, list[str], bool]:
        """The `Image` to forward for `text`, warnings, and whether it is missing locally."""
        what = "image mount" if mount else "create"
        is_id = bool(_HEX64.fullmatch(text))
        ref: Reference | None = None
        if not is_id:
            try:
                ref = parse(text)
            except InputError:
                ref = None
        if ref is None:
            if not _HEXPREFIX.fullmatch(text):
                return text, [], False  # the engine refuses it itself
            image = self.inspect_image(ex, text)
            if image is None:
                return text, [], True
            if not self.admitted(ex, image):
                raise Refused(
                    403,
                    f"trustpull: {what} from image {text} refused: image {image.get('Id')} "
                    "is not verified (no signed digest reference, not built through "
                    "the proxy) [NotVerified]",
                    kind="NotVerified",
                    reference=text,
                )
            return str(image["Id"]), [], False
        if ref.digest is not None:
            verified = self.verify(ex, ref, what=what)
            if verified.unsigned is not None:
                return text, [verified.unsigned], False
            return f"{ref.name}@{verified.pins[0].digest}", [], False
        try:
            verified = self.verify(ex, ref, what=what)
        except Refused as refusal:
            if refusal.kind in ("NoTrustData", "NoSuchTag", "NotSigned"):
                image = self.inspect_image(ex, text)
                if image is None:
                    raise
                image_id = str(image.get("Id"))
                if self.ledger.has(image_id):
                    names = self.ledger.names(image_id)
                    if text in names or str(ref) in names:
                        return text, [], False
                    return image_id, [], False
                if self.admitted(ex, image):
                    return image_id, [], False
                raise Refused(
                    403,
                    f"trustpull: {what} from {text} refused: not signed, and the local "
                    f"image {image_id} is not verified [{refusal.kind}]",
                    kind=refusal.kind,
                    reference=text,
                ) from None
            if refusal.status == 503:
                image = self.inspect_image(ex, text)
                if (
                    image is not None
                    and self.ledger.has(str(image.get("Id")))
                    and text in self.ledger.names(str(image.get("Id")))
                ):
                    return text, [], False
            raise
        if verified.unsigned is not None:
            return text, [verified.unsigned], False
        pinned = f"{ref.name}@{verified.pins[0].digest}"
        return pinned, [], self.inspect_image(ex, pinned) is None

    def on_containers_create(self, ex: Exchange) -> None:
        body = ex.conn.read_body(ex, self.config.max_json_body)
        if not body.strip():
            ex.conn.forward(ex, body=body)
            return
        obj = gojson.loads(body)
        if not isinstance(obj, gojson.Obj):
            raise HTTPRefusal(400, "trustpull: the create body is not a JSON object")
        image = gojson.get(obj, "Image")
        warnings: list[str] = []
        if isinstance(image, str) and image:
            new, warns, missing = self._admit_image_text(ex, image)
            warnings += warns
            if missing:
                self._log(ex, verdict="not-present", reference=image, digest=new)
                ex.conn.respond_json(
                    ex,
                    404,
                    {
                        "message": f"No such image: {image} (trustpull: the signed image {new} is "
                        f"not present; pull {image})"
                    },
                )
                return
            gojson.set_field(obj, "Image", new)
            self._log(
                ex, verdict="pinned" if new != image else "allowed", reference=image, digest=new
            )
        elif image not in (None, ""):
            raise HTTPRefusal(400, "trustpull: Image must be a string")
        host_config = gojson.get(obj, "HostConfig")
        self._check_mounts(ex, host_config)
        forwarded = gojson.dumps(obj)

        def add_warnings(status: int, data: bytes) -> bytes:
            if not warnings or status != 201:
                return data
            try:
                answer = json.loads(data)
                answer["Warnings"] = list(answer.get("Warnings") or []) + [
                    f"trustpull: {w}" for w in warnings
                ]
                return json.dumps(answer).encode() + b"\n"
            except (ValueError, AttributeError, TypeError):
                return data

        ex.conn.forward(ex, body=forwarded, buffer_response=add_warnings)

    def _check_mounts(self, ex: Exchange, host_config: Any) -> None:
        if not isinstance(host_config, gojson.Obj):
            return
        engine_dir = os.path.dirname(os.path.realpath(self.proxy.engine_path))
        for bind in gojson.get(host_config, "Binds") or []:
            if isinstance(bind, str):
                self._check_host_path(bind.split(":", 1)[0], engine_dir)
        for mount in gojson.get(host_config, "Mounts") or []:
            if not isinstance(mount, gojson.Obj):
                continue
            kind = str(gojson.get(mount, "Type") or "").lower()
            source = gojson.get(mount, "Source")
            if kind == "bind" and isinstance(source, str):
                self._check_host_path(source, engine_dir)
            if kind == "image" and isinstance(source, str) and source:
                new, _, missing = self._admit_image_text(ex, source, mount=True)
                if missing:
                    raise Refused(
                        403,
                        f"trustpull: image mount {source}: the signed image {new} is not "
                        "present; pull it first [NotPresent]",
                        kind="NotPresent",
                        reference=source,
                    )
                gojson.set_field(mount, "Source", new)

    def _check_host_path(self, path: str, engine_dir: str) -> None:
        if not path.startswith("/"):
            return
        real = os.path.realpath(path)
        engine = os.path.realpath(self.proxy.engine_path)
        if real == engine or engine.startswith(real.rstrip("/") + "/") or real == "/":
            raise Refused(
                403,
                f"trustpull: mounting {path} refused: it exposes the engine socket [EngineSocket]",
                kind="EngineSocket",
            )

    def _container_check(self, ex: Exchange, what: str) -> None:
        assert ex.match is not None
        name = ex.match.params["name"]
        answer = self.proxy.upstream.call(
            "GET", vpath(ex.target.version, f"/containers/{name}/json")
        )
        if answer.status != 200:
            ex.conn.forward(ex)
            return
        info = answer.json() or {}
        image_id = str(info.get("Image") or "")
        image = self.inspect_image(ex, image_id) if image_id else None
        if image is None or not self.admitted(ex, image):
            raise Refused(
                403,
                f"trustpull: {what} of container {name} refused: it was created "
                f"from image {image_id}, which is not verified [NotVerified]",
                kind="NotVerified",
                reference=image_id,
            )
        ex.conn.forward(ex)

    def on_containers_start(self, ex: Exchange) -> None:
        self._container_check(ex, "start")

    def on_containers_restart(self, ex: Exchange) -> None:
        self._container_check(ex, "restart")

    def on_containers_unpause(self, ex: Exchange) -> None:
        self._container_check(ex, "unpause")

    # -------------------------------------------------------------------- tag, load, commit

    def on_images_tag(self, ex: Exchange) -> None:
        assert ex.match is not None
        source = ex.match.params["name"]
        q = ex.target.query
        try:
            target = parse(q.get("repo"), default_tag=False)
            if q.get("tag"):
                target = target.with_tag(q.get("tag"))
            if target.tag is None:
                target = target.with_tag("latest")
        except InputError:
            ex.conn.forward(ex)  # the engine refuses the name itself
            return
        image = self.inspect_image(ex, source)
        if image is None:
            ex.conn.forward(ex)
            return
        image_id = str(image.get("Id"))
        if not self.admitted(ex, image):
            raise Refused(
                403,
                f"trustpull: tag of {source} as {target} refused: image {image_id} "
                "is not verified [NotVerified]",
                kind="NotVerified",
                reference=str(target),
            )
        try:
            verified = self.verify(ex, target, what="tag")
        except Refused as refusal:
            if refusal.kind not in ("NoTrustData", "NoSuchTag", "NotSigned"):
                raise
            verified = None
        if verified is not None and verified.pins:
            signed = self.inspect_image(ex, f"{target.name}@{verified.pins[0].digest}")
            if signed is None or str(signed.get("Id")) != image_id:
                raise Refused(
                    403,
                    "trustpull: refusing to tag an unverified image as a signed name: "
                    f"{target} is signed for {verified.pins[0].digest} [NotVerified]",
                    kind="NotVerified",
                    reference=str(target),
                )
        self._log(ex, verdict="allowed", reference=str(target), digest=image_id)
        status = ex.conn.forward(ex)
        if status == 201 and self.ledger.has(image_id):
            self.ledger.add(image_id, "tag", [str(target), target.familiar()], ex.conn.peer.uid)

    def on_images_load(self, ex: Exchange) -> None:
        if not self.config.allow_load:
            raise Refused(
                403,
                "trustpull: docker load refused: a loaded tarball is unverified "
                "content; set allow_load [Load]",
                kind="Load",
            )
        scanner = _StreamScanner()
        status = ex.conn.forward(ex, tee=scanner.feed)
        if status != 200:
            return
        # Recorded by ID only: a loaded tag never makes a name runnable (§2.3).
        for image_id in scanner.loaded_ids:
            self.ledger.add(image_id, "load", [], ex.conn.peer.uid)
        for name in scanner.loaded_names:
            image = self.inspect_image(ex, name)
            if image is not None:
                self.ledger.add(str(image["Id"]), "load", [], ex.conn.peer.uid)

    def on_commit(self, ex: Exchange) -> None:
        if not self.config.allow_commit:
            raise Refused(
                403,
                "trustpull: commit refused: it creates an unverified image; set "
                "allow_commit [Commit]",
                kind="Commit",
            )
        committed: list[str] = []

        def record(status: int, data: bytes) -> bytes:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                if status == 201:
                    committed.append(str(json.loads(data)["Id"]))
            return data

        ex.conn.forward(ex, buffer_response=record)
        for image_id in committed:
            self.ledger.add(image_id, "commit", [], ex.conn.peer.uid)

    def on_plugins_create(self, ex: Exchange) -> None:
        if not self.config.allow_plugin_create:
            raise Refused(
                403,
                "trustpull: plugin create refused: a local plugin tarball is unverified; "
                "set allow_plugin_create [Plugin]",
                kind="Plugin",
            )
        ex.conn.forward(ex)

    def _plugin_remote(self, ex: Exchange) -> None:
        q = ex.target.query
        remote = q.get("remote")
        try:
            ref = parse(remote)
        except InputError as error:
            raise Refused(
                400, f"trustpull: plugin {remote} refused: {error.message} [Input]", kind="Input"
            ) from None
        verified = self.verify(ex, ref, what="plugin install")
        if verified.unsigned is not None:
            ex.conn.forward(ex)
            return
        pinned = f"{ref.name}@{verified.pins[0].digest}"
        name = q.first("name")
        new = q.replaced(remote=pinned, name=name if name is not None else ref.familiar())
        self._log(ex, verdict="pinned", reference=str(ref), digest=verified.pins[0].digest)
        ex.conn.forward(ex, target=ex.target.encode(query=new))

    def on_plugins_pull(self, ex: Exchange) -> None:
        self._plugin_remote(ex)

    def on_plugins_upgrade(self, ex: Exchange) -> None:
        self._plugin_remote(ex)

    def on_swarm_init(self, ex: Exchange) -> None:
        self._swarm(ex)

    def on_swarm_join(self, ex: Exchange) -> None:
        self._swarm(ex)

    def _swarm(self, ex: Exchange) -> None:
        if not self.config.allow_swarm:
            raise Refused(
                403,
                "trustpull: swarm membership refused: this node would run tasks "
                "that managers schedule without the proxy; set allow_swarm [Swarm]",
                kind="Swarm",
            )
        ex.conn.forward(ex)

    def _service(self, ex: Exchange) -> None:
        body = ex.conn.read_body(ex, self.config.max_json_body)
        obj = gojson.loads(body) if body.strip() else gojson.Obj()
        template = gojson.get(obj, "TaskTemplate")
        spec = gojson.get(template, "ContainerSpec")
        if gojson.get(template, "PluginSpec") is not None:
            raise Refused(403, "trustpull: plugin services are refused [Plugin]", kind="Plugin")
        image = gojson.get(spec, "Image")
        if isinstance(image, str) and image:
            try:
                ref = parse(image)
            except InputError as error:
                raise Refused(
                    400,
                    f"trustpull: service image {image} refused: {error.message} [Input]",
                    kind="Input",
                ) from None
            verified = self.verify(ex, ref, what="service")
            if verified.pins:
                tag = ref.tag or verified.pins[0].tag
                pinned = (
                    f"{ref.name}:{tag}@{verified.pins[0].digest}"
                    if tag
                    else f"{ref.name}@{verified.pins[0].digest}"
                )
                gojson.set_field(spec, "Image", pinned)
                self._log(ex, verdict="pinned", reference=image, digest=verified.pins[0].digest)
        if ex.target.query.get("rollback") == "previous":
            raise Refused(
                403,
                "trustpull: rollback=previous refused: the previous spec is not checked [Service]",
                kind="Service",
            )
        ex.conn.forward(ex, body=gojson.dumps(obj))

    def on_services_create(self, ex: Exchange) -> None:
        self._service(ex)

    def on_services_update(self, ex: Exchange) -> None:
        self._service(ex)

    def on_volumes_create(self, ex: Exchange) -> None:
        body = ex.conn.read_body(ex, self.config.max_json_body)
        obj = gojson.loads(body) if body.strip() else gojson.Obj()
        opts = gojson.get(obj, "DriverOpts")
        engine_dir = os.path.dirname(os.path.realpath(self.proxy.engine_path))
        if isinstance(opts, gojson.Obj):
            device = gojson.get(opts, "device")
            if isinstance(device, str):
                self._check_host_path(device, engine_dir)
        ex.conn.forward(ex, body=body)

    def on_distribution_inspect(self, ex: Exchange) -> None:
        """Read-only, but a descriptor whose digest is not the signed one is refused (the CLI's
        `service create` pins what this answers)."""
        assert ex.match is not None
        name = ex.match.params["name"]
        try:
            ref = parse(name)
        except InputError:
            ex.conn.forward(ex)
            return
        if ref.digest is not None:
            ex.conn.forward(ex)
            return
        try:
            verified = self.verify(ex, ref, what="distribution inspect")
        except Refused as refusal:
            if refusal.status == 503 or refusal.exit_kind_is_trust_failure:
                raise
            ex.conn.forward(ex)
            return
        if not verified.pins:
            ex.conn.forward(ex)
            return
        signed = verified.pins[0].digest

        def check(status: int, data: bytes) -> bytes:
            if status != 200:
                return data
            try:
                got = json.loads(data)["Descriptor"]["digest"]
            except (ValueError, KeyError, TypeError):
                got = None
            if got != signed:
                return json.dumps(
                    {
                        "message": sanitize(
                            f"trustpull: the registry describes {ref} as {got}, but the signed "
                            f"digest is {signed} [HashMismatch]"
                        )
                    }
                ).encode()
            return data

        ex.conn.forward(ex, buffer_response=check, status_from_body=b"[HashMismatch]")

    def on_ping(self, ex: Exchange) -> None:
        def builder_v1(
            status: int, headers: list[tuple[bytes, bytes]]
        ) -> list[tuple[bytes, bytes]]:
            if self.config.allow_buildkit:
                return headers
            kept = [(k, v) for k, v in headers if bytes(k).lower() != b"builder-version"]
            return [*kept, (b"builder-version", b"1")]

        ex.conn.forward(ex, response_filter=builder_v1)

    def on_session(self, ex: Exchange) -> None:
        self._buildkit(ex)

    def on_grpc(self, ex: Exchange) -> None:
        self._buildkit(ex)

    def _buildkit(self, ex: Exchange) -> None:
        if not self.config.allow_buildkit:
            raise Refused(403, BUILDKIT_MESSAGE, kind="BuildKit")
        upgrade = ex.head.wants_upgrade()
        ex.conn.forward(ex, upgrade=upgrade)

    # -------------------------------------------------------------------- build

    def on_build(self, ex: Exchange) -> None:
        q = ex.target.query
        if q.get("version") == "2":
            if not self.config.allow_buildkit:
                raise Refused(403, BUILDKIT_MESSAGE, kind="BuildKit")
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
        if q.all("cachefrom") and q.get("cachefrom") not in ("", "[]", "null"):
            raise Refused(
                403,
                "trustpull: cachefrom is refused (cache sources are not verified) [CacheFrom]",
                kind="CacheFrom",
            )
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
        spool = tempfile.TemporaryFile(dir=self.config.build_spool_dir)
        try:
            size = 0
            for piece in ex.conn.body_pieces(ex):
                size += len(piece)
                if size > self.config.build_spool_max:
                    raise HTTPRefusal(
                        413, "trustpull: build context over build_spool_max", close=True
                    )
                spool.write(piece)
            ex.body = None
            spool.seek(0)
            rewritten, pins = self._rewrite_context(
                ex, spool, q.get("dockerfile") or "Dockerfile", build_args
            )
            auths = _registry_config(ex.header("X-Registry-Config"))
            for ref, pin in pins:
                self._prepull(ex, ref, pin, auths)
            query = Query(tuple((k, v) for k, v in q.pairs if k != "pull"))
            if self.config.allow_load or self.config.allow_import or self.config.allow_commit:
                query = query.replaced(nocache="1")
            names = q.all("t")
            scanner = _StreamScanner()
            rewritten.seek(0)
            status = ex.conn.forward(
                ex,
                target=ex.target.encode(query=query),
                body=_file_pieces(rewritten),
                tee=scanner.feed,
            )
            if status == 200 and scanner.error is None:
                for image_id in scanner.aux_ids[-1:] or scanner.built_ids[-1:]:
                    full = (
                        image_id if image_id.startswith("sha256:") else self._full_id(ex, image_id)
                    )
                    if full:
                        self.ledger.add(full, "build", _names_for(names), ex.conn.peer.uid)
            self._log(
                ex,
                verdict="built",
                digest=",".join(p.digest for _, p in pins),
                reference=",".join(names) or None,
            )
        finally:
            spool.close()

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
            if refusal.kind in ("NoTrustData", "NoSuchTag", "NotSigned") or refusal.status == 503:
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

    def _rewrite_context(
        self, ex: Exchange, spool: Any, dockerfile: str, build_args: dict[str, str]
    ) -> tuple[Any, list[tuple[Reference, Pin]]]:
        from trust.manifests import refs_from_dockerfile

        try:
            tar = tarfile.open(fileobj=spool, mode="r:*")
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise Refused(
                400,
                f"trustpull: build context is not a readable tar archive ({exc}) [Context]",
                kind="Context",
            ) from None
        by_name: dict[str, tarfile.TarInfo] = {}
        for member in members:
            by_name[_norm(member.name)] = member
        wanted = _norm(dockerfile)
        if wanted.startswith("../") or wanted == "..":
            raise Refused(
                400,
                f"trustpull: Dockerfile path {dockerfile} escapes the context [Context]",
                kind="Context",
            )
        found = by_name.get(wanted)
        if found is None and dockerfile == "Dockerfile":
            found = by_name.get("dockerfile")
        if found is None:
            raise Refused(
                400,
                f"trustpull: the Dockerfile {dockerfile} is not in the build context [Context]",
                kind="Context",
            )
        member = found
        parts = wanted.split("/")
        for i in range(1, len(parts)):
            parent = by_name.get("/".join(parts[:i]))
            if parent is not None and not parent.isdir():
                raise Refused(
                    400, f"trustpull: a parent of {dockerfile} is a link [Context]", kind="Context"
                )
        if not member.isfile():
            raise Refused(
                400,
                f"trustpull: the Dockerfile {dockerfile} is a link or not a regular file [Context]",
                kind="Context",
            )
        if member.size > self.config.max_dockerfile:
            raise HTTPRefusal(413, "trustpull: Dockerfile over max_dockerfile")
        handle = tar.extractfile(member)
        assert handle is not None
        raw = handle.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Refused(
                400, "trustpull: the Dockerfile is not UTF-8 [Context]", kind="Context"
            ) from None
        try:
            sites = refs_from_dockerfile(text, dockerfile, build_args)
        except InputError as error:
            raise Refused(
                400,
                f"trustpull: cannot read the Dockerfile: {error.message} [Context]",
                kind="Context",
            ) from None
        _refuse_unreported_from(text, {site.text for site in sites}, dockerfile)
        lines = text.split("\n")
        pins: list[tuple[Reference, Pin]] = []
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
                continue
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
            pins.append((ref, pin))
        new_text = "\n".join(lines).encode()
        out = tempfile.TemporaryFile(dir=self.config.build_spool_dir)
        with tarfile.open(fileobj=out, mode="w") as new_tar:
            for item in members:
                if item.isfile():
                    if item is member or (
                        _norm(item.name) in (wanted, "dockerfile") and item.name == member.name
                    ):
                        info = tarfile.TarInfo(item.name)
                        info.size = len(new_text)
                        info.mode = item.mode
                        info.mtime = item.mtime
                        new_tar.addfile(info, io.BytesIO(new_text))
                    else:
                        new_tar.addfile(item, tar.extractfile(item))
                else:
                    new_tar.addfile(item)
        tar.close()
        return out, pins

    def _prepull(self, ex: Exchange, ref: Reference, pin: Pin, auths: dict[str, Any]) -> None:
        headers = {"X-Registry-Auth": _auth_for(ref.domain, auths)}
        query = Query((("fromImage", ref.name), ("tag", pin.digest)))
        status, _, pieces, close = self.proxy.upstream.stream(
            "POST", vpath(ex.target.version, "/images/create") + "?" + query.encode(), headers
        )
        try:
            scanner = _StreamScanner()
            for piece in pieces:
                scanner.feed(piece)
        finally:
            close()
        if status >= 400 or scanner.error is not None:
            raise Refused(
                403 if status < 500 else 503,
                f"trustpull: build base {ref} verified ({pin.digest}) but could "
                f"not be pulled: {scanner.error or status} [Engine]",
                kind="Engine",
                reference=str(ref),
            )
        base = self.inspect_image(ex, f"{ref.name}@{pin.digest}") or {}
        triggers = (base.get("Config") or {}).get("OnBuild") or []
        if any(re.search(r"from=", str(t), re.IGNORECASE) for t in triggers):
            raise Refused(
                403,
                f"trustpull: build base {ref} has ONBUILD triggers that copy from other "
                "images, which the proxy cannot verify [OnBuild]",
                kind="OnBuild",
                reference=str(ref),
            )
        if pin.tag:
            self.proxy.upstream.call(
                "POST",
                image_path(ex.target.version, f"{ref.name}@{pin.digest}", "/tag")
                + "?"
                + Query((("repo", ref.name), ("tag", pin.tag))).encode(),
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


def _norm(name: str) -> str:
    import posixpath

    cleaned = posixpath.normpath("/" + name.lstrip("./").lstrip("/"))
    return cleaned.lstrip("/")


def _file_pieces(handle: Any) -> Iterator[bytes]:
    while True:
        data = handle.read(256 * 1024)
        if not data:
            return
        yield data


def _names_for(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        out.append(name)
        with contextlib.suppress(InputError):
            ref = parse(name)
            out += [str(ref), ref.familiar()]
    return out


def _registry_config(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        padded = value + "=" * (-len(value) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _auth_for(domain: str, auths: dict[str, Any]) -> str:
    """The X-Registry-Config entry for one registry only (the engine's resolveAuthConfig)."""
    key = "https://index.docker.io/v1/" if domain == "docker.io" else domain
    entry = auths.get(key)
    if entry is None and domain != "docker.io":
        for k, v in auths.items():
            host = re.sub(r"^https?://", "", k).split("/", 1)[0]
            if host == domain:
                entry = v
                break
    raw = json.dumps(entry if isinstance(entry, dict) else {}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _message_of(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or None
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])
    return None


class _StreamScanner:
    """Follows the engine's JSON message stream: the first error, aux IDs, built IDs."""

    def __init__(self) -> None:
        self.buffer = ""
        self.error: str | None = None
        self.aux_ids: list[str] = []
        self.built_ids: list[str] = []
        self.loaded_ids: list[str] = []
        self.loaded_names: list[str] = []
        self.status_ids: list[str] = []
        self.decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> None:
        self.buffer += data.decode("utf-8", "replace")
        while True:
            self.buffer = self.buffer.lstrip()
            if not self.buffer:
                return
            try:
                value, end = self.decoder.raw_decode(self.buffer)
            except ValueError:
                if len(self.buffer) > 1024 * 1024:
                    self.buffer = ""
                return
            self.buffer = self.buffer[end:]
            if not isinstance(value, dict):
                continue
            if value.get("error") or value.get("errorDetail"):
                if self.error is None:
                    detail = value.get("errorDetail") or {}
                    self.error = str(
                        value.get("error")
                        or (detail.get("message") if isinstance(detail, dict) else "")
                        or "error"
                    )
            aux = value.get("aux")
            if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
                self.aux_ids.append(aux["ID"])
            stream = value.get("stream")
            if isinstance(stream, str) and stream.startswith("Successfully built "):
                self.built_ids.append(stream.split()[-1])
            if isinstance(stream, str) and stream.startswith("Loaded image ID: "):
                self.loaded_ids.append(stream.split()[-1])
            elif isinstance(stream, str) and stream.startswith("Loaded image: "):
                self.loaded_names.append(stream.split(": ", 1)[1].strip())
            status = value.get("status")
            if isinstance(status, str) and _HEX64.fullmatch(status.strip()):
                image_id = status.strip()
                self.status_ids.append(image_id if ":" in image_id else f"sha256:{image_id}")


def build_proxy(
    settings: Settings,
    engine_path: str,
    config: ProxyConfig,
    log: DecisionLog,
    policy_files: list[str] | None = None,
    *,
    policy: Policy | None = None,
) -> Proxy:
    """The proxy with its decisions wired in (what `trustpull proxy` serves)."""
    from trust.proxy.server import Proxy

    proxy = Proxy(settings, engine_path, config, log, policy_files or [], policy=policy)
    proxy.decider = Decider(proxy)
    return proxy
