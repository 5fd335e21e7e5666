"""Augmentation: label-keeping edits, deterministic per seed, training split only."""

from __future__ import annotations

import random

from compress.data.augment import AugmentConfig, apply_step, augment_split, synonym_table
from compress.data.splits import Split
from tests.conftest import run_ok, tiny_recipe

TEXT = "The flight was great and the staff were very friendly"


def _step(**fields):
    return AugmentConfig(steps=[fields]).steps[0]


def test_each_step_does_what_it_says():
    rng = random.Random(0)
    deleted = apply_step(_step(type="delete", p=0.5), TEXT, rng)
    assert set(deleted.split()) < set(TEXT.split())
    swapped = apply_step(_step(type="swap", n=1), TEXT, rng)
    assert sorted(swapped.split()) == sorted(TEXT.split()) and swapped != TEXT
    synonyms = apply_step(_step(type="synonym", p=1.0), TEXT, rng)
    changed = [(a, b) for a, b in zip(TEXT.split(), synonyms.split()) if a != b]
    table = synonym_table()
    assert {a.lower() for a, _ in changed} == {"flight", "great", "staff", "very", "friendly"}
    assert all(b.lower() in table[a.lower()] for a, b in changed)
    assert synonyms.split()[0] == "The"
    typos = apply_step(_step(type="typo", p=0.99), "wonderful service today", rng).split()
    assert all(
        a != b and abs(len(a) - len(b)) <= 1
        for a, b in zip("wonderful service today".split(), typos)
    )
    assert apply_step(_step(type="delete", p=0.99), "one", rng) == "one"  # never empty


def test_synonym_groups_keep_polarity():
    table = synonym_table()
    assert "excellent" in table["great"] and "awful" in table["bad"]
    assert not set(table["good"]) & {"bad", "poor", "awful"}


def test_augment_split_is_deterministic_and_adds_only_changed_rows():
    split = Split([TEXT, "ok", "Terrible service, lost my bag"], [2, 1, 0], "x")
    config = AugmentConfig(copies=2, steps=[{"type": "synonym", "p": 1.0}])
    first, added = augment_split(split, config, seed=3)
    again, _ = augment_split(split, config, seed=3)
    assert first.texts == again.texts and first.labels == again.labels
    assert first.texts[:3] == split.texts and added == len(first) - 3
    assert added == 4  # "ok" has no synonym: its unchanged copies are dropped
    assert first.labels[3:] == [2, 0, 2, 0]
    other, _ = augment_split(
        split, AugmentConfig(copies=2, steps=[{"type": "typo", "p": 0.5}]), seed=4
    )
    assert other.texts[3:] != first.texts[3:]


def test_bad_augment_step_names_the_field(tmp_path, tiny_model_dir, tiny_data, run_cli):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data).replace(
            "  max_length: 32\n", "  max_length: 32\n  augment: {steps: [{type: shuffle}]}\n"
        )
    )
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert (
        code == 2
        and "bad.yaml:9: data.augment.steps[0].type: unknown type 'shuffle'; expected one of: 'delete', 'swap', 'synonym', 'typo'"
        in err
    )


def test_augmented_recipe_trains_on_more_rows_and_evaluates_on_the_originals(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = tmp_path / "aug.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1).replace(
            "  max_length: 32\n",
            "  max_length: 32\n  augment: {copies: 1, steps: [{type: delete, p: 0.1}, {type: typo, p: 0.05}]}\n",
        )
    )
    code, out, _ = run_cli("run", recipe, "--dry-run")
    assert code == 0
    added = int(out.split("(")[1].split(" augmented")[0])
    assert (
        200 < added <= 400
        and f"data: {400 + added} train ({added} augmented), 100 validation" in out
    )
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    assert f"augmentation: {added} rows added to the training split ({400 + added} in all)" in err
    assert metrics["finetune"]["validation"]["n"] == 100
