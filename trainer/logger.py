"""Run logging: console (through tqdm so the bar stays intact), a log file, TensorBoard, image grids."""
import logging
import logging.handlers
import os
import time
from pathlib import Path
from typing import Dict

import torch
from tqdm import tqdm

from utils.errors import ConfigError


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def setup_logger(name: str = "srflow") -> logging.Logger:
    """The project logger, printing to the console (the run's log file is added by RunLogger.open_files)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%y-%m-%d %H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    return logger


def _file_handler(log_dir: str) -> logging.Handler:
    """A new log file (timestamped: a resumed run adds a file, never rewrites one)."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return logging.FileHandler(Path(log_dir) / f"train_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}.log")


class RunLogger:
    """Scalars to the log and TensorBoard; images to visual_dbg/ and TensorBoard.

    Until `open_files()` (called once the run is set up), records are only printed and kept in memory: a
    run that fails while starting writes nothing into its experiment folder.
    """

    def __init__(self, opt: Dict, enabled: bool):
        self.opt, self.enabled = opt, enabled
        self.log = setup_logger()
        self.pending = logging.handlers.BufferingHandler(capacity=10 ** 6)
        self.log.addHandler(self.pending)
        self.tb = None
        self.wandb = None
        self.visual_dir = Path(opt["path"]["visual_dbg"])
        if enabled and opt.get("wandb"):
            try:
                import wandb  # noqa: F401  (checked now, started in open_files)
            except ImportError:
                raise ConfigError("`wandb: true` needs the optional `wandb` package: pip install wandb "
                                  "(or set wandb: false)") from None

    def open_files(self) -> None:
        """Start the log file (with what was logged so far), TensorBoard and wandb."""
        self.log.removeHandler(self.pending)
        if not self.enabled:
            return
        opt = self.opt
        file = _file_handler(opt["path"]["log"])
        file.setFormatter(self.log.handlers[0].formatter)
        for record in self.pending.buffer:
            file.handle(record)
        self.pending.buffer.clear()
        self.log.addHandler(file)
        if opt.get("use_tb_logger"):
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(opt["path"]["experiments_root"]) / "tb_logger"))
            except ImportError:
                self.log.warning("use_tb_logger is on but tensorboard is not installed; logging without it")
        if opt.get("wandb"):
            import wandb
            self.wandb = wandb.init(name=opt["name"], config=opt, dir=opt["path"]["experiments_root"])

    def scalars(self, values: Dict[str, float], it: int, prefix: str = "") -> None:
        if self.tb:
            for key, value in values.items():
                self.tb.add_scalar(prefix + key, value, it)
        if self.wandb:
            self.wandb.log({prefix + k: v for k, v in values.items()}, step=it)

    def image(self, tag: str, grid: torch.Tensor, it: int) -> None:
        """Save a [0,1] CxHxW image to visual_dbg/<tag>/<it>.png and TensorBoard."""
        if not self.enabled:
            return
        from torchvision.utils import save_image
        path = self.visual_dir / tag / f"{it}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid.clamp(0, 1), str(path))
        if self.tb:
            self.tb.add_image(tag, grid.clamp(0, 1), it)

    def close(self) -> None:
        for handler in self.log.handlers[1:]:  # the run's log file; the console handler stays
            self.log.removeHandler(handler)
            handler.close()
        if self.tb:
            self.tb.close()
            self.tb = None
        if self.wandb:
            self.wandb.finish()
            self.wandb = None
