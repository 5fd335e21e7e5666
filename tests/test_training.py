import torch

from compress.data.splits import make_collate
from compress.engine.config import TrainingConfig
from compress.models.model_io import load_classifier, load_tokenizer
from compress.training.loop import TrainingPhase
from tests.conftest import sample_rows


def make_phase(model_dir, **training):
    rows = sample_rows("train", 64, seed=1)
    val = sample_rows("validation", 32, seed=1)
    return TrainingPhase(
        model=load_classifier(model_dir, ["negative", "positive"]),
        tokenizer=load_tokenizer(model_dir),
        train_texts=[r["text"] for r in rows],
        train_labels=[r["label"] for r in rows],
        eval_texts=[r["text"] for r in val],
        eval_labels=[r["label"] for r in val],
        label_names=["negative", "positive"],
        training=TrainingConfig(
            **({"lr": 1e-3, "batch_size": 16, "epochs": 1, "warmup_ratio": 0} | training)
        ),
        max_length=32,
        log=lambda *_: None,
        seed=5,
    )


def fixed_batch_loss(phase) -> float:
    batch = make_collate(phase.pad_id)(
        [{"input_ids": i, "labels": l} for i, l in zip(phase.train_ids, phase.train_labels)]
    )
    phase.model.eval()
    with torch.no_grad():
        return phase.model(**batch).loss.item()


def test_two_full_batch_steps_lower_the_training_loss(tiny_model_dir):
    phase = make_phase(tiny_model_dir, max_steps=2, batch_size=64, epochs=2, lr=3e-3)
    before = fixed_batch_loss(phase)
    result = phase.fit()
    after = fixed_batch_loss(phase)
    assert result["steps"] == 2
    assert after < before - 1e-3


def test_grad_accumulation_counts_optimizer_steps(tiny_model_dir):
    phase = make_phase(tiny_model_dir, batch_size=8, grad_accum=4, epochs=2)
    result = phase.fit()
    assert result["steps"] == 2 * (64 // 8 // 4)
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def test_same_seed_gives_identical_weights(tiny_model_dir):
    a, b = make_phase(tiny_model_dir, max_steps=3), make_phase(tiny_model_dir, max_steps=3)
    a.fit(), b.fit()
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), name


class CountingModifier:
    type_name = "counting"

    def __init__(self):
        self.calls = {"setup": 0, "loss": 0, "on_step": 0, "on_epoch_end": 0, "finish": 0}

    def setup(self, phase):
        self.calls["setup"] += 1

    def loss(self, phase, batch, outputs, loss):
        self.calls["loss"] += 1
        return loss * 0.0 + loss  # same value, still differentiable

    def on_step(self, phase):
        self.calls["on_step"] += 1

    def on_epoch_end(self, phase, metrics):
        self.calls["on_epoch_end"] += 1

    def finish(self, phase):
        self.calls["finish"] += 1
        return {"seen_steps": phase.step}


def test_modifier_hooks_are_called_in_lifecycle_order(tiny_model_dir):
    modifier = CountingModifier()
    phase = make_phase(tiny_model_dir, batch_size=16, epochs=2)
    phase.modifiers = [modifier]
    result = phase.fit()
    assert modifier.calls == {"setup": 1, "loss": 8, "on_step": 8, "on_epoch_end": 2, "finish": 1}
    assert result["modifiers"] == {"counting": {"seen_steps": 8}}


def test_early_stopping_and_best_epoch(tiny_model_dir):
    phase = make_phase(
        tiny_model_dir, lr=1e-9, epochs=5, early_stopping={"metric": "accuracy", "patience": 1}
    )
    result = phase.fit()
    # lr ~ 0: nothing improves after epoch 1, so training stops after epoch 2
    assert result["epochs_run"] == 2 and result["best_epoch"] == 1


def test_distill_takes_precomputed_teacher_logits_as_given_and_refuses_other_rows(
    tiny_model_dir, tmp_path
):
    """The README's students were distilled from a GPU teacher's cached .npz logits."""
    import hashlib
    from types import SimpleNamespace

    import numpy as np
    import pytest

    from compress.errors import EdgebertError
    from compress.modifiers.distill import Distill, DistillConfig, kd_loss

    phase = make_phase(tiny_model_dir)
    given = np.random.default_rng(0).normal(0, 3, (len(phase.train_texts), 2)).astype(np.float32)
    digest = hashlib.sha256("\n".join(phase.train_texts).encode()).hexdigest()
    path = tmp_path / "teacher.npz"
    np.savez(path, train_logits=given, train_texts_sha256=digest)
    config = DistillConfig(teacher_logits=path, alpha=0.75, temperature=2.0)
    modifier = Distill(config)
    modifier.setup(phase)
    rows = torch.tensor([3, 7, 11])
    student = torch.randn(3, 2)
    label_loss = torch.tensor(0.5)
    got = modifier.loss(phase, {"row": rows}, SimpleNamespace(logits=student), label_loss)
    want = 0.75 * kd_loss(student, torch.from_numpy(given[[3, 7, 11]]), 2.0) + 0.25 * label_loss
    assert torch.allclose(got, want)  # row i of the file is the teacher for training row i
    phase.train_texts[5] = phase.train_texts[5] + " (edited)"
    with pytest.raises(EdgebertError, match=r"teacher\.npz was made for other training rows"):
        Distill(config).setup(phase)
    np.savez(path, train_logits=given[:10], train_texts_sha256=digest)  # fewer rows
    with pytest.raises(EdgebertError, match=r"shape \(10, 2\)"):
        Distill(config).setup(phase)


def test_class_weights_balanced_and_per_label(tiny_model_dir):
    import pytest

    from compress.errors import EdgebertError

    phase = make_phase(tiny_model_dir, class_weights="balanced")
    counts = torch.bincount(torch.tensor(phase.train_labels), minlength=2).float()
    assert torch.allclose(phase.class_weight_tensor, len(phase.train_labels) / (2 * counts))
    batch = {"labels": torch.tensor([0, 1, 1])}
    assert torch.equal(phase.row_weights(batch), phase.class_weight_tensor[[0, 1, 1]])
    assert make_phase(tiny_model_dir).row_weights(batch) is None  # unweighted by default
    with pytest.raises(EdgebertError, match=r"class_weights: expected 2 weights .* got 3"):
        make_phase(tiny_model_dir, class_weights=[1.0, 2.0, 3.0])


def test_class_weighted_kd_weights_each_rows_divergence():
    from compress.modifiers.distill import kd_loss

    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    plain = kd_loss(student, teacher, 2.0)
    assert torch.allclose(kd_loss(student, teacher, 2.0, torch.ones(4) * 5), plain)
    only_first = kd_loss(student, teacher, 2.0, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # weights are normalised to mean 1: all the weight on row 0 gives row 0's divergence
    assert torch.allclose(only_first, kd_loss(student[:1], teacher[:1], 2.0))


def test_threshold_offsets_recover_an_under_predicted_class():
    import numpy as np

    from compress.training.thresholds import best_offsets

    labels = [0] * 50 + [1] * 10
    logits = np.zeros((60, 2))
    logits[50:, 1] = -0.5  # the minority class scores just under the majority: never predicted
    logits[:50, 1] = -1.5
    offsets = best_offsets(logits, labels, ["major", "minor"])
    assert offsets[0] == 0 and 0.5 < offsets[1] < 1.5
    assert ((logits + offsets).argmax(-1) == np.array(labels)).all()
    balanced = np.eye(2)[labels] * 2.0  # already right everywhere: no shift
    assert best_offsets(balanced, labels, ["major", "minor"]).tolist() == [0.0, 0.0]


def test_balanced_sampling_draws_each_class_about_equally(tiny_model_dir):
    from collections import Counter

    phase = make_phase(tiny_model_dir, balanced_sampling=True)
    keep = [i for i, label in enumerate(phase.train_labels) if label == 1][:6]
    keep += [i for i, label in enumerate(phase.train_labels) if label == 0]
    phase.train_ids = [phase.train_ids[i] for i in keep]  # 6 positives among the negatives
    phase.train_labels = [phase.train_labels[i] for i in keep]
    counts = Counter(phase.train_labels)
    assert counts[1] == 6 and counts[0] >= 4 * 6  # imbalanced at least 4:1

    def drawn() -> list[int]:
        run = phase._start_run(None)
        return [int(label) for batch in run.loader for label in batch["labels"]]

    first = drawn()
    assert len(first) == len(phase.train_labels)
    assert 0.3 < sum(first) / len(first) < 0.7  # about half positives, not 6 in 30+
    assert drawn() == first  # seeded: a rerun (or a resume) draws the same rows
