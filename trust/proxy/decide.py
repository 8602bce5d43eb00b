"""The proxy's decision core (engine-proxy.md §2): dispatch, verification, refusals.

`DeciderBase.handle` routes each parsed request to an `on_<route>` method of the route
modules (pulls, containers, images, swarm, builds), which `trust.proxy.handlers.Decider`
combines. Refusals are `HTTPRefusal`s carrying an Engine API status (§3.1) and a message
naming the reference, the rule and trustpull's error kind. In audit mode a trust refusal is
logged as `would-refuse` and the original request is forwarded unchanged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trust.errors import (
    InputError,
    NetworkError,
    NotSignedAsRequiredError,
    NotSignedError,
    TrustpullError,
)
from trust.proxy.framing import HTTPRefusal
from trust.proxy.routes import Query, check_single_keys
from trust.proxy.upstream import Answer, EngineDown, image_path
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
    from trust.proxy.server import Exchange, Proxy

__all__ = [
    "HEX64",
    "HEX_PREFIX",
    "DeciderBase",
    "Ledger",
    "Refused",
    "StreamScanner",
    "auth_for",
    "compare_versions",
    "message_of",
    "names_for",
    "registry_config",
    "sanitize",
]

HEX64 = re.compile(r"(sha256:)?[0-9a-f]{64}")
HEX_PREFIX = re.compile(r"(sha256:)?[0-9a-f]{1,64}")
#: Substrings that change `docker run`'s exit code (§3.1): never in a refusal message.
_EXIT_CHANGING = re.compile(
    r"permission denied|no such file or directory|executable file not found|"
    r"system cannot find the file specified|is a directory",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=256)
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
        return not self.not_signed

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
        #: The name is merely not signed (no trust data, tag or digest not signed), also when
        #: a policy reports that as "not signed as required" (exit 9): local builds and tags
        #: under such names are judged by the ledger, as without a policy.
        self.not_signed = kind in _NOT_SIGNED


_NOT_SIGNED = ("NoTrustData", "NoSuchTag", "NotSigned")


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


class DeciderBase:
    """What every route family shares: the engine, the ledger, verification, logging."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.ledger = Ledger(self.config.ledger)
        self._tag_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        #: Per `NAME:TAG`, when the verification that last tagged it started (monotonic): an
        #: older verification never retags over a newer one (engine-proxy.md §2.2, X38).
        self._tagged_at: dict[str, float] = {}
        self._admitted: dict[str, float] = {}
        #: Bounded concurrency of verifications (each may fetch from the trust server).
        self._verifying = threading.BoundedSemaphore(16)
        #: Trust server connections, tokens and verified results kept between requests.
        self._kept = Kept(proxy.settings.limits)
        self._engine_info: dict[str, Any] | None = None

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
                self._buildkit_allowed(ex)
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
        info = self.engine_version_info()
        low, high = str(info.get("MinAPIVersion") or "1.12"), str(info.get("ApiVersion") or "")
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
        about = {
            "reason": refusal.message,
            "reference": refusal.reference,
            "rule": refusal.rule,
            "kind": refusal.kind,
            "exit_code": refusal.exit_code,
        }
        if self.proxy.enforcing:
            self._log(ex, verdict="refused", status=refusal.status, **about)
            raise refusal
        self._log(ex, verdict="would-refuse", **about)
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
                refusal.not_signed = isinstance(error, NotSignedError | NotSignedAsRequiredError)
                refusal.rule = rule_for(self.proxy.policy, ref, self.proxy.settings)
                raise refusal from None

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._tag_locks.setdefault(key, threading.Lock())

    def engine_version_info(self) -> dict[str, Any]:
        """The engine's `GET /version` answer, asked once: its API range gates every versioned
        request (§1.1), its release the engine-specific refusals (X46c)."""
        if self._engine_info is None:
            answer = self.proxy.upstream.call("GET", "/version")
            info = answer.json() if answer.status == 200 else None
            if not isinstance(info, dict) or not isinstance(info.get("ApiVersion"), str):
                raise EngineDown(f"GET /version answered {answer.status}")
            self._engine_info = info
        return self._engine_info

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

    def _tag_verified(self, ex: Exchange, name: str, pin: Pin, verified_at: float) -> Answer | None:
        """Tag `name:pin.tag` from the digest reference (never from `name:tag`: a retag in
        between must not be what gets the name; attacks.md J06). None when a verification
        that started later has tagged it already: the newer signed digest keeps the name."""
        assert pin.tag is not None
        key = f"{name}:{pin.tag}"
        with self._lock_for(key):
            if self._tagged_at.get(key, float("-inf")) > verified_at:
                return None
            answer = self.proxy.upstream.call(
                "POST",
                image_path(ex.target.version, f"{name}@{pin.digest}", "/tag")
                + "?"
                + Query((("repo", name), ("tag", pin.tag))).encode(),
            )
            if answer.status == 201:
                self._tagged_at[key] = verified_at
            return answer

    def _buildkit_allowed(self, ex: Exchange) -> None:
        """allow_buildkit: passed unchanged, never quietly (engine-proxy.md X42)."""
        self._log(
            ex,
            verdict="allowed-unverified",
            level="warning",
            reason="allow_buildkit: passed unchanged; the images BuildKit pulls are not "
            "verified by the proxy",
        )


def names_for(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        out.append(name)
        with contextlib.suppress(InputError):
            ref = parse(name)
            out += [str(ref), ref.familiar()]
    return out


def registry_config(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        padded = value + "=" * (-len(value) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def auth_for(domain: str, auths: dict[str, Any]) -> str:
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


def message_of(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or None
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])
    return None


class StreamScanner:
    """Follows the engine's JSON message stream: the first error, aux IDs, built IDs."""

    def __init__(self) -> None:
        self.buffer = ""
        self.error: str | None = None
        self.aux_ids: list[str] = []
        self.built_ids: list[str] = []
        self.loaded_ids: list[str] = []
        self.loaded_names: list[str] = []
        self.status_ids: list[str] = []
        #: The `stream` text of the last message, None when the last message had none: a
        #: quiet build's (`q=1`) only message is its image ID there, with no aux message.
        self.last_stream: str | None = None
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
            self.last_stream = None
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
            if isinstance(stream, str):
                self.last_stream = stream
            if isinstance(stream, str) and stream.startswith("Successfully built "):
                self.built_ids.append(stream.split()[-1])
            if isinstance(stream, str) and stream.startswith("Loaded image ID: "):
                self.loaded_ids.append(stream.split()[-1])
            elif isinstance(stream, str) and stream.startswith("Loaded image: "):
                self.loaded_names.append(stream.split(": ", 1)[1].strip())
            status = value.get("status")
            if isinstance(status, str) and HEX64.fullmatch(status.strip()):
                image_id = status.strip()
                self.status_ids.append(image_id if ":" in image_id else f"sha256:{image_id}")
