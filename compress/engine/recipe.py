"""Recipe format: YAML -> validated pydantic model, with errors that name field and line.

The stage list is a discriminated union built from the stage catalog (`compress.engine.catalog`) when
the model is built, and so is each training stage's `with:` list of modifiers. Validation happens before any work
starts: a typo in stage 4 must not cost the user a finished stage 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)

from bench.files import first_line
from compress.engine.catalog import MODIFIERS, STAGES, check_stage_order
from compress.engine.config import DataConfig, ModifierEntry, SearchConfig, Strict, TargetConfig
from compress.errors import EdgebertError


def _tag_of_single_key(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


def _entry_model(name: str, modifier_class: type) -> type[ModifierEntry]:
    """`{name: {...}}` as a one-field model that knows which modifier it builds."""
    model = create_model(
        f"With_{name}", __base__=ModifierEntry, **{name: (modifier_class.Config, ...)}
    )
    model.modifier_class = modifier_class
    return model


def modifier_list_type() -> Any:
    """`with:` entries: one-key mappings such as `{distill: {...}}`, one member per modifier."""
    members = [
        Annotated[_entry_model(name, cls), Tag(name)] for name, cls in sorted(MODIFIERS.items())
    ]
    return list[Annotated[Union[tuple(members)], Discriminator(_tag_of_single_key)]]


def _stage_config_model(stage_class: type, modifiers: Any) -> type[BaseModel]:
    """A stage's config; a training stage's `with:` field is typed by the modifier union."""
    if not stage_class.trains:
        return stage_class.Config
    return create_model(
        stage_class.Config.__name__,
        __base__=stage_class.Config,
        with_=(modifiers, Field(default_factory=list, alias="with")),
    )


def build_recipe_model() -> type[BaseModel]:
    """The Recipe model for the stages and modifiers in the catalog."""
    modifiers = modifier_list_type()
    stage_union = Annotated[
        Union[
            tuple(
                Annotated[_stage_config_model(cls, modifiers), Tag(name)]
                for name, cls in sorted(STAGES.items())
            )
        ],
        Field(discriminator="type"),
    ]

    class Recipe(Strict):
        """A whole edgebert run: data, then stages in order."""

        name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
        task: Literal["text-classification", "token-classification"] = "text-classification"
        seed: int = 42
        data: DataConfig
        stages: list[stage_union] = Field(min_length=1)  # type: ignore[valid-type]
        search: SearchConfig | None = Field(
            None, description="run the recipe as trials over these fields (grid/random/tpe)"
        )
        target: TargetConfig | None = Field(
            None, description="an accuracy budget: the search finds the fastest student keeping it"
        )

        @model_validator(mode="after")
        def _stage_order(self) -> Recipe:
            check_stage_order(self.stages, self.task)
            return self

        @model_validator(mode="after")
        def _search_has_work(self) -> Recipe:
            if self.target is not None:
                check_target(self.target, self.stages, self.search)
            elif self.search is not None and not self.search.space:
                raise ValueError("search.space: give at least one field to search")
            return self

    return Recipe


def check_target(target: TargetConfig, stages: list, search: SearchConfig | None) -> None:
    """A target needs a search (method, trials, storage) and names a teacher stage before a
    training stage it reshapes."""
    if search is None:
        raise ValueError("target: needs a search: block (method, trials, storage)")
    if search.space:
        raise ValueError("search.space: a target search draws target.shapes; leave space out")
    names = [s.name or s.type for s in stages]
    for field, name in (("teacher", target.teacher), ("student", target.student)):
        if name not in names:
            raise ValueError(
                f"target.{field}: no stage named '{name}' (stages: {', '.join(names)})"
            )
    student = stages[names.index(target.student)]
    if not hasattr(student, "keep_layers") or names.index(target.teacher) >= names.index(
        target.student
    ):
        raise ValueError(
            f"target.student: '{target.student}' must be a transformer training stage after "
            f"the teacher '{target.teacher}'"
        )


# --- loading with line numbers -------------------------------------------------------------


def _node_at(node: yaml.Node | None, loc: tuple, tags: set[str]) -> yaml.Node | None:
    """Walk a composed YAML tree along a pydantic error location; stop where the path ends."""
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None and key in tags:
                continue  # pydantic puts union tags (stage type names) into locations
            if match is None:
                match = next((k for k, _ in node.value if k.value == key), None)
                return match or node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return node
            node = node.value[key]
        else:
            # pydantic inserts union tags (stage type names) into locations; skip them.
            continue
    return node


def _readable_loc(loc: tuple, allowed_tags: set[str]) -> str:
    parts: list[str] = []
    previous: object = None
    for key in loc:
        if isinstance(key, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{key}]"]
        elif key in allowed_tags and isinstance(previous, int):
            pass  # union tag right after a list index: not a field
        else:
            parts.append(str(key))
        previous = key
    return ".".join(parts) or "(recipe)"


# Names users bring from other trainers, mapped to ours (for "did you mean").
COMMON_MISTAKES = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "train_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "warmup": "warmup_ratio",
    "max_seq_length": "max_length",
    "labels_file": "labels",
    "steps": "stages",
}


def _expected(error: dict, model: type[BaseModel], loc: tuple) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        field = str(loc[-1])
        siblings = _fields_at(model, loc[:-1])
        close = [COMMON_MISTAKES[field]] if COMMON_MISTAKES.get(field) in siblings else []
        close = close or difflib.get_close_matches(field, siblings, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown field{hint}; expected one of: {', '.join(sorted(siblings))}"
    if kind == "missing":
        return "required field is missing"
    message = error["msg"].removeprefix("Value error, ")  # our validators' words, as written
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        tag = ctx.get("tag", "")
        options = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        close = difflib.get_close_matches(tag, options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown type '{tag}'{hint}; expected one of: {ctx.get('expected_tags')}"
    received = error.get("input")
    if kind not in ("value_error",) and not isinstance(received, (dict, list)):
        message += f", got {received!r}"
    return message


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every pydantic model inside list/Optional/Union/Annotated annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _has_tag(model: type[BaseModel], tag: str) -> bool:
    fields = model.model_fields
    if "type" in fields and tag in get_args(fields["type"].annotation):
        return True
    return list(fields) == [tag]


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model a location points into (for 'did you mean')."""
    current: Any = model
    for key in loc:
        if isinstance(key, int):
            continue
        candidates = _models_in(current)
        tagged = [m for m in candidates if _has_tag(m, key)]
        if tagged and key not in tagged[0].model_fields:
            current = tagged[0]
            continue
        owner = next((m for m in candidates if key in m.model_fields), None)
        if owner is None:
            return []
        current = owner.model_fields[key].annotation
    models = _models_in(current)
    if len(models) != 1:
        return []
    return [f.alias or name for name, f in models[0].model_fields.items()]


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], root: yaml.Node | None, source: str
) -> str:
    """First error as `file:line: field.path: what was expected` (+ how many more)."""
    tags = set(STAGES) | set(MODIFIERS) | {f"With_{m}" for m in MODIFIERS}
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    if first["type"] == "union_tag_invalid":
        loc = loc + (str(first.get("ctx", {}).get("discriminator", "type")).strip("'"),)
    node = _node_at(root, loc, tags)
    line = f":{node.start_mark.line + 1}" if node is not None else ""
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}{line}: {_readable_loc(loc, tags)}: {_expected(first, model, loc)}{more}"


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`--set stages.0.training.epochs=1`: dotted path into the raw mapping, YAML-typed value."""
    for item in overrides:
        if "=" not in item:
            raise EdgebertError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        target: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, dict):
                target = target.setdefault(part, {})
            else:
                raise EdgebertError(f"--set {key}: '{part}' does not lead into the recipe")
        leaf = parts[-1]
        try:
            parsed = yaml.safe_load(value) if value else value
        except yaml.YAMLError as exc:  # e.g. a lone surrogate: YAML refuses the character
            problem = getattr(exc, "problem", None) or first_line(exc)
            raise EdgebertError(f"--set {key}: the value is not YAML ({problem})") from None
        if isinstance(target, list) and leaf.isdigit() and int(leaf) < len(target):
            target[int(leaf)] = parsed
        elif isinstance(target, dict):
            target[leaf] = parsed
        else:
            raise EdgebertError(f"--set {key}: '{leaf}' does not lead into the recipe")
    return raw


def load_recipe(path: Path | str, overrides: list[str] | None = None):
    """Read, override and validate a recipe; every failure is one EdgebertError line."""
    path = Path(path)
    if not path.is_file():
        raise EdgebertError(f"recipe not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EdgebertError(f"{path}: not UTF-8 text") from None
    return parse_recipe(text, str(path), overrides, base_dir=path.parent)


def parse_recipe(text: str, source: str, overrides: list[str] | None = None, base_dir=None):
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise EdgebertError(f"{source}{where}: broken YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise EdgebertError(f"{source}: a recipe must be a mapping with name, data and stages")
    raw = apply_overrides(raw, overrides or [])
    model = build_recipe_model()
    try:
        recipe = model.model_validate(raw)
    except ValidationError as exc:
        raise EdgebertError(format_validation_error(exc, model, root, source)) from None
    if base_dir is not None:
        _resolve_paths(recipe, Path(base_dir))
    return recipe


def _recipe_paths(node, where: str = "") -> Iterator[tuple[str, Path, Callable[[Path], None]]]:
    """(recipe location, path, setter) of every file path in a validated recipe; every path
    a recipe holds names an input (data, transfer text, precomputed logits)."""
    if not isinstance(node, BaseModel):
        return
    for name, info in type(node).model_fields.items():
        value, location = getattr(node, name), f"{where}{'.' if where else ''}{info.alias or name}"
        if isinstance(value, Path):
            yield location, value, lambda new, owner=node, field=name: setattr(owner, field, new)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Path):
                    yield (
                        f"{location}[{i}]",
                        item,
                        lambda new, seq=value, at=i: seq.__setitem__(at, new),
                    )
                else:
                    yield from _recipe_paths(item, f"{location}[{i}]")
        else:
            yield from _recipe_paths(value, location)


def _resolve_paths(recipe, base: Path) -> None:
    """Relative paths are relative to the recipe's folder, or to the working directory."""
    for _, value, replace in list(_recipe_paths(recipe)):
        if not value.is_absolute():
            beside_recipe = base / value
            chosen = beside_recipe if beside_recipe.exists() or not value.exists() else value
            replace(chosen.resolve())


def check_stage_files(recipe) -> None:
    """Every file a stage names exists: checked before any work, like the data files, so a
    typo in a transfer set does not surface after the teacher has trained."""
    for location, path, _ in _recipe_paths(recipe):
        if location.startswith("stages") and not path.is_file():
            raise EdgebertError(f"{location}: file not found: {path}")


def recipe_json_schema() -> dict:
    """The JSON Schema of the recipe format (`edgebert schema`)."""
    return build_recipe_model().model_json_schema()
