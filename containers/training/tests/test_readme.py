import json
import re
from pathlib import Path

from lora_trainer.hyperparameters import load_schema

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_hyperparameter_table_matches_the_schema():
    section = README.read_text().split("## Hyperparameters")[1].split("\n## ")[0]
    rows = {m[0]: (m[1].strip(), m[2].strip()) for m in re.findall(r"^\| `(\w+)` \| [^|]*(?:\\\|[^|]*)* \| ([^|]+) \| ([^|]+) \|", section, re.M)}
    schema = load_schema()
    assert list(rows) == list(schema.specs)
    for name, spec in schema.specs.items():
        default, flag = rows[name]
        assert flag == (f"`{spec.flag}`" if spec.flag else "—"), name
        if isinstance(spec.default, dict):
            expected = ", ".join(f"{shown(v)} ({k})" for k, v in spec.default.items())
        else:
            expected = shown(spec.default)
        assert default == expected, name


def shown(value) -> str:
    """A default as the table writes it: unset, or the value as JSON writes it (strings bare)."""
    if value is None:
        return "unset"
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def test_the_always_set_flags_are_the_ones_passed():
    from lora_trainer.command import FIXED_FLAGS

    section = README.read_text().split("Always set: `")[1].split("`")[0]
    assert section.split() == list(FIXED_FLAGS)
