"""Every command line the entrypoint builds, parsed by the pinned sd-scripts' own argument parsers
(train_network.setup_parser, sdxl_train_network.setup_parser, flux_train_network.setup_parser) and accelerate's launch parser: each
flag must be accepted, spelt out in full (kohya's parsers allow prefix abbreviations, which argparse
would silently expand to another option), and mean what the entrypoint intends."""

import argparse
import functools
from pathlib import Path

import pytest

from lora_trainer.base_model import FluxFiles
from lora_trainer.command import FIXED_FLAGS, NETWORK_MODULES, SCRIPTS, Launch, accelerate_argv
from lora_trainer.hyperparameters import load_schema, parse_hyperparameters

SCHEMA = load_schema()
PROMPTS_FILE = Path("/tmp/lora-trainer/sample-prompts.json")
SAMPLING_KEYS = ("sample_every_n_epochs", "sample_at_first", "sample_sampler")
OPTIMIZERS = SCHEMA.specs["optimizer_type"].enum
SCHEDULERS = SCHEMA.specs["lr_scheduler"].enum
# Not the schema's defaults, and allowed together (SDXL text encoder caching needs U-Net-only training).
NON_DEFAULT = {
    "output_name": "my_lora", "max_train_epochs": "7", "learning_rate": "3e-4", "unet_lr": "2e-4",
    "network_train_unet_only": "true", "network_dim": "8", "network_alpha": "4", "mixed_precision": "bf16",
    "optimizer_type": "Adafactor", "lr_scheduler": "cosine", "save_every_n_epochs": "3", "cache_latents": "false",
    "gradient_checkpointing": "false", "seed": "7", "resolution": "768", "train_batch_size": "3", "num_repeats": "2",
    "prior_loss_weight": "0.5", "allow_missing_captions": "true",
}


CHANNEL = Path("/opt/ml/input/data/base_model")
FLUX = FluxFiles(CHANNEL / "flux1-schnell.safetensors", CHANNEL / "ae.safetensors", CHANNEL / "clip_l.safetensors", CHANNEL / "t5xxl_fp16.safetensors")
# Every FLUX.1 setting away from its default, as sd-scripts' guide's alternatives.
FLUX_NON_DEFAULT = {
    "guidance_scale": "3.5", "timestep_sampling": "shift", "sigmoid_scale": "0.5", "model_prediction_type": "additive",
    "discrete_flow_shift": "3.1582", "fp8_base": "false", "blocks_to_swap": "18", "t5xxl_max_token_length": "256",
    "apply_t5_attn_mask": "true", "base_model": "black-forest-labs/FLUX.1-dev",
}
MODULES = {"sd15": "train_network", "sdxl": "sdxl_train_network", "flux1": "flux_train_network"}


def launch(**overrides) -> Launch:
    fields = dict(
        sd_scripts=Path("/opt/sd-scripts"), base_model="/opt/ml/input/data/base_model/model.safetensors",
        dataset_config=Path("/tmp/lora-trainer/dataset.toml"), output_dir=Path("/opt/ml/checkpoints"),
        tokenizer_cache=Path("/opt/tokenizers"), epochs=12, gpus=1, cpus=8,
    )
    return Launch(**{**fields, **overrides})


def cases():
    for model in ("sd15", "sdxl", "flux1"):
        flux = model == "flux1"
        at = functools.partial(launch, base_model=str(FLUX.transformer), flux=FLUX) if flux else launch

        yield f"{model}-defaults", {"model_type": model}, at()
        extra = {"cache_text_encoder_outputs": "true"} if model == "sdxl" else FLUX_NON_DEFAULT if flux else {"clip_skip": "2"}
        yield f"{model}-non-defaults", {"model_type": model, **NON_DEFAULT, **extra}, at()
        if not flux:  # FLUX.1 trains no text encoder
            yield f"{model}-text-encoder-lr", {"model_type": model, "text_encoder_lr": "5e-5", "network_dim": "128", "network_alpha": "0.5"}, at()
        for optimizer in OPTIMIZERS:
            for scheduler in SCHEDULERS:
                warmup = "0" if scheduler == "constant" or optimizer == "Adafactor" else "25"
                values = {"model_type": model, "optimizer_type": optimizer, "lr_scheduler": scheduler, "lr_warmup_steps": warmup}
                yield f"{model}-{optimizer}-{scheduler}", values, at()
        state = Path("/opt/ml/checkpoints/lora-000004-state")
        yield f"{model}-samples", {"model_type": model}, at(sample_prompts=PROMPTS_FILE)
        sampling = {"sample_every_n_epochs": "3", "sample_at_first": "false", **({} if flux else {"sample_sampler": "dpmsolver++"})}
        yield f"{model}-samples-non-defaults", {"model_type": model, **sampling}, at(sample_prompts=PROMPTS_FILE, sample_every_n_epochs=3)
        yield f"{model}-samples-resumed", {"model_type": model}, at(sample_prompts=PROMPTS_FILE, resume_state=state, resume_epoch=4)
        yield f"{model}-resume-1-gpu", {"model_type": model}, at(resume_state=state, resume_epoch=4)
        yield f"{model}-resume-4-gpus", {"model_type": model}, at(gpus=4, cpus=48, resume_state=state, resume_epoch=4, steps_per_epoch=25)


CASES = list(cases())


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """`accelerate launch <launcher options> <script> <script args>` into launcher and script parts."""
    assert argv[:2] == ["accelerate", "launch"]
    script = next(i for i, token in enumerate(argv) if token.endswith(".py"))
    return argv[2:script + 1], argv[script + 1:]


def parse_exactly(parser: argparse.ArgumentParser, args: list[str], own: int | None = None) -> argparse.Namespace:
    """Parses as the script would, after refusing any option that is not one of the parser's own,
    spelt out in full (argparse would expand an unambiguous prefix to the option it starts). Only
    the first `own` arguments are the parser's when the rest is passed on (accelerate's script args)."""
    known = parser._option_string_actions  # every option string the parser declares
    inexact = [token for token in args[:own] if token.startswith("--") and token.split("=")[0] not in known]
    assert not inexact, f"not options of this parser, or abbreviations that argparse expands: {inexact}"
    try:
        return parser.parse_args(args)
    except SystemExit as error:
        raise AssertionError(f"the parser refused {args}: exit {error.code}") from None


def intended(values: dict, launch_: Launch) -> dict:
    """What each kohya option should hold, from the hyperparameters' meaning in the schema (not
    from the command builder)."""
    resolution = values["resolution"]
    expected = {
        "pretrained_model_name_or_path": launch_.base_model, "tokenizer_cache_dir": str(launch_.tokenizer_cache),
        "dataset_config": launch_.dataset_config, "output_dir": str(launch_.output_dir),  # kohya declares the first a Path
        "resolution": f"{resolution},{resolution}", "max_train_epochs": launch_.epochs, "max_train_steps": 1600,
        "network_module": NETWORK_MODULES[values["model_type"]], "save_model_as": "safetensors", "save_precision": "fp16", "save_state": True,
        "save_last_n_epochs": 1, "save_last_n_epochs_state": 2, "sdpa": True, "console_log_simple": True,
        "max_data_loader_n_workers": 2, "persistent_data_loader_workers": True, "no_half_vae": values["model_type"] == "sdxl",
        "resume": str(launch_.resume_state) if launch_.resume_state else None,
        "initial_epoch": launch_.resume_epoch + 1 if launch_.resume_state and launch_.gpus == 1 else None,
        "initial_step": launch_.resume_epoch * launch_.steps_per_epoch if launch_.resume_state and launch_.gpus > 1 else None,
    }
    # kohya samples only with a prompts file: the sampling flags come with it or not at all, and
    # the base model's row only on a fresh start.
    sampling = launch_.sample_prompts is not None
    expected.update(
        sample_prompts=str(launch_.sample_prompts) if sampling else None,
        sample_every_n_epochs=launch_.sample_every_n_epochs if sampling else None,
        sample_sampler=str(values["sample_sampler"]) if sampling and values["sample_sampler"] else "ddim",
        sample_at_first=sampling and bool(values["sample_at_first"]) and launch_.resume_state is None,
    )
    if launch_.flux is not None:
        expected.update(clip_l=str(launch_.flux.clip_l), t5xxl=str(launch_.flux.t5xxl), ae=str(launch_.flux.ae))
    for name, spec in SCHEMA.specs.items():
        if spec.flag is None or name in ("resolution", "max_train_epochs", "base_model", *SAMPLING_KEYS):
            continue
        if spec.models and values["model_type"] not in spec.models:
            continue
        value = values[name]
        dest = spec.flag[2:]
        if value is None:
            continue  # not passed: kohya's default applies (checked below)
        if spec.type == "integer":
            expected[dest] = int(value)
        elif spec.type == "number":
            expected[dest] = [float(value)] if dest == "text_encoder_lr" else float(value)
        elif spec.type == "boolean":
            expected[dest] = bool(value)
        else:
            expected[dest] = str(value)
    return expected


@pytest.mark.parametrize("given, launch_", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kohya_parses_every_command_as_intended(sd_scripts, given, launch_):
    values = parse_hyperparameters(given)
    launcher, script_args = split(accelerate_argv(values, launch_))
    module = getattr(sd_scripts, MODULES[values["model_type"]])
    assert launcher[-1] == f"/opt/sd-scripts/{SCRIPTS[values['model_type']]}"
    parser = module.setup_parser()
    parsed = parse_exactly(parser, script_args)
    sd_scripts.train_util.verify_command_line_training_args(parsed)
    defaults = vars(parser.parse_args([]))
    expected = intended(values, launch_)
    actual = vars(parsed)
    assert {k: actual[k] for k in expected} == expected
    # Nothing else moved from kohya's defaults: no flag was read as another option.
    assert {k: v for k, v in actual.items() if k not in expected and v != defaults[k]} == {}


@pytest.mark.parametrize("gpus", [1, 4])
def test_accelerate_parses_the_launcher_part(gpus):
    from accelerate.commands.launch import launch_command_parser

    values = parse_hyperparameters({"mixed_precision": "bf16"})
    argv = accelerate_argv(values, launch(gpus=gpus, cpus=48))
    launcher, script_args = split(argv)
    parsed = parse_exactly(launch_command_parser(), [*launcher, *script_args], own=len(launcher))
    assert (parsed.num_machines, parsed.num_processes, parsed.multi_gpu) == (1, gpus, gpus > 1)
    assert (parsed.mixed_precision, parsed.dynamo_backend, parsed.num_cpu_threads_per_process) == ("bf16", "no", 48 // gpus)
    assert parsed.training_script == "/opt/sd-scripts/train_network.py"
    assert parsed.training_script_args == script_args


@pytest.mark.parametrize(
    "bad, why",
    [
        (["--network_modul", "networks.lora"], "abbreviations"),  # argparse alone would accept this prefix
        (["--max_train_epoch", "3"], "abbreviations"),
        (["--netwrk_dim", "8"], "abbreviations"),  # not an option at all
        (["--mixed_precision", "fp8"], "parser refused"),
        (["--network_dim", "eight"], "parser refused"),
    ],
)
def test_a_misspelt_flag_is_refused(sd_scripts, bad, why):
    parser = sd_scripts.train_network.setup_parser()
    assert parser.allow_abbrev  # why the exact-spelling check is needed
    with pytest.raises(AssertionError, match=why):
        parse_exactly(parser, ["--output_dir", "/x", *bad])


def test_every_fixed_flag_is_a_kohya_option(sd_scripts):
    for module in (sd_scripts.train_network, sd_scripts.sdxl_train_network, sd_scripts.flux_train_network):
        options = module.setup_parser()._option_string_actions
        assert [flag for flag in FIXED_FLAGS if flag.startswith("--") and flag not in options] == []


def test_every_scheduler_is_one_kohya_can_build(sd_scripts):
    from diffusers.optimization import SchedulerType

    assert [name for name in SCHEDULERS if name not in {t.value for t in SchedulerType}] == []


def test_kohya_reads_the_prompts_file_with_every_setting(sd_scripts, tmp_path):
    """kohya's own loader (train_util.load_prompts, as sample_images_common reads a .json file) gets
    each prompt with the keys sample_image_inference reads, none left to its defaults."""
    from lora_trainer.sampling import SamplePrompt, write_prompts_file

    prompts = [
        SamplePrompt(0, "a photo of sks dog --n not an option", "blurry", 1234, 512, 768, 20, 7.0, "euler_a"),
        SamplePrompt(1, "# not a comment", "", 1235, 512, 768, 20, 7.0, "euler_a"),
    ]
    loaded = sd_scripts.train_util.load_prompts(str(write_prompts_file(prompts, tmp_path / "sample-prompts.json")))
    assert loaded == [
        {"prompt": "a photo of sks dog --n not an option", "negative_prompt": "blurry", "seed": 1234, "width": 512, "height": 768,
         "sample_steps": 20, "scale": 7.0, "sample_sampler": "euler_a", "enum": 0},
        {"prompt": "# not a comment", "negative_prompt": "", "seed": 1235, "width": 512, "height": 768,
         "sample_steps": 20, "scale": 7.0, "sample_sampler": "euler_a", "enum": 1},
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # diffusers' own, thousands
def test_every_sampler_is_one_kohya_builds(sd_scripts):
    samplers = SCHEMA.specs["sample_sampler"].enum
    parser = sd_scripts.train_network.setup_parser()
    # kohya's choices but three it cannot build here, shown failing: the LMS schedulers need scipy
    # (not installed), and diffusers refuses kohya's dpmsolver (first-order DPM-Solver with final_sigmas_type zero).
    assert set(parser._option_string_actions["--sample_sampler"].choices) - set(samplers) == {"lms", "k_lms", "dpmsolver"}
    with pytest.raises(ImportError, match="scipy"):
        sd_scripts.train_util.get_my_scheduler(sample_sampler="lms", v_parameterization=False)
    with pytest.raises(ValueError, match="final_sigmas_type"):
        sd_scripts.train_util.get_my_scheduler(sample_sampler="dpmsolver", v_parameterization=False)
    for name in samplers:
        # get_my_scheduler falls back to DDIM for a name it does not know: each must build its own.
        scheduler = sd_scripts.train_util.get_my_scheduler(sample_sampler=name, v_parameterization=False)
        assert name in ("ddim",) or type(scheduler).__name__ != "DDIMScheduler", name
