"""The benchmark scripts' command line: the parser and its shared options, messages, exit codes."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import DEFAULT_MODELS

OUT_HELP = "output folder (default benchmarks/results/<machine>/)"


class SetupError(Exception):
    """What stops a benchmark before it measures: one line on stderr, exit code 2."""


def log(msg: str) -> None:
    """One line on stderr (looked up at each call, so a captured stderr sees it)."""
    print(msg, file=sys.stderr, flush=True)


def failed(error: BaseException | str) -> int:
    """Say `error: ...` on stderr; the exit code of a run that could not start (2)."""
    log(f"error: {error}")
    return 2


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A script's parser: its module docstring as the description, kept as written."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_models(p: argparse.ArgumentParser, help: str = "models folder (default: models/)") -> None:
    """--models DIR (default: the shipped models/)."""
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help=help)


def add_out_quick(p: argparse.ArgumentParser, quick_help: str, out_help: str = OUT_HELP) -> None:
    """--out DIR and --quick (a smoke run, written under the git-ignored raw/quick/)."""
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--quick", action="store_true", help=quick_help)


def command_line(prog: str, argv: Sequence[str] | None, quote: bool = True) -> str:
    """How the script was called: `prog` and its arguments (shell-quoted unless `quote` is false)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return f"{prog} " + (shlex.join(args) if quote else " ".join(args))
