import json

import pytest

from compress.engine.recipe import parse_recipe, recipe_json_schema
from compress.errors import EdgebertError

GOOD = """\
name: demo
data:
  dataset: sst2-sample
  max_length: 64
stages:
  - type: finetune
    model: minilm-l6
    training:
      lr: 3.0e-5
      batch_size: 16
"""


def error_of(text: str, overrides=None) -> str:
    with pytest.raises(EdgebertError) as info:
        parse_recipe(text, "r.yaml", overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_recipe_fills_defaults():
    recipe = parse_recipe(GOOD, "r.yaml")
    stage = recipe.stages[0]
    assert stage.type == "finetune" and stage.training.lr == 3e-5
    assert stage.training.epochs == 3 and stage.training.warmup_ratio == 0.1
    assert recipe.seed == 42 and recipe.data.max_length == 64


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "      lr: 3.0e-5",
            "      learning_rate: 3.0e-5",
            "r.yaml:9: stages[0].training.learning_rate: unknown field (did you mean 'lr'?)",
        ),
        (
            "      lr: 3.0e-5",
            "      lr: -1",
            "r.yaml:9: stages[0].training.lr: Input should be greater than 0",
        ),
        (
            "      batch_size: 16",
            "      batch_size: 0",
            "r.yaml:10: stages[0].training.batch_size: Input should be greater than or equal to 1",
        ),
        (
            "      batch_size: 16",
            "      batch_size: lots",
            "r.yaml:10: stages[0].training.batch_size: Input should be a valid integer",
        ),
        (
            "  max_length: 64",
            "  max_length: 4096",
            "r.yaml:4: data.max_length: Input should be less than or equal to 512",
        ),
        (
            "  - type: finetune",
            "  - type: finetun",
            "r.yaml:6: stages[0].type: unknown type 'finetun' (did you mean 'finetune'?)",
        ),
        ("    model: minilm-l6\n", "", "r.yaml:6: stages[0].model: required field is missing"),
        ("name: demo", "name: my run!", "r.yaml:1: name: String should match pattern"),
        (
            "  dataset: sst2-sample",
            "  datset: sst2-sample",
            "r.yaml:3: data.datset: unknown field (did you mean 'dataset'?)",
        ),
    ],
)
def test_bad_fields_are_named_with_line_and_expectation(old, new, expected):
    assert old in GOOD
    assert error_of(GOOD.replace(old, new)).startswith(expected)


def test_unknown_clean_step_lists_the_choices():
    message = error_of(GOOD.replace("  max_length: 64", "  clean: [strip_htm]"))
    assert message.startswith("r.yaml:4: data.clean[0]: Input should be 'strip_html'")


def test_broken_yaml_and_non_mapping():
    assert error_of("name: [unclosed\n").startswith("r.yaml:2: broken YAML")
    assert "must be a mapping" in error_of("- just\n- a list\n")


def test_data_needs_exactly_one_source():
    message = error_of(GOOD.replace("  dataset: sst2-sample", "  max_train_rows: 5"))
    assert "give either 'dataset'" in message


def test_stage_names_must_be_unique():
    text = GOOD + "  - type: finetune\n    model: '@finetune'\n"
    assert "used twice" in error_of(text)


def test_overrides_apply_before_validation():
    recipe = parse_recipe(GOOD, "r.yaml", ["stages.0.training.epochs=1", "data.max_train_rows=50"])
    assert recipe.stages[0].training.epochs == 1 and recipe.data.max_train_rows == 50
    assert "epochs: Input should be greater" in error_of(GOOD, ["stages.0.training.epochs=0"])
    assert "expected key=value" in error_of(GOOD, ["epochs"])


def test_schema_lists_stage_types_and_fields():
    schema = recipe_json_schema()
    text = json.dumps(schema)
    assert '"finetune"' in text and '"train"' in text
    assert "TrainingConfig" in schema["$defs"]
    assert set(schema["required"]) == {"name", "data", "stages"}
