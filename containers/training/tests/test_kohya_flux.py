"""FLUX.1 held to the pinned sd-scripts' own code, on CPU, with tiny models of its own FLUX classes
(library.flux_models.Flux with a 64-wide transformer of one double and one single block): kohya's
dev/schnell test against the container's, the LoRA file networks.lora_flux writes against the
container's reader, and the state folders flux_train_network.py saves against the resume logic.
A real FLUX.1 training run cannot run here: kohya builds CLIP-L, T5-XXL and the autoencoder at their
full sizes (flux_utils.load_clip_l/load_t5xxl/load_ae), about 10 GB before the transformer."""

import inspect
import json
from pathlib import Path

import pytest

from lora_trainer import checkpoints, flux_files
from lora_trainer.base_model import check_variant
from lora_trainer.errors import TrainingError
from lora_trainer.lora_file import read_metadata, update_metadata
from lora_trainer.safetensors_header import read_header
from lora_trainer.sampling import SamplePrompt, write_prompts_file

torch = pytest.importorskip("torch")


def tiny_flux(guidance: bool):
    from library import flux_models

    # axes_dim adds up to hidden_size / num_heads, as FLUX.1's [16, 56, 56] does to 3072 / 24.
    params = flux_models.FluxParams(
        in_channels=64,
        vec_in_dim=32,
        context_in_dim=32,
        hidden_size=64,
        mlp_ratio=2.0,
        num_heads=2,
        depth=1,
        depth_single_blocks=1,
        axes_dim=[8, 12, 12],
        theta=10_000,
        qkv_bias=True,
        guidance_embed=guidance,
    )
    torch.manual_seed(0)
    return flux_models.Flux(params)


def save_transformer(path: Path, guidance: bool, prefix: str = "") -> Path:
    from safetensors.torch import save_file

    save_file({prefix + k: v.contiguous() for k, v in tiny_flux(guidance).state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("prefix", ["", flux_files.COMFY_PREFIX])
@pytest.mark.parametrize("guidance, variant", [(True, "dev"), (False, "schnell")])
def test_the_variant_is_kohyas(sd_scripts, tmp_path, guidance, variant, prefix):
    from library import flux_utils

    path = save_transformer(tmp_path / flux_files.TRANSFORMER[variant], guidance, prefix)
    _, is_schnell, blocks, _ = flux_utils.analyze_checkpoint_state(str(path))
    assert (is_schnell, blocks) == (variant == "schnell", (1, 1))
    keys = [k for k in read_header(path)[0] if k != "__metadata__"]
    assert flux_files.is_schnell(keys) == is_schnell
    check_variant(path, variant)
    other = "dev" if variant == "schnell" else "schnell"
    with pytest.raises(TrainingError, match=f"it is the {variant} transformer; name it {flux_files.TRANSFORMER[variant]}"):
        check_variant(path, other)


def test_kohya_loads_the_tiny_transformer_it_was_saved_from(sd_scripts, tmp_path):
    # The tiny file is a real FLUX checkpoint to kohya: its loader builds the model from it.
    from library import flux_utils

    path = save_transformer(tmp_path / "flux1-dev.safetensors", True)
    original = tiny_flux(True).state_dict()
    with pytest.MonkeyPatch.context() as patch:
        params = flux_utils.flux_models.configs["dev"].params
        tiny = tiny_flux(True).params
        patch.setattr(flux_utils.flux_models.configs["dev"], "params", tiny)
        is_schnell, model = flux_utils.load_flow_model(str(path), torch.float32, "cpu")
        assert params.hidden_size == 3072  # the real config was replaced only here
    assert not is_schnell
    assert all(torch.equal(model.state_dict()[k], v) for k, v in original.items())


@pytest.mark.filterwarnings("ignore::FutureWarning")  # lora_flux calls state_dict positionally
def test_lora_flux_writes_a_lora_the_container_reads_and_corrects(sd_scripts, tmp_path):
    """networks.lora_flux as train_network.py uses it with network_train_unet_only: LoRA modules on
    the transformer only, saved in the fp16 of --save_precision with kohya's hashes."""
    import networks.lora_flux as lora_flux

    flux = tiny_flux(True)
    network = lora_flux.create_network(1.0, 4, 2.0, None, [None, None], flux, neuron_dropout=None)
    network.apply_to([None, None], flux, apply_text_encoder=False, apply_unet=True)
    path = tmp_path / "lora.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_steps": "10", "ss_network_dim": "4"})

    header, _ = read_header(path)
    names = [k for k in header if k != "__metadata__"]
    blocks = {name.split(".")[0].split("_")[2] for name in names}
    assert blocks == {"double", "single"} and all(name.startswith("lora_unet_") for name in names)
    assert {header[name]["dtype"] for name in names if not name.endswith(".alpha")} == {"F16"}
    assert checkpoints.file_problem(path) is None
    update_metadata(path, {"ss_steps": "30"})
    stored = read_metadata(path)
    from safetensors.torch import load_file

    assert stored["ss_steps"] == "30"
    assert (stored["sshs_model_hash"], stored["sshs_legacy_hash"]) == sd_scripts.train_util.precalculate_safetensors_hashes(
        load_file(str(path)), stored
    )


def test_flux_training_saves_states_where_the_resume_logic_looks(sd_scripts):
    """flux_train_network.py trains with train_network.py's loop and hooks (it overrides neither),
    so its states are the epoch folders and files checkpoints.py checks."""
    trainer = sd_scripts.flux_train_network.FluxNetworkTrainer
    assert trainer.train is sd_scripts.train_network.NetworkTrainer.train
    train_util = sd_scripts.train_util
    assert checkpoints.state_pattern("lora").match(train_util.EPOCH_STATE_NAME.format("lora", 3))
    assert train_util.LAST_STATE_NAME.format("lora") == "lora-state"
    assert checkpoints.model_pattern("lora").match(train_util.EPOCH_FILE_NAME.format("lora", 3) + ".safetensors")
    # The network's weights are the state's model.safetensors: the save hook drops every other model
    # (the transformer too, which accelerate prepares when blocks are swapped).
    hook = inspect.getsource(sd_scripts.train_network.NetworkTrainer.train)
    assert "if not isinstance(model, type(accelerator.unwrap_model(network))):" in hook


def test_kohyas_flux_sampling_reads_the_prompts_file_as_meant(sd_scripts, tmp_path):
    """FLUX's sample_image_inference reads 'guidance_scale' as the embedded guidance and 'scale' as
    true CFG (off at 1.0); the prompts file gives both, and no sampler."""
    prompt = SamplePrompt(0, "sks dog", "", 1234, 1024, 1024, 4, 3.5, None)
    loaded = sd_scripts.train_util.load_prompts(str(write_prompts_file([prompt], tmp_path / "p.json")))
    assert loaded == [
        {
            "prompt": "sks dog",
            "negative_prompt": "",
            "seed": 1234,
            "width": 1024,
            "height": 1024,
            "sample_steps": 4,
            "guidance_scale": 3.5,
            "scale": 1.0,
            "enum": 0,
        }
    ]
    from library import flux_train_utils

    source = inspect.getsource(flux_train_utils.sample_image_inference)
    for read in ('prompt_dict.get("guidance_scale", 3.5)', 'prompt_dict.get("scale", 1.0)', 'prompt_dict.get("sample_steps", 20)'):
        assert read in source
    assert json.loads((tmp_path / "p.json").read_text())[0]["scale"] == 1.0


def test_the_fp8_rule_is_kohyas(sd_scripts):
    """The entrypoint refuses fp8_base without mixed precision because train_network.py asserts it,
    only after loading the model; the refusal goes if kohya's assertion does."""
    from lora_trainer.hyperparameters import HyperparameterError, parse_hyperparameters

    source = inspect.getsource(sd_scripts.train_network.NetworkTrainer.train)
    fp8 = source[source.index("if args.fp8_base or args.fp8_base_unet:") :]
    assert 'args.mixed_precision != "no"' in fp8[: fp8.index("accelerator.print")]
    with pytest.raises(HyperparameterError, match='"fp8_base": needs mixed_precision = bf16'):
        parse_hyperparameters({"model_type": "flux1", "mixed_precision": "no"})


def test_a_file_without_flux_blocks_is_one_kohya_cannot_build(sd_scripts, tmp_path):
    """The container refuses such a file up front (flux_files.has_blocks); kohya's own analysis of it fails."""
    from library import flux_utils
    from safetensors.torch import save_file

    path = tmp_path / "flux1-schnell.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError):
        flux_utils.analyze_checkpoint_state(str(path))
    assert not flux_files.has_blocks([k for k in read_header(path)[0] if k != "__metadata__"])
    assert flux_files.has_blocks([k for k in read_header(save_transformer(tmp_path / "t.safetensors", False))[0] if k != "__metadata__"])
