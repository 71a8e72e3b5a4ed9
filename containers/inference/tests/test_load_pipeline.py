"""Production's `load_pipeline`, run for real against stand-ins for the `diffusers` and `torch` modules.

The stand-ins are put in place by this test only (an import hook serving them as `diffusers` and
`torch`), so what is checked is the calls the real loader makes: where the base model comes from,
`config=` and `local_files_only`, HF_HUB_OFFLINE set before diffusers is imported, fp16, no safety
checker or feature extractor for SD 1.5, and the LoRA loaded and fused at LORA_SCALE.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import io
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from lora_server.diffusers_pipeline import ADAPTER, DiffusersPipeline, load_pipeline
from lora_server.logs import JsonLog

from .conftest import SD15_MODULES, SDXL_MODULES, lora_shapes, settings_for, write_safetensors
from .test_diffusers_pipeline import FakeDiffusersPipe

FLOAT16 = "torch.float16"


class LoadedPipe(FakeDiffusersPipe):
    def __init__(self, how: str, location: str, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.loaded = (how, location, kwargs)
        self.device: str | None = None
        self.lora: tuple[Any, ...] | None = None
        self.text_encoder = None

    def to(self, device: str) -> LoadedPipe:
        self.device = device
        return self

    def set_progress_bar_config(self, disable: bool) -> None:
        assert disable

    def load_lora_weights(self, folder: str, weight_name: str, adapter_name: str) -> None:
        # Loaded unmerged at scale 1 (PEFT's set_scale at load), like diffusers.
        self.lora = (folder, weight_name, adapter_name, self.peft_state)


def fake_pipeline_class(name: str) -> type:
    class Pipeline:
        @classmethod
        def from_single_file(cls, location: str, **kwargs: Any) -> LoadedPipe:
            return LoadedPipe(f"{name}.from_single_file", location, kwargs)

        @classmethod
        def from_pretrained(cls, location: str, **kwargs: Any) -> LoadedPipe:
            return LoadedPipe(f"{name}.from_pretrained", location, kwargs)

    return Pipeline


class FakeModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves stand-ins as `diffusers` and `torch`, and records HF_HUB_OFFLINE when each is imported."""

    def __init__(self) -> None:
        self.offline_at_import: dict[str, str | None] = {}
        diffusers = types.ModuleType("diffusers")
        diffusers.StableDiffusionPipeline = fake_pipeline_class("StableDiffusionPipeline")  # type: ignore[attr-defined]
        diffusers.StableDiffusionXLPipeline = fake_pipeline_class("StableDiffusionXLPipeline")  # type: ignore[attr-defined]
        torch = types.ModuleType("torch")
        torch.float16 = FLOAT16  # type: ignore[attr-defined]
        torch.cuda = types.SimpleNamespace(is_available=lambda: True, empty_cache=lambda: None)  # type: ignore[attr-defined]
        self.modules = {"diffusers": diffusers, "torch": torch}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self) if name in self.modules else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        self.offline_at_import[spec.name] = os.environ.get("HF_HUB_OFFLINE")
        return self.modules[spec.name]

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> FakeModules:
    fakes = FakeModules()
    for name in fakes.modules:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [fakes, *sys.meta_path])
    monkeypatch.setenv("HF_HUB_OFFLINE", "as before")  # restored after the test
    return fakes


def lay_out(tmp_path: Path, model_type: str, base: str) -> Path:
    (tmp_path / "model").mkdir()
    write_safetensors(tmp_path / "model" / "pokemon.safetensors", lora_shapes(SDXL_MODULES if model_type == "sdxl" else SD15_MODULES))
    mounted = tmp_path / "base_model"
    mounted.mkdir()
    if base == "single_file":
        (mounted / "base.safetensors").write_bytes(b"")
        return mounted / "base.safetensors"
    if base == "folder":
        (mounted / "model_index.json").write_text("{}")
        return mounted
    return mounted


@pytest.mark.parametrize(
    ("model_type", "base", "how", "expected"),
    [
        ("sd15", "single_file", "StableDiffusionPipeline.from_single_file", {"config": "CONFIGS/sd15", "local_files_only": True}),
        ("sdxl", "single_file", "StableDiffusionXLPipeline.from_single_file", {"config": "CONFIGS/sdxl", "local_files_only": True}),
        ("sdxl", "folder", "StableDiffusionXLPipeline.from_pretrained", {"local_files_only": True}),
        ("sd15", "hub", "StableDiffusionPipeline.from_pretrained", {"local_files_only": False}),
    ],
)
def test_load_pipeline_loads_the_base_model_in_fp16_and_fuses_the_lora_at_lora_scale(
    tmp_path: Path, fakes: FakeModules, model_type: str, base: str, how: str, expected: dict[str, Any]
) -> None:
    location = lay_out(tmp_path, model_type, base)
    settings = settings_for(tmp_path, model_type=model_type, lora_scale=0.7, base_model_id="owner/model" if base == "hub" else None)
    pipeline = load_pipeline(settings, JsonLog(io.StringIO()))

    assert isinstance(pipeline, DiffusersPipeline)
    pipe: LoadedPipe = pipeline._pipe
    loaded_how, loaded_from, kwargs = pipe.loaded
    assert (loaded_how, loaded_from) == (how, "owner/model" if base == "hub" else str(location))
    sd15_only = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} if model_type == "sd15" else {}
    expected = {k: (str(tmp_path / "configs" / v.removeprefix("CONFIGS/")) if k == "config" else v) for k, v in expected.items()}
    assert kwargs == {"torch_dtype": FLOAT16, **sd15_only, **expected}
    # The Hub is switched off before diffusers (and so huggingface_hub) is imported, unless it is needed.
    offline = "as before" if base == "hub" else "1"
    assert (fakes.offline_at_import["diffusers"], os.environ["HF_HUB_OFFLINE"]) == (offline, offline)
    assert pipe.device == "cuda"
    assert pipe.lora == (str(tmp_path / "model"), "pokemon.safetensors", ADAPTER, {(False, 1.0)})
    # Fused at LORA_SCALE: every layer merged at 0.7, and the weights carry 0.7 of the LoRA.
    assert (pipe.peft_state, pipeline.fused_scale) == ({(True, 0.7)}, 0.7)
    assert pipe.effective_scale == pytest.approx(0.7, abs=0.01)
    assert pipe.vae.slicing


def test_negative_control_the_hook_serves_the_stand_ins_only_to_this_test(fakes: FakeModules) -> None:
    import diffusers

    assert diffusers is fakes.modules["diffusers"]
    assert fakes.offline_at_import == {"diffusers": "as before"}
