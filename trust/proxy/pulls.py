"""Pulls and imports through the proxy (engine-proxy.md §2.2): verify, pull by digest, tag."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from trust.errors import InputError
from trust.proxy.decide import DeciderBase, Refused, StreamScanner, message_of
from trust.proxy.routes import Query
from trust.proxy.upstream import vpath
from trust.proxy.verify import Pin, Verified
from trust.reference import Reference, parse

if TYPE_CHECKING:
    from trust.proxy.server import Exchange

__all__ = ["PullRoutes"]


class PullRoutes(DeciderBase):
    """`POST /images/create`: pulls by verified digest, imports when allowed."""

    def on_images_create(self, ex: Exchange) -> None:
        q = ex.target.query
        from_image = q.get("fromImage")
        if not from_image:
            src = q.get("fromSrc")
            if not self.config.allow_import:
                # A URL import needs both settings: name both, not one after the other.
                needs = "allow_import" if src == "-" else "allow_import and allow_import_url"
                raise Refused(
                    403,
                    f"trustpull: import into {q.get('repo') or '(no name)'} refused: "
                    f"import creates an unverified image; set {needs} under [proxy] in "
                    "the proxy's configuration [Import]",
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
            scanner = StreamScanner()
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
        verified_at = time.monotonic()
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
            # What the engine does with this request, and what `trustpull pull [-a]` asks of
            # it for the same answer of the service: an all-tags pull stays one (no tag).
            query = (
                Query((("fromImage", ref.name),))
                if all_tags
                else Query((("fromImage", ref.name), ("tag", ref.digest or ref.tag or "")))
            )
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
        self._pull_stream(
            ex, ref, list(verified.pins), verified, None, platform=platform, verified_at=verified_at
        )

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
        verified_at: float = float("-inf"),
    ) -> None:
        """Relay the engine's pulls by digest, then tag each from its digest reference.

        The streams run unlocked (the engine pulls one digest once however many ask); the tag
        step is serialised per `NAME:TAG` and skipped when a verification that started later
        has tagged it since, so concurrent pulls while a tag is re-signed end on the newer
        digest (§2.2, X38)."""
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
            status, _, pieces, close = upstream.stream(
                "POST", vpath(version, "/images/create") + "?" + query.encode(), headers
            )
            try:
                if status >= 400:
                    body = b"".join(pieces)
                    message = message_of(body) or f"engine answered HTTP {status}"
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
                        line({"status": f"Pull ({index} of {len(jobs)}): {shown}@{pin.digest}"}),
                    )
                scanner = StreamScanner()
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
            answer = self._tag_verified(ex, ref.name, pin, verified_at)
            if answer is None:
                conn.respond_data(
                    ex,
                    line(
                        {
                            "status": f"trustpull: {ref.name}:{pin.tag} was verified again "
                            "since this pull began and tagged from that newer verification; "
                            f"left as it is ({source} pulled, not tagged)"
                        }
                    ),
                )
                continue
            if answer.status != 201:
                fail(
                    f"trustpull: pulled {source} but could not tag it as {ref.name}:{pin.tag}: "
                    f"{answer.message}"
                )
                return
            conn.respond_data(ex, line({"status": f"Tagging {source} as {ref.name}:{pin.tag}"}))
        start()
        conn.respond_end(ex)
