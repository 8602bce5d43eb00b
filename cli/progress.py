"""Render the engine's pull event stream the way `docker pull` does, without dependencies.

On a terminal each layer keeps one line that is rewritten in place (ANSI cursor movement, keyed
by the layer id); piped, each status is one plain `<id>: <status>` line and progress ticks are
dropped, like docker's jsonmessage display; quiet prints nothing.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["PullProgress"]

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
