"""Training on several processes with PyTorch's own launcher, ``torchrun``.

Started by ``torchrun`` (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` in the environment) a trainer joins the
process group (NCCL on GPUs, gloo on the CPU), takes the GPU of its local rank, and trains a copy of the
network wrapped in ``DistributedDataParallel``, which averages the gradients of every step over the ranks.
Each rank samples its own patches; rank 0 alone validates, writes checkpoints, exports and writes the
manifest. Started without ``torchrun``, a trainer is rank 0 of 1 and every function here is a no-op.
"""
import hashlib
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.common import machine


class Job:
    """Where this process stands in a training job: its rank, the number of ranks, its device."""

    def __init__(self, device, rank=0, world=1):
        self.device, self.rank, self.world = device, rank, world

    @property
    def main(self):
        """True on the rank that validates, checkpoints, exports and prints."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.world > 1

    def say(self, text):
        """Print ``text`` above the progress bars, on rank 0 only."""
        if self.main:
            tqdm.write(text)

    def seed(self, seed):
        """The sampling seed of this rank: ``seed`` on rank 0 (a one-process run samples as rank 0 does),
        ``seed + rank`` on the others."""
        return seed + self.rank

    def wrap(self, module):
        """``module`` in ``DistributedDataParallel`` when there are several ranks, else itself."""
        if not self.distributed:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def share(self, *values):
        """Rank 0's ``values`` (floats) on every rank: what decides when to stop, what the schedule is at, and
        when to checkpoint must be the same everywhere, or the ranks' weights part ways."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.broadcast(t, 0)
        return tuple(t.tolist())

    def broadcast(self, obj):
        """Rank 0's ``obj`` (any picklable value) on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, 0, device=self._collective_device())
        return box[0]

    def gather(self, obj):
        """Every rank's ``obj``, as a list in rank order, on every rank (``[obj]`` for one process)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def restore_random_states(self, ckpt, **setters):
        """Give each random generator (``gen=generator.set_state``, ``py_rng=rng.setstate``, ...) this rank's
        state from a checkpoint: its own where the checkpoint kept every rank's (``<key>s``), the one state of
        a checkpoint written by one process otherwise. A rank new to the job keeps its fresh seed."""
        for key, set_state in setters.items():
            states = ckpt.get(key + "s") or [ckpt[key]]
            if self.rank < len(states):
                set_state(states[self.rank])

    def share_buffers(self, module):
        """Rank 0's buffers (BatchNorm running statistics) in ``module`` on every rank. DDP hands them out at
        the start of each forward, and each rank's training-mode forward then updates its own copy."""
        if self.distributed:
            for b in module.buffers():
                dist.broadcast(b.data, 0)

    def check_same_weights(self, module):
        """Raise RuntimeError unless every rank holds the same parameters and buffers as rank 0 (bit for bit).
        Returns the digest."""
        h = hashlib.sha256()
        for name, t in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        digests = self.gather(h.hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"the ranks' weights differ: {', '.join(d[:12] for d in digests)}")
        return digests[0]

    def close(self):
        """Leave the process group (after every rank is done)."""
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def _collective_device(self):
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def start(args):
    """The ``Job`` of this process. Under ``torchrun``: joins the process group and gives each rank its
    device (GPU ``LOCAL_RANK``; on the CPU, ``--threads 0`` becomes the cores divided among the local ranks).
    Alone: ``training.common.machine(args)`` and rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Job(machine(args))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if args.threads == 0:
        args.threads = max(1, len(os.sched_getaffinity(0)) // local_world)
    device = machine(args)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Job(device, rank, world)
