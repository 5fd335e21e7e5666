"""Issue 12's distillation levers: relation transfer (MiniLMv2), teacher -> vocabulary-cut
student token maps (the assistant chain), transfer sets, and teacher logits through ORT."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from compress.data.vocab import VocabConfig, prune_vocabulary, token_id_map
from compress.errors import EdgebertError
from compress.models.model_io import load_classifier, load_tokenizer
from compress.models.relations import layer_relations, relation_kl
from compress.models.structure import heads_per_layer
from compress.modifiers.prune import prune_heads
from compress.stages.bench import stage_rows
from compress.training.loop import UNLABELED
from tests.conftest import run_ok, sample_rows, tiny_recipe, write_jsonl
from tests.test_training import make_phase


def test_relation_kl_is_zero_on_itself_and_ignores_padding():
    torch.manual_seed(0)
    vectors = torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    assert relation_kl(vectors, vectors, mask, heads=4).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 6, 20)  # another width, cut unevenly into 12 relation heads
    loss = relation_kl(other, vectors, mask, heads=12)
    assert torch.isfinite(loss) and loss.item() > 0.01
    padded = other.clone()
    padded[1, 4:] = 100.0  # what sits at padded positions must not matter
    assert relation_kl(padded, vectors, mask, heads=12).item() == pytest.approx(loss.item())


def test_relations_keep_working_while_heads_are_pruned():
    """The student's query width falls from 32 to 16 as heads go; relations still compare
    [tokens x tokens] matrices with the 48-wide teacher, and gradients reach the query."""
    torch.manual_seed(0)
    small = dict(num_hidden_layers=2, intermediate_size=64, vocab_size=60, num_labels=2)
    student = BertForSequenceClassification(
        BertConfig(hidden_size=32, num_attention_heads=4, **small)
    )
    teacher = BertForSequenceClassification(
        BertConfig(hidden_size=48, num_attention_heads=6, **small)
    ).eval()
    ids, mask = torch.randint(5, 60, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    mask[2, 5:] = 0
    with torch.no_grad():
        target = layer_relations(
            teacher, teacher(ids, mask, output_hidden_states=True).hidden_states, -1
        )
    losses = []
    for step in range(2):
        out = student(ids, mask, output_hidden_states=True)
        mine = layer_relations(student, out.hidden_states, -1)
        loss = sum(relation_kl(mine[k], target[k], mask, heads=12) for k in mine)
        loss.backward()
        query = student.bert.encoder.layer[-1].attention.self.query
        assert query.weight.grad is not None and query.weight.grad.abs().sum() > 0
        losses.append(loss.item())
        student.zero_grad()
        if step == 0:
            prune_heads(student, [torch.tensor([1.0, 2.0, 3.0, 4.0])] * 2, remove=4)
    assert heads_per_layer(student) == [2, 2]
    for outside in (2, -3):  # a layer the 2-layer student lacks is an error, not a wrap-around
        with pytest.raises(EdgebertError, match=f"layer {outside} is outside the model's 2"):
            layer_relations(student, out.hidden_states, outside)
    assert mine["query"].shape[-1] == 16 and all(torch.isfinite(torch.tensor(losses)))


def test_a_vocabulary_cut_student_reads_through_the_teachers_token_map(tiny_model_dir):
    teacher_tokenizer = load_tokenizer(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    texts = [r["text"] for r in sample_rows("train", 200)]
    student_tokenizer, report = prune_vocabulary(
        model, teacher_tokenizer, texts, VocabConfig(min_count=1)
    )
    assert report["vocab_after"] < report["vocab_before"]
    table = token_id_map(student_tokenizer, teacher_tokenizer)
    for text in texts[:50]:
        student_ids = student_tokenizer(text)["input_ids"]
        assert table[student_ids].tolist() == teacher_tokenizer(text)["input_ids"]


def test_transfer_rows_learn_from_the_teacher_only(tiny_model_dir):
    phase = make_phase(tiny_model_dir, class_weights="balanced")
    phase.unlabeled_texts = ["an unlabeled review", "another one"]
    phase.__post_init__()
    assert phase.labelled_rows == 64 and len(phase.train_ids) == 66
    assert phase.train_labels[-2:] == [UNLABELED, UNLABELED]
    logits = torch.randn(2, 2, requires_grad=True)
    out = type("Out", (), {"logits": logits})
    none_labelled = phase.supervised_loss(out, torch.tensor([UNLABELED, UNLABELED]))
    assert none_labelled.item() == 0.0 and none_labelled.requires_grad
    one = phase.supervised_loss(out, torch.tensor([1, UNLABELED]))
    weights = phase.class_weight_tensor
    expected = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1]), weight=weights)
    assert one.item() == pytest.approx(expected.item())
    batch = {"labels": torch.tensor([0, UNLABELED])}
    assert phase.row_weights(batch, torch.tensor([1, 1])).tolist() == pytest.approx(
        weights[[0, 1]].tolist()
    )


@pytest.fixture()
def transfer_file(tmp_path, tiny_data):
    """60 unlabeled rows: 40 new phrases, 10 repeats of them and 10 validation texts."""
    train = {json.loads(line)["text"] for line in (tiny_data / "train.jsonl").open()}
    new = [r["text"] for r in sample_rows("train", 2000, seed=9) if r["text"] not in train][:40]
    validation = [json.loads(line)["text"] for line in (tiny_data / "validation.jsonl").open()]
    rows = [{"text": t} for t in new + new[:10] + validation[:10]]
    return write_jsonl(tmp_path / "unlabeled.jsonl", rows)


def test_assistant_chain_with_relations_transfer_set_and_pruning(
    tmp_path, tiny_model_dir, tiny_data, transfer_file, run_cli
):
    """Assistant (fine-tuned) -> a student cut to its layer 0 and the task's vocabulary, taught
    by relations + hidden states through the token map while heads are pruned, on train rows
    plus a transfer set (unlabeled file + augmented copies)."""
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1).replace(
            "type: finetune\n", "type: finetune\n    name: assistant\n"
        )
        + f"""  - type: train
    name: student
    model: "@assistant"
    keep_layers: [0]
    vocab: {{min_count: 1}}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 2, seed: 2}}
    with:
      - distill:
          teacher: "@assistant"
          relations: {{weight: 1.0, heads: 8}}
          hidden: {{weight: 0.1}}
          transfer:
            files: [{transfer_file}]
            augment: {{copies: 1, steps: [{{type: delete, p: 0.2}}]}}
      - prune_structured: {{heads: 0.5, start_epoch: 1, end_epoch: 1, scoring_batches: 2}}
"""
    )
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    student = metrics["student"]
    distill = student["modifiers"]["distill"]
    report = distill["transfer"]
    assert report["file_rows"] == 60 and report["dropped_known_texts"] >= 10
    assert report["dropped_duplicates"] >= 10 and 300 < report["augmented_rows"] <= 400
    assert student["transfer_rows"] == report["rows"] and student["train_rows"] == 400
    assert report["rows"] == report["file_rows"] + report["augmented_rows"] - (
        report["dropped_known_texts"] + report["dropped_duplicates"]
    )
    assert distill["token_map"] is True
    assert sum(student["modifiers"]["prune_structured"]["heads_per_layer"]) == 2
    losses = [epoch["train_loss"] for epoch in student["history"]]
    assert all(0 < loss < 100 for loss in losses), losses
    assert f"+ {report['rows']:,} transfer rows" in err
    # The run's ledger: the assistant, then each step of the student against it, paired.
    labels = [json.loads(line)["label"] for line in (tiny_data / "validation.jsonl").open()]
    ledger = stage_rows(metrics, {}, "validation", labels)
    assert [(row["stage"], row["step"]) for row in ledger] == [
        ("assistant", "saved model (epoch 1)"),
        ("student", "epoch 1: fp32"),
        ("student", "epoch 1: fp32, pruned (just pruned)"),
        ("student", "epoch 2: fp32, pruned"),
        ("student", f"saved model (epoch {student['best_epoch']})"),
    ]
    assert ledger[0]["vs_teacher"] is None
    assert ledger[1]["parameters"] > ledger[2]["parameters"] == ledger[3]["parameters"]
    for row in ledger[1:]:
        paired = row["vs_teacher"]
        assert paired["resamples"] == 2000 and row["accuracy"] - ledger[0]["accuracy"] == (
            pytest.approx(paired["accuracy_diff"])
        )
        assert paired["accuracy_ci"][0] <= paired["accuracy_diff"] <= paired["accuracy_ci"][1]


def test_teacher_logits_through_onnxruntime_match_pytorch_and_travel_as_an_archive(
    tmp_path, tiny_model_dir, tiny_data, transfer_file, run_cli, monkeypatch
):
    """Two students of one run: teacher logits (train + transfer rows) from ORT and from
    PyTorch agree; the ORT throughput is reported. Each stage also leaves the logits as the
    portable `teacher_logits.npz`, which a run without the teacher distils from. The ORT path
    never loads the PyTorch teacher (an MPNet teacher's 438 MB stay on disk)."""
    loaded: list[Path] = []

    def recording_load(model_dir, *args, **kwargs):
        loaded.append(Path(model_dir))
        return load_classifier(model_dir, *args, **kwargs)

    monkeypatch.setattr("compress.modifiers.distill.load_classifier", recording_load)
    stages = ""
    for runtime in ("onnxruntime", "torch"):
        stages += f"""  - type: train
    name: student-{runtime}
    model: {tiny_model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1, seed: 2}}
    with:
      - distill: {{teacher: "@finetune", teacher_runtime: {runtime}, transfer: {{files: [{transfer_file}]}}}}
"""
    recipe = tmp_path / "runtimes.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1) + stages)
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    caches = [
        load_file(str(next((run_dir / "stages" / f"0{i}-student-{r}").glob("teacher_logits-*"))))
        for i, r in ((1, "onnxruntime"), (2, "torch"))
    ]
    assert caches[0]["logits"].shape == (400 + 40, 2)
    assert torch.allclose(caches[0]["logits"], caches[1]["logits"], atol=1e-4)
    report = metrics["student-onnxruntime"]["modifiers"]["distill"]["teacher_logits"]
    assert report["runtime"] == "onnxruntime" and report["rows_per_second"] > 0
    assert "rows through onnxruntime" in err
    assert loaded == [run_dir / "stages" / "00-finetune" / "model"]  # the torch student's only
    archive = run_dir / "stages" / "02-student-torch" / "teacher_logits.npz"
    with np.load(archive) as saved:
        assert np.array_equal(saved["train_logits"], caches[1]["logits"].numpy())
        assert str(saved["teacher"]) == str(run_dir / "stages" / "00-finetune" / "model")
    alone = tmp_path / "alone.yaml"
    alone.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1).split("  - type:")[0]
        + f"""  - type: train
    model: {tiny_model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1, seed: 2}}
    with:
      - distill: {{teacher_logits: {archive}, transfer: {{files: [{transfer_file}]}}}}
"""
    )
    _, alone_metrics, err = run_ok(run_cli, alone, tmp_path / "alone")
    assert "distill: teacher ready" in err and "(logits cached)" in err
    assert alone_metrics["train"]["transfer_rows"] == 40


def test_a_teacher_with_another_label_count_is_one_line_before_any_training(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    """Checked from the teacher's config alone, before its logits or the student's first step."""
    teacher = tmp_path / "three-label-teacher"
    shutil.copytree(tiny_model_dir, teacher)
    config = json.loads((teacher / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b", "2": "c"}
    config["label2id"] = {"a": 0, "b": 1, "c": 2}
    (teacher / "config.json").write_text(json.dumps(config))
    recipe = tmp_path / "mismatch.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1).split("  - type:")[0]
        + f"""  - type: train
    model: {tiny_model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1}}
    with:
      - distill: {{teacher: {teacher}}}
"""
    )
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    last = err.splitlines()[-1]
    assert code == 2 and f"distill.teacher: {teacher} predicts 3 labels, the task has 2" in last
    assert "Traceback" not in err and " steps " not in err  # no training step was taken
