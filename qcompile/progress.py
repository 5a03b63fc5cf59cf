"""Progress reporting for long steps, on stderr so that stdout stays machine-readable."""

import contextlib
import sys
import time


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
