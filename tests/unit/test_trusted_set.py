"""The pure TrustedSet: bytes and one fixed `now` in, verified trust data or a typed error out.

Synthetic repositories come from fixtures/notarygen.py; the real-world sets are read in place
from shared/realworld/trustdata (never copied into the project): missing data fails when
CI=true and skips otherwise.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fixtures.notarygen import Repo, RepoBuilder, generate_key
from fixtures.swizzle import Swizzler
from tests.ci import skip_or_fail
from trust.config import load_config
from trust.errors import (
    CertificateError,
    ConfigError,
    DelegationError,
    ExpiredError,
    HashMismatchError,
    LengthError,
    MalformedError,
    NoSuchTagError,
    RollbackError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    TrustpullError,
    VerificationError,
)
from trust.lookup import REPO_ADMIN, inspect_repository, lookup_tag
from trust.notary.metadata import FileMeta, parse_expires
from trust.notary.trusted_set import LoadOrderError, TrustData, TrustedSet, check_meta
from trust.settings import Limits, TrustPinning

GUN = "registry.test/org/app"
NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=1)
TRUSTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realworld" / "trustdata"


def verify(
    files: Mapping[str, bytes],
    gun: str = GUN,
    now: dt.datetime = LATER,
    *,
    cached: Mapping[str, bytes] | None = None,
    limits: Limits | None = None,
) -> TrustData:
    """Feed a repository through a TrustedSet in the client's order (no I/O at all)."""
    previous = dict(cached or {})
    if "root" in previous:
        trusted = TrustedSet(gun, previous["root"], now=now, limits=limits or Limits())
    else:
        trusted = TrustedSet(gun, files["root"], now=now, first_use=True, limits=limits)
    trusted.update_timestamp(files["timestamp"], previous=previous.get("timestamp"))
    trusted.update_snapshot(files["snapshot"], previous=previous.get("snapshot"))
    targets = trusted.update_targets(files["targets"], previous=previous.get("targets"))
    work = [d.name for d in targets.delegations]
    while work:
        name = work.pop(0)
        if trusted.meta_for(name) is None:
            continue
        if name not in files:
            raise DelegationError(f"{name} is listed in the snapshot but was not kept")
        child = trusted.update_delegation(name, files[name], previous=previous.get(name))
        if child is not None:
            work[0:0] = [d.name for d in child.delegations]
    return trusted.result()


def role_files(repo: Repo) -> dict[str, bytes]:
    return {role: repo.role_bytes(role) for role in repo.roles}


def builder() -> RepoBuilder:
    b = RepoBuilder(GUN, now=NOW)
    b.add_target("1.0", "aa" * 32, 10)
    b.add_delegation("targets/releases")
    b.add_target("1.0", "11" * 32, 11, role="targets/releases")
    return b


# =========================================================================== synthetic data


def test_accepts_a_good_repository_and_reads_releases_first() -> None:
    data = verify(role_files(builder().publish()))
    assert data.first_use
    assert lookup_tag(data, "1.0").digest == "sha256:" + "11" * 32


def test_expiry_is_compared_with_the_one_fixed_now() -> None:
    b = builder()
    b.set_expiry("timestamp", LATER)
    files = role_files(b.publish())
    verify(files, now=LATER - dt.timedelta(microseconds=1))
    with pytest.raises(ExpiredError):
        verify(files, now=LATER)  # expires == now is expired (no grace)


def test_check_meta_length_is_a_cap_and_every_hash_must_match() -> None:
    data = b"x" * 10
    good = FileMeta(10, {"sha256": hashlib.sha256(data).digest()})
    check_meta("r", data, good)
    with pytest.raises(LengthError):
        check_meta("r", data + b" ", good)
    with pytest.raises(HashMismatchError):
        check_meta("r", data[:9], good)
    both = FileMeta(10, {"sha256": good.hashes["sha256"], "sha512": bytes(64)})
    with pytest.raises(HashMismatchError):
        check_meta("r", data, both)
    with pytest.raises(HashMismatchError):
        check_meta("r", data, FileMeta(10, {}))


def test_B01_floor_survives_expiry_of_the_cached_copy() -> None:
    """Stricter than notary (dct.md §6.12): the cached version stays the floor even after
    the cached file itself expired."""
    b = builder()
    old = b.publish()
    b.set_expiry("timestamp", NOW + dt.timedelta(hours=1))
    newer = b.publish()
    b.set_expiry("timestamp", None)
    trusted = TrustedSet(GUN, newer.role_bytes("root"), now=LATER)
    with pytest.raises(RollbackError):
        trusted.update_timestamp(
            old.role_bytes("timestamp"), previous=newer.role_bytes("timestamp")
        )


def test_B02_same_version_other_content_keeps_the_cached_copy() -> None:
    b = builder()
    repo = b.publish()
    version = repo.signed("timestamp")["version"]
    other = Swizzler(b).set_version(b.publish(), "timestamp", version)
    trusted = TrustedSet(GUN, repo.role_bytes("root"), now=LATER)
    previous = repo.role_bytes("timestamp")
    assert trusted.update_timestamp(other.role_bytes("timestamp"), previous=previous) is False
    assert any("keeping the cached copy" in w for w in trusted.warnings)
    assert trusted.timestamp_bytes == repo.role_bytes("timestamp")
    assert trusted.snapshot_meta().hex() == hashlib.sha256(repo.role_bytes("snapshot")).hexdigest()
    # The update goes on with the cached pointer and resolves as a normal run does.
    trusted.update_snapshot(repo.role_bytes("snapshot"))
    trusted.update_targets(repo.role_bytes("targets"))
    trusted.update_delegation("targets/releases", repo.role_bytes("targets/releases"))
    assert lookup_tag(trusted.result(), "1.0").digest == "sha256:" + "11" * 32


def test_B10_a_rotated_key_drops_the_floor() -> None:
    b = builder()
    repo = b.publish()
    sw = Swizzler(b)
    forward = sw.set_version(repo, "timestamp", 1_000_000)
    b.rotate_key("timestamp")
    rotated = b.publish()
    cached = {"root": rotated.role_bytes("root"), "timestamp": forward.role_bytes("timestamp")}
    data = verify(role_files(rotated), cached=cached)
    assert data.timestamp.version < 1_000_000
    # Under the old root the fast-forwarded copy still verifies: it is the floor.
    with pytest.raises(RollbackError):
        verify(role_files(repo), cached={**cached, "root": repo.role_bytes("root")})


def test_rotate_root_rules() -> None:
    b = builder()
    v1 = b.publish()
    b.rotate_key("root")
    v2 = b.publish()
    trusted = TrustedSet(GUN, v1.role_bytes("root"), now=LATER)
    with pytest.raises(RootRotationError):
        trusted.update_root(v2.role_bytes("root"), exact_version=3)
    with pytest.raises(RollbackError):
        trusted.update_root(v1.role_bytes("root"))
    trusted.update_root(v2.role_bytes("root"), exact_version=2)
    assert trusted.rotated_roots == (v2.role_bytes("root"),)
    assert trusted.root_bytes == v2.role_bytes("root")
    b.rotate_key("root", sign_with="new")  # v3 not signed by v2's key
    v3 = b.publish()
    with pytest.raises(RootRotationError):
        trusted.update_root(v3.role_bytes("root"))


def test_E04_effective_paths_are_restricted_by_every_parent() -> None:
    b = RepoBuilder(GUN, now=NOW)
    b.add_delegation("targets/releases", paths=["stable-"])
    b.add_delegation("targets/releases/wide", paths=["", "stable-1", "other"])
    for tag, digest in (("stable-1.2", "12" * 32), ("stable-2", "22" * 32)):
        b.add_target(tag, digest, 12, role="targets/releases")
    for tag, digest in (("stable-1.2", "12" * 32), ("stable-2", "22" * 32), ("other", "0e" * 32)):
        b.add_target(tag, digest, 12, role="targets/releases/wide")
    data = verify(role_files(b.publish()))
    assert data.roles["targets/releases"].paths == ("stable-",)
    assert data.roles["targets/releases/wide"].paths == ("stable-1",)
    # The child counts as a signer only inside the paths both it and its parent allow:
    # stable-2 (its own "" allows it, the parent's "stable-" too, not the intersection) and
    # other (outside the parent's paths) are not the child's.
    signed = inspect_repository(data, GUN, None)["SignedTags"]
    assert isinstance(signed, list)
    assert [(t["SignedTag"], t["Digest"], t["Signers"]) for t in signed] == [
        ("stable-1.2", "12" * 32, ["releases/wide"]),
        ("stable-2", "22" * 32, [REPO_ADMIN]),
    ]
    assert lookup_tag(data, "stable-2").digest == "sha256:" + "22" * 32
    with pytest.raises(NoSuchTagError):
        lookup_tag(data, "other")  # signed only by the child, outside its parent's paths


def test_E08_limits_are_enforced_by_the_trusted_set_itself() -> None:
    b = RepoBuilder(GUN, now=NOW)
    for name in ("targets/a", "targets/a/b", "targets/a/b/c"):
        b.add_delegation(name)
    files = role_files(b.publish())
    with pytest.raises(DelegationError):
        verify(files, limits=Limits(max_delegation_depth=2))
    with pytest.raises(DelegationError):
        verify(files, limits=Limits(max_delegations=1))
    verify(files, limits=Limits(max_delegation_depth=3, max_delegations=3))


def test_a_delegation_cannot_be_loaded_before_its_parent() -> None:
    b = RepoBuilder(GUN, now=NOW)
    b.add_delegation("targets/a")
    b.add_delegation("targets/a/b")
    repo = b.publish()
    trusted = TrustedSet(GUN, repo.role_bytes("root"), now=LATER, first_use=True)
    trusted.update_timestamp(repo.role_bytes("timestamp"))
    trusted.update_snapshot(repo.role_bytes("snapshot"))
    trusted.update_targets(repo.role_bytes("targets"))
    with pytest.raises(DelegationError):
        trusted.update_delegation("targets/a/b", repo.role_bytes("targets/a/b"))


# =========================================================================== the set itself


def _loaded(repo: Repo, until: str) -> TrustedSet:
    """A set from `repo`'s root, fed in order up to and including `until`."""
    trusted = TrustedSet(GUN, repo.role_bytes("root"), now=LATER, first_use=True)
    for role in ("timestamp", "snapshot", "targets"):
        getattr(trusted, f"update_{role}")(repo.role_bytes(role))
        if role == until:
            break
    return trusted


def test_loading_out_of_order_or_twice_is_refused() -> None:
    """As python-tuf's TrustedMetadataSet: root → timestamp → snapshot → targets → delegations,
    each role once; the refusal is a typed error (a caller bug, exit 1), not a verdict."""
    repo = builder().publish()
    fresh = TrustedSet(GUN, repo.role_bytes("root"), now=LATER, first_use=True)
    with pytest.raises(LoadOrderError, match="before timestamp"):
        fresh.update_snapshot(repo.role_bytes("snapshot"))
    with pytest.raises(LoadOrderError, match="before snapshot"):
        fresh.update_targets(repo.role_bytes("targets"))
    with pytest.raises(LoadOrderError, match="before targets"):
        fresh.update_delegation("targets/releases", repo.role_bytes("targets/releases"))
    with pytest.raises(LoadOrderError, match="before targets"):
        fresh.delegation_meta("targets/releases")
    with pytest.raises(LoadOrderError):
        fresh.result()
    stamped = _loaded(repo, "timestamp")
    with pytest.raises(LoadOrderError, match="twice"):
        stamped.update_timestamp(repo.role_bytes("timestamp"))
    with pytest.raises(LoadOrderError):
        stamped.result()
    snap = _loaded(repo, "snapshot")
    with pytest.raises(LoadOrderError, match="after snapshot"):
        snap.update_timestamp(repo.role_bytes("timestamp"))
    with pytest.raises(LoadOrderError, match="twice"):
        snap.update_snapshot(repo.role_bytes("snapshot"))
    full = _loaded(repo, "targets")
    for role in ("timestamp", "snapshot"):
        with pytest.raises(LoadOrderError, match=r"cannot update .* after "):
            getattr(full, f"update_{role}")(repo.role_bytes(role))
    with pytest.raises(LoadOrderError, match="twice"):
        full.update_targets(repo.role_bytes("targets"))
    with pytest.raises(LoadOrderError, match="root after targets"):
        full.update_root(repo.role_bytes("root"))
    full.update_delegation("targets/releases", repo.role_bytes("targets/releases"))
    with pytest.raises(LoadOrderError, match="twice"):
        full.update_delegation("targets/releases", repo.role_bytes("targets/releases"))
    assert full.result().roles.keys() == {"targets", "targets/releases"}
    assert issubclass(LoadOrderError, TrustpullError) and LoadOrderError.exit_code == 1


def test_a_root_rotation_starts_the_timestamp_and_snapshot_again() -> None:
    """Notary learns of a new root from the snapshot: the rotation is allowed until targets,
    and what was verified under the old root must be verified again under the new one."""
    b = builder()
    v1 = b.publish()
    b.rotate_key("root")
    v2 = b.publish()
    trusted = TrustedSet(GUN, v1.role_bytes("root"), now=LATER)
    trusted.update_timestamp(v1.role_bytes("timestamp"))
    trusted.update_snapshot(v1.role_bytes("snapshot"))
    trusted.update_root(v2.role_bytes("root"))
    assert trusted.timestamp is None and trusted.snapshot is None
    with pytest.raises(LoadOrderError):
        trusted.update_targets(v2.role_bytes("targets"))
    for role in ("timestamp", "snapshot", "targets"):
        getattr(trusted, f"update_{role}")(v2.role_bytes(role))
    assert trusted.result().root_bytes == v2.role_bytes("root")


def test_the_verified_state_is_read_only() -> None:
    """No public mutable state: the set's views and the result cannot be written through."""
    repo = builder().publish()
    trusted = _loaded(repo, "targets")
    trusted.update_delegation("targets/releases", repo.role_bytes("targets/releases"))
    for name in ("root", "root_bytes", "timestamp", "snapshot", "roles", "warnings", "first_use"):
        with pytest.raises(AttributeError):
            setattr(trusted, name, None)
    with pytest.raises(TypeError):
        trusted.roles["targets/x"] = trusted.roles["targets"]  # type: ignore[index]
    data = trusted.result()
    with pytest.raises(TypeError):
        data.roles["targets/x"] = data.roles["targets"]  # type: ignore[index]
    with pytest.raises(TypeError):
        data.root_check.leaf_keys["x"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        data.snapshot.meta["x"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        data.roles["targets"].targets.targets["x"] = None  # type: ignore[index]
    assert isinstance(data.warnings, tuple) and isinstance(data.root_check.warnings, tuple)
    # A state cannot be handed in: the set is made from root bytes and nothing else.
    with pytest.raises(TypeError):
        TrustedSet(GUN, repo.role_bytes("root"), now=LATER, roles={})  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        TrustedSet(GUN, repo.role_bytes("root"), now=LATER, cached={})  # type: ignore[call-arg]


def test_warnings_are_returned_on_the_result() -> None:
    """A skipped delegation (expired, not on the lookup path) is a warning of the result."""
    b = builder()
    b.add_delegation("targets/alice")
    b.set_expiry("targets/alice", NOW + dt.timedelta(hours=1))
    repo = b.publish()
    data = verify(role_files(repo))
    assert "targets/alice" not in data.roles
    assert [w for w in data.warnings if "targets/alice" in w and "skipped" in w]
    # On the lookup path the same failure refuses (attacks.md E06).
    trusted = _loaded(repo, "targets")
    with pytest.raises(ExpiredError):
        trusted.update_delegation("targets/alice", repo.role_bytes("targets/alice"), required=True)


def test_the_verifier_reads_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pure: a CA-pinned first use verifies with every way of opening a file disabled. The
    pinned bundle comes as PEM bytes, which the configuration loader read."""
    ca = generate_key("ecdsa-x509", cn="Pinned CA", is_ca=True, not_before=NOW - dt.timedelta(30))
    b = builder()
    b.rotate_key("root", [b.new_key("ecdsa-x509", issuer=ca)], sign_with="new")
    files = role_files(b.publish())
    assert ca.cert is not None
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    config = tmp_path / "config.toml"
    config.write_text('[trust_pinning.ca]\n"registry.test/" = "ca.pem"\n')
    settings = load_config({"HOME": str(tmp_path)}, config_file=config).settings
    assert settings.trust_pinning.ca == {"registry.test/": bundle.read_bytes()}

    def no_io(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"file I/O in the verifier: {args!r}")

    import builtins
    import io

    for target, name in ((builtins, "open"), (io, "open"), (os, "open"), (Path, "open")):
        monkeypatch.setattr(target, name, no_io)
    trusted = TrustedSet(
        GUN, files["root"], now=LATER, first_use=True, pinning=settings.trust_pinning
    )
    assert not trusted.root_check.tofu  # the CA pin applied
    for role in ("timestamp", "snapshot", "targets"):
        getattr(trusted, f"update_{role}")(files[role])
    trusted.update_delegation("targets/releases", files["targets/releases"])
    assert lookup_tag(trusted.result(), "1.0").digest == "sha256:" + "11" * 32


def test_an_unreadable_pinned_ca_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[trust_pinning.ca]\n"registry.test/" = "missing.pem"\n')
    with pytest.raises(ConfigError) as caught:
        load_config({"HOME": str(tmp_path)}, config_file=config)
    message = caught.value.message
    assert str(config) in message and "missing.pem" in message
    assert "trust_pinning.ca" in message and "registry.test/" in message
    assert isinstance(TrustPinning().ca, dict)


# =========================================================================== real-world data


@dataclass(frozen=True)
class RealSet:
    name: str
    gun: str
    files: dict[str, Path]

    def load(self) -> dict[str, bytes]:
        return {role: path.read_bytes() for role, path in self.files.items()}


def _require(path: Path) -> Path:
    if not path.exists():
        skip_or_fail(f"real trust data missing: {path}")
    return path


def _collect(base: Path, names: Mapping[str, str]) -> dict[str, Path]:
    return {role: _require(base / name) for role, name in names.items()}


def _plain(base: Path, delegations: tuple[str, ...] = ()) -> dict[str, str]:
    roles = ("root", "timestamp", "snapshot", "targets", *delegations)
    return {role: f"{role}.json" for role in roles}


def _harbor(base: Path) -> dict[str, str]:
    names = {"root": "root.json", "timestamp": "timestamp.json"}
    for role in ("snapshot", "targets"):
        [found] = sorted(_require(base).glob(f"{role}.*.json"))
        names[role] = found.name
    return names


SETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (GUN, layout, delegations kept)
    "notary-fixture-0.1": ("docker.com/notary0.1/samplerepo", "notary", ()),
    "notary-fixture-0.3": ("docker.com/notary0.3/tst", "notary", ("targets/releases",)),
    "docker-library-alpine-2018": ("docker.io/library/alpine", "plain", ()),
    "dockertrusttest-busybox-good": ("dockertrusttest.docker.io/library/busybox", "plain", ()),
    "dockertrusttest-busybox-bad": ("dockertrusttest.docker.io/library/busybox", "plain", ()),
    "harbor-busybox-2017-03-07": ("10.117.4.142/notary-demo/busybox", "harbor", ()),
    "harbor-busybox-2017-03-15": ("10.117.4.142/notary-demo/busybox", "harbor", ()),
    "harbor-busybox-2020-02-24": ("jt-dev.local.goharbor.io/library/busybox", "harbor", ()),
    "connaisseur-sample-image": ("docker.io/phbelitz/sample-image", "compact", ()),
    "connaisseur-alice-image": (
        "docker.io/phbelitz/alice-image",
        "compact",
        ("targets/releases", "targets/phbelitz", "targets/chamsen"),
    ),
    "connaisseur-bob-image": ("docker.io/phbelitz/delegation", "compact", ()),
    "connaisseur-charlie-image": (
        "docker.io/phbelitz/delegation",
        "compact",
        ("targets/releases", "targets/del1"),
    ),
    "connaisseur-dave-image": (
        "docker.io/phbelitz/delegation",
        "compact",
        ("targets/releases", "targets/del1", "targets/del2"),
    ),
    "connaisseur-sample-san-sama": ("docker.io/phbelitz/sample-san-sama", "sample2", ()),
    "connaisseur-eve-image": ("docker.io/phbelitz/delegation", "compact", ()),
    "connaisseur-phbelitz-sample": (
        "docker.io/phbelitz/sample",
        "sample",
        ("targets/releases",),
    ),
}
INCOMPLETE = ("connaisseur-eve-image", "connaisseur-phbelitz-sample")
COMPLETE = sorted(name for name in SETS if name not in INCOMPLETE)


def real_set(name: str) -> RealSet:
    gun, layout, delegations = SETS[name]
    base = _require(TRUSTDATA / name)
    if layout == "notary":
        base = base / "tuf" / gun / "metadata"
        names = _plain(base, delegations)
    elif layout == "plain":
        names = _plain(base)
    elif layout == "harbor":
        base = base / "valid"
        names = _harbor(base)
    elif layout == "compact":
        base = base / "_compact"
        names = _plain(base, delegations)
    else:
        base = base / "_compact"
        prefix = "sample2_" if layout == "sample2" else "sample_"
        names = {r: f"{prefix}{r}.json" for r in ("root", "timestamp", "snapshot", "targets")}
        if delegations:
            names["targets/releases"] = f"{prefix}releases.json"
    return RealSet(name, gun, _collect(base, names))


def _signed(data: bytes) -> dict[str, object]:
    signed = json.loads(data)["signed"]
    assert isinstance(signed, dict)
    return signed


def _root_certificates(files: Mapping[str, bytes]) -> list[x509.Certificate]:
    root = _signed(files["root"])
    certs = []
    for keyid in root["roles"]["root"]["keyids"]:  # type: ignore[index]
        public = base64.b64decode(root["keys"][keyid]["keyval"]["public"])  # type: ignore[index]
        certs.append(x509.load_pem_x509_certificate(public))
    return certs


def valid_moment(files: Mapping[str, bytes]) -> dt.datetime:
    """A day before the earliest expiry of any file or root certificate."""
    ends = [parse_expires(_signed(data)["expires"]) for data in files.values()]
    ends += [cert.not_valid_after_utc for cert in _root_certificates(files)]
    moment = min(ends) - dt.timedelta(days=1)
    assert all(cert.not_valid_before_utc <= moment for cert in _root_certificates(files))
    return moment


def expected_digests(files: Mapping[str, bytes]) -> tuple[dict[str, str | None], set[str]]:
    """Decoded straight from the JSON: releases first, then targets (None for an entry of
    length 0, which attacks.md C09 refuses although docker ignores the length); and the tags
    signed only by other delegations (docker refuses those)."""
    expected: dict[str, str | None] = {}
    elsewhere: set[str] = set()
    for role in ("targets/releases", "targets"):
        if role in files:
            for tag, meta in _signed(files[role])["targets"].items():  # type: ignore[attr-defined]
                digest = base64.b64decode(meta["hashes"]["sha256"]).hex()
                expected.setdefault(tag, "sha256:" + digest if meta["length"] >= 1 else None)
    for role, data in files.items():
        if role.startswith("targets/") and role != "targets/releases":
            elsewhere |= set(_signed(data)["targets"]) - set(expected)  # type: ignore[arg-type]
    return expected, elsewhere


@pytest.mark.parametrize("name", COMPLETE)
def test_realworld_accepted_when_valid(name: str) -> None:
    rs = real_set(name)
    files = rs.load()
    when = valid_moment(files)
    data = verify(files, rs.gun, when)
    expected, elsewhere = expected_digests(files)
    assert expected, "every complete set signs at least one tag"
    assert any(expected.values())
    for tag, digest in expected.items():
        if digest is None:  # notary's 0.3 fixture signs "hello" with length 0
            with pytest.raises(MalformedError):
                lookup_tag(data, tag)
        else:
            assert lookup_tag(data, tag).digest == digest, tag
    for tag in elsewhere:
        with pytest.raises(NoSuchTagError):
            lookup_tag(data, tag)


def _today_should_refuse(files: Mapping[str, bytes], today: dt.datetime) -> bool:
    """From the data alone: a file has expired, or a root leaf certificate has."""
    if any(parse_expires(_signed(d)["expires"]) <= today for d in files.values()):
        return True
    return any(cert.not_valid_after_utc < today for cert in _root_certificates(files))


@pytest.mark.parametrize("name", COMPLETE)
def test_realworld_today(name: str) -> None:
    rs = real_set(name)
    files = rs.load()
    today = dt.datetime.now(dt.UTC)
    if _today_should_refuse(files, today):
        with pytest.raises((ExpiredError, CertificateError)):
            verify(files, rs.gun, today)
    else:  # still valid today (e.g. notary's 0.1 fixture, valid until 2116): accepted
        verify(files, rs.gun, today)


@pytest.mark.parametrize("name", INCOMPLETE)
def test_realworld_incomplete_sets_refused_at_every_date(name: str) -> None:
    rs = real_set(name)
    files = rs.load()
    for when in (valid_moment(files), dt.datetime.now(dt.UTC)):
        with pytest.raises(VerificationError):
            verify(files, rs.gun, when)


@pytest.mark.parametrize(
    ("first", "second", "when"),
    [
        (
            "dockertrusttest-busybox-good",
            "dockertrusttest-busybox-bad",
            dt.datetime(2018, 9, 20, tzinfo=dt.UTC),
        ),
        (
            "harbor-busybox-2017-03-07",
            "harbor-busybox-2017-03-15",
            dt.datetime(2017, 3, 16, tzinfo=dt.UTC),
        ),
    ],
)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_realworld_root_key_change_without_old_signature(
    first: str, second: str, when: dt.datetime, direction: str
) -> None:
    a, b = real_set(first), real_set(second)
    if direction == "backward":
        a, b = b, a
    trusted_files, presented = a.load(), b.load()
    assert a.gun == b.gun
    trusted = TrustedSet(a.gun, trusted_files["root"], now=when)
    # The other set's timestamp is not signed by any key the trusted root knows ...
    with pytest.raises((SignatureError, ThresholdError)):
        trusted.update_timestamp(presented["timestamp"])
    # ... and its root is not signed by the trusted root's key: no rotation.
    with pytest.raises(RootRotationError):
        trusted.update_root(presented["root"])
    # Each set on its own verifies at that date's root (the refusal is about the pairing).
    TrustedSet(b.gun, presented["root"], now=when)


def test_realworld_errors_are_typed() -> None:
    """Nothing in the real data may escape as a non-trustpull exception."""
    for name in SETS:
        rs = real_set(name)
        files = rs.load()
        for when in (valid_moment(files), dt.datetime.now(dt.UTC)):
            try:
                verify(files, rs.gun, when)
            except TrustpullError:
                pass
