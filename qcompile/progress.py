"""Progress reporting for long steps, on stderr so that stdout stays machine-readable."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Reporter:
    """Where a long operation tells the user what it is doing: announced steps with their times, notes, progress
    bars. One is handed down from the command line (or the Python API) instead of a `quiet` flag."""

    quiet: bool = False
    debug: bool = False  # also report each pass's time (`instrument.apply`)
    dump_ir: Path | None = None  # write the IR after each pass into this folder, one subfolder per pipeline
    # whether the user asked to stop (the command line's Ctrl-C): TVM turns an interrupt inside its C++ code into
    # an ordinary error, which some of its own passes catch and go on, so each step checks at its start and end
    interrupted: Callable[[], bool] = lambda: False

    @contextlib.contextmanager
    def step(self, what: str):
        """Announce a long step, then report how long it took."""
        self.check()
        self.note(f"{what} ...")
        start = time.perf_counter()
        yield
        self.check()
        self.note(f"{what}: done in {time.perf_counter() - start:.1f} s")

    def check(self) -> None:
        """Raise KeyboardInterrupt if the user asked to stop."""
        if self.interrupted():
            raise KeyboardInterrupt

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"[qcompile] {message}", file=sys.stderr, flush=True)

    def bar(self, iterable=None, **options):
        """A tqdm progress bar on stderr (none when quiet)."""
        from tqdm import tqdm

        return tqdm(iterable, disable=self.quiet, **options)


SILENT = Reporter(quiet=True)


@contextlib.contextmanager
def logger_level(name: str | None, level: int):
    """Within: the Python logger `name` (None: the root logger) at `level`; as it was after."""
    import logging

    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def native_stderr_to(path: Path):
    """Within: what native code writes on stderr (file descriptor 2) goes to the end of `path`; Python's own
    `sys.stderr` (notes, progress bars made within) keeps writing where it did. MetaSchedule's C++ prints a warning
    line for each candidate it fails to tensorize, over a thousand in a 30-minute search, which would bury the bar."""
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    try:
        uses_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # already redirected in Python (e.g. captured by pytest)
        uses_fd2 = False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
    if uses_fd2:
        sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1)
    try:
        yield
    finally:
        if uses_fd2:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(terminal, 2)
        os.close(terminal)
