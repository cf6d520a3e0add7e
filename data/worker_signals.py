"""DataLoader workers leave stop signals to the main process.

A scheduler (scancel, `timeout`, systemctl stop) signals the whole process group, workers included. A worker
that died of it would make the main process fail mid-iteration instead of finishing it and saving; so a
worker ignores SIGINT, SIGTERM and SIGHUP, and the main process ends its workers itself. One exception: when
the main process exits it asks its remaining workers to end with SIGTERM (multiprocessing does, then waits
for them), and a worker must then obey. The main process says so through an Event it sets at exit.
"""
import atexit
import multiprocessing
import os
import signal
from typing import Any, Optional

_exiting: Optional[Any] = None  # multiprocessing.Event, set when the main process exits


def exiting_event() -> Any:
    """The Event (made once per main process, before its first workers start) that workers check."""
    global _exiting
    if _exiting is None:
        _exiting = multiprocessing.get_context().Event()
        atexit.register(_exiting.set)  # runs before multiprocessing's own exit hook, which ends workers
    return _exiting


def leave_stop_signals_to_the_main_process(exiting: Any) -> None:
    """In a worker: ignore stop signals, except a SIGTERM sent while the main process exits."""
    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGTERM and exiting.is_set():
            os._exit(0)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
