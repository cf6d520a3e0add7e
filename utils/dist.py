"""torch.distributed helpers; every function also works in a plain single process."""
import contextlib
import os
from datetime import timedelta
from typing import Any, Dict, Optional

import torch
import torch.distributed as td
from torch import nn

from utils.errors import ConfigError


def initialized() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if initialized() else 0


def world_size() -> int:
    return td.get_world_size() if initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or `net` itself)."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def pick_device(opt: Dict[str, Any], device: Optional[str] = None) -> torch.device:
    """`device` when given (cpu or cuda), else CUDA when the recipe's `gpu_ids` ask for it and it is there (this
    process's GPU under torchrun, else the first of gpu_ids), else the CPU."""
    if device not in (None, "cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda, got `{device}`")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but CUDA is not available here")
    if device == "cpu" or (device is None and not (opt["gpu_ids"] and torch.cuda.is_available())):
        return torch.device("cpu")
    if opt.get("dist"):
        return torch.device("cuda", local_rank())
    return torch.device("cuda", opt["gpu_ids"][0] if opt["gpu_ids"] else 0)


def init_from_env(use_cuda: bool) -> None:
    """Join the process group torchrun describes in the environment: NCCL on CUDA, gloo on the CPU."""
    if use_cuda:
        torch.cuda.set_device(local_rank())
    td.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))


def shutdown(success: bool) -> None:
    """Leave the process group: after the others when all went well (the last writes are rank 0's), at
    once after an error. Exiting without this can abort the process (gloo's threads still running)."""
    if not initialized():
        return
    if success:
        td.barrier()
    td.destroy_process_group()


def wrap_ddp(net: nn.Module, device: torch.device, find_unused: bool) -> nn.Module:
    """DDP over the parameters that are trainable now (frozen ones are left out; re-wrap after unfreezing).
    `find_unused` is needed when some trainable parameters get no gradient in a step."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids, find_unused_parameters=find_unused)


def gather(obj: Any) -> list:
    """Every process's `obj`, in rank order (just [obj] in a single process)."""
    if not initialized():
        return [obj]
    out: list = [None] * world_size()
    td.all_gather_object(out, obj)
    return out


def no_sync(net: nn.Module, last_chunk: bool) -> Any:
    """Skip DDP's gradient all-reduce on all but the last accumulation chunk."""
    if hasattr(net, "no_sync") and not last_chunk:
        return net.no_sync()
    return contextlib.nullcontext()


def reduce_metrics(metrics: Dict[str, float]) -> Dict[str, float]:
    """Average each metric over the processes."""
    if not initialized() or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                          device="cuda" if td.get_backend() == "nccl" else "cpu")
    td.all_reduce(values)
    return {k: float(v) / world_size() for k, v in zip(keys, values)}


def mean_over_processes(t: torch.Tensor) -> torch.Tensor:
    """The mean of `t` over all processes (each process passes a tensor of the same shape)."""
    if not initialized():
        return t
    t = t.clone()
    td.all_reduce(t)
    return t / world_size()


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process (every process must call this at the same point)."""
    if not initialized():
        return flag
    t = torch.tensor([float(flag)], device="cuda" if td.get_backend() == "nccl" else "cpu")
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item())
