"""Stop signals: SIGTERM/SIGINT make the trainer checkpoint after the current step and return.

Spot instances, SageMaker and ``docker stop`` send SIGTERM (often to the whole process group,
DataLoader workers included) and SIGKILL after a grace period. The trainer's process turns
SIGTERM into a flag (:class:`StopSignal`); DataLoader workers never die of a stop signal
(:func:`protect_loader_worker`), so the trainer can finish its step, write the checkpoint and
shut its workers down itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any, ClassVar

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Context manager that turns SIGTERM/SIGINT into a flag (main thread only).

    Repeated SIGTERMs are ignored (the stop is already under way: torchrun forwards the
    SIGTERM its process group got); a second SIGINT gets the previous handler (Ctrl-C twice
    interrupts at once). Nested uses share the outermost one's flag, so a command can start
    listening before it imports torch and the trainer still sees a signal that came early.
    ``restore=False`` keeps the handlers after the block (a command that exits right after).
    """

    _active: ClassVar[list[StopSignal]] = []

    def __init__(self, *, restore: bool = True) -> None:
        self._received: int | None = None
        self._restore_on_exit = restore
        self._previous: dict[int, Any] = {}
        self._outer: StopSignal | None = None

    @property
    def received(self) -> int | None:
        """The first stop signal received (its number), or None."""
        return self._outer.received if self._outer is not None else self._received

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._received is None:
            self._received = signum
            return
        if signum == signal.SIGINT:  # Ctrl-C twice: stop now, the default way
            self._restore()
            signal.raise_signal(signum)

    def __enter__(self) -> StopSignal:
        if StopSignal._active:
            self._outer = StopSignal._active[-1]
        elif threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        StopSignal._active.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        StopSignal._active.remove(self)
        if self._restore_on_exit:
            self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold SIGTERM/SIGINT pending in this thread (delivered when the block ends).

    Processes forked inside the block start with the signals blocked, so a DataLoader worker
    has no moment between ``fork`` and :func:`protect_loader_worker` in which a stop signal
    sent to the process group kills it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def protect_loader_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: stop signals meant for the trainer never end a worker.

    SIGINT is ignored. SIGTERM stays blocked and a thread takes each one with
    ``sigwaitinfo``: from the worker's parent (the DataLoader's own ``terminate`` at shutdown)
    it ends the worker at once; from anyone else (a process-group kill, ``systemd``, the
    spot-instance agent) it is ignored. The trainer stops at a step boundary, writes its
    checkpoint and then shuts the loader down, which ends the workers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not on macOS/Windows: plain ignore
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the thread
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    parent = os.getppid()
    threading.Thread(
        target=_end_on_parents_sigterm, args=(parent,), name="sigterm-filter", daemon=True
    ).start()


def _end_on_parents_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            os._exit(128 + signal.SIGTERM)  # what terminate() asked for, without cleanup
