import pytest

from lora_trainer.errors import TrainingError
from lora_trainer.lora_file import read_metadata, update_metadata


def test_rewritten_metadata_is_read_by_safetensors_with_the_same_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "lora.safetensors"
    tensors = {"lora_unet_a.lora_down.weight": torch.arange(12, dtype=torch.float16).reshape(3, 4), "lora_te_b.alpha": torch.tensor(4.0)}
    save_file(tensors, str(path), metadata={"ss_steps": "4", "ss_epoch": "8", "ss_network_dim": "4"})
    update_metadata(path, {"ss_steps": "1234567"})  # a longer header: the data moves, its offsets do not
    with safe_open(str(path), "pt") as opened:
        assert opened.metadata() == {"ss_steps": "1234567", "ss_epoch": "8", "ss_network_dim": "4"}
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert read_metadata(path)["ss_steps"] == "1234567"
    assert (8 + int.from_bytes(path.read_bytes()[:8], "little")) % 8 == 0  # data stays 8-byte aligned


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(TrainingError, match="not a safetensors file"):
        update_metadata(path, {"ss_steps": "1"})


def test_a_header_that_is_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "lora.safetensors"
    path.write_bytes((3).to_bytes(8, "little") + b"{x}" + bytes(8))
    with pytest.raises(TrainingError, match=r"^lora.safetensors is not a safetensors file \(header is not JSON\)\.$"):
        read_metadata(path)


def test_kohyas_hashes_stay_right_after_a_rewrite(tmp_path, sd_scripts):
    # kohya hashes the serialization of the tensors with the ss_* metadata: sshs_model_hash the bytes
    # after the header, sshs_legacy_hash the 64 KiB at byte 1 MiB, header included.
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    hashes = sd_scripts.train_util.precalculate_safetensors_hashes
    generator = torch.Generator().manual_seed(0)
    # 1.6 MB of tensors, so the legacy hash's span is tensor data that moves with the header.
    tensors = {"lora_unet_a.lora_down.weight": torch.randn(800, 1000, generator=generator).half(), "lora_te_b.alpha": torch.tensor(4.0)}
    metadata = {"ss_steps": "4", "ss_epoch": "8"}
    model_hash, legacy = hashes(tensors, metadata)
    path = tmp_path / "lora.safetensors"
    save_file(tensors, str(path), {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy, "modelspec.title": "x"})
    update_metadata(path, {"ss_steps": "123456789"})  # 8 more header bytes
    stored = read_metadata(path)
    assert (stored["sshs_model_hash"], stored["sshs_legacy_hash"]) == hashes(load_file(str(path)), stored)
    assert stored["sshs_model_hash"] == model_hash and stored["sshs_legacy_hash"] != legacy  # only the legacy one changes
    assert stored["ss_steps"] == "123456789" and stored["modelspec.title"] == "x"
