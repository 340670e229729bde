"""Turning stop signals into a clean stop after the current generation.

Slurm's pre-timeout signal, ``scancel``, a cluster's preemption and Ctrl-C all
arrive as signals, on one rank or on all of them. :class:`StopRequest` records
them; the training loop asks every generation whether *any* rank received one
(one all-reduced integer), so all ranks stop after the same generation, write
one checkpoint and exit 0.

Acknowledged at once, even while XLA compiles: Python runs a signal handler
only when the main thread returns to the interpreter, which a compilation or a
long jitted call does not do for tens of seconds. So the C-level handler also
writes the signal number to a pipe (:func:`signal.set_wakeup_fd`), and a
watcher thread reading that pipe says what will happen the moment the signal
arrives. A Ctrl-C after a first stop signal ends the process there and then
(exit status 130): checkpoints are written to a temporary file and renamed, so
the last one stays intact and only the current generation is lost.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from collections.abc import Callable

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGHUP") if hasattr(signal, name)
)
INTERRUPTED_EXIT_STATUS = 128 + signal.SIGINT  # what a shell reports for a process ended by Ctrl-C


def _print_to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _exit_now() -> None:
    os._exit(INTERRUPTED_EXIT_STATUS)  # the main thread may be inside XLA: only this ends it at once


def acknowledgement(signum: int) -> str:
    """What the first stop signal makes the run do, in one line."""
    if signum == signal.SIGINT:
        return "Ctrl-C: stopping after this generation (a checkpoint is written); press Ctrl-C again to stop now"
    return f"{signal.Signals(signum).name}: stopping after this generation (a checkpoint is written)"


class StopRequest:
    """Remembers the first stop signal this process received and acknowledges it at once.

    Args:
      announce: called with one line when a signal arrives (default: stderr);
        the training loop points it at its run log, other ranks at nothing.
      stop_now: called on a second Ctrl-C (default: exit with status 130).
      in_process: for training inside someone else's Python session (vsml.api,
        a notebook): a second Ctrl-C raises KeyboardInterrupt in the main thread,
        as soon as it runs Python again, instead of ending the process.
    """

    def __init__(
        self,
        announce: Callable[[str], None] = _print_to_stderr,
        stop_now: Callable[[], None] | None = None,
        in_process: bool = False,
    ):
        self.signal_name: str | None = None
        self.announce = announce
        self.stop_now = stop_now or (self._interrupt_main_thread if in_process else _exit_now)
        self._raise_in_main_thread = False
        self._own_interrupts = 0  # pipe bytes that _thread.interrupt_main wrote, not a person
        self._previous = {}
        self._lock = threading.Lock()
        self._pipe: tuple[int, int] | None = None
        self._watcher: threading.Thread | None = None
        self._previous_wakeup_fd = -1

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _received(self, signum: int) -> None:
        """Handles one delivery of ``signum`` (called exactly once per delivery)."""
        with self._lock:
            first = self.signal_name is None
            if first:
                self.signal_name = signal.Signals(signum).name
            again = signum == signal.SIGINT and not first  # Ctrl-C after any stop signal: now
        if again:
            self.announce("Ctrl-C again: stopping now; the last checkpoint stays as it is")
            self.stop_now()
        elif first:
            self.announce(acknowledgement(signum))

    def _interrupt_main_thread(self) -> None:
        with self._lock:
            self._raise_in_main_thread = True
            self._own_interrupts += 1
        _thread.interrupt_main(signal.SIGINT)  # runs _handle in the main thread; also writes a pipe byte

    def _handle(self, signum, frame):
        if self._raise_in_main_thread:
            self._raise_in_main_thread = False
            raise KeyboardInterrupt
        # With the watcher running, the pipe already delivered this signal to _received.
        if self._pipe is None:
            if signum == signal.SIGINT and self.requested:
                raise KeyboardInterrupt
            self._received(signum)

    def _watch(self, read_fd: int) -> None:
        while True:
            try:
                received = os.read(read_fd, 64)
            except OSError:
                return
            if not received:
                return
            for signum in received:
                with self._lock:
                    own = signum == signal.SIGINT and self._own_interrupts > 0
                    if own:
                        self._own_interrupts -= 1
                if signum in STOP_SIGNALS and not own:
                    self._received(signum)

    def install(self) -> StopRequest:
        """Installs the handlers and the watcher thread (main thread only); returns self."""
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # the C handler must never block
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._pipe = (read_fd, write_fd)
        self._watcher = threading.Thread(target=self._watch, args=(read_fd,), name="vsml-stop-signals", daemon=True)
        self._watcher.start()
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            read_fd, write_fd = self._pipe
            self._pipe = None
            os.close(write_fd)  # the watcher reads end-of-file and returns
            self._watcher.join(timeout=5)
            os.close(read_fd)

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()
