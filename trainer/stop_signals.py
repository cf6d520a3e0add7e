"""Stop signals become a flag: Ctrl-C (SIGINT), `kill`/SLURM preemption/`docker stop` (SIGTERM) and a closed
terminal (SIGHUP) let the loop finish its iteration, save a complete checkpoint and exit."""
import signal
import time
from typing import Any, Dict, Optional

from utils import dist
from utils.errors import TrainingInterrupted

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
# A scheduler that stops a job signals every process of it (systemctl stop, SLURM), and torchrun passes the
# SIGTERM it got on to its processes: a SIGTERM this soon after the first is the same stop, not a second one.
REPEAT_WINDOW_S = 3.0


class StopSignals:
    """While active, the first stop signal sets `received`; a second one stops at once (the previous
    checkpoint stays intact: every save is atomic), except a SIGTERM repeated within REPEAT_WINDOW_S."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.received_at = 0.0
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay as they were
                break
        return self

    def __exit__(self, *_: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received == signal.SIGTERM == signum and time.monotonic() - self.received_at < REPEAT_WINDOW_S:
            return  # one stop delivered twice: to every process of a job, and passed on by torchrun
        if self.received is not None:
            raise TrainingInterrupted(signum, f"second {signal.Signals(signum).name}: stopped without saving; "
                                              "the previous checkpoint is intact (--resume auto)")
        self.received, self.received_at = signum, time.monotonic()

    def stop_requested(self) -> bool:
        """Whether any process received a signal. Under torchrun every process must stop at the same
        iteration (saving is collective), so the processes agree on it at every iteration."""
        return dist.any_process(self.received is not None)

    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a stop signal"
