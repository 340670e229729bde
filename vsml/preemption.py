"""Turning stop signals into a clean stop after the current generation.

Slurm's pre-timeout signal, ``scancel``, a cluster's preemption and Ctrl-C all
arrive as signals, on one rank or on all of them. :class:`StopRequest` records
them; the training loop asks every generation whether *any* rank received one
(one all-reduced integer), so all ranks stop after the same generation, write
one checkpoint and exit 0.

A second SIGINT restores the default handler's behaviour (immediate
KeyboardInterrupt), so an impatient Ctrl-C Ctrl-C still stops at once.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGHUP") if hasattr(signal, name)
)


class StopRequest:
    """Remembers the first stop signal this process received."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        if not self.requested:
            self.signal_name = signal.Signals(signum).name

    def install(self) -> "StopRequest":
        """Installs the handlers (main thread only); returns self."""
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()
