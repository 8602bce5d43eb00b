"""The proxy's pull and the CLI's pull of the same reference under the same policy: one verdict.

Both ask the one `TrustService`; what differs is how the reference is made (`fromImage` and
`tag`, a digest in `tag`, a trailing `:`, `-a`) and what each asks of the engine. Here a
stand-in engine records the proxy's pulls, a recording engine the CLI's, and a real fixture
trust server over HTTPS serves the repository. For every combination the two must pull exactly
the same verified digests, or both refuse with the same exit code (the proxy's decision log
carries the CLI's code), and a refused pull reaches no engine.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.unit._engines import ScriptedEngine
from tests.unit._trust_env import D1, D2, GUN, Env, FakeEngine, env_factory
from trust.policy import Policy, Rule, Scope
from trust.proxy.handlers import build_proxy
from trust.proxy.server import DecisionLog, Proxy, bind_listener
from trust.service import TrustService
from trust.settings import ProxyConfig
from trust.trusted_pull import pull

SCOPE = Scope(registry="127.0.0.1:5000", repository="ns/app")
#: One pull both ways: (proxy query, CLI reference, all tags) → (digests pulled, exit code).
Both = Callable[..., tuple[list[str], int]]


def _answer(status: bytes, body: bytes = b"") -> list[bytes | float]:
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return [head % (status, len(body)) + body]


def _engine_script(number: int, head: bytes) -> tuple[list[bytes | float], bool]:
    line = head.split(b"\r\n", 1)[0]
    target = line.split(b" ")[1]
    if target.endswith(b"/version"):
        return _answer(b"200 OK", b'{"ApiVersion":"1.47","MinAPIVersion":"1.24"}'), False
    if b"/images/create" in target:
        return _answer(b"200 OK", b'{"status":"pulled"}\r\n'), False
    if b"/tag?" in target:
        return _answer(b"201 Created"), False
    return _answer(b"404 Not Found", b'{"message":"No such image"}'), False


def _request(path: str, query: str) -> bytes:
    head = (
        f"POST /v1.47/images/create?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(head.encode())
        sock.settimeout(20)
        out = b""
        while data := sock.recv(65536):
            out += data
        return out


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[Callable[..., Env]]:
    yield from env_factory()


@pytest.fixture
def world(make_env: Callable[..., Env], tmp_path: Path) -> Iterator[Callable[..., Both]]:
    env = make_env()
    running: list[tuple[Proxy, ScriptedEngine]] = []

    def start(policy: Policy, mode: str = "enforce") -> Both:
        index = len(running)
        engine = ScriptedEngine(tmp_path / f"engine{index}.sock", _engine_script)
        config = ProxyConfig(header_timeout=5.0, idle_timeout=5.0, mode=mode)
        log = io.StringIO()
        listen = str(tmp_path / f"proxy{index}.sock")
        listener = bind_listener(listen, engine.path, config)
        proxy = build_proxy(env.settings, engine.path, config, DecisionLog(log), policy=policy)
        threading.Thread(target=proxy.serve, args=(listener,), daemon=True).start()
        running.append((proxy, engine))

        def through_proxy(query: str) -> tuple[int, list[str], int | None, list[str]]:
            seen = len(engine.heads)
            lines = len(log.getvalue().splitlines())
            answer = _request(listen, query)
            status = int(answer.split(b" ", 2)[1])
            pulled, queries = [], []
            for head in engine.heads[seen:]:
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                if "/images/create" in target:
                    queries.append(urlsplit(target).query)
                    pulled.append(parse_qs(queries[-1]).get("tag", [""])[0])
            exit_code = None
            verdict = "refused" if mode == "enforce" else "would-refuse"
            for record in log.getvalue().splitlines()[lines:]:
                decision = json.loads(record)
                if decision.get("verdict") == verdict:
                    exit_code = decision.get("exit_code")
            return status, pulled, exit_code, queries

        def through_cli(text: str, all_tags: bool) -> tuple[list[str], int]:
            engine = FakeEngine()
            service = TrustService(env.settings, policy)
            result = pull(
                text,
                env.settings,
                all_tags=all_tags,
                environ={},
                engine_factory=lambda: engine,
                service=service,
            )
            # an all-tags pull by name (accepted unsigned) is the proxy's `tag` left out
            pulls = [call[2] or "" for call in engine.calls if call[0] == "pull"]
            return pulls, result.exit_code

        def both(query: str, text: str, all_tags: bool = False) -> tuple[list[str], int]:
            status, proxy_pulls, proxy_code, queries = through_proxy(query)
            cli_pulls, cli_code = through_cli(text, all_tags)
            if cli_code == 0:
                assert proxy_pulls == cli_pulls, (query, text)
                assert status == 200 and proxy_code is None, (query, status)
            elif mode == "enforce":
                assert status in (400, 403) and proxy_pulls == [], (query, status)
                assert proxy_code == cli_code, (query, text)
            else:  # audit: the client's own request goes to the engine, and the verdict is logged
                assert [parse_qs(q) for q in queries] == [parse_qs(query)], (query, queries)
                assert status == 200 and proxy_code == cli_code, (query, text)
            return cli_pulls, cli_code

        return both

    yield start
    for proxy, engine in running:
        proxy.stop()
        engine.close()


def _q(**values: str) -> str:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in values.items())


SHA1, SHA2 = "sha256:" + D1, "sha256:" + D2


def _combinations() -> list[tuple[str, str, bool]]:
    """(proxy query, CLI reference, all tags) for every way a pull names tag 2.0, its digest or
    every tag."""
    return [
        (_q(fromImage=GUN, tag="2.0"), f"{GUN}:2.0", False),
        (_q(fromImage=f"{GUN}:2.0"), f"{GUN}:2.0", False),
        (_q(fromImage=f"{GUN}:2.0@{SHA2}"), f"{GUN}:2.0@{SHA2}", False),
        (_q(fromImage=f"{GUN}:2.0@{SHA1}"), f"{GUN}:2.0@{SHA1}", False),
        (_q(fromImage=GUN, tag=SHA2), f"{GUN}@{SHA2}", False),
        # a digest in `tag` drops the name's tag, as the engine does
        (_q(fromImage=f"{GUN}:1.0", tag=SHA2), f"{GUN}@{SHA2}", False),
        (_q(fromImage=f"{GUN}@{SHA2}", tag="2.0"), f"{GUN}:2.0@{SHA2}", False),
        (_q(fromImage=f"{GUN}@{SHA2}", tag="1.0"), f"{GUN}:1.0@{SHA2}", False),
        (_q(fromImage=f"{GUN}:2.0", tag="1.0"), f"{GUN}:1.0", False),
        (_q(fromImage=GUN), GUN, True),
        (_q(fromImage=f"{GUN}:"), GUN, True),
        (_q(fromImage=GUN, tag="2.0", platform="linux/arm64"), f"{GUN}:2.0", False),
    ]


@pytest.mark.parametrize(
    "tag_rule",
    [
        {"signers": ("releases",)},  # met: 2.0 is signed by releases
        {"signers": ("alice",)},  # not met: 9
        {"refuse": True},  # refused before any I/O: 9
    ],
    ids=["signers-met", "signer-missing", "refuse"],
)
def test_proxy_and_cli_pull_the_same_digests_under_a_tag_rule(
    world: Callable[[Policy], Both], tag_rule: dict[str, object]
) -> None:
    two = Rule("two", 1, dataclasses.replace(SCOPE, tag="2.0"), origin="p:2", **tag_rule)  # type: ignore[arg-type]
    both = world(Policy((Rule("repo", 0, SCOPE, origin="p:1"), two), "p"))
    outcomes: dict[str, tuple[list[str], int]] = {}
    for query, text, all_tags in _combinations():
        outcomes[query] = both(query, text, all_tags)
    if "signers" in tag_rule and tag_rule["signers"] == ("releases",):
        assert outcomes[_q(fromImage=GUN, tag="2.0")] == ([SHA2], 0)
        assert outcomes[_q(fromImage=GUN, tag=SHA2)] == ([SHA2], 0)
    else:
        assert outcomes[_q(fromImage=GUN, tag="2.0")] == ([], 9)
        assert outcomes[_q(fromImage=GUN, tag=SHA2)] == ([], 9)  # no other tag vouches for it
        assert outcomes[_q(fromImage=GUN)] == ([], 9)  # -a: one tag's refusal refuses all
    assert outcomes[_q(fromImage=f"{GUN}:2.0@{SHA1}")][0] == []  # another digest: refused
    assert outcomes[_q(fromImage=f"{GUN}:2.0", tag="1.0")] == ([SHA1], 0)


def test_proxy_and_cli_refuse_alike_under_a_repository_rules_pin(
    world: Callable[[Policy], Both],
) -> None:
    """The repository rule pins another root (and refuses TOFU); a tag rule decides 2.0: every
    shape is refused by the pin (exit 5) through the proxy as through the CLI."""
    pinned = Rule("repo", 0, SCOPE, root_keys=("a" * 64,), tofu=False, origin="p:1")
    two = Rule("two", 1, dataclasses.replace(SCOPE, tag="2.0"), signers=("releases",))
    both = world(Policy((pinned, two), "p"))
    for query, text, all_tags in _combinations():
        assert both(query, text, all_tags) == ([], 5), query


def test_proxy_and_cli_pull_an_unsigned_accepted_repository_alike(
    world: Callable[[Policy], Both],
) -> None:
    """A repository without trust data that a rule accepts unsigned: both pull by tag (or by
    the digest given, or every tag by name); a tag rule that refuses `prod` refuses that tag
    and the all-tags pull (which would pull it unverified) both ways."""
    unsigned = f"{GUN}-unsigned"  # the trust server has nothing for it
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app-unsigned")
    legacy = Rule("legacy", 1, scope, allow_unsigned=True, origin="p:1")
    prod = Rule("prod", 0, dataclasses.replace(scope, tag="prod"), refuse=True, origin="p:2")
    both = world(Policy((prod, legacy), "p"))
    assert both(_q(fromImage=unsigned, tag="dev"), f"{unsigned}:dev") == (["dev"], 0)
    assert both(_q(fromImage=unsigned, tag=SHA2), f"{unsigned}@{SHA2}") == ([SHA2], 0)
    assert both(_q(fromImage=f"{unsigned}:dev@{SHA2}"), f"{unsigned}:dev@{SHA2}") == ([SHA2], 0)
    assert both(_q(fromImage=unsigned, tag="prod"), f"{unsigned}:prod") == ([], 9)
    assert both(_q(fromImage=f"{unsigned}:prod@{SHA2}"), f"{unsigned}:prod@{SHA2}") == ([], 9)
    assert both(_q(fromImage=unsigned), unsigned, True) == ([], 9)
    lenient = world(Policy((legacy,), "p"))
    assert lenient(_q(fromImage=unsigned), unsigned, True) == ([""], 0)
    assert lenient(_q(fromImage=f"{unsigned}:"), unsigned, True) == ([""], 0)


def test_audit_mode_forwards_what_enforce_refuses_and_logs_the_same_verdict(
    world: Callable[..., Both],
) -> None:
    """The same refusing tag rule through an audit proxy and an enforcing one: audit forwards
    the client's own request unchanged with `would-refuse` and the CLI's exit code; enforce
    sends nothing to the engine for it; what passes is pulled by digest in both."""
    two = Rule("two", 1, dataclasses.replace(SCOPE, tag="2.0"), refuse=True, origin="p:2")
    policy = Policy((Rule("repo", 0, SCOPE, origin="p:1"), two), "p")
    audit, enforce = world(policy, mode="audit"), world(policy)
    for query, text, all_tags in _combinations():
        assert audit(query, text, all_tags) == enforce(query, text, all_tags), query
    assert enforce(_q(fromImage=GUN, tag="2.0"), f"{GUN}:2.0") == ([], 9)
    assert enforce(_q(fromImage=GUN, tag="1.0"), f"{GUN}:1.0") == ([SHA1], 0)
