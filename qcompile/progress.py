"""Progress reporting for long steps, on stderr so that stdout stays machine-readable."""

import contextlib
import os
import sys
import time
from pathlib import Path


@contextlib.contextmanager
def step(what: str, quiet: bool = False):
    """Announce a long step, then report how long it took."""
    if not quiet:
        print(f"[qcompile] {what} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    if not quiet:
        print(f"[qcompile] {what}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def note(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[qcompile] {message}", file=sys.stderr, flush=True)


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
