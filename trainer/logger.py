"""Run logging: console (through tqdm so the bar stays intact), a log file, TensorBoard, image grids."""
import logging
import time
from pathlib import Path
from typing import Dict, Optional

import torch
from tqdm import tqdm

from utils.errors import ConfigError


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def setup_logger(log_dir: Optional[str], name: str = "srflow") -> logging.Logger:
    """The project logger, printing to the console and, when `log_dir` is given, to a timestamped file."""
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
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(Path(log_dir) / f"train_{time.strftime('%Y%m%d_%H%M%S')}.log")
        file.setFormatter(fmt)
        logger.addHandler(file)
    return logger


class RunLogger:
    """Scalars to the log and TensorBoard; images to visual_dbg/ and TensorBoard."""

    def __init__(self, opt: Dict, enabled: bool):
        self.enabled = enabled
        self.log = setup_logger(opt["path"]["log"] if enabled else None)
        self.tb = None
        self.visual_dir = Path(opt["path"]["visual_dbg"])
        if enabled and opt.get("use_tb_logger"):
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(opt["path"]["experiments_root"]) / "tb_logger"))
            except ImportError:
                self.log.warning("use_tb_logger is on but tensorboard is not installed; logging without it")
        self.wandb = None
        if enabled and opt.get("wandb"):
            try:
                import wandb
            except ImportError:
                raise ConfigError("`wandb: true` needs the optional `wandb` package: pip install wandb "
                                  "(or set wandb: false)") from None
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
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()
