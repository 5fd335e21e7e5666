"""Multi-process data-parallel training through torch.distributed (launched by torchrun).

`edgebert run --nproc N` re-launches itself under `torch.distributed.run`; every process runs
the recipe, the training loop shards batches with a DistributedSampler and averages gradients
with DistributedDataParallel (gloo on CPU, nccl on GPU), evaluation is sharded and gathered so
every rank sees the same metrics (and takes the same best-epoch / early-stop decisions), and
only rank 0 writes the run directory, exports and benchmarks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist

from compress.errors import EdgebertError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's number on its machine (its GPU index under torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return world_size() > 1


def init(device: torch.device) -> None:
    """Join the process group once (torchrun provides MASTER_ADDR/PORT, RANK, WORLD_SIZE)."""
    if active() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def gather_rows(local: list, total: int) -> list:
    """Rows computed as `rows[rank::world]` on each rank, put back in order on every rank."""
    if not active():
        return local
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, local)
    out: list = [None] * total
    for r, part in enumerate(parts):
        out[r :: world_size()] = part
    return out


def mean(value: float) -> float:
    """The average of a number over all ranks (a training loss for the log)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def any_rank(flag: bool) -> bool:
    """Whether any rank has `flag` set: ranks that must leave a collective loop together (a
    stop asked for by a signal) decide on the same step, or the one left behind waits in an
    all-reduce its peer never joins."""
    if not active():
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


SPLITTABLE_MODIFIERS = ("distill",)


def check_split(
    batch_size: int, modifiers: list[tuple[str, object]], nproc: int, where: str
) -> None:
    """Refuse what data-parallel training cannot split: a batch that does not divide, and
    modifiers whose state would drift apart per rank (pruning scores, QAT ranges, projections)."""
    if batch_size % nproc:
        raise EdgebertError(
            f"{where}training.batch_size: {batch_size} does not split over {nproc} processes; "
            "use a multiple of --nproc (it stays the global batch size)"
        )
    for name, config in modifiers:
        if (
            name not in SPLITTABLE_MODIFIERS
            or getattr(config, "hidden", None)
            or getattr(config, "attention", None)
        ):
            raise EdgebertError(
                f"{where}with.{name}: multi-process training supports fine-tuning and logit "
                "distillation; run pruning, QAT and hidden/attention transfer with one process"
            )


def check_splittable(recipe, nproc: int) -> None:
    """`check_split` for every training stage of a recipe, before any process starts."""
    for index, stage in enumerate(recipe.stages):
        training = getattr(stage, "training", None)
        if training is not None:
            entries = [(e.modifier_name, e.modifier_config) for e in getattr(stage, "with_", [])]
            check_split(training.batch_size, entries, nproc, f"stages[{index}].")


def relaunch(nproc: int, argv: list[str]) -> tuple[int, bool]:
    """Run `edgebert ARGV` as `nproc` processes under torchrun; returns (exit code, whether
    this process was told to stop).

    SIGTERM to this process (an orchestrator stopping the job) is passed on to torchrun, which
    passes it to every rank: each saves its checkpoint and the run ends as interrupted and
    resumable, instead of the ranks training on as orphans. The ranks report their own errors
    in one line; torchrun's closing traceback about a failed child adds nothing and is dropped
    from the stream."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "compress.cli",
        *argv,
    ]
    env = dict(os.environ)
    cores = os.cpu_count() or 1
    env.setdefault(
        "OMP_NUM_THREADS", str(max(1, cores // nproc))
    )  # cores shared, not oversubscribed
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    stopped = []

    def forward(signum: int, _frame) -> None:
        stopped.append(signum)
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        hiding = False
        for line in process.stderr:
            hiding = hiding or line.startswith("Traceback (most recent call last)")
            if not hiding:
                sys.stderr.write(line)
        return process.wait(), bool(stopped)
    finally:
        signal.signal(signal.SIGTERM, previous)
