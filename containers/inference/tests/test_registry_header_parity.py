"""The registry function reads a LoRA's header in TypeScript (lambda/registry/lora-header.ts): here
it reads LoRAs the real kohya-ss wrote, and must agree with the server's own reading (lora_file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lora_server.lora_file import LoraFileError, inspect_lora

from .conftest import REPO, run_tsx

# Reads the header as the registry function does, then inspects it for each family in turn.
SCRIPT = """
import {{ readFileSync }} from 'node:fs';
import {{ headerLength, parseHeader }} from {safetensors};
import {{ inspectLora }} from {lora_header};
const bytes = readFileSync(process.argv[2]);
const length = headerLength(bytes.subarray(0, 8), bytes.length);
const header = parseHeader(bytes.subarray(8, 8 + length), bytes.length);
const answer = (expected: 'sd15' | 'sdxl') => {{
  try {{ return inspectLora(header, expected); }} catch (e) {{ return {{ error: (e as Error).message }}; }}
}};
console.log(JSON.stringify({{ sd15: answer('sd15'), sdxl: answer('sdxl') }}));
"""


def registry_reading(path: Path, scratch: Path) -> dict[str, Any]:
    script = SCRIPT.format(
        safetensors=json.dumps(str(REPO / "lambda" / "shared" / "safetensors.ts")),
        lora_header=json.dumps(str(REPO / "lambda" / "registry" / "lora-header.ts")),
    )
    return run_tsx(script, scratch, str(path))


@pytest.mark.parametrize("model_type", ["sd15", "sdxl"])
def test_the_registry_reads_a_kohya_lora_as_the_server_does(model_type: str, kohya_loras: Any, tmp_path: Path) -> None:
    path = kohya_loras(model_type)
    server = inspect_lora(path, model_type)  # type: ignore[arg-type]
    reading = registry_reading(path, tmp_path)
    expected_components = ["unet", "text_encoder"] + (["text_encoder_2"] if model_type == "sdxl" else [])
    assert reading[model_type] == {"modelType": model_type, "components": expected_components, "rank": server.rank}
    # The control: read as the other family, the same file is refused, as the server refuses it.
    other = "sdxl" if model_type == "sd15" else "sd15"
    assert "error" in reading[other]
    with pytest.raises(LoraFileError):
        inspect_lora(path, other)  # type: ignore[arg-type]
