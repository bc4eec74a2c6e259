"""What every command shares about its options and outputs: the `-p key=value` override
option, checking an output's place before a long run, and atomic writes (never a
half-written file)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from neupims_py.errors import UserError


def add_override_option(parser, example: str) -> None:
    """`-p/--param KEY=VALUE` (repeatable) into `args.overrides`."""
    parser.add_argument(
        "-p",
        "--param",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a configuration value, e.g. -p {example} (repeatable)",
    )


def output_path(text: str, flag: str, *, directory: bool = False) -> Path:
    """Check an output's place before the run, so a long simulation does not end in an error."""
    path = Path(text)
    if not path.parent.is_dir():
        raise UserError(f"the directory {str(path.parent)!r} does not exist; create it first",
                        field=flag)
    if directory and path.exists() and not path.is_dir():
        raise UserError(f"{text!r} is a file; give a directory (made if missing)", field=flag)
    if not directory and path.is_dir():
        raise UserError(f"{text!r} is a directory; give a file name", field=flag)
    return path


def write_json(path: Path, report: dict) -> None:
    """Write `report` to `path` through a temporary file: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ProgressLine:
    """A one-line progress report on stderr: rewritten in place at most every half second on
    a terminal, a new line every 10 s otherwise. Subclasses format the line and call
    `show(line)` when `due()`."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self.last = -1e9
        self.shown = False

    def due(self, force: bool = False) -> bool:
        t = time.perf_counter()
        if not force and t - self.last < (0.5 if self.tty else 10.0):
            return False
        self.last = t
        return True

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def show(self, line: str) -> None:
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()

