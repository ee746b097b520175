"""SIGTERM as an exception, so a stopped pod (Job deleted, node drained) cleans up what it holds.

Kubernetes sends SIGTERM and waits the grace period; Python's default for SIGTERM ends the process at once,
skipping every `finally` — a snapshot's in-flight registration would then protect its objects from GC
until its lease expires (hours). Inside `sigterm_raises()`, SIGTERM raises `_Terminated` (a BaseException,
so no `except Exception` in DVC or gcsfs swallows it) through the snapshot's cleanup
(refs.inflight releases the registration), and leaves as `Interrupted` (reason Interrupted, exit 3).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from terrasnap.engine.errors import Interrupted


class _Terminated(BaseException):
    pass


@contextmanager
def sigterm_raises(what: str) -> Iterator[None]:
    """Run the block with SIGTERM raising; a second SIGTERM during the cleanup is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    fired = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise _Terminated(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated as exc:
        raise Interrupted(f"{what} stopped by {exc}: its in-flight registration (if it had made one) was "
                          f"released; running it again resumes") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
