"""The training loop and everything it calls. Importing the package declares the recipe keys of the run, its
steps (injectors, losses), lr schemes and evaluators."""
from trainer import evaluators, run_keys, schedulers, step  # noqa: F401
