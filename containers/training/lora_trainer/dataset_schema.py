"""The keys and value types kohya-ss sd-scripts v0.10.1 accepts in dataset.toml, and the ranges the
entrypoint needs, so a wrong value fails in seconds with its place named instead of in kohya's
ConfigSanitizer (library/config_util.py) after the image pull, or as a crash in kohya or here.

Types follow kohya's voluptuous schema: an int key wants a TOML integer, a float key a number with a
decimal point (voluptuous refuses 1 for float), a bool key true or false, a str key a quoted string.
tests/test_kohya_dataset.py holds these rules to kohya's own sanitizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[Any], bool]
    allowed: str  # what the error message says is allowed


def _is_int(value: Any) -> bool:
    # kohya's int also takes true/false (bool is an int in Python); a flag where a count belongs is a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole(minimum: int, why: str = "") -> Rule:
    return Rule(lambda v: _is_int(v) and v >= minimum, f"a whole number of {minimum} or more{why}")


def fraction() -> Rule:
    return Rule(lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1")


def _is_size(value: Any) -> bool:
    sides = value if isinstance(value, list) and len(value) == 2 else [value]
    return all(_is_int(side) and side >= 1 for side in sides)


FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str), "a quoted string")
TABLE = Rule(lambda v: isinstance(v, dict), "a table")
# voluptuous's float refuses a TOML integer, so kohya refuses network_multiplier = 1.
DECIMAL = Rule(lambda v: isinstance(v, float), "a number with a decimal point, like 1.0")
NUMBER = Rule(_is_number, "a number")
SIZE = Rule(_is_size, "a whole number of pixels, or [width, height]")
CROP_RANGE = Rule(
    lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v),
    "two numbers with decimal points, like [0.5, 1.0]",
)

# Keys kohya accepts in [[datasets]] and [general] (DATASET_ASCENDABLE_SCHEMA).
DATASET_RULES = {
    "batch_size": whole(1),  # kohya divides by it when it cuts buckets into batches
    "bucket_no_upscale": FLAG,
    "bucket_reso_steps": whole(1),  # kohya and the step planning divide by it
    "enable_bucket": FLAG,
    "max_bucket_reso": whole(1),
    "min_bucket_reso": whole(1),
    "validation_seed": whole(0),
    "validation_split": DECIMAL,
    "resolution": SIZE,
    "network_multiplier": DECIMAL,
    "resize_interpolation": TEXT,
}
# Keys kohya accepts at every level, a subset's own winning (the subset ascendable schemas).
ASCENDABLE_RULES = {
    "color_aug": FLAG,
    "face_crop_aug_range": CROP_RANGE,
    "flip_aug": FLAG,
    "num_repeats": whole(0, " (0 skips the subset)"),
    "random_crop": FLAG,
    "shuffle_caption": FLAG,
    "keep_tokens": whole(0),
    "keep_tokens_separator": TEXT,
    "secondary_separator": TEXT,
    "caption_separator": TEXT,
    "enable_wildcard": FLAG,
    "token_warmup_min": whole(0),
    "token_warmup_step": NUMBER,
    "caption_prefix": TEXT,
    "caption_suffix": TEXT,
    "custom_attributes": TABLE,
    "resize_interpolation": TEXT,
    "caption_dropout_every_n_epochs": whole(0),
    "caption_dropout_rate": fraction(),
    "caption_tag_dropout_rate": fraction(),
    "caption_extension": TEXT,
    "class_tokens": TEXT,
    "cache_info": FLAG,
}
# Keys only a subset may have (a DreamBooth subset's, and the fine-tuning metadata_file this entrypoint
# turns into one).
SUBSET_RULES = {"image_dir": TEXT, "is_reg": FLAG, "alpha_mask": FLAG, "metadata_file": TEXT}

RULES = {
    "general": DATASET_RULES | ASCENDABLE_RULES,
    "datasets": DATASET_RULES | ASCENDABLE_RULES,
    "subsets": ASCENDABLE_RULES | SUBSET_RULES,
}
# kohya refuses any other key at each level; "subsets" is the structure, not a setting.
ALLOWED_KEYS = {level: set(rules) | ({"subsets"} if level == "datasets" else set()) for level, rules in RULES.items()}


def value_problems(table: dict[str, Any], level: str, where: str) -> list[str]:
    """One line per value of `table` that kohya would refuse or the entrypoint cannot plan with,
    with its place, the value as written and what is allowed."""
    problems = []
    for key, value in table.items():
        rule = RULES[level].get(key)
        if rule is not None and not rule.accepts(value):
            # A quoted number or flag is the likeliest slip; say so.
            hint = ", without quotes" if isinstance(value, str) else ""
            problems.append(f"{where}.{key} = {shown(value)} must be {rule.allowed}{hint}")
    return problems


def shown(value: Any) -> str:
    """The value as TOML writes it, so a quoted "64" shows its quotes."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:  # a TOML date or time
        return str(value)
