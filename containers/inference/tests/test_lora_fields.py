"""The `lora` and `loras` request fields: pure validation, every rule with an accepted control."""

from __future__ import annotations

from typing import Any

import pytest

from lora_server.shared_types import LoraRef
from lora_server.validation import RequestError, split_loras


def refs(body: dict[str, Any], default_scale: float = 1.0) -> list[LoraRef]:
    return split_loras({"prompt": "p", **body}, shared=True, default_lora_scale=default_scale)[1]


def test_accepted_forms() -> None:
    assert refs({}) == []
    assert refs({"lora": None, "loras": None}) == []  # null is absent, as for every field
    assert refs({"lora": "style"}, default_scale=0.6) == [LoraRef("style", None, 0.6)]
    assert refs({"lora": "my_style-2@12", "lora_scale": 0.3}) == [LoraRef("my_style-2", 12, 0.3)]
    assert refs({"loras": [{"name": "a", "version": 3, "scale": 0.8}, {"name": "b"}, {"name": "a"}]}, 0.5) == [
        LoraRef("a", 3, 0.8), LoraRef("b", None, 0.5), LoraRef("a", None, 0.5)
    ]
    body, _ = split_loras({"prompt": "p", "lora": "x", "seed": 1}, shared=True, default_lora_scale=1.0)
    assert body == {"prompt": "p", "seed": 1}  # the rest goes on to validate()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"lora": "style@0"}, "lora", "lora must be a LoRA name"),
        ({"lora": "style@01"}, "lora", "lora must be a LoRA name"),
        ({"lora": "style@-1"}, "lora", "lora must be a LoRA name"),
        ({"lora": "style@"}, "lora", "lora must be a LoRA name"),
        ({"lora": "_style"}, "lora", "lora must be a LoRA name"),
        ({"lora": "a" * 64}, "lora", "lora must be a LoRA name"),
        ({"lora": "a.b"}, "lora", "lora must be a LoRA name"),
        # `$` would match before a trailing newline and serve "style" for "style\n".
        ({"lora": "style\n"}, "lora", "lora must be a LoRA name"),
        ({"lora": "style@2\n"}, "lora", "lora must be a LoRA name"),
        ({"loras": [{"name": "style\n"}]}, "loras", r"loras\[0\].name must be a LoRA name"),
        ({"lora": 3}, "lora", "lora must be a LoRA name"),
        ({"lora": "style", "lora_scale": 2.5}, "lora_scale", "lora_scale must be a number from 0 to 2"),
        ({"loras": []}, "loras", "loras must be a list of 1 to 3 objects"),
        ({"loras": [{"name": n} for n in "abcd"]}, "loras", "loras must be a list of 1 to 3 objects"),
        ({"loras": "style"}, "loras", "loras must be a list"),
        ({"loras": [{"name": "a", "weight": 1}]}, "loras", r"loras\[0\] must be an object with name"),
        ({"loras": [{"version": 1}]}, "loras", r"loras\[0\].name must be a LoRA name"),
        ({"loras": [{"name": "a@2"}]}, "loras", r"give the version as loras\[0\].version"),
        ({"loras": [{"name": "a", "version": 0}]}, "loras", r"loras\[0\].version must be an integer from 1"),
        ({"loras": [{"name": "a", "version": True}]}, "loras", r"loras\[0\].version must be an integer"),
        ({"loras": [{"name": "a"}, {"name": "b", "scale": -0.1}]}, "loras", r"loras\[1\].scale must be a number from 0 to 2"),
        ({"loras": [{"name": "a", "version": 2}, {"name": "a", "version": 2}]}, "loras", "loras names a@2 twice"),
        ({"loras": [{"name": "a"}, {"name": "a"}]}, "loras", "loras names a twice"),
    ],
)
def test_refused_forms_name_their_field(body: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(RequestError, match=message) as raised:
        refs(body)
    assert raised.value.field == field


def test_a_dedicated_server_refuses_both_fields_and_passes_everything_else() -> None:
    for body in ({"lora": "style"}, {"loras": [{"name": "style"}]}):
        with pytest.raises(RequestError, match="this endpoint is dedicated to one LoRA"):
            split_loras({"prompt": "p", **body}, shared=False, default_lora_scale=1.0)
    assert split_loras({"prompt": "p", "lora_scale": 0.5}, shared=False, default_lora_scale=1.0) == ({"prompt": "p", "lora_scale": 0.5}, [])
