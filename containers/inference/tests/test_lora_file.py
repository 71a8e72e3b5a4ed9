"""LoRA header inspection on small synthetic safetensors files."""

from __future__ import annotations

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
        (lora_shapes(["lora_unet_single_transformer_blocks_0_attn_to_q"]), "no Stable Diffusion 1.5 or SDXL layout"),
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


def test_only_the_header_is_read(tmp_path: Path) -> None:
    # Negative control for the truncation check: data after the header may be anything, even missing.
    good = write_safetensors(tmp_path / "a.safetensors", lora_shapes(SD15_MODULES))
    (length,) = struct.unpack("<Q", good.read_bytes()[:8])
    cut = _raw(tmp_path / "cut.safetensors", good.read_bytes()[: 8 + length])
    tensors, _ = read_header(cut)
    assert len(tensors) == 3 * len(SD15_MODULES)


def test_an_unreadable_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LoraFileError, match="cannot be read"):
        inspect_lora(tmp_path / "missing.safetensors", "sd15")
