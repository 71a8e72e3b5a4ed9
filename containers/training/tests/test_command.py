from pathlib import Path

import pytest

from lora_trainer.command import Launch, accelerate_argv, epochs_for
from lora_trainer.hyperparameters import parse_hyperparameters


# Flags every run gets, written out here rather than imported, so a change to them shows in this test.
ALWAYS = [
    "--network_module", "networks.lora", "--save_model_as", "safetensors", "--save_precision", "fp16",
    "--save_state", "--save_last_n_epochs", "1", "--save_last_n_epochs_state", "2",
    "--sdpa", "--console_log_simple", "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers",
]
# The optimizer, schedule and saving flags of the defaults, after --mixed_precision.
DEFAULT_SCHEDULE = ["--optimizer_type", "AdamW8bit", "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--save_every_n_epochs", "1"]
# The run's defaults, after the caching flags.
DEFAULT_RUN = ["--seed", "42", "--train_batch_size", "1", "--dataset_repeats", "10", "--prior_loss_weight", "1.0"]


def accelerate(mixed_precision: str, script: str, processes: int = 1, threads: int = 4) -> list[str]:
    """accelerate's own flags, then the kohya script it launches."""
    multi_gpu = ["--multi_gpu"] if processes > 1 else []
    return [
        "accelerate", "launch", "--num_machines", "1", "--num_processes", str(processes), *multi_gpu,
        "--mixed_precision", mixed_precision, "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(threads),
        f"/opt/sd-scripts/{script}",
    ]


def launch_paths(resolution: int, epochs: int) -> list[str]:
    """The tokenizer, dataset and output folders of launch(), then the size and length of the run."""
    return [
        "--tokenizer_cache_dir", "/opt/tokenizers",
        "--dataset_config", "/tmp/lora-trainer/dataset.toml",
        "--resolution", f"{resolution},{resolution}",
        "--output_dir", "/opt/ml/checkpoints",
        "--max_train_epochs", str(epochs),
    ]


def launch(**overrides) -> Launch:
    base = dict(
        sd_scripts=Path("/opt/sd-scripts"),
        base_model="/opt/ml/input/data/base_model/chilloutmix.safetensors",
        dataset_config=Path("/tmp/lora-trainer/dataset.toml"),
        output_dir=Path("/opt/ml/checkpoints"),
        tokenizer_cache=Path("/opt/tokenizers"),
        epochs=16,
        gpus=1,
        cpus=4,
    )
    base.update(overrides)
    return Launch(**base)


def test_exact_argv_for_sd15_with_the_seed_guides_settings():
    values = parse_hyperparameters(
        {"mixed_precision": '"fp16"', "max_train_steps": "400", "learning_rate": "0.0001", "optimizer_type": '"AdamW8bit"',
         "cache_latents": "true", "gradient_checkpointing": "true", "save_every_n_epochs": "1", "output_name": '"aws-trained-lora-model"'}
    )
    assert accelerate_argv(values, launch()) == [
        *accelerate("fp16", "train_network.py"),
        "--pretrained_model_name_or_path", "/opt/ml/input/data/base_model/chilloutmix.safetensors",
        *launch_paths(512, 16),
        *ALWAYS,
        "--output_name", "aws-trained-lora-model",
        "--learning_rate", "0.0001",
        "--network_dim", "32", "--network_alpha", "16.0",
        "--mixed_precision", "fp16",
        *DEFAULT_SCHEDULE,
        "--cache_latents", "--gradient_checkpointing",
        *DEFAULT_RUN,
    ]


def test_exact_argv_for_sdxl_on_four_gpus_resuming():
    values = parse_hyperparameters(
        {"model_type": "sdxl", "network_train_unet_only": "true", "cache_text_encoder_outputs": "true", "unet_lr": "5e-5",
         "mixed_precision": "bf16", "cache_latents": "false", "gradient_checkpointing": "false", "network_dim": "16", "network_alpha": "8"}
    )
    argv = accelerate_argv(
        values, launch(base_model="stabilityai/stable-diffusion-xl-base-1.0", gpus=4, cpus=48, resume_state=Path("/opt/ml/checkpoints/lora-000003-state"), resume_epoch=3, steps_per_epoch=25)
    )
    assert argv == [
        *accelerate("bf16", "sdxl_train_network.py", processes=4, threads=12),
        "--pretrained_model_name_or_path", "stabilityai/stable-diffusion-xl-base-1.0",
        *launch_paths(1024, 16),
        *ALWAYS,
        "--output_name", "lora",
        "--learning_rate", "0.0001", "--unet_lr", "5e-05",
        "--network_train_unet_only",
        "--network_dim", "16", "--network_alpha", "8.0",
        "--mixed_precision", "bf16",
        *DEFAULT_SCHEDULE,
        "--cache_text_encoder_outputs",
        *DEFAULT_RUN,
        "--no_half_vae",
        "--resume", "/opt/ml/checkpoints/lora-000003-state", "--initial_step", "75",
    ]


def test_one_gpu_resumes_by_epoch():
    values = parse_hyperparameters({})
    argv = accelerate_argv(values, launch(resume_state=Path("/c/lora-000002-state"), resume_epoch=2))
    assert argv[-4:] == ["--resume", "/c/lora-000002-state", "--initial_epoch", "3"]
    assert "--skip_until_initial_step" not in argv


def test_several_gpus_cannot_resume_without_the_steps_per_epoch():
    with pytest.raises(ValueError, match="steps per epoch"):
        accelerate_argv(parse_hyperparameters({}), launch(gpus=2, resume_state=Path("/c/s"), resume_epoch=1))


@pytest.mark.parametrize(
    "given, steps_per_epoch, epochs",
    [
        ({"max_train_steps": "400"}, 100, 4),
        ({"max_train_steps": "401"}, 100, 5),  # rounded up, never short
        ({"max_train_steps": "400"}, 25, 16),
        ({"max_train_steps": "5"}, 100, 1),  # at least one epoch
        ({"max_train_steps": "400", "max_train_epochs": "3"}, 100, 3),  # epochs win
    ],
)
def test_steps_become_whole_epochs(given, steps_per_epoch, epochs):
    assert epochs_for(parse_hyperparameters(given), steps_per_epoch) == epochs


def test_exact_argv_for_flux1_schnell_from_a_channel_with_samples():
    from lora_trainer.base_model import FluxFiles

    channel = Path("/opt/ml/input/data/base_model")
    files = FluxFiles(channel / "flux1-schnell.safetensors", channel / "ae.safetensors", channel / "clip_l.safetensors", channel / "t5xxl_fp16.safetensors")
    values = parse_hyperparameters({"model_type": "flux1", "blocks_to_swap": "8"})
    argv = accelerate_argv(values, launch(base_model=str(files.transformer), flux=files, epochs=10, sample_prompts=Path("/tmp/lora-trainer/sample-prompts.json")))
    assert argv == [
        *accelerate("bf16", "flux_train_network.py"),
        "--pretrained_model_name_or_path", "/opt/ml/input/data/base_model/flux1-schnell.safetensors",
        "--clip_l", "/opt/ml/input/data/base_model/clip_l.safetensors",
        "--t5xxl", "/opt/ml/input/data/base_model/t5xxl_fp16.safetensors",
        "--ae", "/opt/ml/input/data/base_model/ae.safetensors",
        *launch_paths(1024, 10),
        "--network_module", "networks.lora_flux",
        *ALWAYS[2:],
        "--output_name", "lora",
        "--learning_rate", "0.0001",
        "--network_train_unet_only",
        "--network_dim", "16", "--network_alpha", "16.0",
        "--mixed_precision", "bf16",
        *DEFAULT_SCHEDULE,
        "--cache_latents", "--cache_text_encoder_outputs", "--gradient_checkpointing",
        *DEFAULT_RUN,
        # sd-scripts' FLUX guide: guidance 1.0, flux_shift, raw prediction; fp8 so it fits a 24 GB GPU.
        "--guidance_scale", "1.0", "--timestep_sampling", "flux_shift", "--sigmoid_scale", "1.0",
        "--model_prediction_type", "raw", "--discrete_flow_shift", "3.0", "--fp8_base", "--blocks_to_swap", "8",
        # No --sample_sampler: kohya samples FLUX with its own Euler.
        "--sample_prompts", "/tmp/lora-trainer/sample-prompts.json", "--sample_every_n_epochs", "1", "--sample_at_first",
    ]


def test_a_flux1_command_needs_the_files_on_disk():
    with pytest.raises(ValueError, match="files on disk"):
        accelerate_argv(parse_hyperparameters({"model_type": "flux1"}), launch())


def test_another_model_types_setting_never_becomes_a_flag():
    # The SD scripts do not declare the FLUX flags; a value left in the values must not reach them.
    values = {**parse_hyperparameters({"model_type": "sdxl"}), "guidance_scale": 1.0, "fp8_base": True}
    argv = accelerate_argv(values, launch())
    assert "--guidance_scale" not in argv and "--fp8_base" not in argv
