"""DDP helpers for `torchrun`: process-group setup from the environment, samplers, reductions.

One process per device. `torchrun --nproc_per_node N training/train_seednet_fastflow.py ...`
sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the run is a
single process and every helper here degrades to a no-op. The backend is NCCL for CUDA
devices and gloo for CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 is the one that logs and saves).
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from e


def dist_info_from_env() -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK as set by torchrun (defaults: a single process)."""
    info = DistInfo(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
    )
    if not 0 <= info.rank < info.world_size:
        raise ValueError(f"RANK={info.rank} is outside [0, WORLD_SIZE={info.world_size})")
    return info


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; no-op for a single process.

    Args:
        device_type: 'cuda' (NCCL backend) or 'cpu' (gloo backend).

    Returns:
        This process's DistInfo.
    """
    info = dist_info_from_env()
    if info.is_distributed and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise RuntimeError(
                    f"WORLD_SIZE={info.world_size} but {name} is not set: launch with torchrun "
                    f"(or set MASTER_ADDR and MASTER_PORT)"
                )
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def all_reduce_sums(sums: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum each value over all processes (float64), e.g. loss sums and sample counts.

    Args:
        sums: name -> this process's partial sum.
        device: where the reduction tensor lives (the backend's device).

    Returns:
        name -> global sum; the input unchanged for a single process.
    """
    if not (dist.is_available() and dist.is_initialized()) or not sums:
        return dict(sums)
    names = sorted(sums)
    values = torch.tensor([float(sums[n]) for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return dict(zip(names, values.tolist(), strict=True))


def sync_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process.

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch
    each process still holds the statistics of its own last batch; syncing them makes every
    process's weights identical to the ones rank 0 validates and saves.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in unwrap_model(model).buffers():
        dist.broadcast(buffer, src=0)


def any_process(flag: bool, device: torch.device) -> bool:
    """True when `flag` is set on any process, so that every process takes the same branch."""
    return all_reduce_sums({"flag": float(flag)}, device)["flag"] > 0


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every process (picklable); `obj` itself for a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class EpochDataset(Dataset):
    """Forwards the sampler's epoch to the wrapped dataset's `set_epoch` inside each worker.

    With a persistent worker pool every worker holds its own copy of the dataset, made once,
    so calling `set_epoch` in the main process would not reach it. The sampler therefore
    yields (epoch, index) pairs, and this wrapper sets the epoch on the worker's copy before
    fetching: augmentation stays a function of (seed, epoch, index) whatever the worker count.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int] | int) -> Any:
        if isinstance(item, tuple):
            epoch, index = item
            if epoch != self._epoch and hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
                self._epoch = epoch
            return self.dataset[index]
        return self.dataset[item]


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose order is a function of (seed, epoch), that can skip ahead.

    Used for single-process runs too (num_replicas=1), so one code path gives the data order.
    `set_epoch(epoch, skip)` drops the first `skip` samples of this rank's share, which is
    how a run resumed mid-epoch continues exactly where the checkpoint was written. Yields
    (epoch, index) pairs for `EpochDataset`.
    """

    def __init__(
        self,
        dataset: Sequence[Any] | Dataset,
        num_replicas: int,
        rank: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:  # type: ignore[override]
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.skip :]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)
