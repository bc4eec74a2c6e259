"""The `neupims-sim` command line: one sub-command per job, each registered by its own module.

Every sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed namespace, returns an exit code). User mistakes raise
``UserError`` and end here with a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from neupims_py import __version__
from neupims_py.errors import UserError

# Modules that contribute sub-commands, in the order `--help` lists them.
COMMAND_MODULES = (
    "neupims_py.dram.cli",
    "neupims_py.compiler.cli",
    "neupims_py.workload.cli",
    "neupims_py.serving.cli",
    "neupims_py.results.cli",
    "neupims_py.analytic.cli",
    "neupims_py.sweep.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neupims-sim",
        description="Cycle-level simulator of NPU + PIM accelerators serving batched LLM inference.",
    )
    parser.add_argument("--version", action="version", version=f"neupims-sim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a sub-command not built yet
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"neupims-sim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("neupims-sim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
