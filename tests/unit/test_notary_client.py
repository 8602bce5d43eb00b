"""NotaryClient against a FixtureServer over real HTTPS on loopback (attacks.md A–I).

Every refused case goes through `trust.trusted_pull.pull` with a recording fake engine and checks
REFUSE + KEEP + NOPULL (`Env.refuse`): the exact error class and exit code, the trust cache
byte-identical to before, no temporary file left, and no pull or tag sent to the engine.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fixtures.notarygen import (
    Repo,
    RepoBuilder,
    consistent_name,
    encode_envelope,
    file_meta,
    sign_envelope,
)
from fixtures.server import FixtureServer
from fixtures.swizzle import DELETE
from tests.unit._trust_env import (
    D1,
    D2,
    D_ALICE,
    D_ONLY_TARGETS,
    D_TARGETS,
    FAST,
    GUN,
    NOW,
    REF,
    CacheState,
    Env,
    b64,
    baseline_builder,
    env_factory,
    install_ca,
    resolve_reference,
)
from trust.errors import (
    AuthError,
    CacheError,
    CertificateError,
    DelegationError,
    ExpiredError,
    HashMismatchError,
    InputError,
    LengthError,
    MalformedError,
    NetworkError,
    NoSuchTagError,
    NoTrustDataError,
    RollbackError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    TrustPinError,
)
from trust.lookup import REPO_ADMIN, inspect_repository, list_signed_tags, lookup_tag, root_key_id
from trust.notary.cjson import encode_canonical
from trust.notary.client import NotaryClient
from trust.notary.remote import NotFoundError
from trust.reference import parse
from trust.settings import Settings, TrustPinning

MakeEnv = Callable[..., Env]
DAY = dt.timedelta(days=1)


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def tuf_name(request_path: str) -> str | None:
    marker = "/_trust/tuf/"
    return request_path.split(marker, 1)[1] if marker in request_path else None


def names_requested(env: Env) -> list[str]:
    return [name for r in env.server.requests if (name := tuf_name(r.path)) is not None]


def warm(make_env: MakeEnv, builder: RepoBuilder | None = None) -> Env:
    """State S0: one verified run has filled the cache."""
    env = make_env(builder)
    env.update()
    env.server.clear_requests()
    return env


def digest_of(env: Env, ref: str = REF, **kwargs: Any) -> str:
    data = env.update(ref, **kwargs)
    return lookup_tag(data, parse(ref).tag or "latest").digest


# =========================================================================== 1. happy paths


def test_first_use_writes_exact_bytes_with_private_modes(make_env: MakeEnv) -> None:
    env = make_env()
    repo = env.builder.repo
    data = env.update()
    assert data.first_use
    assert lookup_tag(data, "1.0").digest == "sha256:" + D1
    expected = ["root", "timestamp", "snapshot", "targets", *env.builder.delegations]
    for role in expected:
        path = env.metadata_dir / f"{role}.json"
        assert path.read_bytes() == repo.role_bytes(role), role
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600, role
    written = {
        str(p.relative_to(env.metadata_dir))
        for p in env.metadata_dir.rglob("*.json")
        if p.is_file()
    }
    assert written == {f"{role}.json" for role in expected}
    # Every directory trustpull created, from trust/ down, is private (dct.md §5).
    directory = env.metadata_dir
    while directory != env.docker_config:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        directory = directory.parent
    assert stat.S_IMODE((env.metadata_dir / "targets" / "releases").stat().st_mode) == 0o700


def test_warm_run_sends_one_request_the_timestamp(make_env: MakeEnv) -> None:
    """issue 13: no `/v2/` ping up front (docker's trusted pull sends 2)."""
    env = warm(make_env)
    before = env.cache()
    data = env.update()
    assert lookup_tag(data, "1.0").digest == "sha256:" + D1
    assert [r.path for r in env.server.requests] == [f"/v2/{GUN}/_trust/tuf/timestamp.json"]
    assert env.cache() == before


def test_new_publish_downloads_only_changed_files_by_consistent_name(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.builder.add_target("3.0", "33" * 32, 600, role="targets/releases")
    repo = env.serve()
    data = env.update()
    assert lookup_tag(data, "3.0").digest == "sha256:" + "33" * 32
    assert names_requested(env) == [
        "timestamp.json",
        consistent_name("snapshot", repo.role_bytes("snapshot")),
        consistent_name("targets/releases", repo.role_bytes("targets/releases")),
    ]
    for role in ("timestamp", "snapshot", "targets/releases", "targets", "root"):
        assert (env.metadata_dir / f"{role}.json").read_bytes() == repo.role_bytes(role)


def test_delegations_download_concurrently_and_verify_in_walk_order(make_env: MakeEnv) -> None:
    """issue 13: the delegations of `targets` are fetched at once on the run's one session
    (each answer is held 0.6 s here: one after the other they would arrive >= 0.6 s apart),
    then verified and recorded in the depth-first order of the walk."""
    env = make_env()
    env.server.add_fault("*/_trust/tuf/targets/*", delay=0.6)
    client = env.client()
    data = client.update(parse(REF))
    assert set(data.roles) >= {"targets/releases", "targets/releases/ci", "targets/alice"}
    assert lookup_tag(data, "1.0").digest == "sha256:" + D1
    walked = [name.split(".", 1)[0] for name in client.stats.downloaded if "/" in name]
    assert walked == ["targets/releases", "targets/releases/ci", "targets/alice"]
    arrived = {
        name.split(".", 1)[0]: r.time
        for r in env.server.requests
        if (name := tuf_name(r.path)) is not None and "/" in name
    }
    assert abs(arrived["targets/alice"] - arrived["targets/releases"]) < 0.4
    # The nested role is reached only through its verified parent: fetched after it.
    assert arrived["targets/releases/ci"] - arrived["targets/releases"] >= 0.6


def test_a_delegation_downloaded_ahead_fails_as_it_would_when_reached(make_env: MakeEnv) -> None:
    """A failed download started ahead of the walk refuses the update when the walk reaches
    that role, with the error it would have raised there; nothing is written."""
    env = make_env()
    env.server.add_fault("*/_trust/tuf/targets/alice.*", status=503)
    before = env.cache()
    client = env.client()
    with pytest.raises(NetworkError, match="503"):
        client.update(parse(REF))
    assert env.cache() == before
    assert [n.split(".", 1)[0] for n in client.stats.downloaded if "/" in n] == [
        "targets/releases",
        "targets/releases/ci",
    ]


def test_tag_lookup_releases_wins_over_targets(make_env: MakeEnv) -> None:
    env = make_env()
    data = env.update()
    hit = lookup_tag(data, "1.0")
    assert (hit.digest, hit.role, hit.size) == ("sha256:" + D1, "targets/releases", 530)
    only = lookup_tag(data, "only-targets")
    assert (only.digest, only.role) == ("sha256:" + D_ONLY_TARGETS, "targets")


def test_E02_tag_only_in_other_delegation_is_not_signed(make_env: MakeEnv) -> None:
    env = make_env()
    data = env.update()
    for tag in ("alice-only", "ci-only", "never-signed"):
        with pytest.raises(NoSuchTagError):
            lookup_tag(data, tag)
    env.refuse(NoSuchTagError, f"{GUN}:alice-only")
    env.refuse(NoSuchTagError, f"{GUN}:ci-only")


def test_list_signed_tags_reads_releases_and_targets_only(make_env: MakeEnv) -> None:
    env = make_env()
    tags = {t.tag: (t.digest, t.role) for t in list_signed_tags(env.update())}
    assert tags == {
        "1.0": ("sha256:" + D1, "targets/releases"),
        "2.0": ("sha256:" + D2, "targets/releases"),
        "only-targets": ("sha256:" + D_ONLY_TARGETS, "targets"),
    }
    assert "alice-only" not in tags and D_ALICE not in str(tags)


def test_pull_is_by_signed_digest_then_tagged(make_env: MakeEnv) -> None:
    env = make_env()
    result, engine = env.pull()
    assert result.error is None and result.pulled
    assert engine.calls == [
        ("pull", GUN, "sha256:" + D1),
        ("tag", f"{GUN}@sha256:{D1}", GUN, "1.0"),
        ("close",),
    ]


def test_I04_digest_only_reference_must_be_signed(make_env: MakeEnv) -> None:
    env = make_env()
    [resolution] = resolve_reference(parse(f"{GUN}@sha256:{D2}"), env.settings, client=env.client())
    assert (resolution.tag, resolution.digest) == ("2.0", "sha256:" + D2)
    result, engine = env.pull(f"{GUN}@sha256:{D2}")
    assert result.error is None
    assert [c for c in engine.calls if c[0] == "pull"] == [("pull", GUN, "sha256:" + D2)]


def test_I04_unsigned_digest_is_refused(make_env: MakeEnv) -> None:
    env = make_env()
    env.update()
    # Signed only outside releases/targets, or not at all: refused.
    env.refuse(NoSuchTagError, f"{GUN}@sha256:{D_ALICE}")
    env.refuse(NoSuchTagError, f"{GUN}@sha256:{'ee' * 32}")


def test_I05_tag_and_digest_agree(make_env: MakeEnv) -> None:
    env = make_env()
    result, engine = env.pull(f"{GUN}:1.0@sha256:{D1}")
    assert result.error is None and result.exit_code == 0
    assert [c[2] for c in engine.calls if c[0] == "pull"] == ["sha256:" + D1]


def test_I05_tag_and_digest_disagree(make_env: MakeEnv) -> None:
    env = make_env()
    env.update()
    env.refuse(NoSuchTagError, f"{GUN}:1.0@sha256:{D_TARGETS}")
    env.refuse(NoSuchTagError, f"{GUN}:1.0@sha256:{D2}")


# =========================================================================== A. signatures


def first_use_variant(make_env: MakeEnv, mutate: Callable[[Env, Repo], Repo]) -> Env:
    env = make_env(publish=False)
    repo = env.builder.publish()
    env.serve(mutate(env, repo))
    return env


@pytest.mark.parametrize("role", ["root", "timestamp", "snapshot", "targets", "targets/releases"])
def test_A01_unsigned_metadata(make_env: MakeEnv, role: str) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        bad = env.sw.clear_signatures(repo, role)
        return bad if role in ("root", "timestamp") else env.sw.rechain(bad, [role])

    env = first_use_variant(make_env, mutate)
    env.refuse(SignatureError)


def test_A01_signatures_field_missing(make_env: MakeEnv) -> None:
    env = first_use_variant(
        make_env, lambda env, repo: env.sw.rechain(env.sw.remove_signatures_field(repo, "targets"))
    )
    env.refuse(MalformedError)


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "targets/releases"])
def test_A02_signed_by_unauthorised_key(make_env: MakeEnv, role: str) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        other = "snapshot" if role == "timestamp" else "timestamp"
        bad = env.sw.sign_with_wrong_key(repo, role, env.builder.keys(other)[0])
        return bad if role == "timestamp" else env.sw.rechain(bad, [role])

    first_use_variant(make_env, mutate).refuse(ThresholdError)


def test_A02_attacker_key_on_warm_cache(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.builder.add_target("1.0", "66" * 32, 530, role="targets/releases")
    repo = env.builder.publish()
    bad = env.sw.rechain(env.sw.sign_with_wrong_key(repo, "targets/releases"), ["targets/releases"])
    env.serve(bad)
    env.refuse(ThresholdError)


@pytest.mark.parametrize("how", ["edited-content", "flipped-signature-bit"])
def test_A03_tampered_content(make_env: MakeEnv, how: str) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        if how == "edited-content":
            path = ["targets", "1.0", "hashes", "sha256"]
            bad = env.sw.set_field(repo, "targets/releases", path, b64("66" * 32))
        else:
            bad = env.sw.corrupt_signatures(repo, "targets/releases")
        return env.sw.rechain(bad, ["targets/releases"])

    first_use_variant(make_env, mutate).refuse(ThresholdError)


def test_A04_below_threshold(make_env: MakeEnv) -> None:
    builder = baseline_builder()
    first, second = builder.keys("targets")[0], builder.new_key()
    builder.rotate_key("targets", [first, second], threshold=2)
    builder.set_signers("targets", [first])
    env = make_env(builder)
    env.refuse(ThresholdError)
    builder.set_signers("targets", None)  # both keys sign: accepted (the test can fail)
    env.serve()
    assert digest_of(env) == "sha256:" + D1


def test_A06_duplicate_keyids_in_a_role(make_env: MakeEnv) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        keyid = env.builder.keys("snapshot")[0].keyid
        signed = copy.deepcopy(repo.signed("root"))
        signed["roles"]["snapshot"] = {"keyids": [keyid] * 6, "threshold": 6}
        bad = env.sw.resign_envelope(repo, "root", signed)
        bad = env.sw.duplicate_signatures(env.sw.rechain(bad, ["root"]), "snapshot", 6)
        return env.sw.rechain(bad, ["snapshot"])

    first_use_variant(make_env, mutate).refuse(MalformedError)


def test_A08_declared_keyid_does_not_match_key(make_env: MakeEnv) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        real = env.builder.keys("targets")[0]
        fake_id = hashlib.sha256(b"not the key").hexdigest()
        signed = copy.deepcopy(repo.signed("root"))
        signed["keys"][fake_id] = signed["keys"].pop(real.keyid)
        signed["roles"]["targets"]["keyids"] = [fake_id]
        bad = env.sw.resign_envelope(repo, "root", signed)
        bad = env.sw.sign_with_wrong_key(bad, "targets", real, claim_keyid=fake_id)
        return env.sw.rechain(bad, ["root", "targets"])

    first_use_variant(make_env, mutate).refuse(MalformedError)


@pytest.mark.parametrize(
    ("threshold", "error"),
    [(0, MalformedError), (-1, MalformedError), ("1", MalformedError), (6, ThresholdError)],
)
def test_A09_degenerate_thresholds(
    make_env: MakeEnv, threshold: Any, error: type[Exception]
) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        signed = copy.deepcopy(repo.signed("root"))
        signed["roles"]["timestamp"]["threshold"] = threshold
        bad = env.sw.resign_envelope(repo, "root", signed)
        if threshold == 0:
            bad = env.sw.clear_signatures(bad, "timestamp")
        return env.sw.rechain(bad, ["root"])

    first_use_variant(make_env, mutate).refuse(error)  # type: ignore[arg-type]


def _der_signature(env: Env, repo: Repo, role: str) -> Repo:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = env.builder.keys(role)[0]
    assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
    der = key.private_key.sign(encode_canonical(repo.signed(role)), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "signed": repo.signed(role),
        "signatures": [
            {"keyid": key.keyid, "method": "ecdsa", "sig": base64.b64encode(der).decode()}
        ],
    }
    return env.sw.set_envelope(repo, role, envelope)


@pytest.mark.parametrize("how", ["rsapss-on-ecdsa", "eddsa", "unknown", "der", "zero"])
def test_A10_wrong_method_or_encoding_is_not_counted(make_env: MakeEnv, how: str) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        role = "targets"
        if how == "rsapss-on-ecdsa":
            bad = env.sw.set_method(repo, role, "rsapss")
        elif how == "eddsa":
            bad = env.sw.set_method(repo, role, "eddsa")
        elif how == "unknown":
            bad = env.sw.set_method(repo, role, "ecdsa-sha3-whatever")
        elif how == "der":
            bad = _der_signature(env, repo, role)
        else:
            envelope = copy.deepcopy(repo.envelope(role))
            envelope["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()
            bad = env.sw.set_envelope(repo, role, envelope)
        return env.sw.rechain(bad, [role])

    first_use_variant(make_env, mutate).refuse(ThresholdError)


@pytest.mark.parametrize("junk", ["empty-sig-of-listed-key", "unknown-keyid", "bad-sig-first"])
def test_A11_junk_signatures_beside_a_quorum_are_accepted(make_env: MakeEnv, junk: str) -> None:
    builder = baseline_builder()
    good, extra = builder.keys("timestamp")[0], builder.new_key()
    builder.rotate_key("timestamp", [good, extra], threshold=1)
    env = make_env(builder, publish=False)
    repo = builder.publish()
    sw = env.sw
    if junk == "empty-sig-of-listed-key":
        envelope = copy.deepcopy(repo.envelope("timestamp"))
        for sig in envelope["signatures"]:
            if sig["keyid"] == extra.keyid:
                sig["sig"] = ""
        repo = sw.set_envelope(repo, "timestamp", envelope)
    elif junk == "unknown-keyid":
        repo = sw.add_junk_signature(repo, "timestamp")
    else:
        repo = sw.add_junk_signature(repo, "timestamp", keyid=extra.keyid, first=True)
    env.serve(repo)
    assert digest_of(env) == "sha256:" + D1


def test_A13_snapshot_served_as_timestamp(make_env: MakeEnv) -> None:
    builder = baseline_builder()
    builder.rotate_key("snapshot", builder.keys("timestamp"))  # a key shared by two roles
    env = make_env(builder, publish=False)
    repo = builder.publish()
    env.serve(repo.with_role_bytes("timestamp", repo.role_bytes("snapshot")))
    env.refuse(MalformedError)


def _envelope_edit(role: str, edit: Callable[[dict[str, Any]], Any]) -> Callable[[Env, Repo], Repo]:
    def mutate(env: Env, repo: Repo) -> Repo:
        envelope = copy.deepcopy(repo.envelope(role))
        edit(envelope)
        bad = env.sw.set_envelope(repo, role, envelope)
        return bad if role in ("root", "timestamp") else env.sw.rechain(bad, [role])

    return mutate


def _root_keys_as_list(env: Env, repo: Repo) -> Repo:
    signed = copy.deepcopy(repo.signed("root"))
    signed["keys"] = list(signed["keys"].values())
    return env.sw.rechain(env.sw.resign_envelope(repo, "root", signed), ["root"])


def _short_ed25519_key(env: Env, repo: Repo) -> Repo:
    signed = copy.deepcopy(repo.signed("targets"))
    key_id = next(iter(signed["delegations"]["keys"]))
    signed["delegations"]["keys"][key_id] = {
        "keytype": "ed25519",
        "keyval": {"private": None, "public": "AAA="},
    }
    return env.sw.rechain(env.sw.resign_envelope(repo, "targets", signed), ["targets"])


A14_CASES: dict[str, Callable[[Env, Repo], Repo]] = {
    "not-json": lambda env, repo: env.sw.rechain(env.sw.invalid_json(repo, "targets"), ["targets"]),
    "signed-is-a-string": _envelope_edit("targets", lambda e: e.update(signed="x")),
    "signatures-is-an-object": _envelope_edit("timestamp", lambda e: e.update(signatures={})),
    "keys-is-a-list": _root_keys_as_list,
    "required-field-missing": lambda env, repo: env.sw.rechain(
        env.sw.set_field(repo, "targets", ["targets"], DELETE, resign=True), ["targets"]
    ),
    "sig-not-base64": _envelope_edit(
        "timestamp", lambda e: e["signatures"][0].update(sig="!!not base64!!")
    ),
    "ed25519-key-of-2-bytes": _short_ed25519_key,
}


@pytest.mark.parametrize("case", sorted(A14_CASES))
def test_A14_malformed_documents(make_env: MakeEnv, case: str) -> None:
    first_use_variant(make_env, A14_CASES[case]).refuse(MalformedError)


# =========================================================================== B. freshness


def two_publishes(make_env: MakeEnv) -> tuple[Env, list[Repo]]:
    """S0: timestamp, snapshot, targets and releases at version 2 are cached."""
    env = make_env()
    env.update()
    env.builder.add_target("1.1", "12" * 32, 534)
    env.builder.add_target("1.1", "13" * 32, 535, role="targets/releases")
    env.serve()
    env.update()
    env.server.clear_requests()
    return env, list(env.builder.history)


def test_B01_timestamp_rollback(make_env: MakeEnv) -> None:
    env, history = two_publishes(make_env)
    env.serve(history[0])
    env.refuse(RollbackError)


def test_B02_same_timestamp_version_other_content_keeps_cache(make_env: MakeEnv) -> None:
    env, history = two_publishes(make_env)
    before = env.cache()
    env.builder.add_target("1.0", "77" * 32, 530, role="targets/releases")
    newer = env.builder.publish()
    old_version = history[-1].signed("timestamp")["version"]
    replay = env.sw.set_version(newer, "timestamp", old_version)  # re-signed, same version
    env.serve(replay)
    result, engine = env.pull()
    assert result.error is None, result.error
    assert ("pull", GUN, "sha256:" + D1) in engine.calls  # the cached pointer, not the new one
    assert any("keeping the cached copy" in w for w in env.warnings)
    new_snapshot = consistent_name("snapshot", newer.role_bytes("snapshot"))
    assert new_snapshot not in names_requested(env)
    assert env.cache() == before


def test_B03_snapshot_rollback_and_H08_nothing_persisted(make_env: MakeEnv) -> None:
    env, history = two_publishes(make_env)
    bad = env.sw.take(history[-1], "snapshot", history[0])
    bad = env.sw.rechain(bad, ["snapshot"], bump=True)  # timestamp v3 → snapshot v1
    env.serve(bad)
    env.refuse(RollbackError)
    assert (env.metadata_dir / "timestamp.json").read_bytes() == history[-1].role_bytes("timestamp")


@pytest.mark.parametrize("role", ["targets", "targets/releases"])
def test_B04_targets_or_delegation_rollback(make_env: MakeEnv, role: str) -> None:
    env, history = two_publishes(make_env)
    bad = env.sw.rechain(env.sw.take(history[-1], role, history[0]), [role], bump=True)
    env.serve(bad)
    env.refuse(RollbackError)


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets"])
def test_B05_expired_top_level_metadata(make_env: MakeEnv, role: str) -> None:
    env = warm(make_env)
    repo = env.builder.publish()
    bad = env.sw.expire(repo, role)
    if role != "timestamp":
        bad = env.sw.rechain(bad, [role])
    env.serve(bad)
    env.refuse(ExpiredError)


def test_B06_expired_releases_refused_without_fallback(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.builder.set_expiry("targets/releases", NOW - dt.timedelta(minutes=1))
    env.serve()
    env.refuse(ExpiredError)  # "1.0" is also in targets: it must not be used instead


def test_B07a_expired_final_root_is_refused_but_persisted(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.builder.set_expiry("root", NOW - dt.timedelta(minutes=1))
    repo = env.serve()
    new_root = repo.role_bytes("root")

    def only_root_rotated(before: CacheState, after: CacheState) -> None:
        key = f"tuf/{GUN}/metadata/root.json"
        assert after[key] == (new_root, 0o600)
        assert {k: v for k, v in after.items() if k != key} == {
            k: v for k, v in before.items() if k != key
        }

    env.refuse(ExpiredError, cache_may_change=only_root_rotated)


def test_B07b_expired_intermediate_root_is_fine(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.builder.set_expiry("root", NOW - dt.timedelta(minutes=1))
    env.builder.rotate_key("root")  # v2: new key, expired metadata
    env.builder.publish()
    env.builder.set_expiry("root", None)
    env.builder.rotate_key("root")  # v3: signed by v2's key and its own only
    repo = env.serve()
    assert digest_of(env) == "sha256:" + D1
    assert "2.root.json" in names_requested(env)
    assert (env.metadata_dir / "root.json").read_bytes() == repo.role_bytes("root")


def _fast_forwarded(make_env: MakeEnv) -> Env:
    env = warm(make_env)
    repo = env.builder.repo
    env.serve(env.sw.set_version(repo, "timestamp", 1_000_000))
    env.update()  # a validly signed timestamp v1000000 is now cached
    return env


def test_B10_fast_forward_recovers_after_timestamp_key_rotation(make_env: MakeEnv) -> None:
    env = _fast_forwarded(make_env)
    env.builder.rotate_key("timestamp")
    env.serve()
    assert digest_of(env) == "sha256:" + D1


def test_B10_fast_forward_without_rotation_is_rollback(make_env: MakeEnv) -> None:
    env = _fast_forwarded(make_env)
    env.serve()  # a legitimate timestamp, version far below the cached one
    env.refuse(RollbackError)


@pytest.mark.parametrize(
    ("expires", "error"),
    [
        ("2116-01-11T16:58:57.119711158-08:00", None),
        ("2099-12-31T23:59:59Z", None),
        ("2030-01-01T00:00:00", MalformedError),
        ("2030-02-30T00:00:00Z", MalformedError),
        ("10000-01-01T00:00:00Z", MalformedError),
        ("2030-01-01T23:59:60Z", MalformedError),
        ("2030-01-01 00:00:00Z", MalformedError),
        ("20300101T000000Z", MalformedError),
        (1893456000, MalformedError),
        ("0001-01-01T00:00:00Z", ExpiredError),
    ],
)
def test_B11_expiry_formats(make_env: MakeEnv, expires: Any, error: Any) -> None:
    env = first_use_variant(
        make_env,
        lambda env, repo: env.sw.set_field(repo, "timestamp", ["expires"], expires, resign=True),
    )
    if error is None:
        assert digest_of(env) == "sha256:" + D1
    else:
        env.refuse(error)


def _timestamp_with_version_text(env: Env, repo: Repo, text: bytes, signed_as: Any) -> Repo:
    """A timestamp whose file says `"version":<text>`, signed over `signed_as` (what a Go
    verifier would canonicalise the value to), so only the type of the value is wrong."""
    signed = copy.deepcopy(repo.signed("timestamp"))
    signed["version"] = signed_as
    envelope = sign_envelope(signed, env.builder.signing_keys("timestamp"))
    signed["version"] = 777_777_777
    data = encode_envelope({"signed": signed, "signatures": envelope["signatures"]})
    assert data.count(b'"version":777777777') == 1
    return repo.with_role_bytes(
        "timestamp", data.replace(b'"version":777777777', b'"version":' + text)
    )


@pytest.mark.parametrize(
    ("text", "signed_as"),
    [
        (b"true", True),
        (b'"2"', "2"),
        (b"2.0", 2),
        (b"1e3", 1000),
        (b"-1", -1),
        (b"0", 0),
        (b"18446744073709551616", 2**53),
    ],
)
def test_B12_version_types(make_env: MakeEnv, text: bytes, signed_as: Any) -> None:
    env = first_use_variant(
        make_env, lambda env, repo: _timestamp_with_version_text(env, repo, text, signed_as)
    )
    env.refuse(MalformedError)


def test_B12_control_plain_integer_version_accepted(make_env: MakeEnv) -> None:
    env = first_use_variant(
        make_env, lambda env, repo: _timestamp_with_version_text(env, repo, b"5", 5)
    )
    assert digest_of(env) == "sha256:" + D1


@pytest.mark.parametrize("how", ["server-stopped", "timestamp-404", "timestamp-503"])
def test_B13a_unreachable_server_with_fresh_cache(make_env: MakeEnv, how: str) -> None:
    env = warm(make_env)
    before = env.cache()
    if how == "server-stopped":
        env.server.stop()
    elif how == "timestamp-404":
        env.server.add_fault("*/timestamp.json", status=404)
    else:
        env.server.add_fault("*/timestamp.json", status=503)
    result, engine = env.pull()
    assert result.error is None, result.error
    assert ("pull", GUN, "sha256:" + D1) in engine.calls
    assert any("using cached trust data" in w for w in env.warnings)
    assert env.cache() == before


def test_B13a_auth_failure_never_falls_back(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.server.add_fault("*/timestamp.json", status=401)
    env.refuse(AuthError)


def test_B13b_unreachable_server_with_expired_cache(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.server.stop()
    error = env.refuse(NetworkError, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=15))
    assert "expired" in error.message


# =========================================================================== C. consistency


def test_C01_snapshot_hash_differs_from_timestamp(make_env: MakeEnv) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        version = repo.signed("snapshot")["version"]
        return env.sw.set_version(repo, "snapshot", version + 1)  # same length, re-signed

    first_use_variant(make_env, mutate).refuse(HashMismatchError)


@pytest.mark.parametrize(("how", "error"), [("padded", LengthError), ("cut", HashMismatchError)])
def test_C03_length_limits(make_env: MakeEnv, how: str, error: Any) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        if how == "padded":
            return env.sw.pad(repo, "snapshot", 1024 * 1024)
        return env.sw.truncate(repo, "snapshot", len(repo.role_bytes("snapshot")) - 10)

    first_use_variant(make_env, mutate).refuse(error)


@pytest.mark.parametrize("role", ["targets", "targets/releases"])
def test_C04_targets_hash_differs_from_snapshot(make_env: MakeEnv, role: str) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        version = repo.signed(role)["version"]
        return env.sw.set_version(repo, role, version + 1)  # validly signed, not the bound one

    first_use_variant(make_env, mutate).refuse(HashMismatchError)


def test_C05_snapshot_names_a_root_the_server_withholds(make_env: MakeEnv) -> None:
    env = warm(make_env)
    old_root = env.builder.repo.role_bytes("root")
    env.builder.bump("root")
    repo = env.builder.publish()
    new_root = repo.role_bytes("root")
    files = dict(repo.files)
    for name, value in repo.files.items():
        if value == new_root:
            files[name] = old_root  # a stale root replayed under every root name
    env.serve(Repo(repo.gun, files, repo.roles))
    env.refuse(HashMismatchError)


def test_C05_snapshot_names_an_older_root(make_env: MakeEnv) -> None:
    env = warm(make_env)
    old_root = env.builder.repo.role_bytes("root")
    env.builder.bump("root")
    env.serve()
    env.update()  # root v2 trusted now
    repo = env.builder.publish()
    signed = copy.deepcopy(repo.signed("snapshot"))
    signed["meta"]["root"] = file_meta(old_root)
    bad = env.sw.rechain(env.sw.resign_envelope(repo, "snapshot", signed), ["snapshot"])
    env.serve(bad)
    env.refuse(HashMismatchError)


@pytest.mark.parametrize(
    ("role", "entry"), [("timestamp", "snapshot"), ("snapshot", "targets"), ("snapshot", "root")]
)
def test_C06_required_meta_missing(make_env: MakeEnv, role: str, entry: str) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        bad = env.sw.remove_meta(repo, role, entry)
        return bad if role == "timestamp" else env.sw.rechain(bad, ["snapshot"])

    first_use_variant(make_env, mutate).refuse(MalformedError)


def test_C07_releases_missing_from_snapshot(make_env: MakeEnv) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        return env.sw.rechain(
            env.sw.remove_meta(repo, "snapshot", "targets/releases"), ["snapshot"]
        )

    env = first_use_variant(make_env, mutate)
    env.refuse(DelegationError)
    assert not any("releases" in name for name in names_requested(env))


def test_C08_releases_dropped_from_new_snapshot(make_env: MakeEnv) -> None:
    env = warm(make_env)
    repo = env.builder.publish()
    bad = env.sw.rechain(
        env.sw.remove_meta(repo, "snapshot", "targets/releases"), ["snapshot"], bump=True
    )
    env.serve(bad)
    env.refuse(RollbackError)


def test_C08_legitimate_signer_remove_is_accepted(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.builder.remove_delegation("targets/releases")
    env.serve()
    assert digest_of(env) == "sha256:" + D_TARGETS


def only_verified_updates(env: Env) -> Callable[[CacheState, CacheState], None]:
    """For refusals *after* a fully verified update (the metadata is fine, the entry is not):
    every file that changed holds exactly the bytes the server now serves."""

    def check(before: CacheState, after: CacheState) -> None:
        repo = env.builder.repo
        prefix = f"tuf/{GUN}/metadata/"
        for key, (data, mode) in after.items():
            if before.get(key) != (data, mode):
                role = key.removeprefix(prefix).removesuffix(".json")
                assert (data, mode) == (repo.role_bytes(role), 0o600), key

    return check


@pytest.mark.parametrize(
    ("case", "hashes", "length"),
    [
        ("a-only-sha512", {"sha512": base64.b64encode(bytes(64)).decode()}, 530),
        ("b-sha256-31-bytes", {"sha256": base64.b64encode(bytes(31)).decode()}, 530),
        ("c-base64-junk", {"sha256": b64(D1)[:-4] + "*" + b64(D1)[-3:]}, 530),
        ("c-base64-no-padding", {"sha256": b64(D1).rstrip("=")}, 530),
        ("d-length-0", {"sha256": b64(D1)}, 0),
        ("d-length-negative", {"sha256": b64(D1)}, -1),
        ("d-length-huge", {"sha256": b64(D1)}, 2**60),
    ],
)
def test_C09_bad_target_entry(make_env: MakeEnv, case: str, hashes: Any, length: int) -> None:
    env = warm(make_env)
    env.builder.add_target("1.0", D1, length, role="targets/releases", hashes=hashes)
    env.serve()
    env.refuse(MalformedError, cache_may_change=only_verified_updates(env))


def test_C10_releases_replayed_from_another_repository(make_env: MakeEnv) -> None:
    env = make_env(publish=False)
    repo = env.builder.publish()
    other = RepoBuilder("127.0.0.1:5000/ns/other", now=NOW)
    other.add_delegation("targets/releases", keys=env.builder.keys("targets/releases"))
    other.add_target("1.0", "99" * 32, 530, role="targets/releases")
    other.add_target("2.0", "98" * 32, 531, role="targets/releases")
    for name in ("targets/alice", "targets/releases/ci"):
        other.add_delegation(name)  # same shape, so the copy has the same length
    theirs = other.publish()
    assert len(theirs.role_bytes("targets/releases")) == len(repo.role_bytes("targets/releases"))
    env.serve(env.sw.take(repo, "targets/releases", theirs))
    env.refuse(HashMismatchError)


# =========================================================================== D. root, pinning


def _rotated_twice(make_env: MakeEnv) -> tuple[Env, list[Any], list[Any]]:
    """Cached root v1 (K1); the server has v2 (K2, signed K1+K2) and v3 (K3, signed K2+K3)."""
    env = warm(make_env)
    k1 = env.builder.keys("root")
    k2 = env.builder.rotate_key("root")
    env.builder.publish()
    env.builder.rotate_key("root")
    return env, k1, k2


def test_D03_walk_of_version_roots(make_env: MakeEnv) -> None:
    env, _, _ = _rotated_twice(make_env)
    repo = env.serve()
    assert digest_of(env) == "sha256:" + D1
    assert "2.root.json" in names_requested(env)
    assert (env.metadata_dir / "root.json").read_bytes() == repo.role_bytes("root")


def test_D03_missing_intermediate_root(make_env: MakeEnv) -> None:
    env, _, _ = _rotated_twice(make_env)
    repo = env.builder.publish()
    files = {name: data for name, data in repo.files.items() if name != "2.root.json"}
    env.serve(Repo(repo.gun, files, repo.roles))
    env.refuse(NotFoundError)


def test_D03_wrong_version_at_version_url(make_env: MakeEnv) -> None:
    env, k1, k2 = _rotated_twice(make_env)
    repo = env.builder.publish()
    v2 = copy.deepcopy(env.builder.history[-2].signed("root"))
    assert v2["version"] == 2
    v2["version"] = 5  # validly signed by the old and its own key, but not version 2
    forged = encode_envelope(sign_envelope(v2, [*k1, *k2]))
    env.serve(Repo(repo.gun, {**repo.files, "2.root.json": forged}, repo.roles))
    env.refuse(RootRotationError)


def _root_edit(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Env, Repo], Repo]:
    def mutate(env: Env, repo: Repo) -> Repo:
        signed = copy.deepcopy(repo.signed("root"))
        edit(signed)
        return env.sw.rechain(env.sw.resign_envelope(repo, "root", signed), ["root"])

    return mutate


D05_CASES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "no-snapshot-role": lambda s: s["roles"].pop("snapshot"),
    "targets-keyids-empty": lambda s: s["roles"]["targets"].update(keyids=[]),
    "keyid-without-key": lambda s: s["roles"]["targets"]["keyids"].append("ab" * 32),
    "consistent-snapshot-not-bool": lambda s: s.update(consistent_snapshot="yes"),
    "roles-is-a-list": lambda s: s.update(roles=list(s["roles"].values())),
}


@pytest.mark.parametrize("case", sorted(D05_CASES))
def test_D05_structurally_broken_root(make_env: MakeEnv, case: str) -> None:
    first_use_variant(make_env, _root_edit(D05_CASES[case])).refuse(MalformedError)


def test_D06_first_use_is_trusted_persisted_and_reported(make_env: MakeEnv) -> None:
    env = make_env()
    notices: list[str] = []
    found = resolve_reference(parse(REF), env.settings, client=env.client(), notice=notices.append)
    assert [r.digest for r in found] == ["sha256:" + D1]  # ACCEPT
    assert len(notices) == 1 and "trust on first use" in notices[0]
    assert env.builder.keys("root")[0].canonical_id in notices[0]
    assert (env.metadata_dir / "root.json").read_bytes() == env.builder.repo.role_bytes("root")
    resolve_reference(parse(REF), env.settings, client=env.client(), notice=notices.append)
    assert len(notices) == 1  # the second run is not a first use


def test_D06_disable_tofu_refuses_first_use(make_env: MakeEnv) -> None:
    env = make_env()
    env.refuse(TrustPinError, trust_pinning=TrustPinning(disable_tofu=True))
    assert not env.metadata_dir.exists() or not any(env.metadata_dir.iterdir())


def test_D07_pinned_certificate_mismatch(make_env: MakeEnv) -> None:
    env = make_env()
    env.refuse(TrustPinError, trust_pinning=TrustPinning(certs={GUN: ("0" * 64,)}))
    right = env.builder.keys("root")[0].canonical_id
    data = env.update(trust_pinning=TrustPinning(certs={GUN: (right,)}))
    assert root_key_id(data) == right


def test_D09a_configured_pin_outranks_the_cache(make_env: MakeEnv) -> None:
    env = warm(make_env)
    error = env.refuse(TrustPinError, trust_pinning=TrustPinning(certs={GUN: ("0" * 64,)}))
    assert str(env.metadata_dir) in (error.hint or "")


def test_D10_root_keys_that_are_not_certificates(make_env: MakeEnv) -> None:
    env = make_env(baseline_builder_with(root_keytype="ecdsa"))
    env.refuse(CertificateError)


def baseline_builder_with(**kwargs: Any) -> RepoBuilder:
    builder = RepoBuilder(GUN, now=NOW, **kwargs)
    builder.add_target("1.0", D_TARGETS, 528)
    builder.add_delegation("targets/releases")
    builder.add_target("1.0", D1, 530, role="targets/releases")
    return builder


def test_D11_timestamp_key_rotation_with_version_reset(make_env: MakeEnv) -> None:
    env = warm(make_env)
    env.builder.rotate_key("timestamp")
    repo = env.builder.publish()
    env.serve(env.sw.set_version(repo, "timestamp", 1))  # signed by the new key
    assert digest_of(env) == "sha256:" + D1


# =========================================================================== E. delegations


def test_E04_child_paths_are_restricted_by_the_parent(make_env: MakeEnv) -> None:
    builder = baseline_builder(others=False)
    builder.remove_delegation("targets/releases")
    builder.add_delegation("targets/releases", paths=["stable-"])
    builder.add_delegation("targets/releases/ci", paths=[""])
    builder.add_target("latest", "c2" * 32, 540, role="targets/releases/ci")
    builder.add_target("stable-1", "c3" * 32, 541, role="targets/releases/ci")
    builder.add_target("stable-1", "c3" * 32, 541, role="targets/releases")
    env = make_env(builder)
    data = env.update()
    assert data.roles["targets/releases/ci"].paths == ()
    assert data.roles["targets/releases"].paths == ("stable-",)
    env.refuse(NoSuchTagError, f"{GUN}:latest")
    # stable-1 is within the parent's paths and signed there; the child's signature of it does
    # not count (a docker pull never reads the child, so only the signer list can show it).
    assert digest_of(env, f"{GUN}:stable-1") == "sha256:" + "c3" * 32
    listed = inspect_repository(data, GUN, None)["SignedTags"]
    assert isinstance(listed, list)
    signed = [t for t in listed if t["SignedTag"] == "stable-1"]
    assert signed == [{"SignedTag": "stable-1", "Digest": "c3" * 32, "Signers": [REPO_ADMIN]}]


def test_E05_delegation_without_paths_has_no_authority(make_env: MakeEnv) -> None:
    builder = baseline_builder(others=False)
    builder.remove_delegation("targets/releases")
    builder.add_delegation("targets/releases", paths=None)
    builder.add_target("1.0", D1, 530, role="targets/releases")
    builder.add_target("2.0", D2, 531, role="targets/releases")
    env = make_env(builder)
    assert digest_of(env) == "sha256:" + D_TARGETS
    env.refuse(NoSuchTagError, f"{GUN}:2.0")


def _releases_threshold_two(env: Env, repo: Repo) -> Repo:
    return repo


E06_CASES: dict[str, tuple[Callable[[Env, Repo], Repo], type[Exception]]] = {
    "bad-signature": (
        lambda env, repo: env.sw.rechain(
            env.sw.corrupt_signatures(repo, "targets/releases"), ["targets/releases"]
        ),
        ThresholdError,
    ),
    "expired": (
        lambda env, repo: env.sw.rechain(
            env.sw.expire(repo, "targets/releases"), ["targets/releases"]
        ),
        ExpiredError,
    ),
    "hash-mismatch": (
        lambda env, repo: env.sw.set_version(repo, "targets/releases", 2),
        HashMismatchError,
    ),
    "404-while-listed": (
        lambda env, repo: Repo(
            repo.gun,
            {n: d for n, d in repo.files.items() if not n.startswith("targets/releases.")},
            repo.roles,
        ),
        NotFoundError,
    ),
}


@pytest.mark.parametrize("case", sorted(E06_CASES))
def test_E06_broken_releases_never_falls_back_to_targets(make_env: MakeEnv, case: str) -> None:
    mutate, error = E06_CASES[case]
    first_use_variant(make_env, mutate).refuse(error)  # type: ignore[arg-type]


def test_E06_releases_below_threshold(make_env: MakeEnv) -> None:
    builder = baseline_builder()
    first, second = builder.keys("targets/releases")[0], builder.new_key()
    builder.rotate_key("targets/releases", [first, second], threshold=2)
    builder.set_signers("targets/releases", [first])
    make_env(builder).refuse(ThresholdError)


@pytest.mark.parametrize(
    "name",
    [
        "root",
        "targets",
        "targets/../root",
        "targets//releases",
        "targets/releases/",
        "targets/Releases",
        "targets/releases%2F..",
        "targets/rel\u0435ases",  # Cyrillic "е"
        "targets/" + "r" * 250,
        "targets/alice/deeper",  # not a direct child of targets
        "targets/releases",  # listed twice
    ],
)
def test_E07_invalid_delegation_names(make_env: MakeEnv, name: str) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        signed = copy.deepcopy(repo.signed("targets"))
        keyid = env.builder.keys("targets/releases")[0].keyid
        signed["delegations"]["roles"].append(
            {"name": name, "keyids": [keyid], "threshold": 1, "paths": [""]}
        )
        return env.sw.rechain(env.sw.resign_envelope(repo, "targets", signed), ["targets"])

    first_use_variant(make_env, mutate).refuse(MalformedError)


def test_E08_too_many_delegations(make_env: MakeEnv) -> None:
    builder = baseline_builder(others=False)
    for index in range(5):
        builder.add_delegation(f"targets/d{index}")
    env = make_env(builder)
    env.refuse(DelegationError, limits=replace(FAST, max_delegations=3))
    assert digest_of(env, limits=replace(FAST, max_delegations=6)) == "sha256:" + D1


def test_E08_too_deep(make_env: MakeEnv) -> None:
    builder = baseline_builder(others=False)
    for name in ("targets/a", "targets/a/b", "targets/a/b/c"):
        builder.add_delegation(name)
    env = make_env(builder)
    env.refuse(DelegationError, limits=replace(FAST, max_delegation_depth=2))
    assert digest_of(env, limits=replace(FAST, max_delegation_depth=3)) == "sha256:" + D1


def test_E08_self_delegation_is_an_invalid_name(make_env: MakeEnv) -> None:
    """A cycle needs a role to list itself or an ancestor; neither is a direct child, so the
    listing file is refused as malformed (E07's decided rule) before any walk."""

    def mutate(env: Env, repo: Repo) -> Repo:
        role = "targets/alice"
        signed = copy.deepcopy(repo.signed(role))
        key = env.builder.keys(role)[0]
        signed["delegations"] = {
            "keys": {key.keyid: key.to_dict()},
            "roles": [{"name": role, "keyids": [key.keyid], "threshold": 1, "paths": [""]}],
        }
        return env.sw.rechain(env.sw.resign_envelope(repo, role, signed), [role])

    first_use_variant(make_env, mutate).refuse(MalformedError)


def test_E09_delegation_key_not_defined(make_env: MakeEnv) -> None:
    def mutate(env: Env, repo: Repo) -> Repo:
        signed = copy.deepcopy(repo.signed("targets"))
        del signed["delegations"]["keys"][env.builder.keys("targets/releases")[0].keyid]
        return env.sw.rechain(env.sw.resign_envelope(repo, "targets", signed), ["targets"])

    first_use_variant(make_env, mutate).refuse(MalformedError)


def test_E10_cached_releases_after_its_key_was_rotated(make_env: MakeEnv) -> None:
    env = warm(make_env)
    old = env.builder.repo
    env.builder.rotate_key("targets/releases")
    repo = env.builder.publish()
    stale = env.sw.rechain(env.sw.take(repo, "targets/releases", old), ["targets/releases"])
    env.serve(stale)
    env.refuse(ThresholdError)
    assert not any(n.startswith("targets/releases.") for n in names_requested(env))


# =========================================================================== F. x509


def test_F01_root_certificate_for_another_repository(make_env: MakeEnv) -> None:
    builder = baseline_builder()
    builder.rotate_key(
        "root", [builder.new_key("ecdsa-x509", cn="docker.io/library/ubuntu")], sign_with="new"
    )
    make_env(builder).refuse(CertificateError)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - dt.timedelta(days=3660), NOW - DAY),  # expired
        (NOW + 3 * DAY, NOW + dt.timedelta(days=3650)),  # not yet valid (beyond 1 day leeway)
    ],
)
def test_F02_root_certificate_validity(
    make_env: MakeEnv, not_before: dt.datetime, not_after: dt.datetime
) -> None:
    builder = baseline_builder()
    key = builder.new_key("ecdsa-x509", not_before=not_before, not_after=not_after)
    builder.rotate_key("root", [key], sign_with="new")
    make_env(builder).refuse(CertificateError)


def test_F02_not_before_within_one_day_leeway_is_accepted(make_env: MakeEnv) -> None:
    builder = baseline_builder()
    key = builder.new_key("ecdsa-x509", not_before=dt.datetime.now(dt.UTC) + dt.timedelta(hours=12))
    builder.rotate_key("root", [key], sign_with="new")
    assert digest_of(make_env(builder)) == "sha256:" + D1


# =========================================================================== G. transport


def test_G02_no_trust_data(make_env: MakeEnv) -> None:
    env = make_env(publish=False)
    env.refuse(NoTrustDataError)


def test_G02_404_on_snapshot_is_a_network_error(make_env: MakeEnv) -> None:
    first_use_variant(make_env, lambda env, repo: env.sw.remove(repo, "snapshot")).refuse(
        NotFoundError
    )


def test_G03_503_after_bounded_retries(make_env: MakeEnv) -> None:
    env = make_env()
    env.server.add_fault("*/snapshot.*", status=503)
    env.refuse(NetworkError)
    assert len(env.server.requests_for("*/snapshot.*")) == FAST.retries + 1


@pytest.mark.parametrize("how", ["oversize", "endless"])
def test_G06_oversized_timestamp(make_env: MakeEnv, how: str) -> None:
    env = make_env()
    if how == "oversize":
        env.server.add_fault("*/timestamp.json", oversize=FAST.timestamp_max_bytes + 1)
    else:
        env.server.add_fault("*/timestamp.json", endless=True, endless_limit=8 << 20)
    env.refuse(LengthError)


def test_G06_false_small_content_length(make_env: MakeEnv) -> None:
    """HTTP framing ends the body at the declared length: what arrives is a whole, wrong
    body (G05: Malformed), never more than the header allowed."""
    env = make_env()
    env.server.add_fault("*/timestamp.json", oversize=1 << 20, content_length=100)
    env.refuse(MalformedError)


# =========================================================================== H. cache


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "targets/releases"])
def test_H02_corrupt_cached_file_is_downloaded_again(make_env: MakeEnv, role: str) -> None:
    env = warm(make_env)
    path = env.metadata_dir / f"{role}.json"
    path.write_bytes(b'{"signed": garbage')
    assert digest_of(env) == "sha256:" + D1
    assert path.read_bytes() == env.builder.repo.role_bytes(role)


@pytest.mark.parametrize("role", ["root", "targets", "targets/releases"])
def test_H06_symlink_planted_in_cache(make_env: MakeEnv, tmp_path: Path, role: str) -> None:
    env = warm(make_env)
    path = env.metadata_dir / f"{role}.json"
    decoy = tmp_path / "decoy.json"
    decoy.write_bytes(path.read_bytes())
    path.unlink()
    os.symlink(decoy, path)
    error = env.refuse(CacheError)
    assert error.exit_code == 5
    assert decoy.read_bytes() == env.builder.repo.role_bytes(role)


def test_H06_symlinked_metadata_directory(make_env: MakeEnv, tmp_path: Path) -> None:
    env = warm(make_env)
    elsewhere = tmp_path / "elsewhere"
    env.metadata_dir.rename(elsewhere)
    os.symlink(elsewhere, env.metadata_dir)
    env.refuse(CacheError)


def test_H07_gun_with_metadata_component(make_env: MakeEnv) -> None:
    env = make_env()
    env.refuse(InputError, "127.0.0.1:5000/ns/metadata/app:1.0")
    env.refuse(InputError, "127.0.0.1:5000/metadata:1.0")
    assert env.server.requests == []


@pytest.mark.parametrize("name", ["targets/metadata", "targets/releases/metadata"])
def test_H07_delegation_named_metadata_is_ignored(make_env: MakeEnv, name: str) -> None:
    builder = baseline_builder(others=False)
    builder.add_delegation(name)
    builder.add_target("meta-only", "4d" * 32, 560, role=name)
    env = make_env(builder)
    data = env.update()
    assert name not in data.roles
    assert any(name in w and "ignor" in w for w in env.warnings)
    assert not any(n.startswith(name + ".") for n in names_requested(env))
    assert not (env.metadata_dir / f"{name}.json").exists()
    assert lookup_tag(data, "1.0").digest == "sha256:" + D1
    env.refuse(NoSuchTagError, f"{GUN}:meta-only")


# =========================================================================== cache writes: commit


ALL_ROLES = {
    "root",
    "timestamp",
    "snapshot",
    "targets",
    "targets/releases",
    "targets/alice",
    "targets/releases/ci",
}


def metadata_files(env: Env) -> dict[str, bytes]:
    if not env.metadata_dir.exists():
        return {}
    return {
        str(p.relative_to(env.metadata_dir))[: -len(".json")]: p.read_bytes()
        for p in env.metadata_dir.rglob("*.json")
    }


@pytest.mark.parametrize("tag", ["never-signed", "alice-only"])
def test_H08_refused_first_contact_writes_nothing(make_env: MakeEnv, tag: str) -> None:
    """Issue 11 item 6: a first contact that ends in exit 4 leaves no root behind as the pin
    (nor any other file); the next run is a first contact again."""
    env = make_env()
    env.refuse(NoSuchTagError, f"{GUN}:{tag}")
    assert metadata_files(env) == {} and env.cache() == {}
    assert digest_of(env) == "sha256:" + D1  # then an accepted run pins the root
    assert set(metadata_files(env)) == ALL_ROLES


def test_refused_first_contact_announces_no_trust_on_first_use(make_env: MakeEnv) -> None:
    """Nothing was trusted, so nothing is announced; an accepted first contact is."""
    env = make_env()
    notices: list[str] = []
    with pytest.raises(NoSuchTagError):
        resolve_reference(
            parse(f"{GUN}:never-signed"), env.settings, client=env.client(), notice=notices.append
        )
    assert notices == [] and env.cache() == {}
    resolve_reference(parse(REF), env.settings, client=env.client(), notice=notices.append)
    assert len(notices) == 1 and "trust on first use" in notices[0]


def test_update_without_commit_writes_nothing_until_commit(make_env: MakeEnv) -> None:
    env = make_env()
    client = env.client()
    data = client.update(parse(REF), commit=False)
    assert env.cache() == {}
    assert set(data.pending.files) == ALL_ROLES
    assert data.pending.read == dict.fromkeys(ALL_ROLES)  # every role read, none cached
    client.commit(data)
    state = env.cache()
    assert {k: v for k, v in state.items()} == {
        f"tuf/{GUN}/metadata/{role}.json": (raw, 0o600) for role, raw in data.pending.files.items()
    }
    warnings = list(env.warnings)
    client.commit(data)  # twice: nothing new, nothing said
    assert env.cache() == state and env.warnings == warnings
    # The convenience default commits at once; a warm run has nothing pending.
    assert not env.update().pending
    again = env.client().update(parse(REF), commit=False)
    assert not again.pending and set(again.pending.read) == ALL_ROLES
    assert list(env.trust_dir.rglob(".tmp-*")) == []


def test_commit_writes_each_file_atomically_and_the_root_last(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env()
    client = env.client()
    data = client.update(parse(REF), commit=False)
    renamed: list[str] = []
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        name = str(Path(target).relative_to(env.metadata_dir))
        renamed.append(name)
        if name == "snapshot.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr("trust.notary.cache.os.replace", replace)
    client.commit(data)
    # Children before their parents, the top-level roles last, the root (the pin) at the end.
    assert renamed[-4:] == ["targets.json", "snapshot.json", "timestamp.json", "root.json"]
    assert sorted(renamed[:-4]) == [
        "targets/alice.json",
        "targets/releases.json",
        "targets/releases/ci.json",
    ]
    assert renamed.index("targets/releases/ci.json") < renamed.index("targets/releases.json")
    files = metadata_files(env)
    assert "snapshot" not in files  # the failed file: absent, not half-written
    assert files == {r: b for r, b in data.pending.files.items() if r != "snapshot"}
    assert list(env.trust_dir.rglob(".tmp-*")) == []
    assert any("could not write snapshot" in w and "not persisted" in w for w in env.warnings)
    monkeypatch.setattr("trust.notary.cache.os.replace", real_replace)
    assert digest_of(env) == "sha256:" + D1  # the next run verifies and completes the cache


def test_commit_leaves_a_cache_another_run_changed_meanwhile(make_env: MakeEnv) -> None:
    """Between `update(commit=False)` and `commit`, another process verified a newer state
    and wrote it: this run's older files must not replace it (no version goes backwards)."""
    env = make_env()
    stale = env.client().update(parse(REF), commit=False)
    env.builder.add_target("1.0", "77" * 32, 777, role="targets/releases")
    env.serve()
    assert digest_of(env) == "sha256:" + "77" * 32  # the other run, committed
    newer = env.cache()
    env.client().commit(stale)
    assert env.cache() == newer
    assert any("changed while this run verified it" in w for w in env.warnings)


def test_a_verified_root_rotation_is_written_without_commit(make_env: MakeEnv) -> None:
    """The one exception: a rotation of the cached, trusted root is written at once."""
    env = warm(make_env)
    before = env.cache()
    env.builder.rotate_key("root")
    repo = env.serve()
    data = env.client().update(parse(REF), commit=False)
    key = f"tuf/{GUN}/metadata/root.json"
    after = env.cache()
    assert after[key] == (repo.role_bytes("root"), 0o600)
    assert {k: v for k, v in after.items() if k != key} == {
        k: v for k, v in before.items() if k != key
    }
    assert "root" not in data.pending.files
    env.client().commit(data)  # the rotated root it wrote is not a change by someone else
    assert not [w for w in env.warnings if "changed while" in w]
    assert metadata_files(env)["root"] == repo.role_bytes("root")


# =========================================================================== cache lock


def lock_path(env: Env) -> Path:
    return env.trust_dir / "tuf" / GUN / ".trustpull.lock"


@pytest.mark.parametrize("kind", ["symlink", "dangling-symlink", "directory", "fifo"])
def test_H04_a_planted_lock_is_refused(make_env: MakeEnv, tmp_path: Path, kind: str) -> None:
    """Issue 11 item 7: the lock is opened with O_NOFOLLOW and must be a regular file; one
    that cannot be taken is CacheError (exit 5) naming it, never a silent unlocked run."""
    env = warm(make_env)
    lock = lock_path(env)
    lock.unlink()
    decoy = tmp_path / "decoy"
    if kind == "symlink":
        decoy.write_bytes(b"precious")
        lock.symlink_to(decoy)
    elif kind == "dangling-symlink":
        lock.symlink_to(decoy)
    elif kind == "directory":
        lock.mkdir()
    else:
        os.mkfifo(lock)
    env.server.clear_requests()
    error = env.refuse(CacheError)
    assert str(lock) in error.message and error.exit_code == 5
    assert env.server.requests == []  # refused before any network I/O
    if kind == "symlink":
        assert decoy.read_bytes() == b"precious"
    if kind == "dangling-symlink":
        assert not decoy.exists()


@pytest.mark.parametrize(
    ("where", "code"),
    [("open", errno.EACCES), ("open", errno.EPERM), ("flock", errno.ENOLCK)],
)
def test_H04_a_lock_that_cannot_be_taken_is_refused(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch, where: str, code: int
) -> None:
    """An existing lock file this process may not open (another user's, a changed mode), or a
    failing flock: CacheError naming the lock."""
    env = warm(make_env)
    lock = lock_path(env)
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any) -> int:
        if where == "open" and Path(path) == lock:
            raise OSError(code, os.strerror(code))
        return real_open(path, flags, *args)

    def fake_flock(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("trust.notary.cache.os.open", fake_open)
    if where == "flock":
        monkeypatch.setattr("trust.notary.cache.fcntl.flock", fake_flock)
    error = env.refuse(CacheError)
    assert str(lock) in error.message


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_H05_a_cache_that_cannot_be_written_at_all_runs_read_only(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A read-only home (H05, decided: accept and warn): the lock file cannot even be created,
    so the run goes on without it, read-only and saying so; it writes nothing."""
    env = make_env()
    lock = lock_path(env)
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == lock:
            raise OSError(code, os.strerror(code))
        return real_open(path, flags, *args)

    monkeypatch.setattr("trust.notary.cache.os.open", fake_open)
    result, engine = env.pull()
    assert result.error is None and result.pulled and result.exit_code == 0
    assert [c[0] for c in engine.calls if c[0] in ("pull", "tag")] == ["pull", "tag"]
    assert [c[2] for c in engine.calls if c[0] == "pull"] == ["sha256:" + D1]
    assert any("could not be locked" in w and "not persisted" in w for w in env.warnings)
    assert metadata_files(env) == {}


# =========================================================================== real-world data


@pytest.mark.parametrize("name", ["connaisseur-eve-image", "connaisseur-phbelitz-sample"])
def test_realworld_incomplete_sets_refused_over_https(isolated_home: Path, name: str) -> None:
    """The snapshot lists delegations whose files were never kept: the server 404s them and
    the client refuses, at a date when everything kept was valid and today."""
    from tests.unit.test_trusted_set import real_set, valid_moment

    rs = real_set(name)
    files = rs.load()
    served = {"root.json": files["root"], "timestamp.json": files["timestamp"]}
    for role, data in files.items():
        served[consistent_name(role, data)] = data
    with FixtureServer({rs.gun: served}) as server:
        install_ca(server, Path(os.environ["DOCKER_CONFIG"]))
        settings = Settings(
            trust_server_override=server.url,
            docker_config=Path(os.environ["DOCKER_CONFIG"]),
            limits=FAST,
        )
        ref = parse(f"{rs.gun}:test")
        with pytest.raises(NotFoundError):
            NotaryClient(settings, now=valid_moment(files), warn=lambda _: None).update(ref)
        with pytest.raises((ExpiredError, NotFoundError)):
            NotaryClient(settings, warn=lambda _: None).update(ref)
        metadata = Path(os.environ["DOCKER_CONFIG"]) / "trust" / "tuf" / rs.gun / "metadata"
        assert not metadata.exists() or not any(p.is_file() for p in metadata.rglob("*"))
