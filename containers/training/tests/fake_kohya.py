"""A stand-in for `accelerate launch train_network.py` (and sdxl_/flux_train_network.py, which share its
loop), used only by the tests: it accepts the flags the entrypoint passes, rejects any other, and writes what kohya-ss sd-scripts v0.10.1 writes where it
writes it (epoch states saved before the older one is removed, an end-of-training state, then the
final model), printing kohya's epoch lines and drawing its tqdm bar as train_network.py draws it
(once at its start; per step update(1), showing the previous step's loss, then set_postfix with the
new one). Like kohya's, its step counter restarts at 0 on a resumed attempt and is written as the
final model's ss_steps. Its epoch is ceil(image views / batch size) per dataset, split among
FAKE_KOHYA_PROCESSES (default 1): kohya's count when all images have one size and none is a
regularization image, as in the tests that use it (what kohya counts with buckets is checked in
test_kohya_dataset.py); FAKE_KOHYA_STEPS_PER_EPOCH overrides it. Environment variables make it fail
the ways a spot job can: FAKE_KOHYA_DIE_AFTER_EPOCH, FAKE_KOHYA_PARTIAL_NEXT, FAKE_KOHYA_HANG,
FAKE_KOHYA_EXIT. With --sample_prompts it draws samples as kohya names them (draw_samples). Every invocation is appended to FAKE_KOHYA_LOG."""

import argparse
import json
import math
import os
import shutil
import signal
import struct
import sys
import time
import zipfile
from pathlib import Path

import toml

VALUE_FLAGS = [
    "pretrained_model_name_or_path", "tokenizer_cache_dir", "dataset_config", "resolution", "output_dir", "max_train_epochs",
    "network_module", "save_model_as", "save_precision", "save_last_n_epochs", "save_last_n_epochs_state",
    "max_data_loader_n_workers", "output_name", "learning_rate", "unet_lr", "text_encoder_lr", "network_dim", "network_alpha",
    "mixed_precision", "optimizer_type", "lr_scheduler", "lr_warmup_steps", "save_every_n_epochs", "seed", "train_batch_size",
    "dataset_repeats", "clip_skip", "prior_loss_weight", "resume", "initial_epoch", "initial_step",
    "sample_prompts", "sample_every_n_epochs", "sample_sampler",
    # flux_train_network.py's (library/flux_train_utils.py, train_util.add_dit_training_arguments)
    "clip_l", "t5xxl", "ae", "guidance_scale", "timestep_sampling", "sigmoid_scale", "model_prediction_type", "discrete_flow_shift",
    "blocks_to_swap", "t5xxl_max_token_length",
]
# The types and choices sd-scripts v0.10.1 declares for them (train_network.py, library/train_util.py);
# optimizer_type is free text there, limited here to names its get_optimizer knows.
TYPES = {
    **{name: {"type": int} for name in (
        "max_train_epochs", "save_last_n_epochs", "save_last_n_epochs_state", "max_data_loader_n_workers", "network_dim",
        "lr_warmup_steps", "save_every_n_epochs", "seed", "train_batch_size", "dataset_repeats", "clip_skip", "initial_epoch", "initial_step",
        "sample_every_n_epochs", "blocks_to_swap", "t5xxl_max_token_length",
    )},
    **{name: {"type": float} for name in ("learning_rate", "unet_lr", "network_alpha", "prior_loss_weight", "guidance_scale", "sigmoid_scale", "discrete_flow_shift")},
    "timestep_sampling": {"choices": ["sigma", "uniform", "sigmoid", "shift", "flux_shift"]},
    "model_prediction_type": {"choices": ["raw", "additive", "sigma_scaled"]},
    "text_encoder_lr": {"type": float, "nargs": "*"},
    "mixed_precision": {"choices": ["no", "fp16", "bf16"]},
    "save_precision": {"choices": [None, "float", "fp16", "bf16"]},
    "save_model_as": {"choices": [None, "ckpt", "safetensors", "diffusers", "diffusers_safetensors"]},
    "optimizer_type": {"choices": ["AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion8bit", "SGDNesterov", "SGDNesterov8bit", "Adafactor"]},
    "sample_sampler": {"choices": ["ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++", "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a"]},
}
SWITCHES = [
    "save_state", "sdpa", "console_log_simple", "persistent_data_loader_workers", "network_train_unet_only", "cache_latents",
    "cache_text_encoder_outputs", "gradient_checkpointing", "no_half_vae", "sample_at_first", "fp8_base", "apply_t5_attn_mask",
]


def safetensors_bytes(values: int = 4, metadata: dict | None = None) -> bytes:
    header = {"lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + bytes(range(4 * values))


def torch_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")


def save_state(folder: Path, epoch: int, fp16: bool, partial: bool = False, steps_per_epoch: int = 10) -> None:
    folder.mkdir()
    (folder / "train_state.json").write_text(json.dumps({"current_epoch": epoch, "current_step": epoch * steps_per_epoch}))
    (folder / "model.safetensors").write_bytes(safetensors_bytes())
    torch_zip(folder / "optimizer.bin")
    if partial:  # killed while writing the scheduler: a torch zip cut short
        (folder / "scheduler.bin").write_bytes((folder / "optimizer.bin").read_bytes()[:20])
        return
    torch_zip(folder / "scheduler.bin")
    if fp16:
        torch_zip(folder / "scaler.pt")
    torch_zip(folder / "random_states_0.pkl")


def draw_samples(args: argparse.Namespace, epoch: int) -> None:
    """As train_util.sample_images_common with a .json prompts file: one PNG per prompt, of its
    width and height, named <output_name>_e<epoch>_<index>_<local time>_<seed>.png, in
    <output_dir>/sample; its colour says the epoch and prompt. FAKE_KOHYA_BAD_SAMPLE=<epoch> cuts
    that epoch's files short, as a spot interruption during image.save would."""
    from PIL import Image

    if epoch and (not args.sample_every_n_epochs or epoch % args.sample_every_n_epochs):
        return
    folder = Path(args.output_dir) / "sample"
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
    for index, prompt in enumerate(json.loads(Path(args.sample_prompts).read_text(encoding="utf-8"))):
        name = folder / f"{args.output_name}_e{epoch:06d}_{index:02d}_{stamp}_{prompt['seed']}.png"
        Image.new("RGB", (prompt["width"], prompt["height"]), (epoch * 40 % 256, index * 80 % 256, 100)).save(name)
        if os.environ.get("FAKE_KOHYA_BAD_SAMPLE") == str(epoch):
            name.write_bytes(name.read_bytes()[:60])


def steps_per_epoch(args: argparse.Namespace) -> int:
    if os.environ.get("FAKE_KOHYA_STEPS_PER_EPOCH"):
        return int(os.environ["FAKE_KOHYA_STEPS_PER_EPOCH"])
    config = toml.loads(Path(args.dataset_config).read_text())
    general = config.get("general", {})
    batches = 0
    for dataset in config["datasets"]:
        batch = dataset.get("batch_size", general.get("batch_size", args.train_batch_size or 1))
        views = 0
        for subset in dataset["subsets"]:
            repeats = subset.get("num_repeats", dataset.get("num_repeats", general.get("num_repeats", args.dataset_repeats or 1)))
            images = [p for p in Path(subset["image_dir"]).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp")]
            views += len(images) * repeats
        batches += math.ceil(views / batch)
    return math.ceil(batches / int(os.environ.get("FAKE_KOHYA_PROCESSES", "1")))


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in VALUE_FLAGS:
        parser.add_argument(f"--{name}", **TYPES.get(name, {}))
    for name in SWITCHES:
        parser.add_argument(f"--{name}", action="store_true")
    args = parser.parse_args()  # an unknown flag exits 2, as kohya's argparse does
    out = Path(args.output_dir)
    name = args.output_name
    epochs = int(args.max_train_epochs)
    every = int(args.save_every_n_epochs)
    per_epoch = steps_per_epoch(args)
    # kohya: --initial_step wins; the epoch to start is initial_step // steps per epoch.
    start = int(args.initial_step) // per_epoch if args.initial_step else int(args.initial_epoch) - 1 if args.initial_epoch else 0
    fp16 = args.mixed_precision == "fp16"
    log = os.environ.get("FAKE_KOHYA_LOG")
    if log:
        record = {"argv": sys.argv[1:], "start_epoch": start, "hf_offline": os.environ.get("HF_HUB_OFFLINE"), "epochs_run": []}
        # A secret that must never reach the trainer: whether any environment value holds it.
        if os.environ.get("FAKE_KOHYA_FORBIDDEN"):
            record["forbidden_in_env"] = [k for k, v in os.environ.items() if os.environ["FAKE_KOHYA_FORBIDDEN"] in v and k != "FAKE_KOHYA_FORBIDDEN"]
    assert Path(args.dataset_config).is_file(), "dataset_config missing"
    if args.resume:
        assert (Path(args.resume) / "random_states_0.pkl").is_file(), "resumed from an incomplete state"

    def finish_log() -> None:
        if log:
            with open(log, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")

    if os.environ.get("FAKE_KOHYA_EXIT"):
        print("Traceback (most recent call last):", file=sys.stderr)
        print("RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB", file=sys.stderr)
        finish_log()
        return int(os.environ["FAKE_KOHYA_EXIT"])
    if os.environ.get("FAKE_KOHYA_HANG"):
        def on_term(signum, frame):
            Path(os.environ["FAKE_KOHYA_HANG"]).write_text("SIGTERM received")
            finish_log()
            sys.exit(143)

        signal.signal(signal.SIGTERM, on_term)
        print("epoch 1/1", flush=True)
        Path(os.environ["FAKE_KOHYA_HANG"] + ".ready").write_text("ready")
        time.sleep(60)
        return 9

    print(f"override steps. steps for {epochs} epochs is / 指定エポックまでのステップ数: {epochs * per_epoch}", flush=True)
    die_after = int(os.environ.get("FAKE_KOHYA_DIE_AFTER_EPOCH", "0"))
    # As train_network.py: a bar over all max_train_steps even when resuming, drawn once at its start;
    # each step, update(1) redraws it with the new step and the previous postfix, then
    # set_postfix(avr_loss=...) with this step's loss. Its step counter (global_step, written as the
    # model's ss_steps) starts at 0 on every attempt.
    bar_total, global_step, postfix = epochs * per_epoch, 0, ""
    draw = lambda: sys.stderr.write(f"\rsteps: {global_step * 100 // bar_total:3d}%|##  | {global_step}/{bar_total} [00:01<00:09,  1.25s/it{postfix}]")  # noqa: E731
    draw()
    if args.sample_prompts and args.sample_at_first:
        draw_samples(args, 0)
    for epoch in range(start, epochs):
        print(f"\nepoch {epoch + 1}/{epochs}\n", flush=True)
        for step in range(1, per_epoch + 1):
            global_step += 1
            draw()
            postfix = f", avr_loss=0.{epoch + 1}{step:02d}"
            draw()
            sys.stderr.flush()
        if log:
            record["epochs_run"].append(epoch + 1)
        if (epoch + 1) % every == 0 and (epoch + 1) < epochs:
            print(f"\nsaving checkpoint: {out / f'{name}-{epoch + 1:06d}.safetensors'}", flush=True)
            (out / f"{name}-{epoch + 1:06d}.safetensors").write_bytes(safetensors_bytes())
            old_model = out / f"{name}-{epoch + 1 - every:06d}.safetensors"
            if old_model.exists():
                old_model.unlink()
            save_state(out / f"{name}-{epoch + 1:06d}-state", epoch + 1, fp16, steps_per_epoch=per_epoch)
            old = out / f"{name}-{epoch + 1 - every * args.save_last_n_epochs_state:06d}-state"
            if old.exists():
                shutil.rmtree(old)
        if args.sample_prompts:
            draw_samples(args, epoch + 1)
        if die_after and epoch + 1 == die_after:
            if os.environ.get("FAKE_KOHYA_PARTIAL_NEXT"):
                save_state(out / f"{name}-{epoch + 2:06d}-state", epoch + 2, fp16, partial=True, steps_per_epoch=per_epoch)
            finish_log()
            os._exit(137)  # the instance is gone: no clean-up
    save_state(out / f"{name}-state", epochs, fp16, steps_per_epoch=per_epoch)
    print(f"\nsaving checkpoint: {out / f'{name}.safetensors'}", flush=True)
    metadata = {"ss_steps": str(global_step), "ss_epoch": str(epochs), "ss_network_dim": str(args.network_dim)}
    (out / f"{name}.safetensors").write_bytes(safetensors_bytes(8, metadata))
    print("model saved.", flush=True)
    finish_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
