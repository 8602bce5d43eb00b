"""The `trustpull` console script: `trustpull --version` is answered before click is imported.

Everything else is the click group in cli/main.py (`cli.main:main`, which tests and the docker
CLI plugin call directly). The text is click's `version_option` output, character for character
(tests/unit/test_cli_and_config.py compares the two).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from trust.version import __version__

        sys.stdout.write(f"trustpull, version {__version__}\n")
        sys.stdout.flush()
        sys.exit(0)
    from cli.main import main as group

    group()


if __name__ == "__main__":  # pragma: no cover
    main()
