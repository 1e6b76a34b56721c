"""torchrun facts (rank, world size, local rank) and the one process group every stage of a run shares."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from facekd.core.host import usable_cores


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def init_process_group(device: torch.device) -> None:
    """The default process group under torchrun (nccl on CUDA, gloo on CPU); a no-op outside
    torchrun or when a stage before has made it."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def close_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def cpu_threads_per_process() -> int:
    """This machine's cores (those this process may use) split among the ranks running on it."""
    return max(1, usable_cores() // max(1, local_world_size()))
