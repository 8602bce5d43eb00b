"""Render the engine's pull event stream the way `docker pull` does, without dependencies.

On a terminal each layer keeps one line that is rewritten in place (ANSI cursor movement, keyed
by the layer id); piped, each status is one plain `<id>: <status>` line and progress ticks are
dropped, like docker's jsonmessage display; quiet prints nothing.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["BatchProgress", "PullProgress"]

_CLEAR_LINE = "\x1b[2K\r"


def _cursor_up(lines: int) -> str:
    return f"\x1b[{lines}A" if lines > 0 else ""


def _cursor_down(lines: int) -> str:
    return f"\x1b[{lines}B" if lines > 0 else ""


class PullProgress:
    """An `on_event` callback for `Engine.pull` that writes progress to `out`."""

    def __init__(self, out: TextIO | None = None, *, quiet: bool = False, tty: bool | None = None):
        self.out = sys.stdout if out is None else out
        self.quiet = quiet
        self.tty = self.out.isatty() if tty is None else tty
        # Layer id → its line number among the lines printed since the last id-less message.
        self._lines: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        layer = str(event.get("id") or "")
        status = str(event.get("status") or "")
        progress = str(event.get("progress") or "")
        if not self.tty:
            if progress:
                return  # docker drops progress ticks when not on a terminal
            self.out.write(f"{layer}: {status}\n" if layer else f"{status}\n")
            self.out.flush()
            return
        text = f"{layer}: {status}" if layer else status
        if progress:
            text = f"{text} {progress}"
        if not layer:
            # Output that is not per-layer ends the block of rewritable lines.
            self._lines.clear()
            self.out.write(f"{text}\n")
            self.out.flush()
            return
        if layer not in self._lines:
            self._lines[layer] = len(self._lines)
            self.out.write("\n")
        distance = len(self._lines) - self._lines[layer]
        self.out.write(f"{_cursor_up(distance)}{_CLEAR_LINE}{text}\r{_cursor_down(distance)}")
        self.out.flush()


class BatchProgress:
    """`trustpull check` on a terminal: one line per image as it finishes, and an overall bar.

    The bar is the last line and is redrawn in place; each finished image's line is printed
    above it. Nothing at all when `out` is not a terminal (CI logs get the final table only).
    """

    WIDTH = 30

    def __init__(self, total: int, out: TextIO | None = None, *, tty: bool | None = None):
        self.out = sys.stderr if out is None else out
        self.total = total
        self.done = 0
        self.enabled = (self.out.isatty() if tty is None else tty) and total > 0
        if self.enabled:
            self._bar()

    def _bar(self) -> None:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.out.write(f"{_CLEAR_LINE}[{bar}] {self.done}/{self.total}")
        self.out.flush()

    def finished(self, verdict: str, image: str, detail: str) -> None:
        if not self.enabled:
            return
        self.done += 1
        self.out.write(f"{_CLEAR_LINE}{verdict:<8} {image}  {detail}\n")
        self._bar()

    def close(self) -> None:
        if self.enabled:
            self.out.write(_CLEAR_LINE)
            self.out.flush()
