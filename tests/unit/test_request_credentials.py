"""Per-request credentials (issue 12 X49, attacks.md J07) and the proxy's session pool."""

from __future__ import annotations

import base64
import json
from typing import Any

from trust.credentials import RegistryAuth, from_engine_header, from_registry_config
from trust.notary.pool import SessionPool
from trust.proxy.verify import request_credentials
from trust.reference import parse


def _header(doc: Any, *, pad: bool = True) -> str:
    text = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    return text if pad else text.rstrip("=")


def test_engine_header_is_for_its_own_registry_only() -> None:
    value = _header({"username": "u", "password": "p", "serveraddress": "a.example"})
    assert from_engine_header(value, "a.example") == RegistryAuth("u", "p", "", "a.example")
    assert from_engine_header(value, "b.example") is None
    bare = _header({"username": "u", "password": "p"}, pad=False)
    assert from_engine_header(bare, "b.example") == RegistryAuth("u", "p", "", "b.example")
    hub = _header(
        {"username": "u", "password": "p", "serveraddress": "https://index.docker.io/v1/"}
    )
    assert from_engine_header(hub, "docker.io") is not None
    assert from_engine_header(hub, "a.example") is None


def test_engine_header_that_does_not_decode_is_anonymous() -> None:
    assert from_engine_header("e30=", "a.example") is None  # {}
    assert from_engine_header("%%%", "a.example") is None
    assert from_engine_header(_header(["u"]), "a.example") is None
    assert from_engine_header(_header({"username": 1}), "a.example") is None
    assert from_engine_header(None, "a.example") is None


def test_registry_config_gives_each_registry_its_own_entry() -> None:
    value = _header(
        {
            "a.example": {"username": "ua", "password": "pa"},
            "https://b.example/v2/": {"username": "ub", "password": "pb"},
            "c.example": {"username": "uc", "password": "pc"},
        }
    )
    a = from_registry_config(value, "a.example")
    b = from_registry_config(value, "b.example")
    assert a is not None and (a.username, a.password) == ("ua", "pa")
    assert b is not None and (b.username, b.password) == ("ub", "pb")
    assert from_registry_config(value, "d.example") is None
    assert from_registry_config(_header({"a.example": "x"}), "a.example") is None


def test_request_credentials_never_lend_the_pull_header_to_another_registry() -> None:
    ref = parse("a.example/x:1")
    auth = _header({"username": "u", "password": "p"})
    headers = {"X-Registry-Auth": auth}
    source = request_credentials(ref, headers.get)
    found = source("a.example")
    assert found is not None and found.username == "u"
    assert source("b.example") is None  # a mirror's origin, another registry's trust server
    assert request_credentials(ref, {}.get)("a.example") is None  # no header: anonymous
    build = {"X-Registry-Config": _header({"b.example": {"username": "ub", "password": "pb"}})}
    source = request_credentials(ref, {**headers, **build}.get)
    assert source("a.example") is None  # a build uses its own entries only
    assert getattr(source("b.example"), "username", None) == "ub"


class _FakeRemote:
    def __init__(self) -> None:
        self.request_count = 0
        self.renewed = 0
        self.closed = False

    def get_metadata(self, name: str, max_bytes: int) -> bytes:
        self.request_count += 1
        return b"{}"

    def renew(self) -> None:
        self.renewed += 1

    def close(self) -> None:
        self.closed = True


def test_pool_reuses_a_session_only_for_the_same_credentials() -> None:
    pool = SessionPool(8)
    made: list[_FakeRemote] = []

    def make() -> Any:
        made.append(_FakeRemote())
        return made[-1]

    alice = RegistryAuth("alice", "pw")
    first = pool.lease("https://n", "a.example/x", alice, make)
    first.get_metadata("timestamp", 10)
    first.close()
    assert first.request_count == 1
    again = pool.lease("https://n", "a.example/x", RegistryAuth("alice", "pw"), make)
    assert len(made) == 1 and made[0].renewed == 1
    assert again.request_count == 0  # this update's requests only
    other = pool.lease("https://n", "a.example/x", RegistryAuth("alice", "other"), make)
    anonymous = pool.lease("https://n", "a.example/x", None, make)
    elsewhere = pool.lease("https://n", "a.example/y", alice, make)
    assert len(made) == 4  # another password, anonymous, another GUN: never the kept one
    for lease in (again, other, anonymous, elsewhere):
        lease.close()
    assert pool.identity(None) == "" and pool.identity(alice) != pool.identity(None)
    assert "pw" not in pool.identity(alice)


def test_pool_bounds_idle_sessions() -> None:
    pool = SessionPool(2)
    made = [_FakeRemote() for _ in range(3)]
    leases = [pool.lease("https://n", f"r/{i}", None, lambda i=i: made[i]) for i in range(3)]
    for lease in leases:
        lease.close()
    assert [r.closed for r in made] == [True, False, False]  # least recently returned first
    pool.close()
    assert all(r.closed for r in made)


def test_pool_identity_is_unambiguous_for_fields_holding_a_nul() -> None:
    # The fields come from a client's JSON header, where "\u0000" is a valid character: joined
    # with NUL, ("a\0b", "c") and ("a", "b\0c") were one identity, so one client's kept
    # session (its token) could be leased for another client's different credentials.
    pool = SessionPool(8)
    one = RegistryAuth("a\0b", "c")
    two = RegistryAuth("a", "b\0c")
    three = RegistryAuth("a", "b", "\0")
    four = RegistryAuth("a", "b\0", "")
    identities = {pool.identity(auth) for auth in (one, two, three, four)}
    assert len(identities) == 4
