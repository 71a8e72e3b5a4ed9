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
