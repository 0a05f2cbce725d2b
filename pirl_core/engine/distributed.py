"""One PIRL run over several processes: torch.distributed under torchrun (one process per GPU with NCCL,
or CPU processes with gloo), BatchNorm synchronised across them, and the collectives the loop needs.

How a run stays one run (engine/pretrain.py uses these):
* every process draws the same epoch order and the same augmentation for the whole global batch and
  builds only its own rows (views.py `part`), so the processes together see exactly the one-process batch;
* DistributedDataParallel averages the gradients; with synchronised BatchNorm the batch statistics are
  those of the global batch, so N processes with batch B/N step like one process with batch B;
* the memory bank is a full replica in every process, updated every step from an all_gather of every
  process's (index, f(v_I)): the replicas stay identical, and negatives come from the same generator;
* process 0 reports, writes checkpoints (the same format as a one-process run's) and decides: a stop, a
  re-planned time budget; `from_main` gives its decision to every process.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

from .optim import resolve_device

# The one differentiable all_reduce in a public module; its suggested replacement is a private module.
warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_reduce is deprecated", FutureWarning)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


ONE_PROCESS = World()


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def join(device_name: str = "auto") -> World:
    """Join the process group torchrun describes in the environment: NCCL with one GPU per process (the
    local rank's, made current: `device_for` returns it), gloo on the CPU. Returns this process's place."""
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world()


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device_name: str) -> torch.device:
    """This process's device: under several GPU processes, the local rank's GPU."""
    device = resolve_device(device_name)
    if device.type == "cuda" and world().size > 1 and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows (same shape everywhere), concatenated in rank order."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def agreed(value: int | bool, world: World, device: torch.device) -> int:
    """Process 0's decision (a stop, a checkpoint, a plan of the steps), in every process: their clocks differ a
    little, and a checkpoint that only some processes make would pair their collectives wrongly (synchronised
    BatchNorm). Every decision the training loop takes from a clock or a callback goes through here."""
    return from_main(value, device) if world.size > 1 else int(value)


def from_main(value: int | bool, device: torch.device) -> int:
    """Process 0's value, in every process."""
    t = torch.tensor([int(value)], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """nn.SyncBatchNorm for CPU processes (gloo): PyTorch's version runs on GPUs only (its kernels are
    CUDA's). Training-mode statistics are those of the global batch: sums over every process through
    a differentiable all_reduce (torch.distributed.nn), whose backward sums the gradients the same way.
    Same parameters, buffers and state_dict keys as BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        return self.synchronised(x)

    def synchronised(self, x: torch.Tensor) -> torch.Tensor:
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        dist.all_reduce(count)
        mean = differentiable_all_reduce(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = differentiable_all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * count / max(count.item() - 1, 1), factor)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d in `module` synchronised across processes (torch's SyncBatchNorm on GPUs)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            if child.affine:
                synced.weight, synced.bias = child.weight, child.bias
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            sync_batchnorm(child, device)
    return module
