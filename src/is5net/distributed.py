"""One process or many: ``torchrun`` sharding shared by training, ``cache-sam`` and dataset evaluation.

Reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` it joins (or creates) the default
process group, NCCL on CUDA (device ``cuda:LOCAL_RANK``) and gloo on the CPU, and destroys it on ``close``
only if it created it. Outside torchrun every collective is a no-op.
"""

from __future__ import annotations

import os


class ProcessGroup:
    def __init__(self, device):
        import torch

        self.device = device
        self.owns = False
        self.rank, self.world_size = 0, 1
        self.active = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if not self.active:
            return
        import torch.distributed as dist

        if device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self.owns = True
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _tensor(self, values):
        import torch
        import torch.distributed as dist

        dev = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        return torch.tensor(values, dtype=torch.int64, device=dev)

    def all_ok(self, ok: bool) -> bool:
        """True on every rank only if ``ok`` is true on every rank."""
        if not self.active:
            return ok
        import torch.distributed as dist

        t = self._tensor([1 if ok else 0])
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def sum(self, values: list[int]) -> list[int]:
        if not self.active:
            return values
        import torch.distributed as dist

        t = self._tensor(values)
        dist.all_reduce(t)
        return [int(v) for v in t.tolist()]

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns = False
