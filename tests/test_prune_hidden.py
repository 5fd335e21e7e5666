"""Hidden-width pruning: Torch-Pruning's width group plus a matching head-size cut, so that a
narrower BERT reloads with plain `from_pretrained` and computes the same logits."""

from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from bench.heads import PooledBertForSequenceClassification, sequence_classifier_class
from compress.errors import EdgebertError
from compress.models.structure import attention_parts, encoder_layers, heads_per_layer
from compress.modifiers.importance import MagnitudeImportance
from compress.modifiers.prune import prune_heads
from compress.modifiers.prune_hidden import WidthCut, kept_width, shrink_width_to


def tiny_bert(pooling: str):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
        classifier_pooling=pooling,
    )
    return PooledBertForSequenceClassification(config).eval()


@pytest.mark.parametrize(
    ("width", "heads", "fraction", "kept"),
    [(384, 12, 0.25, 288), (384, 12, 0.3, 264), (32, 4, 0.99, 4), (32, 4, 0.0, 32)],
)
def test_kept_width_is_a_whole_number_of_dimensions_per_head(width, heads, fraction, kept):
    assert kept_width(width, heads, fraction) == kept


@pytest.mark.parametrize("pooling", ["cls", "cls_mean"])
def test_a_narrower_bert_reloads_with_the_same_logits(tmp_path: Path, pooling: str):
    model = tiny_bert(pooling)
    prune_heads(model, [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([0.5, 5.0, 6.0, 7.0])], 3)
    importance = MagnitudeImportance()
    width = WidthCut(model)
    scores = width.scores(importance.group_importance())
    assert scores.shape == (32,)
    width.cut(scores, 24, importance)
    assert model.config.hidden_size == 24
    assert model.bert.embeddings.word_embeddings.weight.shape == (50, 24)
    for layer, heads in zip(encoder_layers(model), [2, 3]):
        inner, out = attention_parts(layer)
        assert inner.attention_head_size == 6 and inner.query.weight.shape == (heads * 6, 24)
        assert out.weight.shape == (24, heads * 6) and layer.output.dense.weight.shape == (24, 64)
    width = 24 * (2 if pooling == "cls_mean" else 1)
    assert model.classifier.weight.shape == (3, width)
    ids = torch.randint(1, 50, (3, 7))
    expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path, safe_serialization=True)
    again = sequence_classifier_class(tmp_path).from_pretrained(tmp_path).eval()
    assert heads_per_layer(again) == [2, 3] and again.config.hidden_size == 24
    assert torch.allclose(again(input_ids=ids).logits, expected, atol=1e-6)


def test_the_width_cut_keeps_the_highest_scoring_channels():
    model = tiny_bert("mean")
    scores = torch.arange(32.0)  # channels 8..31 score highest
    kept = model.bert.embeddings.word_embeddings.weight[:, 8:].detach().clone()
    WidthCut(model).cut(scores, 24, MagnitudeImportance())
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, kept)


def test_a_fresh_model_takes_a_narrowed_checkpoint():
    pruned = tiny_bert("cls")
    WidthCut(pruned).cut(torch.rand(32), 16, MagnitudeImportance())
    fresh = tiny_bert("cls")
    shrink_width_to(fresh, 16)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    assert fresh.config.hidden_size == 16


def test_only_bert_widths_are_cut():
    model = tiny_bert("cls")
    model.config.model_type = "mpnet"
    with pytest.raises(
        EdgebertError, match="prune_structured.hidden: hidden-width pruning supports BERT"
    ):
        WidthCut(model)
