"""The exact command line: accelerate launch of kohya-ss sd-scripts' train_network.py (SD 1.5),
sdxl_train_network.py (SDXL) or flux_train_network.py (FLUX.1), every flag checked against sd-scripts
v0.10.1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping

from .base_model import FluxFiles
from .hyperparameters import Value, flag_value, load_schema

SCRIPTS = {"sd15": "train_network.py", "sdxl": "sdxl_train_network.py", "flux1": "flux_train_network.py"}
# kohya's LoRA for the U-Nets and their CLIP text encoders, and its LoRA for FLUX.1's transformer.
NETWORK_MODULES = {"sd15": "networks.lora", "sdxl": "networks.lora", "flux1": "networks.lora_flux"}
# Flags the container always sets (after the network type): safetensors output, the spot-resume state (two
# kept: kohya deletes the older right after writing the newer, and SageMaker uploads asynchronously,
# so keeping one could leave S3 with only a half-uploaded state; the entrypoint prunes to the newest
# complete one when it starts), SDPA attention, plain log lines (kohya's rich handler wraps lines at
# the console width when there is no terminal) and fp16 LoRA files, which diffusers loads as is.
FIXED_FLAGS = (
    "--save_model_as", "safetensors",
    # fp16 for FLUX.1 too: diffusers casts a LoRA to bf16 on load, and fp16 keeps 3 more mantissa bits.
    "--save_precision", "fp16",
    "--save_state",
    "--save_last_n_epochs", "1",
    "--save_last_n_epochs_state", "2",
    "--sdpa",
    "--console_log_simple",
    "--max_data_loader_n_workers", "2",
    "--persistent_data_loader_workers",
)
# Hyperparameters that the entrypoint turns into other flags, or uses itself.
_HANDLED = {"model_type", "base_model", "max_train_steps", "max_train_epochs", "resolution", "allow_missing_captions"}
# kohya's sampling flags: passed only with a prompts file (sampling on, something to prompt with).
_SAMPLING = {"sample_every_n_epochs", "sample_at_first", "sample_sampler"}


@dataclass(frozen=True)
class Launch:
    """Everything the command depends on besides the hyperparameters."""

    sd_scripts: Path
    base_model: str
    dataset_config: Path
    output_dir: Path
    tokenizer_cache: Path
    epochs: int
    gpus: int
    cpus: int
    resume_state: Path | None = None
    resume_epoch: int = 0
    steps_per_epoch: int | None = None
    # The prompts file the entrypoint wrote (sampling.write_prompts_file); None: no sampling.
    sample_prompts: Path | None = None
    # kohya's cadence: the hyperparameter, or the one chosen from the epochs when it is unset.
    sample_every_n_epochs: int = 1
    # FLUX.1: the transformer (as base_model), autoencoder and text encoders, on local disk.
    flux: FluxFiles | None = None


def epochs_for(values: Mapping[str, Value | None], steps_per_epoch: int) -> int:
    """Training length in whole epochs, since epoch ends are where the state is saved and resumed.
    max_train_epochs wins; otherwise max_train_steps rounded up to whole epochs of kohya's steps per
    epoch (DatasetSummary.steps_per_epoch: every dataset's bucket batches, summed)."""
    if values["max_train_epochs"] is not None:
        return int(values["max_train_epochs"])
    return max(1, math.ceil(int(values["max_train_steps"]) / max(1, steps_per_epoch)))


def accelerate_argv(values: Mapping[str, Value | None], launch: Launch) -> list[str]:
    """accelerate launch with one process per visible GPU and every launcher setting explicit, so
    no config file or default is consulted; kohya passes mixed_precision to Accelerator itself too."""
    argv = ["accelerate", "launch", "--num_machines", "1", "--num_processes", str(launch.gpus)]
    if launch.gpus > 1:
        argv.append("--multi_gpu")
    argv += [
        "--mixed_precision", str(values["mixed_precision"]),
        "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", str(max(1, launch.cpus // launch.gpus)),
        str(launch.sd_scripts / SCRIPTS[str(values["model_type"])]),
    ]
    return argv + kohya_args(values, launch)


def kohya_args(values: Mapping[str, Value | None], launch: Launch) -> list[str]:
    resolution = int(values["resolution"])  # type: ignore[arg-type]
    model_type = str(values["model_type"])
    args = ["--pretrained_model_name_or_path", launch.base_model, *flux_file_args(model_type, launch)]
    args += [
        "--tokenizer_cache_dir", str(launch.tokenizer_cache),
        "--dataset_config", str(launch.dataset_config),
        "--resolution", f"{resolution},{resolution}",
        "--output_dir", str(launch.output_dir),
        "--max_train_epochs", str(launch.epochs),
        "--network_module", NETWORK_MODULES[model_type],
        *FIXED_FLAGS,
    ]
    schema = load_schema()
    for name, spec in schema.specs.items():
        value = values[name]
        if name in _HANDLED or name in _SAMPLING or spec.flag is None or value is None:
            continue
        if spec.models and model_type not in spec.models:
            continue  # another model type's setting: its script may not declare the flag
        if spec.type == "boolean":
            if value:
                args.append(spec.flag)
        else:
            args += [spec.flag, flag_value(value)]
    if values["model_type"] == "sdxl":
        # The SDXL VAE overflows in fp16 (NaN latents); sd-scripts' SDXL guide recommends this.
        args.append("--no_half_vae")
    args += sampling_args(values, launch)
    if launch.resume_state is not None:
        args += ["--resume", str(launch.resume_state), *resume_position(launch)]
    return args


def flux_file_args(model_type: str, launch: Launch) -> list[str]:
    """flux_train_network.py takes the transformer as the base model and the other three files by
    flag; the other scripts none of them."""
    if model_type != "flux1":
        return []
    if launch.flux is None:
        raise ValueError("a FLUX.1 run needs its base model files on disk")
    return ["--clip_l", str(launch.flux.clip_l), "--t5xxl", str(launch.flux.t5xxl), "--ae", str(launch.flux.ae)]


def sampling_args(values: Mapping[str, Value | None], launch: Launch) -> list[str]:
    """kohya's own sampling: the prompts file, every n epochs, the sampler. The base model's row
    (--sample_at_first) only on a fresh start: on a resumed attempt kohya would draw it again with
    the resumed weights, labelled epoch 0."""
    if launch.sample_prompts is None:
        return []
    args = ["--sample_prompts", str(launch.sample_prompts), "--sample_every_n_epochs", str(launch.sample_every_n_epochs)]
    if values["sample_sampler"] is not None:  # none for FLUX.1, which kohya samples with its own Euler
        args += ["--sample_sampler", str(values["sample_sampler"])]
    if values["sample_at_first"] and launch.resume_state is None:
        args.append("--sample_at_first")
    return args


def resume_position(launch: Launch) -> list[str]:
    """Where the resumed run starts. kohya's --resume alone takes the step count from the state's
    train_state.json, which counts only the steps of the run that saved it, so a second
    interruption resumes at the wrong epoch (sd-scripts issues #1999, #2248). The entrypoint gives the
    epoch explicitly: --initial_epoch on one GPU; on several, --initial_epoch divides by the process
    count twice, so --initial_step with the steps per epoch kohya reported is given instead."""
    if launch.gpus == 1:
        return ["--initial_epoch", str(launch.resume_epoch + 1)]
    if launch.steps_per_epoch is None:
        raise ValueError("resuming on several GPUs needs the steps per epoch of an earlier run")
    return ["--initial_step", str(launch.resume_epoch * launch.steps_per_epoch)]
