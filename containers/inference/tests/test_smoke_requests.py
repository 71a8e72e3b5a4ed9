"""The workflow's smoke test (lambda/lora-check) against the real server on the real diffusers, tiny models, CPU.

The requests are the ones the TypeScript function builds (read from it through the repository's tsx),
with only the image side and the step count lowered to the tiny models' (64 px, 3 steps), and sent as
it sends them (JSON, Accept application/json, the first image of `images`). Their PNGs must differ with
the LoRA and be identical without it; the function's own PNG decoder (lambda/lora-check/png.ts) must
read them as PIL does, and its difference measure must tell the two pairs apart.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lora_server import imaging, validation

from .conftest import REPO, run_tsx
from .moto_server import moto_server  # noqa: F401 - pytest fixture
from .test_real_diffusers import SIDE, real_servers  # noqa: F401 - pytest fixture: the dedicated server on the tiny models
from .test_real_shared import lora_files  # noqa: F401 - pytest fixture
from .test_real_shared_app import Served, served  # noqa: F401 - pytest fixture: the shared server, LoRAs a, b, c registered
from .test_real_shared_app import tiny_sides  # noqa: F401 - autouse fixture: SD 1.5's 64 px side, for the whole module

# The tiny models' side and a few steps; every other field is the function's.
TINY = {"width": SIDE, "height": SIDE, "num_inference_steps": 3}
FIELDS = {"prompt", "num_inference_steps", "width", "height", "seed", "output_format"}
# The server's own sides, before this module shrinks SD 1.5's to the tiny models'.
SERVER_SIDES = dict(validation.SIDES)

FULL_SIZE = """
import {{ sharedSmokeRequests }} from {check};
import {{ dedicatedSmokeRequests }} from {dedicated};
const pairs = (modelType: 'sd15' | 'sdxl') => {{
  const common = {{ endpointName: 'e', modelType, trainingJobName: 'job', samples: {{ prompt: 'x'.repeat(2000) }} }} as const;
  return {{
    shared: sharedSmokeRequests({{ ...common, mode: 'shared', inferenceComponentName: 'c', lora: {{ name: 'a', version: 1 }} }}),
    dedicated: dedicatedSmokeRequests({{ ...common, mode: 'dedicated' }}),
  }};
}};
console.log(JSON.stringify({{ sd15: pairs('sd15'), sdxl: pairs('sdxl') }}));
"""

REQUESTS = """
import {{ sharedSmokeRequests }} from {check};
import {{ dedicatedSmokeRequests }} from {dedicated};
const common = {{ endpointName: 'e', modelType: 'sd15', trainingJobName: 'job', samples: null }} as const;
console.log(JSON.stringify({{
  shared: sharedSmokeRequests({{ ...common, mode: 'shared', inferenceComponentName: 'c', lora: {{ name: 'a', version: 1 }} }}),
  dedicated: dedicatedSmokeRequests({{ ...common, mode: 'dedicated' }}),
}}));
"""

DECODE = """
import {{ readFileSync }} from 'node:fs';
import {{ decodePng }} from {png};
import {{ imageDifference, loraHadEffect, MIN_MEAN_ABSOLUTE_DIFFERENCE }} from {difference};
const [without, withLora, again] = process.argv.slice(2).map((path) => decodePng(readFileSync(path)));
const compare = (a: ReturnType<typeof decodePng>, b: ReturnType<typeof decodePng>) => {{
  const difference = imageDifference(a, b);
  return {{ ...difference, effect: loraHadEffect(difference) }};
}};
console.log(JSON.stringify({{
  images: [without, withLora].map((i) => ({{ width: i.width, height: i.height, channels: i.channels, data: Buffer.from(i.data).toString('base64') }})),
  lora: compare(without, withLora),
  same: compare(without, again),
  threshold: MIN_MEAN_ABSOLUTE_DIFFERENCE,
}}));
"""


def lambda_source(name: str) -> str:
    return json.dumps(str(REPO / "lambda" / "lora-check" / name))


@pytest.fixture(scope="module")
def requests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, Any]]]:
    """The function's requests, sized for the tiny models."""
    built = run_tsx(REQUESTS.format(check=lambda_source("check.ts"), dedicated=lambda_source("dedicated.ts")), tmp_path_factory.mktemp("requests"))
    return {mode: {which: {**body, **TINY} for which, body in pair.items()} for mode, pair in built.items()}


def png_of(client: Any, body: dict[str, Any]) -> bytes:
    """What the function reads from an answer: JSON, its first image."""
    response = client.post("/invocations", json=body, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.get_json()
    [encoded] = response.get_json()["images"]
    return base64.b64decode(encoded)


def decoded_by_the_function(pngs: list[bytes], scratch: Path) -> dict[str, Any]:
    paths = []
    for index, data in enumerate(pngs):
        path = scratch / f"{index}.png"
        path.write_bytes(data)
        paths.append(str(path))
    script = DECODE.format(png=lambda_source("png.ts"), difference=lambda_source("image-difference.ts"))
    return run_tsx(script, scratch, *paths)


def check_pair(without: bytes, with_lora: bytes, again: bytes, scratch: Path) -> dict[str, Any]:
    """Pixels: with the LoRA differs, the repeat without it is identical; the function reads them as PIL does and tells the pairs apart."""
    pixels = [Image.open(io.BytesIO(data)) for data in (without, with_lora, again)]
    assert [image.format for image in pixels] == ["PNG"] * 3
    assert pixels[1].tobytes() != pixels[0].tobytes()
    assert pixels[2].tobytes() == pixels[0].tobytes()
    reading = decoded_by_the_function([without, with_lora, again], scratch)
    for image, read in zip(pixels[:2], reading["images"], strict=True):
        assert (read["width"], read["height"], read["channels"]) == (*image.size, len(image.mode))
        assert base64.b64decode(read["data"]) == image.tobytes()
    assert reading["same"] == {"meanAbsoluteDifference": 0, "changedPixelShare": 0, "effect": False}
    assert reading["lora"]["meanAbsoluteDifference"] > 0
    return reading


def test_the_function_sends_only_the_fields_the_server_knows_and_the_two_requests_differ_only_in_the_lora(requests: dict[str, Any]) -> None:
    shared, dedicated = requests["shared"], requests["dedicated"]
    assert set(shared["withoutLora"]) == FIELDS and shared["withoutLora"]["output_format"] == "png"
    assert shared["withLora"] == {**shared["withoutLora"], "lora": "a@1"}
    assert dedicated["withLora"] == shared["withoutLora"]
    assert dedicated["withoutLora"] == {**dedicated["withLora"], "lora_scale": 0}


def test_the_full_size_requests_of_each_family_pass_the_servers_checks_as_app_py_runs_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes, steps, prompt length and the response size against the server's real limits: a request it refused would fail every run."""
    monkeypatch.setattr(validation, "SIDES", SERVER_SIDES)
    built = run_tsx(FULL_SIZE.format(check=lambda_source("check.ts"), dedicated=lambda_source("dedicated.ts")), tmp_path)
    for model_type, modes in built.items():
        for mode, pair in modes.items():
            for which, request in pair.items():
                body, refs = validation.split_loras(request, mode == "shared", 1.0)
                params = validation.validate(body, model_type, 1.0, 0)
                imaging.check_can_fit(params.width, params.height, params.num_images, params.output_format, all_images_as_json=True)
                validation.check_output_pixels(params, model_type)
                # The family's usual side (the server's default), one PNG, the longest prompt the server takes.
                _, _, usual = SERVER_SIDES[model_type]
                assert (params.width, params.height, params.num_images, params.output_format) == (usual, usual, 1, "png"), (model_type, mode, which)
                assert len(params.prompt) == validation.MAX_PROMPT_CHARS
                assert len(refs) == (1 if (mode, which) == ("shared", "withLora") else 0)
                assert params.lora_scale == (0.0 if (mode, which) == ("dedicated", "withoutLora") else 1.0)


def test_dedicated_the_fused_lora_at_its_scale_differs_from_lora_scale_0_which_repeats_exactly(real_servers: Any, requests: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    client = real_servers("sd15", "folder").client
    pair = requests["dedicated"]
    # The order the function sends them in, then the request without the LoRA again (0 vs 0).
    with_lora, without = png_of(client, pair["withLora"]), png_of(client, pair["withoutLora"])
    again = png_of(client, pair["withoutLora"])
    reading = check_pair(without, with_lora, again, tmp_path)
    assert reading["lora"]["effect"] is True, reading["lora"]
    # The same request with the LoRA, asked again after the re-fuse to 0, is the first image exactly.
    assert png_of(client, pair["withLora"]) == with_lora


def test_shared_the_named_version_differs_from_no_lora_which_repeats_exactly(served: Served, requests: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    pair = requests["shared"]
    response = served.client.post("/invocations", json=pair["withLora"], headers={"Accept": "application/json"})
    assert [(e["name"], e["version"]) for e in response.get_json()["loras"]] == [("a", 1)]
    with_lora = base64.b64decode(response.get_json()["images"][0])
    without, again = png_of(served.client, pair["withoutLora"]), png_of(served.client, pair["withoutLora"])
    assert served.client.post("/invocations", json=pair["withoutLora"], headers={"Accept": "application/json"}).get_json()["loras"] == []
    reading = check_pair(without, with_lora, again, tmp_path)
    assert reading["lora"]["effect"] is True, reading["lora"]
