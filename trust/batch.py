"""`trustpull check`: verify many references against the policy, concurrently.

References are de-duplicated by their normalised form (`alpine` and
`docker.io/library/alpine:latest` are one image), then grouped by repository (GUN): one worker
takes a whole group, so each repository's trust data is fetched and verified once, under the
cache lock, with one trust server session (one token) for all of its tags. Groups run in a
bounded thread pool and share one `TrustService` (its memo is thread-safe); the sessions of one
trust server share its kept-alive connections (`trust.http.watchdog.shared_adapter`), so the
TCP and TLS handshakes are paid once per worker, not once per repository. The pool overlaps
network waits; the verification itself is CPU under the GIL. Results come back in input order
whatever order they finished in, so the report is stable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from trust.errors import TrustpullError, combined_exit_code
from trust.reference import Reference, parse
from trust.service import TrustService, Verification

__all__ = ["CheckReport", "check_references"]

DEFAULT_WORKERS = 8


@dataclass
class CheckReport:
    """Every outcome (input order, duplicates removed) and how many inputs were duplicates."""

    outcomes: list[Verification] = field(default_factory=list)
    duplicates: int = 0
    requests: int = 0

    @property
    def exit_code(self) -> int:
        return combined_exit_code(o.exit_code for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        counts = {"pass": 0, "unsigned": 0, "fail": 0}
        for outcome in self.outcomes:
            counts[outcome.verdict] += 1
        return counts

    def summary(self) -> str:
        counts = self.counts()
        total = len(self.outcomes)
        dup = f" ({self.duplicates} duplicates removed)" if self.duplicates else ""
        text = f"{total} image{'s' if total != 1 else ''}{dup}: {counts['pass']} passed"
        if counts["unsigned"]:
            text += f", {counts['unsigned']} accepted UNSIGNED by rule"
        return text + f", {counts['fail']} failed"


def check_references(
    texts: Sequence[str],
    service: TrustService,
    *,
    workers: int = DEFAULT_WORKERS,
    on_done: Callable[[Verification], None] | None = None,
) -> CheckReport:
    """Check every reference with `service`; `on_done` is called (from worker threads,
    serialised) as each one finishes. Never raises a TrustpullError: failures are in the
    outcomes."""
    report = CheckReport()
    done_lock = threading.Lock()

    def finished(outcome: Verification) -> None:
        if on_done is not None:
            with done_lock:
                on_done(outcome)

    slots: dict[str, Verification] = {}
    order: list[str] = []
    seen: set[str] = set()
    groups: dict[str, list[tuple[str, str, Reference]]] = {}
    for text in texts:
        try:
            ref = parse(text)
        except TrustpullError as error:
            key = f"invalid:{text}"
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            slots[key] = Verification(input=text, error=error)
            order.append(key)
            finished(slots[key])
            continue
        key = str(ref)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        order.append(key)
        groups.setdefault(ref.name, []).append((key, text, ref))

    def run_group(items: list[tuple[str, str, Reference]]) -> list[tuple[str, Verification]]:
        results = []
        for key, text, ref in items:
            outcome = service.check(text, ref)
            finished(outcome)
            results.append((key, outcome))
        return results

    if groups:
        size = max(1, min(workers, len(groups)))
        with ThreadPoolExecutor(max_workers=size, thread_name_prefix="trustpull-check") as pool:
            for results in pool.map(run_group, groups.values()):
                slots.update(results)
    report.outcomes = [slots[key] for key in order]
    report.requests = service.requests
    return report
