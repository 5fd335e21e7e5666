"""Distillation, structured and unstructured pruning, alone and composed in one recipe."""

import math

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from compress.models.structure import heads_per_layer
from compress.modifiers.distill import attention_kl, kd_loss, layer_map
from compress.modifiers.prune import prune_ffn, prune_heads
from compress.modifiers.sparsity import cubic_sparsity
from tests.conftest import integer_dot_products, run_ok, tiny_recipe


def test_kd_loss_matches_a_hand_computed_value():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    t = 2.0
    z = math.exp(0.0) + math.exp(0.5)
    p_t = [math.exp(0.0) / z, math.exp(0.5) / z]  # softmax(teacher / T)
    zs = math.exp(0.5) + math.exp(0.0)
    log_p_s = [0.5 - math.log(zs), 0.0 - math.log(zs)]  # log_softmax(student / T)
    expected = sum(p * (math.log(p) - q) for p, q in zip(p_t, log_p_s)) * t * t
    assert kd_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(4 * 0.5 * (0.62245933 - 0.37754067), rel=1e-6)  # = 0.4898373
    assert kd_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-6)


def test_layer_map_and_attention_kl():
    assert layer_map(3, 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert layer_map(6, 6)[-1] == (6, 6)
    att = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    mask = torch.ones(2, 5)
    assert attention_kl(att, att, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert (
        attention_kl(torch.softmax(torch.randn(2, 2, 5, 5), -1), att, mask).item() > 0
    )  # 2 vs 4 heads


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (10, 0.0), (35, 0.4625), (60, 0.7), (100, 0.7992), (110, 0.8), (150, 0.8)],
)
def test_cubic_sparsity_schedule(step, expected):
    # start 10, end 110 (100 steps), 0 -> 0.8: s = 0.8 - 0.8 * (1 - (t - 10) / 100) ** 3
    assert cubic_sparsity(step, 0.0, 0.8, 10, 110) == pytest.approx(expected)


def test_pruned_model_has_expected_shapes_and_reloads_with_same_logits(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    model = BertForSequenceClassification(config).eval()
    before = sum(p.numel() for p in model.parameters())
    head_scores = [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([0.5, 5.0, 6.0, 7.0])]
    assert prune_heads(model, head_scores, remove=3) == 3  # 0.5, 1.0, 2.0
    assert heads_per_layer(model) == [2, 3]
    assert model.config.pruned_heads == {1: [0], 0: [1, 3]} or model.config.pruned_heads == {
        0: [1, 3],
        1: [0],
    }
    model.train()
    prune_ffn(model, [torch.arange(64.0), torch.arange(64.0).flip(0)], remove_per_layer=24)
    assert model.training  # tracing the dependency graph must not leave the model in eval mode
    model.eval()
    layer0 = model.bert.encoder.layer[0]
    assert layer0.intermediate.dense.weight.shape == (
        40,
        32,
    ) and layer0.output.dense.weight.shape == (32, 40)
    assert layer0.attention.self.query.weight.shape == (16, 32)  # 2 heads x 8
    assert model.config.intermediate_size == 40
    assert sum(p.numel() for p in model.parameters()) < before
    ids = torch.randint(0, 50, (3, 7))
    expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path, safe_serialization=True)
    again = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, use_safetensors=True
    ).eval()
    assert heads_per_layer(again) == [2, 3]
    assert torch.allclose(again(input_ids=ids).logits, expected, atol=1e-6)


@pytest.fixture(scope="module")
def wide_teacher_dir(tiny_model_dir, tmp_path_factory):
    """A 48-wide, 3-layer teacher sharing the tiny tokenizer."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("wide-teacher")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    BertForSequenceClassification(config).save_pretrained(str(root), safe_serialization=True)
    tokenizer.save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def big_vocab_student_dir(tiny_model_dir, tmp_path_factory):
    """The tiny student with a 1,200-row word embedding (the tokenizer uses the first 600):
    large enough that QAT's export stores the table as int8 (tables under 1,000 rows stay float)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("big-vocab")
    config = BertConfig.from_pretrained(str(tiny_model_dir))
    config.vocab_size = 1200
    torch.manual_seed(3)
    BertForSequenceClassification(config).save_pretrained(str(root), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(root))
    return root


def composed_recipe(model_dir, teacher_dir, data, with_block: str) -> str:
    return (
        tiny_recipe(teacher_dir, data, epochs=1)
        + f"""  - type: train
    name: student
    model: {model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 3, seed: 2, checkpoint_steps: 20}}
    with:
{with_block}"""
    )


def test_distill_prune_and_sparsity_compose_in_one_recipe(
    tmp_path, tiny_model_dir, wide_teacher_dir, tiny_data, run_cli
):
    recipe = tmp_path / "compose.yaml"
    recipe.write_text(
        composed_recipe(
            tiny_model_dir,
            wide_teacher_dir,
            tiny_data,
            """\
      - distill: {teacher: "@finetune", temperature: 2.0, alpha: 0.5, hidden: {weight: 0.1}, attention: {weight: 0.1}}
      - prune_structured: {heads: 0.5, ffn: 0.5, start_epoch: 1, end_epoch: 2, importance: taylor, scoring_batches: 2}
      - prune_unstructured: {final_sparsity: 0.5, start_step: 5, end_step: 40, frequency: 5}
  - type: export
    quantize: [dynamic]
    parity: {rows: 64, min_label_agreement: 0.5}
""",
        )
    )
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    student = metrics["student"]
    pruned = student["modifiers"]["prune_structured"]
    assert pruned["heads_per_layer"] and sum(pruned["heads_per_layer"]) == 4  # 8 heads -> 4
    assert (
        pruned["intermediate_size"] == 32
        and pruned["parameters_after"] < pruned["parameters_before"]
    )
    assert [e["epoch"] for e in pruned["events"]] == [1, 2]
    sparsity = student["modifiers"]["prune_unstructured"]
    assert (
        sparsity["target_sparsity"] == pytest.approx(0.5) and sparsity["achieved_sparsity"] >= 0.45
    )
    assert student["parameters"] == pruned["parameters_after"]
    assert metrics["export"]["parity"]["fp32"]["passed"]
    saved = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/01-student/model")
    assert saved.config.intermediate_size == 32 and sum(heads_per_layer(saved)) == 4


def distilled_pruned_run(tmp_path, run_cli, dirs: tuple, prune_block: str) -> tuple:
    """The tiny student distilled from the wide teacher's logits with `prune_block` beside it,
    then exported with a parity check: (run directory, metrics, stderr)."""
    model_dir, teacher_dir, data = dirs
    recipe = tmp_path / "pruned.yaml"
    recipe.write_text(
        composed_recipe(
            model_dir,
            teacher_dir,
            data,
            '      - distill: {teacher: "@finetune", temperature: 2.0, alpha: 0.5}\n'
            + prune_block
            + "  - type: export\n    parity: {rows: 64, min_label_agreement: 0.9}\n",
        )
    )
    return run_ok(run_cli, recipe, tmp_path / "runs")


def test_a_width_cut_student_trains_quantizes_and_exports_in_one_recipe(
    tmp_path, tiny_model_dir, wide_teacher_dir, tiny_data, run_cli
):
    run_dir, metrics, err = distilled_pruned_run(
        tmp_path,
        run_cli,
        (tiny_model_dir, wide_teacher_dir, tiny_data),
        """\
      - prune_structured: {heads: 0.25, hidden: 0.25, start_epoch: 1, importance: taylor, scoring_batches: 2}
      - qat: {start_epoch: 3}
""",
    )
    pruned = metrics["student"]["modifiers"]["prune_structured"]
    assert pruned["hidden_size"] == 24 and pruned["events"][0]["hidden_size"] == 24
    assert "width 24/32" in err
    saved = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/01-student/model")
    assert saved.config.hidden_size == 24 and sum(heads_per_layer(saved)) == 6
    assert saved.bert.encoder.layer[0].attention.self.attention_head_size == 6
    assert metrics["export"]["parity"]["fp32"]["passed"]


def test_cubic_cuts_narrow_the_student_a_little_at_a_time(
    tmp_path, tiny_model_dir, wide_teacher_dir, tiny_data, run_cli
):
    run_dir, metrics, err = distilled_pruned_run(
        tmp_path,
        run_cli,
        (tiny_model_dir, wide_teacher_dir, tiny_data),
        """\
      - prune_structured:
          {heads: 0.5, ffn: 0.5, hidden: 0.25, importance: taylor, scoring_batches: 2,
           cubic: {start_step: 5, end_step: 45, frequency: 10}}
""",
    )
    events = metrics["student"]["modifiers"]["prune_structured"]["events"]
    # cubic shares 1 - (1 - (t - 5) / 40)^3 at steps 10, 20, 30, 40 and the end step 45
    assert [e["step"] for e in events] == [10, 20, 30, 40, 45]
    assert [round(e["share"], 4) for e in events] == [0.3301, 0.7559, 0.9473, 0.998, 1.0]
    assert [e["heads_left"] for e in events] == [7, 5, 4, 4, 4]  # 8 heads, half removed
    assert events[-1]["ffn_size"] == 32 and events[-1]["hidden_size"] == 24
    sizes = [e["parameters"] for e in events]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) >= 4
    # a cut whose share changes no shape keeps the optimiser and best-epoch selection as they are
    assert [e["reshaped"] for e in events] == [True] + [a != b for a, b in zip(sizes, sizes[1:])]
    assert sizes[-1] == sizes[-2] and not events[-1]["reshaped"]
    assert "prune_structured: step 10:" in err
    saved = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/01-student/model")
    assert saved.config.hidden_size == 24 and saved.config.intermediate_size == 32
    assert metrics["export"]["parity"]["fp32"]["passed"]


def test_distill_from_cached_logits_and_layer_dropping(
    tmp_path, tiny_model_dir, wide_teacher_dir, tiny_data, run_cli
):
    recipe = tmp_path / "cached.yaml"
    text = composed_recipe(
        wide_teacher_dir,
        wide_teacher_dir,
        tiny_data,
        """\
      - distill: {teacher: "@finetune", temperature: 3.0, alpha: 0.8}
""",
    ).replace(
        "    model: " + str(wide_teacher_dir) + "\n    training: {lr: 5.0e-4",
        "    model: '@finetune'\n    keep_layers: [0, 2]\n    training: {lr: 5.0e-4",
    )
    recipe.write_text(text)
    run_dir, _, err = run_ok(run_cli, recipe, tmp_path / "runs")
    assert "(logits cached)" in err
    assert len(list((run_dir / "stages/01-student").glob("teacher_logits-*.safetensors"))) == 1
    saved = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/01-student/model")
    assert saved.config.num_hidden_layers == 2


def test_layer_dropping_copies_exactly_the_listed_layers(wide_teacher_dir):
    from compress.errors import EdgebertError
    from compress.stages.finetune import drop_layers

    teacher = BertForSequenceClassification.from_pretrained(wide_teacher_dir)
    student = BertForSequenceClassification.from_pretrained(wide_teacher_dir)
    drop_layers(student, [0, 2], "keep_layers")
    assert student.config.num_hidden_layers == len(student.bert.encoder.layer) == 2
    for kept, source in zip(student.bert.encoder.layer, (0, 2)):
        original = teacher.bert.encoder.layer[source].state_dict()
        assert all(torch.equal(v, original[k]) for k, v in kept.state_dict().items())
    query = "attention.self.query.weight"
    assert not torch.equal(  # layer 1 of the student is the teacher's layer 2, not its layer 1
        student.bert.encoder.layer[1].state_dict()[query],
        teacher.bert.encoder.layer[1].state_dict()[query],
    )
    with pytest.raises(EdgebertError, match=r"keep_layers: expected increasing layer numbers"):
        drop_layers(
            BertForSequenceClassification.from_pretrained(wide_teacher_dir), [2, 0], "keep_layers"
        )


@pytest.mark.parametrize(
    ("with_block", "message"),
    [
        (
            "      - prune_structured: {heads: 1.5}\n",
            "stages[1].with[0].prune_structured.heads: Input should be less than 1",
        ),
        (
            "      - prune_unstructured: {final_sparsity: 1.2}\n",
            "prune_unstructured.final_sparsity: Input should be less than 1",
        ),
        ("      - distill: {temperature: 2.0}\n", "distill needs 'teacher'"),
        (
            "      - distill: {teacher: /nonexistent/run}\n",
            "distill.teacher: unknown model '/nonexistent/run'",
        ),
        (
            "      - distill: {teacher: '@finetune', hidden: {projection: false}}\n",
            "distill.hidden.projection: student width 32 differs from teacher width 48",
        ),
        (
            "      - distill: {teacher: '@finetune', hidden: {weight: 0.1}}\n"
            "      - prune_structured: {hidden: 0.25}\n",
            "stages[1]: with[1].prune_structured.hidden: distill.hidden projects",
        ),
        (
            "      - prune_structured: {heads: 0.5, end_epoch: 2, cubic: {frequency: 5}}\n",
            "stages[1].with[0].prune_structured: cubic: give start_epoch/end_epoch or cubic",
        ),
        (
            "      - prune_structured: {heads: 0.5, cubic: {start_step: 9, end_step: 9}}\n",
            "stages[1].with[0].prune_structured.cubic: end_step must come after start_step",
        ),
        (
            "      - prune_structured: {heads: 0.5, cubic: {end_step: 100000}}\n",
            "prune_structured.cubic.end_step: 100000 is after the last step (75)",
        ),
        (
            "      - distil: {teacher: '@finetune'}\n",
            "unknown type 'distil' (did you mean 'distill'?)",
        ),
    ],
)
def test_bad_compression_settings_name_the_field(
    tmp_path, tiny_model_dir, wide_teacher_dir, tiny_data, run_cli, with_block, message
):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(composed_recipe(tiny_model_dir, wide_teacher_dir, tiny_data, with_block))
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 2
    assert message in err.strip().splitlines()[-1]


def test_qat_exports_an_int8_qdq_graph_that_ort_runs_on_integer_kernels(
    tmp_path, big_vocab_student_dir, wide_teacher_dir, tiny_data, run_cli
):
    import collections

    import onnx
    import onnxruntime as ort

    recipe = tmp_path / "qat.yaml"
    recipe.write_text(
        composed_recipe(
            big_vocab_student_dir,
            wide_teacher_dir,
            tiny_data,
            """\
      - distill: {teacher: "@finetune", temperature: 2.0, alpha: 0.5}
      - qat: {start_epoch: 2, freeze_observers_after: 0.5}
  - type: bench
    batch_sizes: [1]
    seq_lengths: [16]
    threads: 1
    min_seconds: 0.02
""",
        ).replace("training: {lr: 5.0e-4", "training: {lr: 5.0e-3")  # learned: its labels vary
    )
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    qat = metrics["student"]["modifiers"]["qat"]
    if integer_dot_products():
        assert qat["enabled"] and qat["ort_label_agreement_with_fake_quant"] >= 0.95
        # ORT's integer kernels compute what fake quantization trained: logits close
        assert qat["ort_parity_with_fake_quant"]["max_abs_diff"] < 0.05
    else:  # AVX2 alone saturates: labels change, as bench's int8_fit warns (0.87 measured)
        assert qat["enabled"] and 0.8 <= qat["ort_label_agreement_with_fake_quant"] < 1.0
    # ... on a model whose labels vary (a constant predictor would agree trivially)
    predicted = [
        sum(column) for column in zip(*metrics["student"]["validation"]["confusion_matrix"])
    ]
    assert all(count > 0 for count in predicted), predicted
    assert metrics["student"]["best_epoch"] >= 2  # epoch 1 (float) is no QAT candidate
    assert qat["int8_embedding_tables"] == 1  # the 1,200-row word embedding is int8
    graph = onnx.load(qat["onnx"])
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    assert ops["DequantizeLinear"] >= 20  # 12 weights + inputs (query/key/value share one)
    assert qat["int8_weight_tensors"] == 12  # weights stored as int8, not float + QuantizeLinear
    int8_matrices = [
        i
        for i in graph.graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2
    ]
    assert sorted(tuple(i.dims) for i in int8_matrices)[-1] == (1200, 32)  # the word table
    assert len(int8_matrices) == 13
    float_matrices = [
        i
        for i in graph.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2
    ]
    shapes = sorted(tuple(i.dims) for i in float_matrices)
    # position and type tables, pooler, classifier, and the word table's per-row scales
    assert shapes == [(2, 32), (2, 32), (32, 32), (128, 32), (1200, 1)], shapes
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(qat["onnx"], options, providers=["CPUExecutionProvider"])
    fused = collections.Counter(
        n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node
    )
    assert fused["MatMulIntegerToFloat"] == 12 and fused["MatMul"] < 12
    assert "student:qat_int8" in metrics["bench"]["models"]
    # the saved checkpoint is plain float weights again
    saved = AutoModelForSequenceClassification.from_pretrained(run_dir / "stages/01-student/model")
    assert type(saved.bert.encoder.layer[0].attention.self.query) is torch.nn.Linear


@pytest.mark.parametrize("weight_max", [127, 63])
def test_qat_reduce_range_keeps_the_weights_in_seven_bits(weight_max):
    """`qat.reduce_range` (63) leaves headroom on AVX2-only CPUs: the int8 weights the export
    stores (round(w / scale), per output channel) reach exactly +-63 instead of +-127."""
    from compress.modifiers.qat import QuantLinear

    torch.manual_seed(0)
    quant = QuantLinear(torch.nn.Linear(16, 8), weight_max)
    quant(torch.randn(4, 16))  # the observers see the weights once
    stored = torch.round(quant.weight / quant.weight_fq.scale[:, None])
    assert stored.abs().amax(dim=1).tolist() == [float(weight_max)] * 8
