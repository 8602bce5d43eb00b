"""What the proxy does per endpoint (engine-proxy.md §2): verify, rewrite to digests, or refuse.

`Decider` is the one object the server asks (`Decides`); its route families live in
trust/proxy/pulls.py, containers.py, images.py, swarm.py and builds.py, on the shared core of
trust/proxy/decide.py (dispatch, verification, refusals, the ledger).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trust.proxy.builds import BuildRoutes
from trust.proxy.containers import ContainerRoutes
from trust.proxy.decide import Ledger, compare_versions, sanitize
from trust.proxy.images import ImageRoutes
from trust.proxy.pulls import PullRoutes
from trust.proxy.swarm import SwarmRoutes

if TYPE_CHECKING:
    from trust.policy import Policy
    from trust.proxy.server import DecisionLog, Proxy
    from trust.settings import ProxyConfig, Settings

__all__ = ["Decider", "Ledger", "build_proxy", "compare_versions", "sanitize"]


class Decider(PullRoutes, ContainerRoutes, ImageRoutes, SwarmRoutes, BuildRoutes):
    """Every route family of §2 on one object; `handle` dispatches to `on_<route>`."""


def build_proxy(
    settings: Settings,
    engine_path: str,
    config: ProxyConfig,
    log: DecisionLog,
    policy_files: list[str] | None = None,
    *,
    policy: Policy | None = None,
) -> Proxy:
    """The proxy with its decisions wired in (what `trustpull proxy` serves)."""
    from trust.proxy.server import Proxy

    proxy = Proxy(settings, engine_path, config, log, policy_files or [], policy=policy)
    proxy.decider = Decider(proxy)
    return proxy
