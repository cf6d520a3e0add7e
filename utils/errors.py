"""The one exception type for a user's mistake (bad recipe, missing file, unknown name)."""
import difflib
from typing import Iterable


class ConfigError(Exception):
    """A mistake in the user's recipe or command line; entry points print it and exit with status 2."""


def closest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean `x`?)' when a candidate looks like a typo of `name`, else ''."""
    match = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


class TrainingStopped(Exception):
    """Training cannot go on (e.g. a run of non-finite losses); the message says why and what to do."""


class DataError(RuntimeError):
    """The data went away under a running command (files deleted, cut short or shrunk since they were listed);
    the message names a file and why it cannot be used."""


class TrainingInterrupted(Exception):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) ended training; the message says what was saved."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
