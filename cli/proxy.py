"""`trustpull proxy`: run the Engine API proxy (trust/proxy) on a unix socket."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from cli.common import EPILOG, load_cli_config, run
from trust.errors import ConfigError, UsageError


def _unix_path(value: str, what: str) -> str:
    if value.startswith("unix://"):
        value = value[len("unix://") :]
    elif "://" in value:
        raise UsageError(f"{what} must be a unix:// socket, not {value}")
    if value.startswith("@"):
        raise ConfigError(f"{what}: an abstract socket has no file permissions: refused")
    if not value:
        raise UsageError(f"{what} is empty")
    return value


@click.command("proxy", epilog=EPILOG)
@click.option(
    "--listen",
    "listen",
    metavar="unix://PATH",
    help="Socket to listen on (default: [proxy].listen; one of the two is required).",
)
@click.option(
    "--engine",
    "engine",
    metavar="unix://PATH",
    help="The real engine (default: [proxy].engine, DOCKER_HOST, unix:///var/run/docker.sock).",
)
@click.option("--config", "config", metavar="FILE", help="Configuration file (TOML).")
@click.option(
    "--policy",
    "policy",
    metavar="FILE",
    help="Policy rules file ([[rules]]); replaces the config file's rules.",
)
@click.option(
    "--mode",
    type=click.Choice(["enforce", "audit"]),
    default=None,
    help="audit logs trust refusals instead of making them (a request that cannot be parsed "
    "unambiguously is still refused); default: [proxy].mode, else enforce.",
)
@click.option("--check-config", is_flag=True, help="Validate the configuration and exit.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Show a failure's low-level detail and traceback."
)
def proxy_command(
    listen: str | None,
    engine: str | None,
    config: str | None,
    policy: str | None,
    mode: str | None,
    check_config: bool,
    verbose: bool,
) -> None:
    """Engine API proxy: every pull through it is verified and pinned to the signed digest.

    Trust is always on here (DOCKER_CONTENT_TRUST has no say). The proxy protects only the
    clients that can reach its socket and not the engine's.
    """

    def body() -> int:
        import dataclasses

        from trust.proxy.handlers import build_proxy
        from trust.proxy.server import DecisionLog, bind_listener, check_private_files

        # Trust is always on in the proxy: DOCKER_CONTENT_TRUST has no say.
        configuration = load_cli_config(config, policy=policy)
        settings = dataclasses.replace(configuration.settings, content_trust=True)
        proxy_config = settings.proxy
        if mode is not None:
            proxy_config = dataclasses.replace(proxy_config, mode=mode)
        listen_at = listen or proxy_config.listen
        if not listen_at:
            raise UsageError("--listen unix://PATH (or [proxy].listen) is required")
        listen_path = _unix_path(listen_at, "--listen")
        engine_at = (
            engine
            or proxy_config.engine
            or os.environ.get("DOCKER_HOST")
            or "unix:///var/run/docker.sock"
        )
        engine_path = _unix_path(engine_at, "--engine")
        if os.path.abspath(engine_path) == os.path.abspath(listen_path):
            raise ConfigError("--listen and --engine are the same socket")
        check_private_files(settings, [policy] if policy else [])
        if check_config:
            click.echo(
                f"configuration OK: listen unix://{listen_path}, engine unix://{engine_path}, "
                f"mode {proxy_config.mode}"
            )
            return 0
        log = DecisionLog(sys.stderr, proxy_config.mode)
        if proxy_config.mode == "audit":
            log.write(
                event="start",
                warning="AUDIT MODE: nothing is refused; every would-be refusal is only logged",
            )
        log.write(event="start", listen=f"unix://{listen_path}", engine=f"unix://{engine_path}")
        listener = bind_listener(listen_path, engine_path, proxy_config)
        server = build_proxy(
            settings,
            engine_path,
            proxy_config,
            log,
            [policy] if policy else [],
            policy=configuration.policy,
        )

        def stop(signum: int, frame: Any) -> None:
            server.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            server.serve(listener)
        finally:
            try:
                if os.path.exists(listen_path):
                    os.unlink(listen_path)
            except OSError:
                pass
        return 0

    run(verbose, body)
