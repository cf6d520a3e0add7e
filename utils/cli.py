"""Entry-point wrapper: a user's mistake prints one message and exits 2, never a traceback."""
import sys
from typing import Callable

from utils.errors import ConfigError, TrainingInterrupted, TrainingStopped


def run_cli(body: Callable[[], None]) -> int:
    try:
        body()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 128 + e.signum  # the shell's convention for a process ended by a signal
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
