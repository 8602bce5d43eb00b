"""Tag, load, commit, plugins (engine-proxy.md §2.3, §2.7–§2.9): no unverified trusted name."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from trust.errors import InputError
from trust.proxy.decide import HEX64, DeciderBase, Refused, StreamScanner
from trust.proxy.framing import HTTPRefusal
from trust.reference import Reference, parse

if TYPE_CHECKING:
    from trust.proxy.server import Exchange

__all__ = ["ImageRoutes"]


class ImageRoutes(DeciderBase):
    """Routes that put images under names, or pull plugins."""

    def on_images_tag(self, ex: Exchange) -> None:
        assert ex.match is not None
        source = ex.match.params["name"]
        q = ex.target.query
        try:
            target = parse(q.get("repo"), default_tag=False)
            if q.get("tag"):
                # dockerd 20.10's TagImage: `WithTag(TrimNamed(repo), tag)`, so a digest in
                # `repo` is dropped, not checked: `repo=N@sha256:X&tag=T` tags `N:T` (X39b).
                target = target.trimmed().with_tag(q.get("tag"))
            elif target.digest is not None:
                raise HTTPRefusal(400, "trustpull: refusing to tag with a digest reference")
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
            if not refusal.not_signed:
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
        if not HEX64.fullmatch(image_id):
            raise HTTPRefusal(502, f"trustpull: the engine named image {source} oddly")
        # By the ID checked: by name, an untag in between could make the engine resolve the
        # source as an ID prefix (or a retag, as another image) and tag that instead.
        path = f"/images/{image_id}/tag"
        status = ex.conn.forward(ex, target=ex.target.encode(path=path))
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
        scanner = StreamScanner()
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
        self._refuse_commit_onto_signed_tag(ex)
        committed: list[str] = []

        def record(status: int, data: bytes) -> bytes:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                if status == 201:
                    committed.append(str(json.loads(data)["Id"]))
            return data

        ex.conn.forward(ex, buffer_response=record)
        for image_id in committed:
            self.ledger.add(image_id, "commit", [], ex.conn.peer.uid)

    def _refuse_commit_onto_signed_tag(self, ex: Exchange) -> None:
        """Stricter than §2.8 (X48b): a commit is new content, never the signed image, so a
        commit whose `repo`/`tag` names a signed tag is refused, as a tag onto it is; with
        it the local `N:T` would name the commit, which a `docker push N:T` or any tool that
        reads local tags then takes for the signed image. dockerd 20.10's RepoTagReference:
        `tag` replaces a tag in `repo`, a digest in `repo` is the engine's own error."""
        q = ex.target.query
        repo = q.get("repo")
        if not repo:
            return  # no name: the commit is a ledger entry reached only by its ID
        try:
            target = parse(repo, default_tag=False)
            if target.digest is not None:
                return  # "cannot create a tag for a digested reference" (the engine's)
            target = target.trimmed().with_tag(q.get("tag") or target.tag or "latest")
        except InputError:
            return  # the engine refuses the name itself
        try:
            verified = self.verify(ex, target, what="commit")
        except Refused as refusal:
            if refusal.not_signed:
                return
            raise
        if verified.pins:
            raise Refused(
                403,
                f"trustpull: commit as {target} refused: that name is signed for "
                f"{verified.pins[0].digest}, and a commit is other content; commit under a "
                "name with no signed tag [NotVerified]",
                kind="NotVerified",
                reference=str(target),
            )

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
            if ref.digest is not None:
                self._engine_pulls_plugins_by_digest(ex, ref)
            ex.conn.forward(ex)
            return
        self._engine_pulls_plugins_by_digest(ex, ref)
        pinned = f"{ref.name}@{verified.pins[0].digest}"
        name = q.first("name")
        new = q.replaced(remote=pinned, name=name if name is not None else ref.familiar())
        self._log(ex, verdict="pinned", reference=str(ref), digest=verified.pins[0].digest)
        ex.conn.forward(ex, target=ex.target.encode(query=new))

    def _engine_pulls_plugins_by_digest(self, ex: Exchange, ref: Reference) -> None:
        """dockerd before moby/moby#47299 (February 2024; in every release from 26.0, and in
        some 23.0-25.0 patch releases) panics in a goroutine when it pulls a plugin by
        digest (`withFetchProgress` asserts the reference is tagged), which kills the whole
        daemon. The proxy installs plugins only by digest, so on older engines it refuses
        (X46c), in audit mode too: forwarding would crash the engine."""
        version = str(self.engine_version_info().get("Version") or "")
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) >= 26:
            return
        self._log(ex, verdict="refused", reference=str(ref), reason="engine too old")
        raise HTTPRefusal(
            501,
            f"trustpull: plugin install of {ref} refused: the proxy installs plugins by "
            f"verified digest, and dockerd {version} crashes when it pulls a plugin by digest "
            "(moby/moby#47299); use an engine 26.0 or later [EngineTooOld]",
            kind="EngineTooOld",
        )

    def on_plugins_privileges(self, ex: Exchange) -> None:
        """`GET /plugins/privileges?remote=` fetches the plugin's manifest the way a pull does,
        so a digest remote kills an engine before 26.0 as well (X46c): refused there."""
        remote = ex.target.query.first("remote") or ""
        if "@" in remote:
            try:
                ref = parse(remote)
            except InputError as error:
                raise HTTPRefusal(400, f"trustpull: plugin {remote}: {error.message}") from None
            self._engine_pulls_plugins_by_digest(ex, ref)
        ex.conn.forward(ex)

    def on_plugins_pull(self, ex: Exchange) -> None:
        self._plugin_remote(ex)

    def on_plugins_upgrade(self, ex: Exchange) -> None:
        self._plugin_remote(ex)

    def on_plugins_enable(self, ex: Exchange) -> None:
        """§2.9: an enable runs the plugin's code as root with its privileges, so a plugin
        installed behind the proxy's back (directly on the engine) is the analogue of §2.6's
        start: its `PluginReference` must be a digest reference that verifies (what the proxy's
        own installs record), or a name a rule accepts unsigned; a tag alone of a signed name
        says nothing of the content installed. With `allow_plugin_create` local plugin code is
        admitted anyway, so the enable passes, logged. Forwarded by the plugin's ID: by name, a
        remove and re-install in between would enable another plugin."""
        assert ex.match is not None
        name = ex.match.params["name"]
        plugin_id, info = self.proxy.upstream.inspect_by_id(ex.target.version, "plugins", name)
        reference = str(info.get("PluginReference") or "")
        if self.config.allow_plugin_create:
            self._log(
                ex,
                verdict="allowed-unverified",
                level="warning",
                reference=reference,
                reason="allow_plugin_create: plugin enables are not judged",
            )
        else:
            self._check_plugin_reference(ex, name, reference)
        path = f"/plugins/{plugin_id}/enable"
        ex.conn.forward(ex, target=ex.target.encode(path=path))

    def _check_plugin_reference(self, ex: Exchange, name: str, reference: str) -> None:
        refusal = Refused(
            403,
            f"trustpull: enable of plugin {name} refused: it was installed from {reference}, "
            "which is not verified (no signed digest) [NotVerified]",
            kind="NotVerified",
            reference=reference,
        )
        try:
            ref = parse(reference)
        except InputError:
            raise refusal from None
        try:
            verified = self.verify(ex, ref, what="plugin enable")
        except Refused as error:
            if error.status == 503:
                raise
            raise refusal from None
        if not verified.fixes_content(ref):
            raise refusal
        self._log(ex, verdict="allowed", reference=reference)
