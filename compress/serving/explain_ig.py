"""Integrated gradients for `edgebert explain` on a PyTorch model directory (Captum's
LayerIntegratedGradients on the word embeddings). Kept apart from `compress.serving.explain` so that
explaining an .onnx file never loads torch.

Baseline: the same sequence with every token but [CLS]/[SEP] replaced by [PAD], the usual choice
for BERT; attributions are summed over the embedding width and over each word's sub-tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from captum.attr import LayerIntegratedGradients

from compress.models.model_io import load_tokenizer

IG_STEPS = 50


class IntegratedGradients:
    name = "integrated_gradients"

    def __init__(self, runner, model_dir: Path):
        """`runner`: the directory as bench opened it (its PyTorch model, not loaded twice)."""
        self.model = runner.torch_model
        self.tokenizer = load_tokenizer(model_dir)
        self.max_length = runner.max_length
        self.layer = LayerIntegratedGradients(self._forward, self.model.get_input_embeddings())

    def _forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def scores(self, words: list[str], label: int, full: float) -> list[float]:
        encoded = self.tokenizer(
            words,
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = encoded["input_ids"]
        special = self.tokenizer.get_special_tokens_mask(
            ids[0].tolist(), already_has_special_tokens=True
        )
        pad = torch.full_like(ids[0], self.tokenizer.pad_token_id or 0)
        baseline = torch.where(torch.tensor(special, dtype=torch.bool), ids[0], pad).unsqueeze(0)
        attributions = self.layer.attribute(
            ids,
            baselines=baseline,
            additional_forward_args=(encoded["attention_mask"],),
            target=label,
            n_steps=IG_STEPS,
        )
        per_token = attributions.sum(-1)[0].detach().numpy()
        scores = [0.0] * len(words)
        for position, word in enumerate(encoded.word_ids(0)):
            if word is not None:
                scores[word] += float(per_token[position])
        return scores
