"""The one training loop. Modifiers (distill, prune, QAT) plug in through their hooks.

Plain PyTorch: AdamW with weight decay off for biases and norms, linear warmup then decay,
gradient accumulation and clipping, evaluation after each epoch, best checkpoint kept by the
recipe's metric, optional early stopping.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import get_linear_schedule_with_warmup, set_seed

from bench.metrics import classification_metrics
from compress import distributed
from compress.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from compress.data import EncodedDataset, encode, make_collate
from compress.rundir import recover_replaced_dir


@contextmanager
def observers_paused(model):
    """Evaluation must not move QAT ranges: switch fake-quant observers off while it runs."""
    from torch.ao.quantization import FakeQuantizeBase

    quants = [m for m in model.modules() if isinstance(m, FakeQuantizeBase)]
    states = [bool(q.observer_enabled[0]) for q in quants]
    for q in quants:
        q.disable_observer()
    try:
        yield
    finally:
        for q, enabled in zip(quants, states):
            if enabled:
                q.enable_observer()


def batched_logits(
    model, input_ids: list[list[int]], batch_size: int, pad_token_id: int
) -> np.ndarray:
    """Logits for many rows, batched by length so padding stays small, in input order."""
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    device = next(model.parameters()).device
    collate = make_collate(pad_token_id)
    out: list[np.ndarray | None] = [None] * len(input_ids)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), observers_paused(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([{"input_ids": input_ids[i], "labels": 0} for i in chunk])
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits.cpu()
            for i, row in zip(chunk, logits.float().numpy()):
                out[i] = row if row.ndim == 1 else row[: len(input_ids[i])]  # token rows: unpadded
    model.train(was_training)
    if out and out[0] is not None and out[0].ndim == 2:
        return out  # type: ignore[return-value]  # token classification: one [length, C] per row
    return np.stack(out)  # type: ignore[arg-type]


@dataclass
class TrainingPhase:
    """One training run: model, data, optimiser, and the modifiers acting on it.

    Modifiers read and change its fields (`model`, `step`, `epoch`, `total_steps`, `extra`).
    """

    model: Any
    tokenizer: Any
    train_texts: list[str]
    train_labels: list[int]
    eval_texts: list[str]
    eval_labels: list[int]
    label_names: list[str]
    training: Any  # recipe TrainingConfig
    max_length: int
    select_best: str = "accuracy"
    modifiers: list = field(default_factory=list)
    log: Any = print
    seed: int = 42
    step: int = 0
    epoch: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    forward_kwargs: dict = field(default_factory=dict)  # e.g. output_hidden_states for distill
    extra_parameters: list = field(default_factory=list)  # trained too (e.g. projections)
    structure_changed: bool = False  # set by modifiers that reshape the model (pruning)
    restart_selection: bool = False  # set when earlier epochs stop being comparable (QAT on)
    task: str = "text-classification"  # or token-classification: texts are word lists

    def __post_init__(self) -> None:
        if self.token_level and self.modifiers:
            from compress.errors import EdgebertError

            raise EdgebertError(
                f"with.{self.modifiers[0].type_name}: token classification trains without "
                "modifiers (distill, prune, qat act on sentence logits)"
            )
        self.train_ids, self.train_labels, self.train_truncated = self._encode(
            self.train_texts, self.train_labels
        )
        self.eval_ids, self.eval_row_labels, self.eval_truncated = self._encode(
            self.eval_texts, self.eval_labels
        )
        self.pad_id = self.tokenizer.pad_token_id or 0

    @property
    def token_level(self) -> bool:
        return self.task == "token-classification"

    def _encode(self, texts, labels):
        """(ids, labels per row as the loss reads them, rows truncated)."""
        if self.token_level:
            from compress.tokens import encode_words

            return encode_words(self.tokenizer, texts, labels, self.max_length)
        ids, truncated = encode(self.tokenizer, texts, self.max_length)
        return ids, labels, truncated

    def _metrics(self, row_labels, logits) -> dict:
        if self.token_level:
            from bench.metrics import token_metrics
            from compress.tokens import word_level

            return token_metrics(*word_level(row_labels, logits), self.label_names)
        return classification_metrics(row_labels, logits.argmax(-1), self.label_names)

    def leading_batches(self, count: int):
        """The first `count` training batches in file order, on the model's device: for
        importance scoring and QAT calibration, which must not consume the shuffle."""
        collate = make_collate(self.pad_id)
        device = next(self.model.parameters()).device
        size = self.training.batch_size
        for start in range(0, min(count * size, len(self.train_ids)), size):
            rows = range(start, min(start + size, len(self.train_ids)))
            batch = collate(
                [{"input_ids": self.train_ids[i], "labels": self.train_labels[i]} for i in rows]
            )
            yield {k: v.to(device) for k, v in batch.items() if k != "row"}

    def _logits(self, model, ids: list[list[int]]):
        """Logits of every row; with several processes each scores its share and all gather."""
        ranks, me = distributed.world_size(), distributed.rank()
        local = batched_logits(model, ids[me::ranks], self.training.eval_batch_size, self.pad_id) \
            if ids[me::ranks] else []
        rows = distributed.gather_rows(list(local), len(ids))
        return rows if self.token_level else np.stack(rows)

    def evaluate_texts(self, texts: list, labels: list) -> dict:
        """Metrics of the current model on other rows (e.g. the test split)."""
        ids, row_labels, _ = self._encode(texts, labels)
        return self._metrics(row_labels, self._logits(self.model, ids))

    def evaluate(self, model=None) -> dict:
        return self._metrics(self.eval_row_labels, self._logits(model or self.model, self.eval_ids))

    def _distributed_sampler(self, device: torch.device):
        """Under torchrun: join the group, check the run can be split, return the sampler."""
        if not distributed.active():
            return None
        ranks = distributed.world_size()
        distributed.check_split(
            self.training.batch_size, [(m.type_name, m.config) for m in self.modifiers], ranks, ""
        )
        distributed.init(device)
        return torch.utils.data.DistributedSampler(
            EncodedDataset(self.train_ids, self.train_labels), num_replicas=ranks,
            rank=distributed.rank(), shuffle=self.training.shuffle, seed=self.seed,
        )

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
        decay += [p for p in self.extra_parameters if p.requires_grad]
        groups = [
            {"params": decay, "weight_decay": self.training.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.training.lr)

    def _device(self) -> torch.device:
        wanted = self.training.device
        if wanted == "cuda" and not torch.cuda.is_available():
            from compress.errors import EdgebertError

            raise EdgebertError("training.device: cuda requested but no CUDA device is visible")
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted == "cuda" and distributed.active():  # one GPU per process (nccl needs it)
            index = distributed.local_rank() % torch.cuda.device_count()
            torch.cuda.set_device(index)
            return torch.device("cuda", index)
        return torch.device(wanted)

    def _schedule(self, optimizer):
        return get_linear_schedule_with_warmup(
            optimizer, int(self.training.warmup_ratio * self.total_steps), self.total_steps
        )

    def _trainer_state(self, optimizer, scheduler, epoch_generator: torch.Tensor) -> dict:
        return {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "epoch_generator": epoch_generator,
            "modifiers": {m.type_name: m.state_dict() for m in self.modifiers},
        }

    def fit(self, checkpoint_dir: Path | None = None) -> dict:
        """Train, keep the best epoch by `select_best`, run modifiers' finish; return metrics.

        With `checkpoint_dir`, state is saved every `checkpoint_steps` optimizer steps, after
        every epoch and on Ctrl-C; if a checkpoint is already there, training resumes from it and
        reaches the same weights as an uninterrupted run (same batches, same RNG draws).
        """
        threads = torch.get_num_threads()
        if self.training.threads:
            torch.set_num_threads(self.training.threads)
        try:
            return self._fit(checkpoint_dir)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, checkpoint_dir: Path | None) -> dict:
        """The loop itself; `fit` wraps it with the thread setting."""
        cfg = self.training
        set_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        device = self._device()
        sampler = self._distributed_sampler(device)
        loader = torch.utils.data.DataLoader(
            EncodedDataset(self.train_ids, self.train_labels),
            batch_size=cfg.batch_size // distributed.world_size(),
            shuffle=sampler is None and cfg.shuffle,
            sampler=sampler,
            generator=generator if sampler is None else None,
            collate_fn=make_collate(self.pad_id),
        )
        if sampler is not None and not distributed.is_main():
            checkpoint_dir = None  # rank 0 keeps the checkpoints
        self.steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.model.to(device)
        autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"
        )
        for modifier in self.modifiers:
            modifier.setup(self)
        optimizer = self._optimizer()
        scheduler = self._schedule(optimizer)
        best_score, best_state, best_epoch, stale = -math.inf, None, 0, 0
        running, seen, start_epoch, skip_batches = 0.0, 0, 1, 0
        resume_generator = None
        stopped_early = False
        if checkpoint_dir is not None:
            recover_replaced_dir(checkpoint_dir)
        if checkpoint_dir is not None and (checkpoint_dir / "state.json").is_file():
            model_state, best_state, trainer, counters = load_checkpoint(checkpoint_dir)
            for modifier in self.modifiers:
                modifier.load_state_dict(self, trainer["modifiers"].get(modifier.type_name, {}))
            self.model.load_state_dict(model_state)
            self.model.to(device)
            optimizer = self._optimizer()
            scheduler = self._schedule(optimizer)
            optimizer.load_state_dict(trainer["optimizer"])
            scheduler.load_state_dict(trainer["scheduler"])
            self.step = counters["step"]
            self.history = counters["history"]
            best_score, best_epoch, stale = counters["best_score"], counters["best_epoch"], counters["stale"]
            running, seen = counters["running_loss"], counters["seen"]
            self.epoch = counters["epoch"]
            stopped_early = counters.get("finished", False)
            if counters["epoch_done"]:
                # Saved after the epoch's shuffle draws: the next epoch shuffles as it would have.
                start_epoch = counters["epoch"] + 1
                generator.set_state(trainer["epoch_generator"])
            else:
                start_epoch, skip_batches = counters["epoch"], counters["batches_done"]
                resume_generator = trainer["epoch_generator"]
            set_rng_state(trainer["rng"])
            self.log(f"resumed from {checkpoint_dir} at epoch {start_epoch}, step {self.step}")
        interrupted = _InterruptFlag()

        def save(epoch: int, batches_done: int, epoch_done: bool, epoch_generator) -> None:
            if checkpoint_dir is None or not distributed.is_main():
                return
            save_checkpoint(
                checkpoint_dir, self.model, best_state,
                self._trainer_state(optimizer, scheduler, epoch_generator),
                {
                    "step": self.step, "epoch": epoch, "batches_done": batches_done,
                    "epoch_done": epoch_done, "best_score": best_score, "best_epoch": best_epoch,
                    "stale": stale, "running_loss": running, "seen": seen,
                    "history": self.history, "finished": finished,
                },
            )

        self.model.train()
        started = time.perf_counter()
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.1f} rows/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
            console=Console(stderr=True), disable=not distributed.is_main(),
        )
        net = self.model
        if sampler is not None:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        seen_at_start = seen
        finished = stopped_early or self.step >= self.total_steps
        with progress, interrupted:
            task = progress.add_task(
                "train", total=self.total_steps, completed=self.step, loss=running, rate=0.0
            )
            for epoch in range(start_epoch, cfg.epochs + 1):
                if finished:
                    break
                self.epoch = epoch
                if sampler is not None:
                    sampler.set_epoch(epoch)
                if resume_generator is not None:
                    generator.set_state(resume_generator)
                epoch_generator = generator.get_state()
                batches = iter(loader)
                rng_after_skip = torch.get_rng_state() if resume_generator is not None else None
                for _ in range(skip_batches):
                    next(batches)
                if rng_after_skip is not None:
                    torch.set_rng_state(rng_after_skip)
                micro = skip_batches
                resume_generator, skip_batches = None, 0
                self.model.train()  # a modifier's epoch-end work (pruning, scoring) may flip it
                for batch in batches:
                    micro += 1
                    batch = {k: v.to(device) for k, v in batch.items()}
                    with autocast:
                        outputs = net(
                            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["labels"], **self.forward_kwargs,
                        )
                        loss = outputs.loss
                        for modifier in self.modifiers:
                            loss = modifier.loss(self, batch, outputs, loss)
                    (loss / cfg.grad_accum).backward()
                    running = loss.item() if running == 0.0 else 0.9 * running + 0.1 * loss.item()
                    seen += batch["input_ids"].shape[0]
                    if micro % cfg.grad_accum and micro != len(loader):
                        continue
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    for modifier in self.modifiers:
                        modifier.on_step(self)
                    rate = (seen - seen_at_start) / (time.perf_counter() - started)
                    progress.update(task, completed=self.step, loss=running, rate=rate)
                    if self.step >= self.total_steps:
                        finished = True
                        break
                    if interrupted.flag or (
                        cfg.checkpoint_steps and self.step % cfg.checkpoint_steps == 0
                    ):
                        save(epoch, micro, False, epoch_generator)
                    if interrupted.flag:
                        raise KeyboardInterrupt
                metrics = self.evaluate()
                running = distributed.mean(running)
                metrics.update(epoch=epoch, step=self.step, train_loss=running)
                self.history.append(
                    {k: metrics[k] for k in ("epoch", "step", "train_loss", "accuracy", "macro_f1")}
                )
                for modifier in self.modifiers:
                    modifier.on_epoch_end(self, metrics)
                if self.structure_changed:
                    # New modules mean new parameters: rebuild the optimiser, keep the schedule
                    # position, and compare only epochs that share the new shape.
                    self.structure_changed = False
                    optimizer = self._optimizer()
                    scheduler = self._schedule(optimizer)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # "step() before optimizer.step()"
                        for _ in range(self.step):
                            scheduler.step()
                    metrics.update(self.evaluate())
                    best_score, best_state, best_epoch, stale = -math.inf, None, 0, 0
                    self.history[-1].update(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"])
                score = metrics[self.select_best]
                self.log(
                    f"epoch {epoch}: loss {running:.4f}  accuracy {metrics['accuracy']:.4f}  "
                    f"macro_f1 {metrics['macro_f1']:.4f}"
                )
                if self.restart_selection:
                    # This epoch ended with a different model (e.g. QAT switched on): it is no
                    # candidate, and later epochs are compared only with each other.
                    self.restart_selection = False
                    best_score, best_state, best_epoch, stale = -math.inf, None, 0, 0
                elif score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    stale += 1
                if cfg.early_stopping and stale >= cfg.early_stopping.patience:
                    self.log(f"early stopping: no better {self.select_best} for {stale} epochs")
                    finished = True
                save(epoch, micro, True, generator.get_state())
                if interrupted.flag:
                    raise KeyboardInterrupt
        if best_state is not None and best_epoch != self.epoch:
            self.model.load_state_dict(best_state)
        self.model.to("cpu").eval()
        modifier_metrics: dict[str, dict] = {}
        for modifier in self.modifiers:
            modifier_metrics[modifier.type_name] = modifier.finish(self)
        return {
            "best_epoch": best_epoch,
            f"best_{self.select_best}": best_score,
            "epochs_run": self.epoch,
            "steps": self.step,
            "train_rows": len(self.train_ids),
            "train_truncated": self.train_truncated,
            "eval_truncated": self.eval_truncated,
            "train_seconds": round(time.perf_counter() - started, 2),
            "device": str(device),
            "history": self.history,
            "modifiers": modifier_metrics,
        }


class _InterruptFlag:
    """Turns Ctrl-C (SIGINT) and a polite kill (SIGTERM, as from `kill`, systemd or a batch
    scheduler) into a flag the loop checks after each optimiser step, so the checkpoint written
    on the way out is consistent (never mid-backward)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.flag = False
        self._previous: dict = {}

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def _handle(self, signum, frame):
        if self.flag:  # second signal: stop now
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        return False
