"""The `trustpull` console script: `--version` without click, and an exit without teardown.

Everything else is the click group in cli/main.py (`cli.main:main`, which tests and the docker
CLI plugin call directly). `--version` prints click's `version_option` text, character for
character (tests/unit/test_cli_and_config.py compares the two).

When the command is done, the process ends with `os._exit` after the atexit handlers ran and
stdout/stderr were flushed: the interpreter's own teardown (freeing every module and object one
by one) costs a warm `resolve` ~40 ms of wall time and ~60 ms of CPU here, and nothing in it is
ours to wait for (files are written and closed, fsynced where it matters, before the command
returns; locks are released by the kernel).
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from trust.version import __version__

        sys.stdout.write(f"trustpull, version {__version__}\n")
        _exit(0)
    from cli.main import main as group

    try:
        group()
    except SystemExit as done:
        _exit(done.code)
    _exit(0)


def _exit(code: object) -> None:
    """sys.exit's meaning of `code` (None → 0, an int, else printed and 1), then os._exit."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    import atexit
    import threading

    for thread in threading.enumerate():  # what the interpreter waits for before atexit
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 1  # e.g. stdout closed early: as the interpreter reports it
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    main()
