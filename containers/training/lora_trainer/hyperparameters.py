"""Hyperparameters: read SageMaker's string values and check them against the one schema file.

The schema (hyperparameters.schema.json) is shared with the workflow's TypeScript validation, and the
test vectors in tests/hyperparameter_cases.json are run by both, so the two sides decode and judge
every value the same way.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from .errors import TrainingError
from .flux_files import HUB_REPOS, variant_of_hub_id

SCHEMA_PATH = Path(__file__).with_name("hyperparameters.schema.json")

Value = str | int | float | bool

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the hyperparameters; `code` names its class for tests and tools."""

    key: str
    code: str
    message: str

    def __str__(self) -> str:
        return f'"{self.key}": {self.message}'


class HyperparameterError(TrainingError):
    """Every problem found in the hyperparameters, reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "; ".join(str(p) for p in problems)
        super().__init__(f"Invalid hyperparameters ({len(problems)} problem{'s' if len(problems) > 1 else ''}): {lines}")


@dataclass(frozen=True)
class Spec:
    """One key of the schema."""

    name: str
    type: str
    default: Any
    flag: str | None
    description: str
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    pattern_description: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    multiple_of: int | None = None
    models: tuple[str, ...] | None = None

    def default_for(self, model_type: str) -> Any:
        default = self.default[model_type] if isinstance(self.default, dict) else self.default
        # JSON writes 1.0 as 1; a number is a float however its default is written.
        return float(default) if self.type == "number" and default is not None else default


@dataclass(frozen=True)
class Schema:
    specs: dict[str, Spec]
    reserved: dict[str, str]
    ignored_prefixes: tuple[str, ...] = ()


def load_schema(path: Path = SCHEMA_PATH) -> Schema:
    document = json.loads(path.read_text(encoding="utf-8"))
    specs = {}
    for name, raw in document["hyperparameters"].items():
        specs[name] = Spec(
            name=name,
            type=raw["type"],
            default=raw["default"],
            flag=raw["flag"],
            description=raw["description"],
            enum=tuple(raw["enum"]) if "enum" in raw else None,
            pattern=raw.get("pattern"),
            pattern_description=raw.get("patternDescription"),
            minimum=raw.get("minimum"),
            maximum=raw.get("maximum"),
            exclusive_minimum=raw.get("exclusiveMinimum"),
            multiple_of=raw.get("multipleOf"),
            models=tuple(raw["models"]) if "models" in raw else None,
        )
    return Schema(specs=specs, reserved=dict(document["reserved"]), ignored_prefixes=tuple(document["ignoredPrefixes"]))


def parse_hyperparameters(raw: Mapping[str, Any], schema: Schema | None = None) -> dict[str, Value | None]:
    """Decodes and validates `raw` (SageMaker's hyperparameters.json), returning every key of the
    schema with its effective value (defaults filled in for the model type; None where unset).
    Raises HyperparameterError listing every problem."""
    schema = schema or load_schema()
    problems: list[Problem] = []
    given: dict[str, Value] = {}
    for key in sorted(raw):
        if key.startswith(schema.ignored_prefixes):
            continue
        if key in schema.reserved:
            problems.append(Problem(key, "reserved", f"is set by the container; {schema.reserved[key]}"))
            continue
        spec = schema.specs.get(key)
        if spec is None:
            near = difflib.get_close_matches(key, list(schema.specs), n=1)
            hint = f'; did you mean "{near[0]}"?' if near else f"; known keys: {', '.join(sorted(schema.specs))}"
            problems.append(Problem(key, "unknown", f"is not a known hyperparameter{hint}"))
            continue
        value, problem = _decode(spec, raw[key])
        if problem:
            problems.append(problem)
        else:
            given[key] = value

    model_type = given.get("model_type", schema.specs["model_type"].default)
    values: dict[str, Value | None] = {name: spec.default_for(str(model_type)) for name, spec in schema.specs.items()}
    values.update(given)
    for key in given:
        models = schema.specs[key].models
        if models and model_type not in models:
            problems.append(Problem(key, "model", f"applies only to model_type {' or '.join(models)}, not {model_type}"))
    problems.extend(_conflicts(values, given))
    if problems:
        raise HyperparameterError(problems)
    return values


def _conflicts(values: Mapping[str, Value | None], given: Mapping[str, Value]) -> list[Problem]:
    problems = []
    if values["cache_text_encoder_outputs"] and not values["network_train_unet_only"]:
        problems.append(
            Problem(
                "cache_text_encoder_outputs",
                "conflict",
                "needs network_train_unet_only = true: cached text encoder outputs cannot train the text encoder",
            )
        )
    if values["lr_warmup_steps"] and (values["lr_scheduler"] == "constant" or values["optimizer_type"] == "Adafactor"):
        # kohya's scheduler factory raises on it, after the model is loaded and the latents cached.
        why = "Adafactor brings its own schedule" if values["optimizer_type"] == "Adafactor" else "the constant schedule has none"
        problems.append(
            Problem("lr_warmup_steps", "conflict", f"needs a schedule with warm-up, such as lr_scheduler = constant_with_warmup; {why}")
        )
    if "text_encoder_lr" in given and values["network_train_unet_only"]:
        problems.append(Problem("text_encoder_lr", "conflict", "has no effect with network_train_unet_only = true; remove one of them"))
    if values["model_type"] == "flux1":
        problems.extend(_flux_conflicts(values))
    elif variant_of_hub_id(str(values["base_model"])) is not None:
        problems.append(_flux_base_model_for(str(values["model_type"]), str(values["base_model"])))
    return problems


def _flux_base_model_for(model_type: str, base_model: str) -> Problem:
    """A FLUX.1 Hub id under sd15/sdxl: the SD scripts cannot load its files (Prepare refuses it too)."""
    return Problem(
        "base_model",
        "conflict",
        f"{base_model} is a flux1 base model, not {model_type}: set model_type = flux1, or give a {model_type} base model",
    )


def _flux_conflicts(values: Mapping[str, Value | None]) -> list[Problem]:
    """What flux_train_network.py needs, in the order lambda/shared/hyperparameters.ts reports it."""
    problems = []
    if values["mixed_precision"] == "fp16":
        problems.append(Problem("mixed_precision", "conflict", "must be bf16 for model_type flux1 (sd-scripts trains FLUX.1 in bf16), not fp16"))
    if not values["network_train_unet_only"]:
        why = "its text-encoder outputs are cached, so the text encoders cannot train"
        problems.append(Problem("network_train_unet_only", "conflict", f"must be true for model_type flux1: {why}"))
    if not values["cache_text_encoder_outputs"]:
        problems.append(
            Problem(
                "cache_text_encoder_outputs",
                "conflict",
                "must be true for model_type flux1: sd-scripts caches FLUX.1's CLIP-L and T5-XXL outputs so both encoders leave the GPU",
            )
        )
    if variant_of_hub_id(str(values["base_model"])) is None:
        problems.append(
            Problem(
                "base_model",
                "conflict",
                f"must be {' or '.join(sorted(HUB_REPOS.values()))} for model_type flux1 (or an S3 base model channel), not {values['base_model']}",
            )
        )
    if values["fp8_base"] and values["mixed_precision"] == "no":
        # train_network.py asserts it only once the 23.8 GB transformer is loaded.
        problems.append(Problem("fp8_base", "conflict", "needs mixed_precision = bf16: sd-scripts computes in bf16 around the fp8 weights"))
    return problems


def _decode(spec: Spec, raw: Any) -> tuple[Value | None, Problem | None]:
    """SageMaker hands over strings; the SageMaker Python SDK may JSON-encode them first (a string
    becomes '"fp16"'). Native JSON scalars are accepted too, for hand-written files."""
    text: Any = raw
    if isinstance(raw, str) and len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        try:
            text = json.loads(raw)
        except ValueError:
            text = raw

    shown = json.dumps(raw)
    if spec.type == "boolean":
        if isinstance(text, bool):
            return text, None
        if isinstance(text, str) and text.lower() in ("true", "false"):
            return text.lower() == "true", None
        return _bad(spec, "type", f"must be true or false, not {shown}")
    if spec.type == "integer":
        if isinstance(text, (int, float)) and not isinstance(text, bool) and float(text).is_integer():
            number: float = int(text)
        elif isinstance(text, str) and _INTEGER.fullmatch(text.strip()):
            number = int(text.strip())
        else:
            return _bad(spec, "type", f"must be a whole number, not {shown}")
        return _check_range(spec, number, shown)
    if spec.type == "number":
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            number = float(text)
        elif isinstance(text, str) and _NUMBER.fullmatch(text.strip()):
            number = float(text.strip())
        else:
            return _bad(spec, "type", f"must be a number, not {shown}")
        if not math.isfinite(number):
            return _bad(spec, "type", f"must be a finite number, not {shown}")
        return _check_range(spec, number, shown)
    if not isinstance(text, str):
        return _bad(spec, "type", f"must be a string, not {shown}")
    if spec.enum is not None and text not in spec.enum:
        near = difflib.get_close_matches(text, list(spec.enum), n=1)
        hint = f' (did you mean "{near[0]}"?)' if near else ""
        return _bad(spec, "enum", f"must be one of {', '.join(spec.enum)}, not {shown}{hint}")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        return _bad(spec, "pattern", f"must be {spec.pattern_description or 'of the form ' + spec.pattern}, not {shown}")
    return text, None


def _check_range(spec: Spec, number: float, shown: str) -> tuple[Value | None, Problem | None]:
    if spec.minimum is not None and number < spec.minimum:
        return _bad(spec, "range", f"must be at least {_fmt(spec.minimum)}, not {shown}")
    if spec.exclusive_minimum is not None and number <= spec.exclusive_minimum:
        return _bad(spec, "range", f"must be greater than {_fmt(spec.exclusive_minimum)}, not {shown}")
    if spec.maximum is not None and number > spec.maximum:
        return _bad(spec, "range", f"must be at most {_fmt(spec.maximum)}, not {shown}")
    if spec.multiple_of is not None and number % spec.multiple_of != 0:
        return _bad(spec, "multiple", f"must be a multiple of {spec.multiple_of}, not {shown}")
    return (int(number) if spec.type == "integer" else number), None


def _bad(spec: Spec, code: str, message: str) -> tuple[None, Problem]:
    return None, Problem(spec.name, code, message)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def flag_value(value: Value) -> str:
    """A value as kohya's argparse reads it."""
    if isinstance(value, float):
        return repr(value)
    return str(value)
