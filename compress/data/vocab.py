"""Vocabulary pruning: keep only the tokens a task uses, shrink the embedding matrix to match.

MiniLM-L6's 30,522 x 384 word embedding is about half of its parameters, yet a task corpus
touches a few thousand of those rows. Dropping the rest shrinks the shipped file without
changing the encoder. Tokenization stays correct for the kept corpus; unseen words fall back
to the kept single-character pieces (WordPiece spells them out) instead of becoming [UNK].
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoTokenizer

from compress.errors import EdgebertError


class VocabConfig(BaseModel):
    """Recipe block `vocab:` of a training stage."""

    model_config = ConfigDict(extra="forbid")
    min_count: int = Field(1, ge=1, description="keep tokens seen at least this often in train")
    keep_characters: bool = Field(
        True, description="keep every single-character piece so unseen words are spelled out"
    )
    add_characters: bool = Field(
        False,
        description="add characters of the training texts the vocabulary lacks (e.g. CJK "
        "for an English model), with new embedding rows learned in training",
    )


def corpus_token_counts(tokenizer, texts: Sequence[str]) -> Counter:
    """Token-id counts of the texts, tokenized in batch without truncation."""
    counts: Counter = Counter()
    for start in range(0, len(texts), 2048):
        encoded = tokenizer(
            list(texts[start : start + 2048]),
            add_special_tokens=False,
            truncation=False,
            verbose=False,
        )["input_ids"]
        for ids in encoded:
            counts.update(ids)
    return counts


def kept_token_ids(tokenizer, texts: Sequence[str], config: VocabConfig) -> list[int]:
    """Sorted old ids to keep: special tokens, corpus tokens, and (optionally) characters."""
    keep = set(tokenizer.all_special_ids)
    keep.update(
        i for i, n in corpus_token_counts(tokenizer, texts).items() if n >= config.min_count
    )
    if config.keep_characters:
        prefix = _wordpiece(tokenizer)["continuing_subword_prefix"]
        for token, i in tokenizer.get_vocab().items():
            if len(token) == 1 or (token.startswith(prefix) and len(token) == len(prefix) + 1):
                keep.add(i)
    return sorted(keep)


def _wordpiece(tokenizer) -> dict:
    if not getattr(tokenizer, "is_fast", False):
        raise EdgebertError("vocab: pruning needs a fast tokenizer (tokenizer.json)")
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "WordPiece":
        raise EdgebertError(
            f"vocab: pruning supports WordPiece tokenizers (BERT, MPNet, DistilBERT); this "
            f"model uses {model.get('type')}"
        )
    return model


def pruned_tokenizer(tokenizer, kept: list[int]):
    """A tokenizer of the same class whose vocabulary is `kept`, renumbered 0..len(kept)-1."""
    _wordpiece(tokenizer)
    remap = {old: new for new, old in enumerate(kept)}
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    data["model"]["vocab"] = {by_id[old]: new for old, new in remap.items()}
    for added in data.get("added_tokens", []):
        added["id"] = remap[added["id"]]
    post = data.get("post_processor") or {}
    for processor in [post, *post.get("processors", [])]:
        for special in (processor.get("special_tokens") or {}).values():
            special["ids"] = [remap[i] for i in special["ids"]]
        for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
            if isinstance(processor.get(key), list):
                processor[key][1] = remap[processor[key][1]]
    return _rebuilt(tokenizer, data, [by_id[old] for old in kept])


def _rebuilt(tokenizer, data: dict, ordered_tokens: list[str]):
    """Reload `tokenizer`'s class from edited tokenizer.json data (and a matching vocab.txt)."""
    folder = Path(tempfile.mkdtemp(prefix="edgebert-vocab-"))
    try:
        tokenizer.save_pretrained(str(folder))
        (folder / "tokenizer.json").write_text(
            json.dumps(data, ensure_ascii=False), encoding="utf-8"
        )
        vocab_txt = folder / "vocab.txt"
        if vocab_txt.exists():
            vocab_txt.write_text("".join(t + "\n" for t in ordered_tokens), encoding="utf-8")
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prune_embeddings(model, kept: list[int]) -> None:
    """Keep the embedding rows of `kept`, in order; update the config to the new size."""
    pairs = getattr(model, "pairs", None)
    if pairs is not None and bool(pairs.weight.detach().any()):
        raise EdgebertError(
            "vocab: this static model's pair table is keyed by the current token ids; "
            "renumbering them would scramble it (cut the vocabulary in the stage that trains it)"
        )
    old = model.get_input_embeddings()
    index = torch.tensor(kept, dtype=torch.long)
    new = torch.nn.Embedding(
        len(kept), old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.index_select(0, index.to(old.weight.device)))
    pad = model.config.pad_token_id
    if pad is not None:
        new_pad = kept.index(pad)
        if old.padding_idx is not None and old.padding_idx != new_pad:
            # RoBERTa-style position ids count from padding_idx: renumbering it would shift them.
            raise EdgebertError(f"vocab: the padding id would move ({pad} -> {new_pad})")
        new.padding_idx = old.padding_idx
        model.config.pad_token_id = new_pad
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)


def missing_characters(tokenizer, texts: Sequence[str], min_count: int) -> list[str]:
    """Letters and digits of the texts that the tokenizer turns into [UNK], most frequent first.

    An English WordPiece vocabulary holds only a few thousand CJK characters; the rest of a
    Chinese review becomes [UNK]. BERT's pre-tokenizer already splits CJK text into single
    characters, so adding them as tokens gives a character-level model of the language."""
    import unicodedata

    counts: Counter = Counter(ch for text in texts for ch in text)
    vocab = tokenizer.get_vocab()
    normalizer = tokenizer.backend_tokenizer.normalizer
    missing: list[str] = []
    seen: set[str] = set()
    for ch, n in counts.most_common():
        if n < min_count or not unicodedata.category(ch).startswith(("L", "N")):
            continue
        # BERT's normalizer pads CJK characters with spaces (its way of splitting them)
        normal = (normalizer.normalize_str(ch) if normalizer is not None else ch).strip()
        if len(normal) == 1 and normal not in vocab and normal not in seen:
            missing.append(normal)
            seen.add(normal)
    return missing


def extended_tokenizer(tokenizer, characters: list[str]):
    """The same tokenizer with `characters` appended to its WordPiece vocabulary."""
    _wordpiece(tokenizer)
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    start = max([*vocab.values(), *(t["id"] for t in data.get("added_tokens", []))]) + 1
    for offset, ch in enumerate(characters):
        vocab[ch] = start + offset
    ordered = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    return _rebuilt(tokenizer, data, ordered)


def extend_embeddings(model, added: int) -> None:
    """`added` new embedding rows at the end, initialised to the mean of the existing rows
    (a neutral start; training moves them)."""
    old = model.get_input_embeddings()
    mean = old.weight.detach().mean(0, keepdim=True)
    model.resize_token_embeddings(old.num_embeddings + added, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[-added:] = mean


def prune_vocabulary(model, tokenizer, texts: Sequence[str], config: VocabConfig):
    """Shrink model and tokenizer to the corpus vocabulary; return (tokenizer, report)."""
    _wordpiece(tokenizer)  # refuse other tokenizer types before touching the model
    before = len(tokenizer)
    params_before = model.num_parameters()
    added: list[str] = []
    if config.add_characters:
        added = missing_characters(tokenizer, texts, config.min_count)
        if added:
            tokenizer = extended_tokenizer(tokenizer, added)
            extend_embeddings(model, len(added))
    kept = kept_token_ids(tokenizer, texts, config)
    new_tokenizer = pruned_tokenizer(tokenizer, kept)
    prune_embeddings(model, kept)
    report = {
        "vocab_before": before,
        "characters_added": len(added),
        "vocab_after": len(kept),
        "parameters_before": params_before,
        "parameters_after": model.num_parameters(),
    }
    return new_tokenizer, report


def token_id_map(student_tokenizer, teacher_tokenizer, max_missing: float = 0.01) -> torch.Tensor:
    """Teacher id of every student token, by token string: a student whose vocabulary was cut
    from the teacher's (or its assistant's) reads the same tokens renumbered, so the teacher
    can read the student's own token sequence and the positions line up for hidden-state,
    attention and relation transfer. Tokens the teacher lacks (added characters) map to its
    [UNK]; more than `max_missing` of them means the vocabularies are not related."""
    teacher_vocab = teacher_tokenizer.get_vocab()
    unknown = teacher_tokenizer.unk_token_id if teacher_tokenizer.unk_token_id is not None else 0
    student_vocab = student_tokenizer.get_vocab()
    table = torch.full((max(student_vocab.values()) + 1,), unknown, dtype=torch.long)
    missing = 0
    for token, index in student_vocab.items():
        found = teacher_vocab.get(token)
        missing += found is None
        table[index] = unknown if found is None else found
    if missing > max_missing * len(student_vocab):
        raise EdgebertError(
            f"{missing:,} of the student's {len(student_vocab):,} tokens are not in the "
            "teacher's vocabulary: token-level transfer needs a teacher with the student's "
            "tokenizer (or the one its vocabulary was cut from)"
        )
    return table
