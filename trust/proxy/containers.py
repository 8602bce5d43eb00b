"""Container create, start, volumes (engine-proxy.md §2.5, §2.6): verified images only."""

from __future__ import annotations

import json
import os
import re
import stat
from typing import TYPE_CHECKING, Any

from trust.errors import InputError
from trust.proxy import gojson
from trust.proxy.decide import HEX64, HEX_PREFIX, DeciderBase, Refused
from trust.proxy.framing import HTTPRefusal
from trust.proxy.upstream import vpath
from trust.reference import Reference, parse

if TYPE_CHECKING:
    from trust.proxy.server import Exchange

__all__ = ["ContainerRoutes", "check_host_path", "check_mount_host_path", "check_volume_options"]


def check_host_path(path: str, engine_path: str, *, below: bool = True) -> None:
    """A host path mounted into a container must not expose the engine socket: not the socket,
    nor a directory above it, nor (`below`: a path a client names) anything below the
    socket's directory or with the socket's inode, since a hard link of the socket in that
    directory (which a `docker cp` through a bind made a symlink there could write, X22j) is
    the engine socket under another name. Paths the engine made itself (a volume's `_data`,
    under a data root that may lie in that directory) are checked without `below`."""
    if not path.startswith("/"):
        return
    real = os.path.realpath(path)
    engine = os.path.realpath(engine_path)
    inside = below and real.startswith(os.path.dirname(engine).rstrip("/") + "/")
    if (
        real == engine
        or engine.startswith(real.rstrip("/") + "/")
        or real == "/"
        or inside
        or (below and _same_socket(real, engine))
    ):
        raise Refused(
            403,
            f"trustpull: mounting {path} refused: it exposes the engine socket [EngineSocket]",
            kind="EngineSocket",
        )


def _same_socket(path: str, engine: str) -> bool:
    try:
        mine, theirs = os.stat(path), os.stat(engine)
    except OSError:
        return False
    return stat.S_ISSOCK(mine.st_mode) and (mine.st_dev, mine.st_ino) == (
        theirs.st_dev,
        theirs.st_ino,
    )


_OVERLAY_DIRS = ("lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+")


def check_volume_options(device: Any, options: Any, engine_path: str) -> None:
    """A local volume's driver options: its `device` (an `o=bind` source, which must be
    absolute), and the
    directories an overlay mount names in `o` (`type=overlay,o=lowerdir=DIR,…` shows DIR's
    files, the engine socket among them: X22f). The kernel unescapes `\\x` in those values
    and a relative one resolves against dockerd's working directory, so a relative directory
    is refused and backslashes are dropped before the check."""
    flags = options.split(",") if isinstance(options, str) else []
    if isinstance(device, str):
        # mount(2) resolves a relative bind source against dockerd's working directory
        # (X22g: `device=.` was the engine socket's directory on the test engine)
        if not device.startswith("/") and {"bind", "rbind"} & {f.strip() for f in flags}:
            raise Refused(
                403,
                f"trustpull: volume device {device} refused: a bind device must be absolute "
                "[EngineSocket]",
                kind="EngineSocket",
            )
        check_host_path(device, engine_path)
    if not isinstance(options, str):
        return
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key.strip() not in _OVERLAY_DIRS:
            continue
        for directory in re.sub(r"\\(.)", r"\1", value).split(":"):
            if not directory.startswith("/"):
                raise Refused(
                    403,
                    f"trustpull: volume option {key}={value} refused: an overlay directory "
                    "must be absolute [EngineSocket]",
                    kind="EngineSocket",
                )
            check_host_path(directory, engine_path)


def check_mount_host_path(mount: Any, engine_path: str) -> None:
    """One `Mounts` entry (a container's or a service's): a `bind` source, or the `device` of
    a local volume it creates with `o=bind` (a driver-options map: exact key)."""
    kind = str(gojson.get(mount, "Type") or "").lower()
    source = gojson.get(mount, "Source")
    if kind == "bind" and isinstance(source, str):
        check_host_path(source, engine_path)
    if kind == "volume":
        driver = gojson.get(gojson.get(mount, "VolumeOptions"), "DriverConfig")
        options = gojson.get(driver, "Options")
        check_volume_options(
            gojson.get_key(options, "device"), gojson.get_key(options, "o"), engine_path
        )


class ContainerRoutes(DeciderBase):
    """Creates pinned to verified digests; starts of unverified images refused."""

    def _admit_image_text(
        self, ex: Exchange, text: str, *, mount: bool = False
    ) -> tuple[str, list[str], bool]:
        """The `Image` to forward for `text`, warnings, and whether it is missing locally."""
        what = "image mount" if mount else "create"
        is_id = bool(HEX64.fullmatch(text))
        ref: Reference | None = None
        if not is_id:
            try:
                ref = parse(text)
            except InputError:
                ref = None
        if ref is None:
            if not HEX_PREFIX.fullmatch(text):
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
            if verified.unsigned is not None and HEX_PREFIX.fullmatch(text):
                return self._accepted_hex_name(ex, text, ref, what), [verified.unsigned], False
        except Refused as refusal:
            if refusal.not_signed:
                image = self.inspect_image(ex, text)
                if image is None:
                    raise
                image_id = str(image.get("Id"))
                if self.ledger.has(image_id):
                    names = self.ledger.names(image_id)
                    if (text in names or str(ref) in names) and not HEX_PREFIX.fullmatch(text):
                        return text, [], False
                    # A hex name is also an ID prefix: by name, an untag between this check
                    # and the create would make the engine create from that prefix's image.
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
                    return (str(image["Id"]) if HEX_PREFIX.fullmatch(text) else text), [], False
            raise
        if verified.unsigned is not None:
            return text, [verified.unsigned], False
        pinned = f"{ref.name}@{verified.pins[0].digest}"
        return pinned, [], self.inspect_image(ex, pinned) is None

    def _accepted_hex_name(self, ex: Exchange, text: str, ref: Reference, what: str) -> str:
        """`text` is a name a rule accepts unsigned, and also an image-ID prefix: without a
        local tag of that name the engine creates from the image with that ID prefix. Pinned
        to the ID the engine resolves, which must be the name's own image or admitted."""
        image = self.inspect_image(ex, text)
        if image is None:
            return text  # the engine answers 404 itself; the client pulls through the proxy
        image_id = str(image.get("Id") or "")
        tags = {str(t) for t in image.get("RepoTags") or []}
        if tags & {str(ref), ref.familiar()} or self.admitted(ex, image):
            return image_id
        raise Refused(
            403,
            f"trustpull: {what} from {text} refused: no local tag of that name, and the "
            f"image {image_id} with that ID prefix is not verified [NotVerified]",
            kind="NotVerified",
            reference=text,
        )

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
        # 20.10's create body also embeds a deprecated HostConfig at the top level (runconfig
        # `ContainerConfigWrapper`), used whole when `HostConfig` is absent or null: top-level
        # `Binds` and `Mounts` are checked the same way.
        self._check_mounts(ex, gojson.get(obj, "HostConfig"))
        self._check_mounts(ex, obj)
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
        for bind in gojson.get(host_config, "Binds") or []:
            if isinstance(bind, str):
                source = bind.split(":", 1)[0]
                check_host_path(source, self.proxy.engine_path)
                if source and not source.startswith("/"):
                    self._check_volume(ex, source)
        self._check_volumes_from(ex, host_config)
        self._check_pid_mode(ex, host_config)
        for mount in gojson.get(host_config, "Mounts") or []:
            if not isinstance(mount, gojson.Obj):
                continue
            check_mount_host_path(mount, self.proxy.engine_path)
            kind = str(gojson.get(mount, "Type") or "").lower()
            source = gojson.get(mount, "Source")
            if kind == "volume" and isinstance(source, str) and source:
                self._check_volume(ex, source)
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

    def _check_volume(self, ex: Exchange, name: str) -> None:
        """A volume that exists already (made directly on the engine, say) is used as it is:
        its driver options' `device` must not expose the engine socket (X22d)."""
        answer = self.proxy.upstream.call("GET", vpath(ex.target.version, f"/volumes/{name}"))
        if answer.status == 404:
            return  # created by the engine with no options (or refused by it)
        if answer.status != 200:
            raise HTTPRefusal(answer.status if answer.status >= 400 else 502, answer.message)
        info = answer.json()
        options = info.get("Options") if isinstance(info, dict) else None
        if isinstance(options, dict):
            check_volume_options(options.get("device"), options.get("o"), self.proxy.engine_path)

    def _check_volumes_from(self, ex: Exchange, host_config: gojson.Obj) -> None:
        """`VolumesFrom` copies another container's mounts, binds included: a container made
        behind the proxy's back with a bind of the engine socket's directory would lend it
        (X22d). Each one's mounts are checked like the create's own, and the entry is
        forwarded by the container ID checked (by name, a rename in between would lend
        another container's mounts)."""
        entries = gojson.get(host_config, "VolumesFrom")
        if not isinstance(entries, list) or not entries:
            return
        pinned: list[Any] = []
        for entry in entries:
            if not isinstance(entry, str) or entry.count(":") > 1:
                pinned.append(entry)  # the engine refuses it itself
                continue
            name, sep, mode = entry.partition(":")
            container_id = self._lender(ex, name)
            pinned.append(container_id + sep + mode)
        gojson.set_field(host_config, "VolumesFrom", pinned)

    def _check_pid_mode(self, ex: Exchange, host_config: gojson.Obj) -> None:
        """`PidMode: container:X` shares X's processes, and through `/proc/<pid>/root` their
        filesystem, X's binds included (measured: `ls /proc/1/root/e` listed the engine
        socket): X's mounts are checked as for `VolumesFrom`, and X forwarded by its ID."""
        mode = gojson.get(host_config, "PidMode")
        if isinstance(mode, str) and mode.startswith("container:"):
            container_id = self._lender(ex, mode[len("container:") :])
            gojson.set_field(host_config, "PidMode", "container:" + container_id)

    def _lender(self, ex: Exchange, name: str) -> str:
        """The ID of container `name`, whose mounts another container is about to share:
        refused when one exposes the engine socket."""
        container_id, info = self._inspect_container(name)
        self._check_container_mounts(ex, info)
        return container_id

    def _inspect_container(self, name: str) -> tuple[str, dict[str, Any]]:
        """(ID, inspect answer) of container `name`, asked at the engine's own API version:
        under API < 1.20 the answer has no `Mounts` (dockerd's `containerInspectPre120`), so
        asked with such a client's version every mount check passed (X22i)."""
        return self.proxy.upstream.inspect_by_id(None, "containers", name)

    def _check_container_mounts(self, ex: Exchange, info: dict[str, Any]) -> None:
        """A container's mounts (its inspect answer's `Mounts`: bind sources, volumes by name)
        must not expose the engine socket, as resolved on the host now."""
        for mount in info.get("Mounts") or []:
            if not isinstance(mount, dict):
                continue
            if isinstance(mount.get("Source"), str):
                check_host_path(
                    mount["Source"], self.proxy.engine_path, below=mount.get("Type") == "bind"
                )
            if mount.get("Type") == "volume" and isinstance(mount.get("Name"), str):
                self._check_volume(ex, mount["Name"])

    def _container_check(
        self, ex: Exchange, what: str, body: bytes | None = None, *, mounts: bool = False
    ) -> None:
        """`mounts`: the request mounts the container's binds and volumes again (start,
        restart), and mount(2) follows symlinks then, so a bind source (or a volume's bind
        device) checked at create and made a link to the engine socket's directory since
        would hand it over (X22h): they are checked again, and a `PidMode: container:X`
        lender's mounts with them."""
        assert ex.match is not None
        name = ex.match.params["name"]
        container_id, info = self._inspect_container(name)
        if mounts:
            self._check_container_mounts(ex, info)
            host_config = info.get("HostConfig")
            mode = host_config.get("PidMode") if isinstance(host_config, dict) else None
            if isinstance(mode, str) and mode.startswith("container:"):
                self._lender(ex, mode[len("container:") :])
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
        # By the ID checked: by name, a rename in between would start another container.
        path = f"/containers/{container_id}/{ex.target.path.rsplit('/', 1)[1]}"
        ex.conn.forward(ex, target=ex.target.encode(path=path), body=body)

    def on_containers_start(self, ex: Exchange) -> None:
        """Before API 1.24 a start takes a HostConfig body, and dockerd 20.10 still applies it
        (daemon/start.go, `setHostConfig`: its binds and mounts become the container's) when
        the body is longer than 7 bytes or chunked, so a bind of the engine socket checked at
        create could be added at start (X44c). No client since 1.12 sends one: a body over 7
        bytes is refused, a shorter one is forwarded with its length (the engine ignores it)."""
        body = ex.conn.read_body(ex, self.config.max_json_body)
        if len(body) > 7:
            raise HTTPRefusal(
                400,
                "trustpull: starting a container with a host configuration body is refused "
                "(removed in API 1.24; binds and mounts are checked at create)",
            )
        self._container_check(ex, "start", body, mounts=True)

    def on_containers_archive_put(self, ex: Exchange) -> None:
        """`docker cp` into a container: the engine mounts the container's binds and volumes
        to extract there, running or not, following symlinks as a start does, so a bind made
        a link to the engine socket's directory would let the upload write there, a hard
        link of the socket included (X22j). The mounts are checked as for a start; the
        upload is forwarded by the container's ID."""
        assert ex.match is not None
        container_id, info = self._inspect_container(ex.match.params["name"])
        self._check_container_mounts(ex, info)
        path = f"/containers/{container_id}/archive"
        ex.conn.forward(ex, target=ex.target.encode(path=path))

    def on_containers_restart(self, ex: Exchange) -> None:
        self._container_check(ex, "restart", mounts=True)

    def on_containers_unpause(self, ex: Exchange) -> None:
        self._container_check(ex, "unpause")

    def on_volumes_create(self, ex: Exchange) -> None:
        body = ex.conn.read_body(ex, self.config.max_json_body)
        obj = gojson.loads(body) if body.strip() else gojson.Obj()
        opts = gojson.get(obj, "DriverOpts")
        if isinstance(opts, gojson.Obj):
            check_volume_options(  # a map: exact keys
                gojson.get_key(opts, "device"), gojson.get_key(opts, "o"), self.proxy.engine_path
            )
        ex.conn.forward(ex, body=body)
