"""Swarm membership, services and `/distribution` (engine-proxy.md §2.9)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from trust.errors import InputError
from trust.proxy import gojson
from trust.proxy.containers import check_host_path
from trust.proxy.decide import HEX_PREFIX, DeciderBase, Refused, sanitize
from trust.proxy.framing import HTTPRefusal
from trust.proxy.upstream import vpath
from trust.reference import Reference, parse

if TYPE_CHECKING:
    from trust.proxy.server import Exchange

__all__ = ["SwarmRoutes", "check_service_mount", "task_image_id"]


def task_image_id(ref: Reference) -> str | None:
    """The image ID (or ID prefix) a worker runs for a service image parsed as `ref`, or None.

    A worker creates the task's container from `FamiliarString(TagNameOnly(Image))` (moby's
    executor, `containerConfig.image`): for `docker.io/library/sha256` with a hex tag that is
    `sha256:<hex>`, which the engine resolves as an image ID (the full form skips the pull; a
    short one is an ID prefix once the pull of the name fails). So such a spec never names
    the repository its policy rule is about, and must be judged as the local image it is."""
    if ref.digest is not None:
        return None
    familiar = ref.familiar()
    return familiar if familiar.startswith("sha256:") and HEX_PREFIX.fullmatch(familiar) else None


def _swarm_mount_type(value: Any) -> str:
    """A service mount's type as moby converts it (`ServiceSpecToGRPC`): `strings.ToUpper`,
    rune by rune with the simple mapping (`b\u0131nd`, with a dotless i, is `BIND`), and an
    empty or missing `Type` left at the enum's zero, which is `BIND`."""
    text = value if isinstance(value, str) else ""
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in text) or "BIND"


def check_service_mount(mount: Any, engine_path: str) -> None:
    """One `Mounts` entry of a service spec, read as swarm reads it (not as a container
    create's, `check_mount_host_path`): the type by `_swarm_mount_type`, so a mount with no
    `Type` binds its `Source`; and a worker expands Go templates in `Source` and in volume
    driver options before it creates the task (swarmkit's `ExpandContainerSpec`), so
    `/{{/* */}}run/docker.sock` would be checked here as no path at all and mounted there as
    the engine socket: a templated host path (a bind source, a local volume's `device`) is
    refused."""
    kind = _swarm_mount_type(gojson.get(mount, "Type"))
    if kind == "BIND":
        host_path = gojson.get(mount, "Source")
    elif kind == "VOLUME":
        driver = gojson.get(gojson.get(mount, "VolumeOptions"), "DriverConfig")
        host_path = gojson.get_key(gojson.get(driver, "Options"), "device")
    else:
        return
    if not isinstance(host_path, str):
        return
    if "{{" in host_path:
        raise Refused(
            403,
            f"trustpull: mounting {host_path} refused: a swarm worker expands it as a "
            "template, so the host path it mounts is not one that can be checked [EngineSocket]",
            kind="EngineSocket",
        )
    check_host_path(host_path, engine_path)


def _rolls_back_on_failure(obj: object) -> bool:
    """The spec's effective `UpdateConfig.FailureAction` is `rollback` (moby matches the value
    exactly; the keys by Go's rules)."""
    action = gojson.get(gojson.get(obj, "UpdateConfig"), "FailureAction")
    return isinstance(action, str) and action == "rollback"


class SwarmRoutes(DeciderBase):
    """Service specs pinned to signed digests; rollbacks to admitted images only."""

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

    def _service(self, ex: Exchange, *, update: bool) -> None:
        body = ex.conn.read_body(ex, self.config.max_json_body)
        obj = gojson.loads(body) if body.strip() else gojson.Obj()
        template = gojson.get(obj, "TaskTemplate")
        spec = gojson.get(template, "ContainerSpec")
        if gojson.get(template, "PluginSpec") is not None:
            raise Refused(403, "trustpull: plugin services are refused [Plugin]", kind="Plugin")
        for mount in gojson.get(spec, "Mounts") or []:
            check_service_mount(mount, self.proxy.engine_path)  # tasks run here too
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
            image_id = task_image_id(ref)
            if image_id is not None:
                pinned_id = self._admitted_id(ex, image_id, what=f"service image {image}")
                gojson.set_field(spec, "Image", pinned_id)
                self._log(ex, verdict="pinned", reference=image, digest=pinned_id)
            else:
                self._pin_service_image(ex, spec, image, ref)
        if ex.target.query.get("rollback") == "previous":
            self._check_rolled_back_to(ex, "PreviousSpec", "rollback=previous")
        elif update and _rolls_back_on_failure(obj):
            self._check_rolled_back_to(ex, "Spec", "UpdateConfig.FailureAction=rollback")
        ex.conn.forward(ex, body=gojson.dumps(obj))

    def _pin_service_image(
        self, ex: Exchange, spec: gojson.Obj, image: str, ref: Reference
    ) -> None:
        """A named service image: pinned to `N:T@D` (DCT's form) when signed; a name a rule
        accepts unsigned is left as it is."""
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

    def _admitted_id(self, ex: Exchange, image_id: str, *, what: str) -> str:
        """The full ID of the local image `image_id` (an ID or ID prefix, see `task_image_id`)
        resolves to, which must be admitted (§2.5 step 4, as for a container create). A
        missing image is refused too: a task retries, and would run whatever image with that
        ID arrived later, by whatever way."""
        found = self.inspect_image(ex, image_id)
        if found is None:
            raise Refused(
                404,
                f"trustpull: {what} refused: no local image has the ID {image_id} [NotPresent]",
                kind="NotPresent",
                reference=image_id,
            )
        if not self.admitted(ex, found):
            raise Refused(
                403,
                f"trustpull: {what} refused: it is the local image {found.get('Id')}, which is "
                "not verified (no signed digest reference, not built through the proxy) "
                "[NotVerified]",
                kind="NotVerified",
                reference=image_id,
            )
        return str(found["Id"])

    def _check_rolled_back_to(self, ex: Exchange, key: str, why: str) -> None:
        """The service spec `key` of `GET /services/{id}` that this update makes the engine
        run without the body's image (§2.9): `PreviousSpec` for `rollback=previous`; the
        current `Spec` when the body's `UpdateConfig.FailureAction` is `rollback`, which swarm
        puts back by itself once the update fails (whose tasks may have stopped long ago, or
        never run). It must not bind the engine socket, and its image must be admitted, which
        for a spec means pinned to a digest that verifies (`N:T@D` with T signed for D, or a
        signed `N@D`; a tag alone would be pulled by tag on the workers), or a name a rule
        accepts unsigned, or an admitted image by its full ID. The spec is read at the version
        the update names: swarm refuses an update out of sequence, so the spec checked is the
        spec rolled back to."""
        assert ex.match is not None
        service_id = ex.match.params.get("id", "")
        answer = self.proxy.upstream.call(
            "GET", vpath(ex.target.version, f"/services/{service_id}")
        )
        if answer.status != 200:
            raise HTTPRefusal(answer.status if answer.status >= 400 else 502, answer.message)
        info = answer.json()
        info = info if isinstance(info, dict) else {}
        version = (info.get("Version") or {}).get("Index")
        if str(version) != ex.target.query.get("version"):
            raise Refused(
                403,
                f"trustpull: {why} of service {service_id} refused: the update "
                f"names version {ex.target.query.get('version') or '(none)'} but the service "
                f"is at {version}; the spec checked must be the one rolled back to "
                "[Service]",
                kind="Service",
            )
        previous = info.get(key)
        if not isinstance(previous, dict):
            return  # the engine refuses a rollback without a previous spec itself
        template = previous.get("TaskTemplate") or {}
        if template.get("PluginSpec") is not None:
            raise Refused(
                403,
                f"trustpull: {why} refused: the spec rolled back to runs a plugin [Plugin]",
                kind="Plugin",
            )
        # Its tasks run here too: the same mounts are refused as in a body (the engine's own
        # answer, read by the Go rules only so that one check serves both).
        rolled_back_to = gojson.get(gojson.loads(answer.body), key)
        container = gojson.get(gojson.get(rolled_back_to, "TaskTemplate"), "ContainerSpec")
        for mount in gojson.get(container, "Mounts") or []:
            check_service_mount(mount, self.proxy.engine_path)
        image = (template.get("ContainerSpec") or {}).get("Image")
        if not isinstance(image, str) or not image:
            return
        what = f"{why} of service {service_id} (to {image})"
        try:
            ref = parse(image)
        except InputError as error:
            raise Refused(
                400, f"trustpull: {what} refused: {error.message} [Input]", kind="Input"
            ) from None
        image_id = task_image_id(ref)
        if image_id is not None:
            if len(image_id) != len("sha256:") + 64:
                raise Refused(
                    403,
                    f"trustpull: {what} refused: an image ID prefix is resolved again for each "
                    "task, so it is not pinned to the image checked now [Service]",
                    kind="Service",
                    reference=image,
                )
            self._admitted_id(ex, image_id, what=what)
            self._log(ex, verdict="verified", reference=image, reason=why)
            return
        verified = self.verify(ex, ref, what=why)
        if not verified.fixes_content(ref):
            raise Refused(
                403,
                f"trustpull: {what} refused: that image is not pinned to a digest, so "
                "the workers would pull the tag unverified [Service]",
                kind="Service",
                reference=image,
            )
        self._log(ex, verdict="verified", reference=image, reason=why)

    def on_services_create(self, ex: Exchange) -> None:
        self._service(ex, update=False)

    def on_services_update(self, ex: Exchange) -> None:
        self._service(ex, update=True)

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
