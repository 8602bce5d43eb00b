"""Authentication on real servers: token-protected docker-registry and notary-server (their own
`auth.token` checks on JWTs from fixtures/authstack's issuer), an htpasswd registry, a credential
helper on PATH, tinyproxy, a private CA. trustpull runs as a user runs it (a subprocess); the
docker CLI 28 does the same trusted pull on the same stack and must agree.

Exit codes (README): 7 auth refused, 6 trust server unreachable (network, proxy, TLS).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fixtures.authstack import NOTARY_SERVICE, REGISTRY_SERVICE, AuthStack, TokenRegistry, User
from fixtures.stack import (
    DOCKER_CLI,
    REPOSITORY_PASSPHRASE,
    ROOT_PASSPHRASE,
    PodmanService,
    Stack,
    StackError,
    refused_port,
)
from fixtures.trustproxy import TrustProxy
from tests.ci import skip_or_fail
from tests.integration._podman import running_podman
from tests.integration.proxy_world import raw_request, status_of
from trust.credentials import RegistryAuth
from trust.engine import Engine
from trust.errors import EngineError
from trust.notary.remote import NotaryRemote as TrustServerSession
from trust.settings import Limits

pytestmark = pytest.mark.integration

EXIT_AUTH = 7
EXIT_NETWORK = 6

ALL = ["pull", "push"]
USERS = {
    # alice may pull and push everything, on the registries (names without host) and on notary
    # (GUNs, which carry the registry host).
    "alice": User("alice-pw", {"*": ALL}),
    # bob authenticates but may touch nothing: the "token for the wrong scope" case.
    "bob": User("bob-pw", {"nothing/*": ["pull"]}),
    # carol's tokens are born expired (beyond the servers' 60 s leeway).
    "carol": User("carol-pw", {"*": ALL}, lifetime=-300),
    # dave's tokens claim a 5-second life (the client then keeps them the 60 s floor).
    "dave": User("dave-pw", {"*": ALL}, lifetime=5),
    # erin is the proxy user's own docker login: it must never serve a client's request (X49).
    "erin": User("erin-pw", {"*": ALL}),
}

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
_CLEARED = ("TRUSTPULL_CONFIG", "DOCKER_AUTH_CONFIG", "DOCKER_CONTEXT", *_PROXY_VARS)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def auth(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    """The authenticated servers, next to the session stack's dockerd."""
    directory = tmp_path_factory.mktemp("authstack")
    servers = AuthStack(directory, USERS)
    # Anonymous callers may read trust data of `pubtrust/*` (so resolution works without
    # credentials) but not its images: how the interactive retry is reached on a trusted pull.
    servers.issuer.anonymous = {"127.0.0.1:*/pubtrust/*": ["pull"]}
    servers.issuer.write_config()
    try:
        servers.start()
    except (StackError, OSError, subprocess.CalledProcessError) as exc:
        message = f"authenticated test servers did not start: {exc}"
        skip_or_fail(message)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the servers' logs when the test failed (the teardown output is in the report)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before and "auth" in request.fixturenames:
        servers: AuthStack = request.getfixturevalue("auth")
        print(servers.logs(), file=sys.stderr)


class World:
    """Commands against the authenticated stack, each in its own DOCKER_CONFIG."""

    def __init__(self, stack: Stack, auth: AuthStack, tmp: Path) -> None:
        self.stack, self.auth, self.tmp = stack, auth, tmp
        self.reg = auth.registry.host
        self.basic = auth.basic_registry.host

    def config(self, name: str, auths: dict[str, tuple[str, str]] | None = None, **kw: Any) -> Path:
        return self.auth.docker_config(self.tmp / f"config-{name}", auths, **kw)

    def env(
        self, config: Path, *, trust: bool = True, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update(
            {
                "DOCKER_CONFIG": str(config),
                "DOCKER_HOST": self.stack.docker_host,
                "DOCKER_CONTENT_TRUST": "1" if trust else "0",
                "DOCKER_CONTENT_TRUST_SERVER": self.auth.notary.url,
                "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE": ROOT_PASSPHRASE,
                "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE": REPOSITORY_PASSPHRASE,
                "DOCKER_CLI_HINTS": "false",
                # this checkout's trustpull, not the installed one (the runs' cwd is a tmp dir)
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                "XDG_CONFIG_HOME": str(self.tmp / "xdg"),
            }
        )
        env.update(extra or {})
        return env

    def run(
        self, argv: list[str], env: Mapping[str, str], timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
        )

    def tp(self, *args: str, config: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "cli.main", *args], self.env(config, **kw))

    def dk(self, *args: str, config: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run([DOCKER_CLI, *args], self.env(config, **kw))

    def publish(self, repo: str, tag: str, content: str, *, trust: bool = True) -> str:
        """Import a one-file image and `docker push` it as alice (signed when `trust`)."""
        host = repo.split("/", 1)[0]
        publisher = self.config(f"publisher-{time.monotonic_ns()}", {host: ("alice", "alice-pw")})
        ref = f"{repo}:{tag}"
        tar_path = self.tmp / f"img-{time.monotonic_ns()}.tar"
        tar_path.write_bytes(_tiny_tar(f"{repo} {content}".encode()))
        ok(self.dk("import", "--", str(tar_path), ref, config=publisher, trust=False))
        pushed = ok(self.dk("push", "--", ref, config=publisher, trust=trust))
        if trust:
            assert f"Successfully signed {ref}" in pushed.stdout, why(pushed)
        digest = next(
            (w for line in pushed.stdout.splitlines() for w in line.split() if "sha256:" in w),
            None,
        )
        assert digest is not None, why(pushed)
        # Consumers must really pull: drop the publisher's local copy.
        self.run([DOCKER_CLI, "rmi", "-f", "--", ref], self.env(publisher, trust=False))
        return digest

    def untag(self, *refs: str) -> None:
        for ref in refs:
            self.run([DOCKER_CLI, "rmi", "-f", "--", ref], self.env(self.tmp, trust=False))

    def repo_digests(self, ref: str) -> list[str]:
        proc = self.run(
            [DOCKER_CLI, "image", "inspect", "--format", "{{json .RepoDigests}}", "--", ref],
            self.env(self.tmp, trust=False),
        )
        return list(json.loads(proc.stdout)) if proc.returncode == 0 else []


def _tiny_tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("content.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def why(*procs: subprocess.CompletedProcess[str]) -> str:
    out = []
    for p in procs:
        argv = " ".join(str(a) for a in p.args)
        out.append(f"$ {argv}\n[exit {p.returncode}]\n{p.stdout.rstrip()}\n--\n{p.stderr.rstrip()}")
    return "\n" + "\n".join(out)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, why(proc)
    return proc


@pytest.fixture()
def world(stack: Stack, auth: AuthStack, tmp_path: Path) -> World:
    return World(stack, auth, tmp_path)


@pytest.fixture(scope="module")
def signed(
    stack: Stack, auth: AuthStack, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """One image pushed and signed by the docker CLI into the token-protected stack."""
    w = World(stack, auth, tmp_path_factory.mktemp("publish"))
    repo = f"{auth.registry.host}/authz/app"
    return repo, w.publish(repo, "1.0", "signed for auth tests")


def _resolved_digest(proc: subprocess.CompletedProcess[str]) -> str:
    doc = json.loads(proc.stdout)
    return str(doc[0]["digest"])


def _new_token_requests(auth: AuthStack, before: int) -> list[dict[str, Any]]:
    return auth.issuer.requests()[before:]


# ------------------------------------------------------------------- good and bad credentials


def test_good_credentials_trustpull_and_docker_agree(
    world: World, auth: AuthStack, signed: tuple[str, str]
) -> None:
    repo, digest = signed
    # Credentials for two registries: only the GUN's registry's may be used (J07).
    config = world.config(
        "good", {world.reg: ("alice", "alice-pw"), world.basic: ("bob", "bob-pw")}
    )
    before = len(auth.issuer.requests())
    resolved = ok(world.tp("resolve", "-o", "json", f"{repo}:1.0", config=config))
    assert _resolved_digest(resolved) == digest
    pulled = ok(world.tp(f"{repo}:1.0", config=config))
    assert f"Pull (1 of 1): {repo}:1.0@{digest}" in pulled.stdout, why(pulled)
    assert f"{repo}@{digest}" in world.repo_digests(f"{repo}:1.0")
    tokens = _new_token_requests(auth, before)
    assert tokens, "no token was requested"
    assert {t["basic_user"] for t in tokens} == {"alice"}, tokens
    notary = [t for t in tokens if t["service"] == NOTARY_SERVICE]
    assert notary and all(t["scope"] == [f"repository:{repo}:pull"] for t in notary), notary
    assert all(t["account"] == "alice" for t in notary)
    assert any(t["service"] == REGISTRY_SERVICE for t in tokens), "the engine did not auth"

    # The reference client, same stack, a fresh trust cache: same digest, same tag.
    world.untag(f"{repo}:1.0", f"{repo}@{digest}")
    dk_config = world.config("good-docker", {world.reg: ("alice", "alice-pw")})
    docker_pull = ok(world.dk("pull", f"{repo}:1.0", config=dk_config))
    assert f"{repo}:1.0@{digest}" in docker_pull.stdout, why(docker_pull)
    assert f"{repo}@{digest}" in world.repo_digests(f"{repo}:1.0")


def _settled(log: Any) -> int:
    """The request log's length once it stopped growing (notary-server logs after answering)."""
    count = len(log())
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        time.sleep(0.15)
        again = len(log())
        if again == count:
            break
        count = again
    return count


def test_requests_per_resolve_on_the_token_protected_notary_server(
    world: World, auth: AuthStack, signed: tuple[str, str]
) -> None:
    """issue 13: cold, no more requests than docker's trusted pull; warm, one request (the kept
    token, no token request, no `/v2/` ping). Counted from notary-server's own request log."""
    repo, _ = signed

    def counted(run: Any) -> tuple[list[str], int]:
        before, tokens = _settled(auth.notary.request_log), len(auth.issuer.requests())
        run()
        _settled(auth.notary.request_log)
        uris = [e.uri for e in auth.notary.request_log()[before:]]
        return uris, len(auth.issuer.requests()) - tokens

    ours = world.config("count-tp", {world.reg: ("alice", "alice-pw")})
    cold, cold_tokens = counted(lambda: ok(world.tp("resolve", f"{repo}:1.0", config=ours)))
    warm, warm_tokens = counted(lambda: ok(world.tp("resolve", f"{repo}:1.0", config=ours)))
    theirs = world.config("count-dk", {world.reg: ("alice", "alice-pw")})
    docker_cold, _ = counted(lambda: world.dk("pull", f"{repo}:1.0", config=theirs))
    world.untag(f"{repo}:1.0")
    docker_warm, _ = counted(lambda: world.dk("pull", f"{repo}:1.0", config=theirs))
    print(f"notary requests: trustpull cold {len(cold)} {cold}, warm {len(warm)} {warm}")
    print(f"docker trusted pull: cold {len(docker_cold)}, warm {len(docker_warm)}")
    assert len(cold) <= len(docker_cold), (cold, docker_cold)
    assert cold_tokens == 1
    assert warm == [f"/v2/{repo}/_trust/tuf/timestamp.json"], warm
    assert warm_tokens == 0
    assert len(docker_warm) == 2  # docker: the /v2/ ping and timestamp.json
    kept = list((ours / "trust" / "tokens").iterdir())
    assert len(kept) == 1 and (kept[0].stat().st_mode & 0o777) == 0o600


def test_tokens_naming_their_key_by_libtrust_kid_work_too(
    world: World, auth: AuthStack, signed: tuple[str, str]
) -> None:
    """The servers' other accepted JWT form: `kid` (libtrust key ID) instead of `x5c`."""
    repo, digest = signed
    auth.issuer.header = "kid"
    auth.issuer.write_config()
    try:
        config = world.config("kid", {world.reg: ("alice", "alice-pw")})
        resolved = ok(world.tp("resolve", "-o", "json", f"{repo}:1.0", config=config))
    finally:
        auth.issuer.header = "x5c"
        auth.issuer.write_config()
    assert _resolved_digest(resolved) == digest


def test_wrong_password_is_exit_7_for_both(world: World, signed: tuple[str, str]) -> None:
    repo, _ = signed
    config = world.config("badpw", {world.reg: ("alice", "not-her-password")})
    proc = world.tp("resolve", f"{repo}:1.0", config=config)
    assert proc.returncode == EXIT_AUTH, why(proc)
    assert "token server refused the credentials: 401" in proc.stderr, why(proc)
    pulled = world.tp(f"{repo}:1.0", config=config)
    assert pulled.returncode == EXIT_AUTH and "Pull (1 of 1)" not in pulled.stdout, why(pulled)
    docker_pull = world.dk(
        "pull", f"{repo}:1.0", config=world.config("badpw-dk", {world.reg: ("alice", "x")})
    )
    assert docker_pull.returncode != 0, why(docker_pull)


def test_token_for_the_wrong_scope_is_exit_7_not_unsigned(
    world: World, signed: tuple[str, str]
) -> None:
    repo, _ = signed
    config = world.config("bob", {world.reg: ("bob", "bob-pw")})
    proc = world.tp("resolve", f"{repo}:1.0", config=config)
    assert proc.returncode == EXIT_AUTH, why(proc)
    assert "not authorized" in proc.stderr and "server returned 401" in proc.stderr, why(proc)
    docker_pull = world.dk("pull", f"{repo}:1.0", config=config)
    assert docker_pull.returncode != 0, why(docker_pull)


def test_auth_refusal_never_falls_back_to_the_cache(world: World, signed: tuple[str, str]) -> None:
    repo, digest = signed
    config = world.config("warm", {world.reg: ("alice", "alice-pw")})
    assert (
        _resolved_digest(ok(world.tp("resolve", "-o", "json", f"{repo}:1.0", config=config)))
        == digest
    )
    for user, password in (("alice", "wrong"), ("bob", "bob-pw")):
        world.auth.docker_config(config, {world.reg: (user, password)})  # same trust cache
        proc = world.tp("resolve", f"{repo}:1.0", config=config)
        assert proc.returncode == EXIT_AUTH, why(proc)
        assert digest not in proc.stdout


def test_expired_token_is_refused_cleanly(world: World, signed: tuple[str, str]) -> None:
    """Tokens that the servers find expired: exit 7 with the server's 401, no retry loop."""
    repo, _ = signed
    config = world.config("carol", {world.reg: ("carol", "carol-pw")})
    before = len(world.auth.issuer.requests())
    proc = world.tp("resolve", f"{repo}:1.0", config=config)
    assert proc.returncode == EXIT_AUTH, why(proc)
    assert (
        "not authorized to perform this operation: server returned 401 with the credentials sent"
        in proc.stderr
    )
    # One token, one refusal: a rejected token is not re-requested in a loop.
    assert len(_new_token_requests(world.auth, before)) == 1


def test_expired_token_is_renewed_by_the_session(world: World, signed: tuple[str, str]) -> None:
    """A token past its lifetime on the client's clock is fetched again, not reused."""
    repo, _ = signed
    config = world.config("dave", {world.reg: ("dave", "dave-pw")})
    now = [1000.0]
    session = TrustServerSession(
        world.auth.notary.url,
        repo,
        limits=Limits(),
        docker_config=config,
        credentials=lambda: RegistryAuth(username="dave", password="dave-pw"),
        clock=lambda: now[0],
    )
    before = len(world.auth.issuer.requests())
    try:
        session.ping()
        first = session.get_metadata("root", 1 << 20)
        again = session.get_metadata("root", 1 << 20)  # within the lifetime: token reused
        assert len(_new_token_requests(world.auth, before)) == 1
        now[0] += 61.0  # past max(expires_in=5, 60)
        renewed = session.get_metadata("root", 1 << 20)
    finally:
        session.close()
    assert first == again == renewed
    tokens = _new_token_requests(world.auth, before)
    assert [t["basic_user"] for t in tokens] == ["dave", "dave"], tokens


# ----------------------------------------------------------------------- credential helpers


_HELPER = """\
import json, os, sys
store_path = os.environ["TP_HELPER_STORE"]
action = sys.argv[1] if len(sys.argv) > 1 else ""
data = sys.stdin.read()
with open(store_path + ".calls", "a") as log:
    log.write(json.dumps({"action": action, "stdin": data if action == "get" else "..."}) + "\\n")
try:
    with open(store_path) as f:
        store = json.load(f)
except FileNotFoundError:
    store = {}
if action == "get":
    entry = store.get(data.strip())
    if entry is None:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({"ServerURL": data.strip(), "Username": entry[0], "Secret": entry[1]}))
elif action == "store":
    doc = json.loads(data)
    store[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
    with open(store_path, "w") as f:
        json.dump(store, f)
elif action == "erase":
    store.pop(data.strip(), None)
    with open(store_path, "w") as f:
        json.dump(store, f)
elif action == "list":
    print(json.dumps({k: v[0] for k, v in store.items()}))
else:
    print("unknown action")
    sys.exit(1)
"""


def _install_helper(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"docker-credential-{name}"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return directory


def test_credential_helper_on_path(world: World, signed: tuple[str, str], tmp_path: Path) -> None:
    repo, digest = signed
    bin_dir = _install_helper(tmp_path / "bin", "tptest", _HELPER)
    store = tmp_path / "helper-store.json"
    store.write_text(json.dumps({world.reg: ["alice", "alice-pw"]}))
    extra = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TP_HELPER_STORE": str(store)}
    config = world.config("helper", extra={"credsStore": "tptest"})
    resolved = ok(world.tp("resolve", "-o", "json", f"{repo}:1.0", config=config, extra=extra))
    assert _resolved_digest(resolved) == digest
    ok(world.tp(f"{repo}:1.0", config=config, extra=extra))
    calls = [json.loads(line) for line in Path(f"{store}.calls").read_text().splitlines()]
    assert calls and all(c == {"action": "get", "stdin": world.reg} for c in calls), calls
    world.untag(f"{repo}:1.0", f"{repo}@{digest}")
    dk = ok(
        world.dk(
            "pull",
            f"{repo}:1.0",
            config=world.config("helper-dk", extra={"credsStore": "tptest"}),
            extra=extra,
        )
    )
    assert f"{repo}:1.0@{digest}" in dk.stdout, why(dk)


def test_credential_helper_missing(world: World, signed: tuple[str, str]) -> None:
    """As docker: a missing helper means no credentials (warned, naming it); the protected
    server then refuses: exit 7, and the warning says why."""
    repo, _ = signed
    config = world.config("nohelper", extra={"credsStore": "tp-absent"})
    proc = world.tp("resolve", f"{repo}:1.0", config=config)
    assert proc.returncode == EXIT_AUTH, why(proc)
    assert "docker-credential-tp-absent not found on PATH" in proc.stderr, why(proc)


def test_credential_helper_failing(world: World, signed: tuple[str, str], tmp_path: Path) -> None:
    repo, _ = signed
    bin_dir = _install_helper(
        tmp_path / "bin", "tpfail", "import sys\nprint('keychain is locked')\nsys.exit(3)\n"
    )
    extra = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    config = world.config("failhelper", extra={"credHelpers": {world.reg: "tpfail"}})
    proc = world.tp("resolve", f"{repo}:1.0", config=config, extra=extra)
    assert proc.returncode == EXIT_AUTH, why(proc)
    assert (
        "error getting credentials from docker-credential-tpfail: keychain is locked" in proc.stderr
    )


# ------------------------------------------------------------------------- proxy and TLS


def test_proxy_is_used_for_trust_server_and_realm(world: World, signed: tuple[str, str]) -> None:
    repo, digest = signed
    auth = world.auth
    config = world.config("proxy", {world.reg: ("alice", "alice-pw")})
    log_before = len(auth.proxy.own_log())
    proxy = auth.proxy.url
    extra = {"HTTPS_PROXY": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "http_proxy": proxy}
    resolved = ok(world.tp("resolve", "-o", "json", f"{repo}:1.0", config=config, extra=extra))
    assert _resolved_digest(resolved) == digest
    log = auth.proxy.own_log()[log_before:]
    assert f"CONNECT 127.0.0.1:{auth.notary.port} " in log, log
    assert f"GET http://127.0.0.1:{auth.issuer.port}/token?" in log, log


def test_proxy_down_is_exit_6(world: World, signed: tuple[str, str]) -> None:
    repo, _ = signed
    config = world.config("proxydown", {world.reg: ("alice", "alice-pw")})
    with refused_port() as port:
        dead = f"http://127.0.0.1:{port}"
        extra = {"HTTPS_PROXY": dead, "https_proxy": dead, "HTTP_PROXY": dead, "http_proxy": dead}
        proc = world.tp("resolve", f"{repo}:1.0", config=config, extra=extra)
    assert proc.returncode == EXIT_NETWORK, why(proc)


def test_missing_ca_is_exit_6_tls(world: World, signed: tuple[str, str]) -> None:
    repo, _ = signed
    config = world.config("noca", {world.reg: ("alice", "alice-pw")}, ca=False)
    proc = world.tp("resolve", f"{repo}:1.0", config=config)
    assert proc.returncode == EXIT_NETWORK, why(proc)
    netloc = world.auth.notary.url.removeprefix("https://")
    assert f"TLS: certificate not trusted for {netloc}" in proc.stderr, why(proc)
    assert f"put its CA in {config / 'tls' / netloc}/" in proc.stderr, why(proc)
    assert "certificate verify failed" not in proc.stderr, why(proc)  # the raw text: -v only
    verbose = world.tp("resolve", "-v", f"{repo}:1.0", config=config)
    assert verbose.returncode == EXIT_NETWORK, why(verbose)
    assert "detail: " in verbose.stderr and "certificate verify failed" in verbose.stderr


# ----------------------------------------------------------------- htpasswd Basic registry


@pytest.fixture(scope="module")
def basic_image(
    stack: Stack, auth: AuthStack, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    w = World(stack, auth, tmp_path_factory.mktemp("basic"))
    repo = f"{auth.basic_registry.host}/basic/app"
    return repo, w.publish(repo, "1.0", "basic auth image", trust=False)


def test_basic_registry_good_and_bad_credentials(
    world: World, basic_image: tuple[str, str]
) -> None:
    repo, digest = basic_image
    good = world.config("basic-good", {world.basic: ("alice", "alice-pw")})
    ok(world.tp(f"{repo}:1.0", config=good, trust=False))
    assert f"{repo}@{digest}" in world.repo_digests(f"{repo}:1.0")
    world.untag(f"{repo}:1.0")
    for name, auths in (("basic-bad", {world.basic: ("alice", "nope")}), ("basic-none", {})):
        proc = world.tp(f"{repo}:1.0", config=world.config(name, auths), trust=False)
        assert proc.returncode == EXIT_AUTH, why(proc)
        assert "Username" not in proc.stderr  # not a terminal: no prompt


# ----------------------------------------------------------------- the interactive retry


def _run_on_terminal(
    argv: list[str], env: Mapping[str, str], answers: list[tuple[str, str]], timeout: float = 120
) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as its controlling terminal; answer prompts in order."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execve(argv[0], argv, dict(env))  # noqa: S606 - argv is the test's own
        finally:
            os._exit(127)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if pending and pending[0][0].encode() in output.split(b"\n")[-1]:
                os.write(fd, pending.pop(0)[1].encode() + b"\n")
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    print(f"$ {' '.join(argv)}  (on a terminal)\n{text}")  # shown when the test fails
    return os.waitstatus_to_exitcode(status), text


def test_interactive_retry_on_a_terminal_then_saved_on_request(
    world: World, auth: AuthStack, basic_image: tuple[str, str]
) -> None:
    repo, digest = basic_image
    config = world.config("tty")
    env = world.env(config, trust=False)
    argv = [sys.executable, "-m", "cli.main", "pull", "--save-credentials", f"{repo}:1.0"]
    code, output = _run_on_terminal(argv, env, [("Username", "alice"), ("Password", "alice-pw")])
    assert code == 0, output
    assert "alice-pw" not in output  # the password is not echoed
    assert f"{repo}@{digest}" in world.repo_digests(f"{repo}:1.0")
    saved = json.loads((config / "config.json").read_text())["auths"][world.basic]
    assert base64.b64decode(saved["auth"]) == b"alice:alice-pw"


def test_interactive_retry_without_save_stores_nothing(
    world: World, auth: AuthStack, basic_image: tuple[str, str]
) -> None:
    repo, _ = basic_image
    world.untag(f"{repo}:1.0")
    config = world.config("tty-nosave")
    argv = [sys.executable, "-m", "cli.main", "pull", f"{repo}:1.0"]
    code, output = _run_on_terminal(
        argv, world.env(config, trust=False), [("Username", "alice"), ("Password", "wrong")]
    )
    assert code == EXIT_AUTH, output  # typed credentials refused too: one retry only
    assert output.count("Username") == 1, output
    assert json.loads((config / "config.json").read_text())["auths"] == {}


def test_interactive_retry_on_a_trusted_pull(world: World, auth: AuthStack) -> None:
    """Trust data readable anonymously, image not: verified first, then the prompt, then the
    pull by the signed digest with the typed credentials."""
    repo = f"{auth.registry.host}/pubtrust/app"
    digest = world.publish(repo, "2.0", "public trust data, private image")
    config = world.config("tty-trusted")
    argv = [sys.executable, "-m", "cli.main", "pull", f"{repo}:2.0"]
    code, output = _run_on_terminal(
        argv, world.env(config), [("Username", "alice"), ("Password", "alice-pw")]
    )
    assert code == 0, output
    assert f"Pull (1 of 1): {repo}:2.0@{digest}" in output
    assert f"{repo}@{digest}" in world.repo_digests(f"{repo}:2.0")


# ------------------------------------------------------------- podman's engine, authenticated


@pytest.fixture(scope="module")
def podman(auth: AuthStack) -> Iterator[PodmanService]:
    """podman system service with this module's registries marked insecure."""
    yield from running_podman([auth.registry.host, auth.basic_registry.host])


def _podman_digests(podman: PodmanService, ref: str) -> list[str]:
    with Engine.connect({"DOCKER_HOST": podman.docker_host}, timeout=30) as engine:
        try:
            return engine.image_repo_digests(ref)
        except EngineError:
            return []


def test_podman_sends_the_registrys_credentials_and_reports_a_refusal_as_exit_7(
    world: World, auth: AuthStack, podman: PodmanService
) -> None:
    """Trust data readable anonymously, the image not: verified, then podman's in-band refusal
    without credentials (exit 7); with alice's, podman pulls the signed digest (X-Registry-Auth)."""
    repo = f"{auth.registry.host}/pubtrust/podman"
    digest = world.publish(repo, "1.0", "private image, pulled by podman")
    engine = {"DOCKER_HOST": podman.docker_host}
    refused = world.tp(f"{repo}:1.0", config=world.config("podman-anon"), extra=engine)
    assert refused.returncode == EXIT_AUTH, why(refused)
    assert f"Pull (1 of 1): {repo}:1.0@{digest}" in refused.stdout, why(refused)
    assert _podman_digests(podman, f"{repo}:1.0") == []
    config = world.config("podman-alice", {world.reg: ("alice", "alice-pw")})
    pulled = ok(world.tp(f"{repo}:1.0", config=config, extra=engine))
    assert f"Tagging {repo}@{digest} as {repo}:1.0" in pulled.stderr, why(pulled)
    assert _podman_digests(podman, f"{repo}:1.0") == [f"{repo}@{digest}"]


def test_podman_basic_registry_good_and_bad_credentials(
    world: World, podman: PodmanService, basic_image: tuple[str, str]
) -> None:
    repo, digest = basic_image
    engine = {"DOCKER_HOST": podman.docker_host}
    for name, auths in (("podman-bad", {world.basic: ("alice", "nope")}), ("podman-none", {})):
        proc = world.tp(f"{repo}:1.0", config=world.config(name, auths), trust=False, extra=engine)
        assert proc.returncode == EXIT_AUTH, why(proc)
    good = world.config("podman-good", {world.basic: ("alice", "alice-pw")})
    ok(world.tp(f"{repo}:1.0", config=good, trust=False, extra=engine))
    assert _podman_digests(podman, f"{repo}:1.0") == [f"{repo}@{digest}"]


# ------------------------------------------------------------ the engine proxy's credentials


def _users(tokens: list[dict[str, Any]], service: str) -> list[str | None]:
    return [t["basic_user"] for t in tokens if t["service"] == service]


@pytest.fixture()
def proxy(world: World, stack: Stack) -> Iterator[TrustProxy]:
    """`trustpull proxy` in front of the session engine, trusting the token notary; its own
    DOCKER_CONFIG holds erin's login for both registries (used for nothing but its trust
    cache, TLS files and that login, which must never serve a client)."""
    own = world.config(
        "proxy-own", {world.reg: ("erin", "erin-pw"), world.basic: ("erin", "erin-pw")}
    )
    env = world.env(own)
    env.pop("DOCKER_CONTENT_TRUST", None)
    assert stack.dockerd is not None
    started = TrustProxy(
        Path(tempfile.mkdtemp(prefix="tpx-auth-", dir="/tmp")), str(stack.dockerd.socket_path), env
    )
    with started:
        yield started


def _through(
    world: World, proxy: TrustProxy, config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """The docker CLI 28 as a user runs it, at the proxy, with `config`'s logins."""
    env = world.env(
        config, trust=False, extra={"DOCKER_HOST": proxy.docker_host, "DOCKER_BUILDKIT": "0"}
    )
    env.pop("DOCKER_CONTENT_TRUST", None)
    return world.run([DOCKER_CLI, *args], env)


def _no_secret(proxy: TrustProxy, *outputs: str) -> None:
    for secret in ("alice-pw", "dave-pw", "carol-pw", "erin-pw"):
        assert secret not in proxy.logs(), secret
        for output in outputs:
            assert secret not in output, secret
        encoded = base64.b64encode(f"{secret}".encode()).decode().rstrip("=")
        assert encoded not in proxy.logs()


def test_X49_the_trust_servers_token_flow_uses_the_clients_credentials(
    world: World, auth: AuthStack, signed: tuple[str, str], proxy: TrustProxy
) -> None:
    repo, digest = signed
    world.untag(f"{repo}:1.0", f"{repo}@{digest}")
    # The client's logins: alice for the token registry, dave for another registry.
    client = world.config(
        "x49-client", {world.reg: ("alice", "alice-pw"), world.basic: ("dave", "dave-pw")}
    )
    before = len(auth.issuer.requests())
    pulled = _through(world, proxy, client, "pull", f"{repo}:1.0")
    assert pulled.returncode == 0, why(pulled)
    assert f"{repo}@{digest}" in world.repo_digests(f"{repo}:1.0")
    tokens = _new_token_requests(auth, before)
    # Notary's token flow: alice (the pulled registry's login), never dave, never erin.
    assert set(_users(tokens, NOTARY_SERVICE)) == {"alice"}, tokens
    assert set(_users(tokens, REGISTRY_SERVICE)) <= {"alice"}, tokens
    _no_secret(proxy, pulled.stdout, pulled.stderr)

    # Warm: one notary request per pull (the kept session's token), no new token.
    world.untag(f"{repo}:1.0", f"{repo}@{digest}")
    before = len(auth.issuer.requests())
    notary_before = _settled(auth.notary.request_log)
    again = _through(world, proxy, client, "pull", f"{repo}:1.0")
    assert again.returncode == 0, why(again)
    assert _users(_new_token_requests(auth, before), NOTARY_SERVICE) == []
    uris = [e.uri for e in auth.notary.request_log()[notary_before:]]
    assert uris == [f"/v2/{repo}/_trust/tuf/timestamp.json"], uris


def test_X49_the_proxys_own_login_is_never_used_for_a_client(
    world: World, auth: AuthStack, signed: tuple[str, str], proxy: TrustProxy
) -> None:
    repo, digest = signed
    world.untag(f"{repo}:1.0", f"{repo}@{digest}")
    # First a client with alice's login: the proxy now holds a session and a token for alice.
    alice = world.config("x49-alice", {world.reg: ("alice", "alice-pw")})
    assert _through(world, proxy, alice, "pull", f"{repo}:1.0").returncode == 0
    world.untag(f"{repo}:1.0", f"{repo}@{digest}")
    images_before = world.repo_digests(f"{repo}:1.0")
    # A client with no login: authz/* trust data needs credentials, so the pull is refused
    # (exit-7 kind), though the proxy's own config.json (erin) and alice's kept token would do.
    anonymous = world.config("x49-anon")
    before = len(auth.issuer.requests())
    refused = _through(world, proxy, anonymous, "pull", f"{repo}:1.0")
    assert refused.returncode != 0, why(refused)
    assert "not authorized" in refused.stderr or "[Auth]" in refused.stderr, why(refused)
    assert world.repo_digests(f"{repo}:1.0") == images_before == []
    tokens = _new_token_requests(auth, before)
    assert _users(tokens, NOTARY_SERVICE) and set(_users(tokens, NOTARY_SERVICE)) == {None}, tokens
    # X-Registry-Auth naming another registry is not this registry's login either (J07).
    other = base64.urlsafe_b64encode(
        json.dumps(
            {"username": "alice", "password": "alice-pw", "serveraddress": world.basic}
        ).encode()
    ).decode()
    before = len(auth.issuer.requests())
    query = f"fromImage={repo}&tag=1.0"
    head = (
        f"POST /v1.41/images/create?{query} HTTP/1.1\r\nHost: docker\r\n"
        f"X-Registry-Auth: {other}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    response = raw_request(proxy.socket, head.encode())
    assert status_of(response) == 403 and b"alice-pw" not in response, response
    # Served as the anonymous client before it (its kept session, if any): no login at all.
    assert b"[Auth]" in response, response
    tokens = _new_token_requests(auth, before)
    assert set(_users(tokens, NOTARY_SERVICE)) <= {None}, tokens
    assert all(t["basic_user"] != "erin" for t in auth.issuer.requests()), "the proxy's login"
    _no_secret(proxy, refused.stdout, refused.stderr)


def test_X49_each_build_pre_pull_carries_only_its_registrys_entry(
    world: World, auth: AuthStack, signed: tuple[str, str], proxy: TrustProxy, tmp_path: Path
) -> None:
    repo, digest = signed
    # A second token registry on the same issuer: the issuer's log then names, per repository,
    # whose login each of the engine's pre-pulls presented.
    second = TokenRegistry(tmp_path / "second-registry", auth.issuer)
    second.launch()
    try:
        second.wait_ready()
        _build_with_two_registries(world, auth, proxy, tmp_path, repo, digest, second.host)
    finally:
        second.stop()


def _build_with_two_registries(
    world: World,
    auth: AuthStack,
    proxy: TrustProxy,
    tmp_path: Path,
    repo: str,
    digest: str,
    host: str,
) -> None:
    base = f"{host}/x49/base"
    base_digest = world.publish(base, "1.0", "x49 base on the second registry")
    world.untag(f"{repo}:1.0", f"{repo}@{digest}", f"{base}:1.0", f"{base}@{base_digest}")
    # Logins for both registries of the Dockerfile and a third that it never names.
    client = world.config(
        "x49-build",
        {
            world.reg: ("alice", "alice-pw"),
            host: ("dave", "dave-pw"),
            "third.example": ("carol", "carol-pw"),
        },
    )
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base}:1.0 AS first\nFROM {repo}:1.0\nCOPY --from=first /content.txt /base.txt\n"
    )
    before = len(auth.issuer.requests())
    name = f"{world.reg}/x49/built:1"  # checked for shadowing a signed tag: with alice's login
    built = _through(world, proxy, client, "build", "-t", name, str(context))
    try:
        assert built.returncode == 0, why(built)
        tokens = _new_token_requests(auth, before)
        # Trust data of each base (and of the -t name): that registry's login, no other.
        notary = {t["scope"][0]: t["basic_user"] for t in tokens if t["service"] == NOTARY_SERVICE}
        assert notary == {
            f"repository:{repo}:pull": "alice",
            f"repository:{base}:pull": "dave",
            f"repository:{name.rsplit(':', 1)[0]}:pull": "alice",
        }, tokens
        # The engine's pre-pulls: each registry saw its own entry of X-Registry-Config only.
        registry = {
            (t["scope"][0], t["basic_user"]) for t in tokens if t["service"] == REGISTRY_SERVICE
        }
        assert registry == {
            (f"repository:{repo.split('/', 1)[1]}:pull", "alice"),
            ("repository:x49/base:pull", "dave"),
        }, tokens
        assert all(t["basic_user"] not in ("carol", "erin") for t in tokens), tokens
        _no_secret(proxy, built.stdout, built.stderr)
    finally:
        world.untag(name, f"{repo}:1.0", f"{base}:1.0")
