"""LoRA header inspection on small synthetic safetensors files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from lora_server.lora_file import MAX_HEADER_BYTES, LoraFileError, inspect_lora, read_header

from .conftest import SD15_MODULES, SDXL_MODULES, lora_shapes, write_safetensors


def test_sd15_keys_are_an_sd15_lora(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SD15_MODULES, rank=8), {"ss_base_model_version": "sd_v1"})
    info = inspect_lora(path, "sd15")
    assert (info.model_type, info.modules, info.rank) == ("sd15", len(SD15_MODULES), 8)
    assert info.metadata == {"ss_base_model_version": "sd_v1"}


def test_sdxl_keys_are_an_sdxl_lora(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SDXL_MODULES), {"ss_base_model_version": "sdxl_base_v1-0"})
    info = inspect_lora(path, "sdxl")
    assert (info.model_type, info.modules, info.rank) == ("sdxl", len(SDXL_MODULES), 4)


def test_metadata_is_optional(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SD15_MODULES))
    assert inspect_lora(path, "sd15").metadata == {}


def test_a_unet_only_lora_is_recognised_by_its_block_names(tmp_path: Path) -> None:
    sdxl_unet = [m for m in SDXL_MODULES if m.startswith("lora_unet_")]
    assert inspect_lora(write_safetensors(tmp_path / "a.safetensors", lora_shapes(sdxl_unet)), "sdxl").model_type == "sdxl"


@pytest.mark.parametrize(
    ("modules", "model_type", "message"),
    [
        (SDXL_MODULES, "sd15", "is an SDXL LoRA but MODEL_TYPE is sd15"),
        (SD15_MODULES, "sdxl", "is an SD 1.5 LoRA but MODEL_TYPE is sdxl"),
    ],
)
def test_a_mismatch_with_model_type_is_refused(tmp_path: Path, modules: list[str], model_type: str, message: str) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(modules))
    with pytest.raises(LoraFileError, match=message):
        inspect_lora(path, model_type)  # type: ignore[arg-type]


def test_metadata_that_contradicts_the_keys_is_refused(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SDXL_MODULES), {"ss_base_model_version": "sd_v1"})
    with pytest.raises(LoraFileError, match="trained on 'sd_v1', which does not match its sdxl module names"):
        inspect_lora(path, "sdxl")


def test_an_sd2_lora_is_refused_by_its_metadata(tmp_path: Path) -> None:
    # SD 2 uses SD 1.5's key names; only the metadata tells them apart.
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SD15_MODULES), {"ss_base_model_version": "sd_v2"})
    with pytest.raises(LoraFileError, match="'sd_v2'"):
        inspect_lora(path, "sd15")


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        # A base model checkpoint (original SD layout) put where the LoRA should be.
        ({"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3], "first_stage_model.decoder.conv_in.bias": [512]}, "not a kohya-ss LoRA"),
        # A LoRA saved in diffusers/PEFT format rather than kohya's.
        ({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": [4, 320]}, "not a kohya-ss LoRA"),
        # kohya key names, but other weights mixed in.
        ({**lora_shapes(SD15_MODULES), "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": [4, 4]}, "1 of 16 tensors are not LoRA weights"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 8]}, "do not pair up"),
        ({**lora_shapes(SD15_MODULES), **lora_shapes(SDXL_MODULES)}, "mixes SD 1.5 and SDXL"),
        (lora_shapes(["lora_unet_single_transformer_blocks_0_attn_to_q"]), "no Stable Diffusion 1.5, SDXL or FLUX.1 layout"),
        ({}, "holds no tensors"),
    ],
)
def test_a_file_that_is_not_a_servable_lora_is_refused(tmp_path: Path, shapes: dict[str, list[int]], message: str) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", shapes)
    with pytest.raises(LoraFileError, match=message):
        inspect_lora(path, "sd15")


def _framed(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than its 8-byte header length"),
        (b"\x10\x00\x00", "shorter than its 8-byte header length"),
        (struct.pack("<Q", 1000) + b'{"a": 1}', "truncated: the header announces 1000 bytes, the file has 8"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", "outside 2.."),
        (_framed(b"{not json"), "not JSON"),
        (_framed(b"\xff\xfe{}"), "not JSON"),
        (_framed(b"[]"), "not a JSON object"),
        (_framed(b'{"__metadata__": {"a": 1}}'), "__metadata__ must map names to strings"),
        (_framed(b'{"t": 12}'), "a tensor entry has no shape"),
    ],
)
def test_a_corrupt_or_truncated_header_is_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(LoraFileError, match=message):
        inspect_lora(_raw(tmp_path / "bad.safetensors", data), "sd15")


def test_a_truncated_body_is_refused_by_the_data_offsets(tmp_path: Path) -> None:
    good = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SD15_MODULES))
    data = good.read_bytes()
    # Negative control: the whole file passes, and its tensors are all read from the header.
    tensors, _ = read_header(good)
    assert len(tensors) == 3 * len(SD15_MODULES)
    for cut in (len(data) - 1, len(data) // 2):
        with pytest.raises(LoraFileError, match="truncated: .* ends at byte .* the file holds"):
            inspect_lora(_raw(tmp_path / "cut.safetensors", data[:cut]), "sd15")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F16", "shape": [4, 8]}, "has no valid data_offsets"),
        ({"dtype": "F16", "shape": [4, 8], "data_offsets": [8, 0]}, "has no valid data_offsets"),
        ({"dtype": "F16", "shape": [4, 8], "data_offsets": [0, 60]}, "data_offsets do not match its shape"),
    ],
)
def test_data_offsets_must_be_valid_and_match_the_shape(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    raw = json.dumps({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": entry}).encode()
    with pytest.raises(LoraFileError, match=message):
        inspect_lora(_raw(tmp_path / "a.safetensors", _framed(raw) + bytes(64)), "sd15")


@pytest.mark.parametrize("version", ["sd_v1_v", "sd_v2_v"])
def test_a_v_prediction_lora_is_refused_as_such(tmp_path: Path, version: str) -> None:
    # kohya-ss sd-scripts v0.10.1 (library/model_util.py) appends "_v" for --v_parameterization.
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SD15_MODULES), {"ss_base_model_version": version})
    with pytest.raises(LoraFileError, match=f"ss_base_model_version '{version}'\\); v-prediction is not supported"):
        inspect_lora(path, "sd15")


SD15_CROSS_ATTENTION = ["lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"]


@pytest.mark.parametrize(
    ("modules", "width", "message"),
    [
        # SD 2 uses SD 1.5's names; its text encoder and its cross-attention context are 1024 wide.
        (SD15_MODULES, 1024, "is an SD 2 LoRA .* takes 1024 features; SD 1.5 has 768"),
        (SD15_CROSS_ATTENTION, 1024, "is an SD 2 LoRA .*attn2_to_k takes 1024 features"),
        (SDXL_MODULES, 1024, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj takes 1024 features, but SDXL has 768"),
    ],
)
def test_an_sd2_lora_or_a_foreign_width_is_refused_by_its_shapes_without_metadata(
    tmp_path: Path, modules: list[str], width: int, message: str
) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(modules, width=width))
    with pytest.raises(LoraFileError, match=message):
        inspect_lora(path, "sdxl" if modules is SDXL_MODULES else "sd15")


def test_the_widths_of_each_family_are_accepted(tmp_path: Path) -> None:
    # Negative control for the shape checks: 768 for SD 1.5's text encoder and context, SDXL's te2 1280, context 2048.
    sd15 = write_safetensors(tmp_path / "sd15.safetensors", lora_shapes([*SD15_MODULES, *SD15_CROSS_ATTENTION]))
    assert inspect_lora(sd15, "sd15").modules == len(SD15_MODULES) + 1
    sdxl = write_safetensors(tmp_path / "sdxl.safetensors", lora_shapes(SDXL_MODULES))
    assert lora_shapes(SDXL_MODULES)["lora_unet_middle_block_1_transformer_blocks_9_attn2_to_v.lora_down.weight"] == [4, 2048]
    assert inspect_lora(sdxl, "sdxl").modules == len(SDXL_MODULES)


def test_an_alpha_of_no_module_is_refused(tmp_path: Path) -> None:
    # diffusers' kohya conversion leaves it unconverted and raises "have not been correctly renamed".
    shapes = {**lora_shapes(SD15_MODULES), "lora_unet_mid_block_attentions_0_proj_out.alpha": []}
    with pytest.raises(LoraFileError, match="an .alpha belongs to no lora_down/lora_up pair .*proj_out.alpha"):
        inspect_lora(write_safetensors(tmp_path / "a.safetensors", shapes), "sd15")


def test_an_unreadable_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LoraFileError, match="cannot be read"):
        inspect_lora(tmp_path / "missing.safetensors", "sd15")


@pytest.mark.parametrize(("model_type", "prefixes"), [("sd15", ["lora_te_"]), ("sdxl", ["lora_te1_", "lora_te2_"])])
def test_text_encoder_names_with_or_without_text_model_are_both_accepted(tmp_path: Path, model_type: str, prefixes: list[str]) -> None:
    # kohya-ss under transformers 4 writes `<prefix>text_model_encoder_…`; the server renames to `<prefix>encoder_…` for transformers 5.
    modules = SDXL_MODULES if model_type == "sdxl" else SD15_MODULES
    renamed = [next((m.replace(f"{p}text_model_", p) for p in prefixes if m.startswith(p)), m) for m in modules]
    assert renamed != modules
    for name, names in (("kohya", modules), ("renamed", renamed)):
        path = write_safetensors(tmp_path / f"{name}.safetensors", lora_shapes(names))
        assert inspect_lora(path, model_type).modules == len(modules)
    # Negative control: the widths are still checked in the renamed form (an SD 2 text encoder is refused).
    if model_type == "sd15":
        path = write_safetensors(tmp_path / "sd2.safetensors", lora_shapes(["lora_te_encoder_layers_0_self_attn_q_proj"], width=1024))
        with pytest.raises(LoraFileError, match="is an SD 2 LoRA"):
            inspect_lora(path, "sd15")
