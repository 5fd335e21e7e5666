"""The one training loop. Modifiers (distill, prune, QAT) plug in through their hooks.

Plain PyTorch: AdamW with weight decay off for biases and norms, linear warmup then decay,
gradient accumulation and clipping, evaluation after each epoch, best checkpoint kept by the
recipe's metric, optional early stopping.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.ao.quantization import FakeQuantizeBase
from transformers import get_linear_schedule_with_warmup, set_seed

from bench.files import recover_replaced_dir
from bench.metrics import classification_metrics, token_metrics
from bench.progress import ProgressLine, to_stderr_unless_terminal
from compress.data.ner_data import encode_words, word_level
from compress.data.splits import EncodedDataset, encode, make_collate
from compress.errors import EdgebertError
from compress.training import distributed
from compress.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from compress.training.loop_state import INTERRUPTS, InterruptFlag, LoopState
from compress.training.thresholds import tune_thresholds

if TYPE_CHECKING:
    from compress.engine.context import StageScope

UNLABELED = -100  # the label of a transfer row: it learns from the teacher only
# What each epoch records (validation): the ledger of a run is built from these.
HISTORY_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "accuracy",
    "macro_f1",
    "parameters",
    "fake_quant",
    "predictions",
)
RESHAPED_KEYS = ("accuracy", "macro_f1", "parameters", "predictions")  # before and after pruning


@contextmanager
def observers_paused(model):
    """Evaluation must not move QAT ranges: switch fake-quant observers off while it runs."""
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
    model,
    input_ids: list[list[int]],
    batch_size: int,
    pad_token_id: int,
    progress: ProgressLine | None = None,
) -> np.ndarray:
    """Logits for many rows, batched by length so padding stays small, in input order.
    `progress` gets the rows done after each batch (and a final line)."""
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
            if progress is not None:
                done = start + len(chunk)
                progress.update(done, force=done == len(order))
    model.train(was_training)
    if out and out[0] is not None and out[0].ndim == 2:
        return out  # type: ignore[return-value]  # token classification: one [length, C] per row
    return np.stack(out)  # type: ignore[arg-type]


@dataclass
class TrainingPhase:
    """One training run: model, data, optimiser, and the modifiers acting on it.

    Modifiers read its fields (`model`, `tokenizer`, the encoded rows, `training`, `step`,
    `epoch`, `total_steps`, `scope`) and ask things of the loop only through the four request
    methods below (`request_outputs`, `add_trained_parameters`, `model_reshaped`,
    `model_changed`).
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
    progress_log: Callable[[str], None] = to_stderr_unless_terminal  # lines for logs, ~30 s
    seed: int = 42
    task: str = "text-classification"  # or token-classification: texts are word lists
    scope: StageScope | None = None  # the run and stage folder (None: a bare phase in tests)
    unlabeled_texts: list[str] = field(default_factory=list)  # a distillation transfer set
    state: LoopState = field(default_factory=LoopState)
    total_steps: int = 0
    steps_per_epoch: int = 0
    forward_kwargs: dict = field(default_factory=dict, init=False)
    extra_parameters: list = field(default_factory=list, init=False)
    _reshaped: bool = field(default=False, init=False)
    _changed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.token_level and self.modifiers:
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
        self.class_weight_tensor = self._class_weights()
        self.labelled_rows = len(self.train_ids)
        self._add_unlabeled_rows()

    def _add_unlabeled_rows(self) -> None:
        """Transfer rows go after the labelled ones, labelled UNLABELED: the loss's supervised
        term skips them and distillation gives them the teacher's soft labels."""
        if not self.unlabeled_texts:
            return
        if self.token_level:
            raise EdgebertError("distill.transfer: sentence classification only")
        ids, truncated = encode(self.tokenizer, self.unlabeled_texts, self.max_length)
        self.train_ids = self.train_ids + ids
        self.train_labels = list(self.train_labels) + [UNLABELED] * len(ids)
        self.train_texts = list(self.train_texts) + list(self.unlabeled_texts)
        self.train_truncated += truncated

    def _class_weights(self) -> torch.Tensor | None:
        """`training.class_weights` as one weight per label (None: plain cross-entropy)."""
        wanted = self.training.class_weights
        if wanted is None:
            return None
        if self.token_level:
            raise EdgebertError("training.class_weights: sentence classification only")
        classes = len(self.label_names)
        if wanted == "balanced":
            counts = np.bincount(np.asarray(self.train_labels), minlength=classes)
            weights = [len(self.train_labels) / (classes * c) if c else 1.0 for c in counts]
        elif len(wanted) != classes:
            raise EdgebertError(
                f"training.class_weights: expected {classes} weights (one per label: "
                f"{', '.join(self.label_names)}), got {len(wanted)}"
            )
        else:
            weights = list(wanted)
        return torch.tensor(weights, dtype=torch.float32)

    def row_weights(
        self, batch: dict, predicted: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Each row's class weight (class-weighted distillation), or None when unweighted.
        Transfer rows have no label: they are weighted by `predicted` (the teacher's class)."""
        if self.class_weight_tensor is None:
            return None
        labels = batch["labels"]
        if predicted is not None:
            labels = torch.where(labels == UNLABELED, predicted.to(labels.device), labels)
        return self.class_weight_tensor.to(labels.device)[labels]

    def supervised_loss(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the labelled rows of a batch (class-weighted when asked); a batch of
        transfer rows only has none, and gets a zero that keeps the graph."""
        if self.token_level:
            return outputs.loss
        labelled = labels != UNLABELED
        if not bool(labelled.any()):
            return outputs.logits.sum() * 0.0
        weights = self.class_weight_tensor
        return F.cross_entropy(
            outputs.logits.float()[labelled],
            labels[labelled],
            weight=None if weights is None else weights.to(outputs.logits.device),
        )

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def epoch(self) -> int:
        return self.state.epoch

    # --- what modifiers may ask of the loop ------------------------------------------------

    def request_outputs(self, **flags: bool) -> None:
        """More outputs from the model's forward, e.g. `output_hidden_states=True`."""
        self.forward_kwargs.update(flags)

    def add_trained_parameters(self, parameters) -> None:
        """Parameters outside the model that the optimiser trains too (e.g. projections)."""
        self.extra_parameters.extend(parameters)

    def model_reshaped(self) -> None:
        """Modules were replaced (pruning): the optimiser is rebuilt at the same schedule
        position (at an epoch end after that epoch's evaluation, during `on_step` right after
        the step), and best-epoch selection starts again."""
        self._reshaped = True

    def model_changed(self) -> None:
        """The model computes differently from now on (QAT switched on): the epoch in progress
        is no best-epoch candidate, and selection starts again after it."""
        self._changed = True

    @property
    def token_level(self) -> bool:
        return self.task == "token-classification"

    def _encode(self, texts, labels):
        """(ids, labels per row as the loss reads them, rows truncated)."""
        if self.token_level:
            return encode_words(self.tokenizer, texts, labels, self.max_length)
        ids, truncated = encode(self.tokenizer, texts, self.max_length)
        return ids, labels, truncated

    def _metrics(self, row_labels, logits) -> dict:
        """Metrics of the rows; sentence tasks also keep each row's predicted label, so later
        steps can be compared with this one on the same rows (paired intervals, the ledger)."""
        if self.token_level:
            return token_metrics(*word_level(row_labels, logits), self.label_names)
        predicted = logits.argmax(-1)
        metrics = classification_metrics(row_labels, predicted, self.label_names)
        return metrics | {"predictions": predicted.tolist()}

    def leading_batches(self, count: int):
        """The first `count` training batches in file order (labelled rows only), on the
        model's device: for importance scoring and QAT calibration, which must not consume the
        shuffle."""
        collate = make_collate(self.pad_id)
        device = next(self.model.parameters()).device
        size = self.training.batch_size
        for start in range(0, min(count * size, self.labelled_rows), size):
            rows = range(start, min(start + size, self.labelled_rows))
            batch = collate(
                [{"input_ids": self.train_ids[i], "labels": self.train_labels[i]} for i in rows]
            )
            yield {k: v.to(device) for k, v in batch.items() if k != "row"}

    def progress(self, what: str, total: int, unit: str, done: int = 0) -> ProgressLine:
        """A progress line for `what` (train, evaluate, teacher logits) of this stage."""
        stage = self.scope.stage_name if self.scope else "train"
        return ProgressLine(f"[{stage}] {what}", total, self.progress_log, unit, done_at_start=done)

    def _logits(self, model, ids: list[list[int]]):
        """Logits of every row; with several processes each scores its share and all gather."""
        ranks, me = distributed.world_size(), distributed.rank()
        local = (
            batched_logits(
                model,
                ids[me::ranks],
                self.training.eval_batch_size,
                self.pad_id,
                self.progress("evaluate", len(ids[me::ranks]), "rows"),
            )
            if ids[me::ranks]
            else []
        )
        rows = distributed.gather_rows(list(local), len(ids))
        return rows if self.token_level else np.stack(rows)

    def validation_logits(self):
        """Logits of the current model on the validation rows (all ranks gathered)."""
        return self._logits(self.model, self.eval_ids)

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
            EncodedDataset(self.train_ids, self.train_labels),
            num_replicas=ranks,
            rank=distributed.rank(),
            shuffle=self.training.shuffle,
            seed=self.seed,
        )

    def _balanced_sampler(self, generator: torch.Generator):
        """`training.balanced_sampling`: rows drawn with weight 1 / (their class's count), so
        each class fills about the same share of every epoch; None when off."""
        if not self.training.balanced_sampling:
            return None
        if self.token_level or distributed.active() or self.unlabeled_texts:
            raise EdgebertError(
                "training.balanced_sampling: one process, sentence classification, no "
                "distill.transfer rows (they have no class to balance)"
            )
        labels = torch.as_tensor(self.train_labels)
        counts = torch.bincount(labels, minlength=len(self.label_names)).double()
        return torch.utils.data.WeightedRandomSampler(
            (1.0 / counts)[labels], num_samples=len(labels), replacement=True, generator=generator
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

    def _trainer_state(self, run: _Run, epoch_generator: torch.Tensor, rng: dict) -> dict:
        return {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": rng,
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
        """Build the run, restore a checkpoint if there is one, then epochs until finished."""
        set_seed(self.seed)
        run = self._start_run(checkpoint_dir)
        resume = self._restore(run)
        self.model.train()
        run.net = self._wrap_parallel(run)
        run.seen_at_start = self.state.seen
        run.heartbeat = self.progress("train", self.total_steps, "steps", self.state.step)
        self.state.finished = self.state.finished or self.state.step >= self.total_steps
        with run.progress, run.interrupted:
            run.task = run.progress.add_task(
                "train",
                total=self.total_steps,
                completed=self.state.step,
                loss=self.state.running_loss,
                rate=0.0,
            )
            for epoch in range(resume.first_epoch, self.training.epochs + 1):
                if self.state.finished:
                    break
                batches_done = self._run_epoch(run, epoch, resume)
                resume = _Resume(first_epoch=epoch + 1)
                self._end_epoch(run, epoch, batches_done)
        return self._finish(run)

    # --- building and restoring a run ------------------------------------------------------

    def _start_run(self, checkpoint_dir: Path | None) -> _Run:
        """Device, loader, schedule length, modifiers set up, optimiser: what each fit builds."""
        cfg = self.training
        generator = torch.Generator().manual_seed(self.seed)
        device = self._device()
        sampler = self._distributed_sampler(device)
        balanced = self._balanced_sampler(generator)
        loader = torch.utils.data.DataLoader(
            EncodedDataset(self.train_ids, self.train_labels),
            batch_size=cfg.batch_size // distributed.world_size(),
            shuffle=sampler is None and balanced is None and cfg.shuffle,
            sampler=sampler or balanced,
            generator=generator if sampler is None and balanced is None else None,
            collate_fn=make_collate(self.pad_id),
        )
        if sampler is not None and not distributed.is_main():
            checkpoint_dir = None  # rank 0 keeps the checkpoints
        self.steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.model.to(device)
        for modifier in self.modifiers:
            modifier.setup(self)
        run = _Run(
            device=device,
            loader=loader,
            sampler=sampler,
            generator=generator,
            checkpoint_dir=checkpoint_dir,
            progress=_progress_bar(),
        )
        self._new_optimizer(run)
        return run

    def _new_optimizer(self, run: _Run) -> None:
        run.optimizer = self._optimizer()
        run.scheduler = self._schedule(run.optimizer)

    def _restore(self, run: _Run) -> _Resume:
        """Continue from the checkpoint in `run.checkpoint_dir`, if one is there."""
        folder = run.checkpoint_dir
        if folder is not None:
            recover_replaced_dir(folder)
        if folder is None or not (folder / "state.json").is_file():
            return _Resume()
        model_state, best_weights, trainer, counters = load_checkpoint(folder)
        for modifier in self.modifiers:
            modifier.load_state_dict(self, trainer["modifiers"].get(modifier.type_name, {}))
        self.model.load_state_dict(model_state)
        self.model.to(run.device)
        self._new_optimizer(run)
        run.optimizer.load_state_dict(trainer["optimizer"])
        run.scheduler.load_state_dict(trainer["scheduler"])
        self.state = LoopState.from_counters(counters, best_weights)
        if self.state.epoch_done:
            # Saved after the epoch's shuffle draws: the next epoch shuffles as it would have.
            run.generator.set_state(trainer["epoch_generator"])
            resume = _Resume(first_epoch=self.state.epoch + 1)
        else:
            resume = _Resume(self.state.epoch, self.state.batches_done, trainer["epoch_generator"])
        set_rng_state(trainer["rng"])
        self.log(f"resumed from {folder} at epoch {resume.first_epoch}, step {self.state.step}")
        return resume

    def _wrap_parallel(self, run: _Run):
        if run.sampler is None:
            return self.model
        device = run.device
        return torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # --- one epoch ---------------------------------------------------------------------------

    def _epoch_batches(self, run: _Run, epoch: int, resume: _Resume):
        """(batch iterator, the epoch's shuffle state): a resumed epoch replays the same order
        and skips the batches already trained, leaving the RNG as it was."""
        if run.sampler is not None:
            run.sampler.set_epoch(epoch)
        if resume.generator is not None:
            run.generator.set_state(resume.generator)
        epoch_generator = run.generator.get_state()
        batches = iter(run.loader)
        rng_after_skip = torch.get_rng_state() if resume.generator is not None else None
        for _ in range(resume.skip_batches):
            next(batches)
        if rng_after_skip is not None:
            torch.set_rng_state(rng_after_skip)
        return batches, epoch_generator

    def _run_epoch(self, run: _Run, epoch: int, resume: _Resume) -> int:
        """Train one epoch; returns the micro-batches done. Checkpoints on schedule and on a
        signal (then raises KeyboardInterrupt); a stop forced mid-step checkpoints the last
        complete step (`InterruptFlag`)."""
        cfg = self.training
        self.state.epoch = epoch
        batches, epoch_generator = self._epoch_batches(run, epoch, resume)
        micro = resume.skip_batches
        run.resume_point, run.epoch_generator = (micro, rng_state()), epoch_generator
        self.model.train()  # a modifier's epoch-end work (pruning, scoring) may flip it
        try:
            for batch in batches:
                micro += 1
                self._backward(run, batch)
                if micro % cfg.grad_accum and micro != len(run.loader):
                    continue
                with run.interrupted.critical():
                    self._optimizer_step(run)
                    run.resume_point = (micro, rng_state())
                if self.state.step >= self.total_steps:
                    self.state.finished = True
                    break
                due = cfg.checkpoint_steps and self.state.step % cfg.checkpoint_steps == 0
                # The vote decides, never the local flag, and the flag is never written from
                # it: a signal handled just after the all-reduce would be overwritten, and a
                # rank leaving alone would strand its peer in the next all-reduce.
                stop = distributed.any_rank(run.interrupted.flag)
                if stop:
                    run.interrupted.stand_down()  # leaving in order: no forced stop needed
                if stop or due:
                    self._save(run, micro, False, epoch_generator)
                if stop:
                    raise _Stopped
        except _Stopped:
            raise KeyboardInterrupt from None
        except KeyboardInterrupt:
            self._save_resume_point(run, epoch_generator)
            raise
        self._report_progress(run, force=True)
        return micro

    def _save_resume_point(self, run: _Run, epoch_generator) -> None:
        """A stop forced mid-step or mid-evaluation: checkpoint the last complete step (the
        model's weights are those of that step; a half-done backward changed only grads)."""
        micro, rng = run.resume_point
        self._save(run, micro, False, epoch_generator, rng)

    def _backward(self, run: _Run, batch: dict) -> None:
        batch = {k: v.to(run.device) for k, v in batch.items()}
        autocast = torch.autocast(
            run.device.type,
            dtype=torch.bfloat16,
            enabled=self.training.bf16 and run.device.type == "cuda",
        )
        with autocast:
            outputs = run.net(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"] if self.token_level else None,
                **self.forward_kwargs,
            )
            loss = self.supervised_loss(outputs, batch["labels"])
            for modifier in self.modifiers:
                loss = modifier.loss(self, batch, outputs, loss)
        (loss / self.training.grad_accum).backward()
        self.state.track_loss(loss.item(), batch["input_ids"].shape[0])

    def _optimizer_step(self, run: _Run) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.training.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        for modifier in self.modifiers:
            modifier.on_step(self)
        if self._reshaped:  # cut mid-epoch (a step-wise pruning schedule)
            self._reshaped = False
            self._rebuild_optimizer(run)
            self.state.best.reset()  # earlier best weights no longer fit this shape
        self._report_progress(run)

    def _report_progress(self, run: _Run, force: bool = False) -> None:
        """The live bar on a terminal; a plain line for logs every ~30 s and when forced."""
        rate = (self.state.seen - run.seen_at_start) / (time.perf_counter() - run.started)
        run.progress.update(
            run.task, completed=self.state.step, loss=self.state.running_loss, rate=rate
        )
        run.heartbeat.update(
            self.state.step,
            force=force,
            epoch=f"{self.state.epoch}/{self.training.epochs}",
            loss=f"{self.state.running_loss:.4f}",
            rate=f"{rate:.1f} rows/s",
        )

    # --- epoch end ---------------------------------------------------------------------------

    def _end_epoch(self, run: _Run, epoch: int, batches_done: int) -> None:
        """Evaluate, let modifiers act, pick the best epoch, maybe stop early, checkpoint."""
        try:
            metrics = self.evaluate()
        except KeyboardInterrupt:  # forced mid-evaluation: the resumed run evaluates again
            self._save_resume_point(run, run.epoch_generator)
            raise
        with run.interrupted.critical():  # modifiers reshape and quantize here
            self._close_epoch(run, epoch, batches_done, metrics)
        if distributed.any_rank(run.interrupted.flag):
            raise KeyboardInterrupt

    def _close_epoch(self, run: _Run, epoch: int, batches_done: int, metrics: dict) -> None:
        """Epoch-end work after evaluation: modifiers act, the best epoch is picked, early
        stopping decides, and the epoch's checkpoint is written."""
        state = self.state
        state.running_loss = distributed.mean(state.running_loss)
        metrics.update(
            epoch=epoch,
            step=state.step,
            train_loss=state.running_loss,
            parameters=self.model.num_parameters(),
            fake_quant=any(isinstance(m, FakeQuantizeBase) for m in self.model.modules()),
        )
        state.history.append({k: metrics[k] for k in HISTORY_KEYS if k in metrics})
        for modifier in self.modifiers:
            modifier.on_epoch_end(self, metrics)
        if self._reshaped:
            self._after_reshape(run, metrics)
        self.log(
            f"epoch {epoch}: loss {state.running_loss:.4f}  accuracy {metrics['accuracy']:.4f}  "
            f"macro_f1 {metrics['macro_f1']:.4f}"
        )
        if self._changed:  # this epoch ended with another model: no candidate
            self._changed = False
            state.best.reset()
        else:
            state.best.offer(epoch, metrics[self.select_best], self.model)
        stopping = self.training.early_stopping
        if stopping and state.best.stale >= stopping.patience:
            self.log(f"early stopping: no better {self.select_best} for {state.best.stale} epochs")
            state.finished = True
        self._save(run, batches_done, True, run.generator.get_state())

    def _after_reshape(self, run: _Run, metrics: dict) -> None:
        """New modules mean new parameters: rebuild the optimiser, keep the schedule position,
        and compare only epochs that share the new shape."""
        self._reshaped = False
        self._rebuild_optimizer(run)
        entry = self.state.history[-1]
        entry["before_reshape"] = {k: entry[k] for k in RESHAPED_KEYS if k in entry}
        metrics.update(self.evaluate(), parameters=self.model.num_parameters())
        self.state.best.reset()
        entry.update({k: metrics[k] for k in RESHAPED_KEYS if k in metrics})

    def _rebuild_optimizer(self, run: _Run) -> None:
        """New modules mean new parameters: a new optimiser at the same schedule position,
        and a new data-parallel wrapper around the new modules."""
        self._new_optimizer(run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "step() before optimizer.step()"
            for _ in range(self.state.step):
                run.scheduler.step()
        run.net = self._wrap_parallel(run)

    def _save(
        self, run: _Run, batches_done: int, epoch_done: bool, epoch_generator, rng=None
    ) -> None:
        if run.checkpoint_dir is None or not distributed.is_main():
            return
        self.state.batches_done, self.state.epoch_done = batches_done, epoch_done
        with run.interrupted.critical():
            save_checkpoint(
                run.checkpoint_dir,
                self.model,
                self.state.best.weights,
                self._trainer_state(run, epoch_generator, rng or rng_state()),
                self.state.counters(),
            )

    def _finish(self, run: _Run) -> dict:
        """Best weights back, modifiers' finish, and the stage's training metrics."""
        best = self.state.best
        if best.weights is not None and best.epoch != self.state.epoch:
            self.model.load_state_dict(best.weights)
        self.model.to("cpu").eval()
        thresholds = tune_thresholds(self) if self.training.tune_thresholds else None
        modifier_metrics = {m.type_name: m.finish(self) for m in self.modifiers}
        return {
            "best_epoch": best.epoch,
            f"best_{self.select_best}": best.score,
            "epochs_run": self.state.epoch,
            "steps": self.state.step,
            "train_rows": self.labelled_rows,
            "transfer_rows": len(self.train_ids) - self.labelled_rows,
            "train_truncated": self.train_truncated,
            "eval_truncated": self.eval_truncated,
            "train_seconds": round(time.perf_counter() - run.started, 2),
            "device": str(run.device),
            "world_size": distributed.world_size(),  # processes that trained (torchrun)
            "history": self.state.history,
            "modifiers": modifier_metrics,
            "thresholds": thresholds,
        }


class _Stopped(Exception):
    """The loop saw the stop flag and checkpointed: leave as KeyboardInterrupt, saved."""


@dataclass
class _Resume:
    """Where the first epoch of this fit starts: a fresh run starts at epoch 1."""

    first_epoch: int = 1
    skip_batches: int = 0
    generator: torch.Tensor | None = None  # the interrupted epoch's shuffle state


@dataclass
class _Run:
    """What one `fit` builds once and its steps share."""

    device: torch.device
    loader: Any
    sampler: Any
    generator: torch.Generator
    checkpoint_dir: Path | None
    progress: Progress
    optimizer: Any = None
    scheduler: Any = None
    net: Any = None  # the model, or its DDP wrapper under torchrun
    task: Any = None  # the progress bar's task id
    heartbeat: ProgressLine | None = None  # plain lines for logs (run.log, nohup, tee)
    interrupted: InterruptFlag = field(default_factory=lambda: INTERRUPTS)
    # (micro-batches done, RNG state) right after the last optimiser step: where a stop that
    # lands mid-step, mid-evaluation or between steps checkpoints from
    resume_point: tuple[int, dict] | None = None
    epoch_generator: torch.Tensor | None = None  # the epoch in progress's shuffle state
    started: float = field(default_factory=time.perf_counter)
    seen_at_start: int = 0


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        console=Console(stderr=True),
        disable=not distributed.is_main(),
    )
