import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import fake_trainer
from fake_kohya import safetensors_bytes
from lora_trainer.lora_file import read_metadata
from lora_trainer.main import Trainer, main

RUN_ENTRYPOINT = Path(__file__).with_name("run_entrypoint.py")


def train(opt_ml, image, trainer=None):
    return main(["train"], opt_ml.paths, image, trainer or fake_trainer())


def checkpoint_names(opt_ml):
    return sorted(p.name for p in opt_ml.paths.checkpoints.iterdir())


def test_a_run_writes_the_lora_and_its_metadata(opt_ml, image, capsys):
    opt_ml.captioned_images(3)
    opt_ml.hyperparameters({"max_train_steps": "60", "output_name": '"pokemon"', "num_repeats": "10"})
    assert train(opt_ml, image) == 0
    assert sorted(p.name for p in opt_ml.paths.model.iterdir()) == ["pokemon.safetensors", "training-metadata.json"]
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert metadata["epochs"] == 2  # 60 steps of 30 images per epoch at batch size 1
    assert metadata["hyperparameters"]["output_name"] == "pokemon"
    assert metadata["base_model"] == {"kind": "Hugging Face id", "name": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
    assert metadata["sd_scripts_version"] == "v0.10.1"
    assert metadata["dataset"]["images"] == 3 and len(metadata["dataset"]["content_sha256"]) == 64
    assert metadata["resumed_after_epoch"] is None and metadata["reused_completed_model"] is False
    [run] = opt_ml.runs()
    assert run["epochs_run"] == [1, 2] and run["hf_offline"] is None  # a Hub id may be downloaded
    # Finished: only the model, the marker, the run record and the samples stay in the checkpoints.
    assert checkpoint_names(opt_ml) == ["lora-run.json", "pokemon.safetensors", "sample", "training-complete.json"]
    out = capsys.readouterr().out
    metrics = [line for line in out.splitlines() if line.startswith("lora-metrics")]
    # One line per step with that step's own loss, the last step included (the fake draws its bar
    # as kohya does: update(1) with the previous loss, then set_postfix with the new one).
    assert [line.split(" seconds_per_step=")[0] for line in metrics] == [
        f"lora-metrics step={epoch * 30 + step} epoch={epoch + 1} loss=0.{epoch + 1}{step:02d}" for epoch in range(2) for step in range(1, 31)
    ]
    assert all(0 <= float(line.split("seconds_per_step=")[1].split()[0]) < 5 for line in metrics)
    # 2 epochs of 30 steps on one GPU, as planned and as kohya (the fake) counted them.
    assert (metadata["gpus"], metadata["planned_steps_per_epoch"], metadata["kohya_steps_per_epoch"], metadata["steps"]) == (1, 30, 30, 60)
    assert "WARNING" not in out  # the negative control of the steps-per-epoch comparison
    assert not opt_ml.paths.failure.exists()


def test_resume_across_two_interruptions(opt_ml, image, monkeypatch, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "6", "mixed_precision": "fp16"})

    # First attempt: the instance is reclaimed after epoch 2, in the middle of saving epoch 3.
    monkeypatch.setenv("FAKE_KOHYA_DIE_AFTER_EPOCH", "2")
    monkeypatch.setenv("FAKE_KOHYA_PARTIAL_NEXT", "1")
    assert train(opt_ml, image) == 1
    assert "exit status 137" in opt_ml.failure()
    assert "lora-000003-state" in checkpoint_names(opt_ml)

    # Second attempt: resumes after epoch 2, drops the partial state, is reclaimed after epoch 4.
    monkeypatch.setenv("FAKE_KOHYA_DIE_AFTER_EPOCH", "4")
    monkeypatch.delenv("FAKE_KOHYA_PARTIAL_NEXT")
    assert train(opt_ml, image) == 1
    # kohya keeps two states; the older is the fallback should the newer not reach S3 whole.
    assert checkpoint_names(opt_ml) == ["lora-000003-state", "lora-000004-state", "lora-000004.safetensors", "lora-run.json", "sample"]

    # Third attempt: resumes after epoch 4 and finishes.
    monkeypatch.delenv("FAKE_KOHYA_DIE_AFTER_EPOCH")
    assert train(opt_ml, image) == 0

    runs = opt_ml.runs()
    assert [r["epochs_run"] for r in runs] == [[1, 2], [3, 4], [5, 6]]  # every epoch exactly once
    assert [r["argv"][r["argv"].index("--max_train_epochs") + 1] for r in runs] == ["6", "6", "6"]
    resumes = [r["argv"][r["argv"].index("--resume") + 1 :] if "--resume" in r["argv"] else [] for r in runs]
    assert [Path(r[0]).name if r else None for r in resumes] == [None, "lora-000002-state", "lora-000004-state"]
    assert [r[1:] for r in resumes] == [[], ["--initial_epoch", "3"], ["--initial_epoch", "5"]]
    out = capsys.readouterr().out
    assert "removed checkpoint lora-000003-state (scheduler.bin: unreadable" in out
    assert "removed checkpoint lora-000003-state (superseded by lora-000004-state)" in out
    assert "lora-metrics step=41 epoch=5 loss=0.501" in out  # steps count from the start of training
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert metadata["resumed_after_epoch"] == 4
    # kohya's last attempt counted only its own 20 steps; the model states all 60.
    assert read_metadata(opt_ml.paths.model / "lora.safetensors")["ss_steps"] == "60"
    assert metadata["steps"] == 60
    assert not opt_ml.paths.failure.exists()  # the interrupted attempts' reason is gone with them


def test_a_fresh_run_keeps_kohyas_step_count(opt_ml, image):
    # Negative control for the correction above: nothing to add when nothing was resumed.
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "3"})
    assert train(opt_ml, image) == 0
    assert read_metadata(opt_ml.paths.model / "lora.safetensors")["ss_steps"] == "30"


def test_a_crash_while_rewriting_the_model_header_is_retrained_and_cleaned(opt_ml, image, monkeypatch, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "4"})
    monkeypatch.setenv("FAKE_KOHYA_DIE_AFTER_EPOCH", "2")
    assert train(opt_ml, image) == 1
    monkeypatch.delenv("FAKE_KOHYA_DIE_AFTER_EPOCH")
    # The resumed attempt trains to the end; the rename of its ss_steps rewrite fails, as a kill would
    # stop it, leaving the model-sized temporary in the checkpoints.
    replace, failed = Path.replace, []

    def replace_failing_once(self, target):
        if self.name.endswith(".safetensors.tmp") and not failed:
            failed.append(self.name)
            raise OSError(28, "No space left on device")
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_failing_once)
    assert train(opt_ml, image) == 1
    assert failed == ["lora.safetensors.tmp"] and "lora.safetensors.tmp" in checkpoint_names(opt_ml)
    # The restarted job removes it and retrains from the newest state, epoch 3's.
    assert train(opt_ml, image) == 0
    assert [r["epochs_run"] for r in opt_ml.runs()] == [[1, 2], [3, 4], [4]]
    assert "removed checkpoint lora.safetensors.tmp (unfinished write)" in capsys.readouterr().out
    assert read_metadata(opt_ml.paths.model / "lora.safetensors")["ss_steps"] == "40"
    assert not [p for p in opt_ml.paths.root.rglob("*.tmp")]


def test_a_successful_attempt_removes_an_earlier_failure(opt_ml, image, monkeypatch):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "2"})
    monkeypatch.setenv("FAKE_KOHYA_DIE_AFTER_EPOCH", "1")
    assert train(opt_ml, image) == 1
    assert opt_ml.failure().startswith("kohya-ss train_network.py failed with exit status 137")
    monkeypatch.delenv("FAKE_KOHYA_DIE_AFTER_EPOCH")
    assert train(opt_ml, image) == 0
    assert not opt_ml.paths.failure.exists()


def test_the_metadata_records_the_batch_sizes_the_toml_set(opt_ml, image):
    opt_ml.captioned_images(2, opt_ml.dataset / "a")
    opt_ml.captioned_images(3, opt_ml.dataset / "b")
    (opt_ml.dataset / "dataset.toml").write_text(
        "[[datasets]]\nbatch_size = 2\n[[datasets.subsets]]\nimage_dir = 'a'\nnum_repeats = 2\n"
        "[[datasets]]\nbatch_size = 3\n[[datasets.subsets]]\nimage_dir = 'b'\n"
    )
    opt_ml.hyperparameters({"max_train_epochs": "1", "num_repeats": "3"})
    assert train(opt_ml, image) == 0
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert metadata["hyperparameters"]["train_batch_size"] == [2, 3]  # not the hyperparameter's 1
    assert metadata["hyperparameters"]["num_repeats"] == [2, 3]
    assert metadata["dataset"]["batch_size"] == [2, 3]
    assert metadata["planned_steps_per_epoch"] == 2 + 3  # ceil(2 x 2 / 2) + ceil(3 x 3 / 3)


def test_a_completed_run_is_not_trained_again(opt_ml, image):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "2"})
    assert train(opt_ml, image) == 0
    model = (opt_ml.paths.model / "lora.safetensors").read_bytes()
    for path in opt_ml.paths.model.iterdir():
        path.unlink()
    # SageMaker restarted the job after training ended (e.g. during the upload of the model).
    assert train(opt_ml, image) == 0
    assert len(opt_ml.runs()) == 1
    assert (opt_ml.paths.model / "lora.safetensors").read_bytes() == model
    assert json.loads((opt_ml.paths.model / "training-metadata.json").read_text())["reused_completed_model"] is True


def test_a_final_model_without_the_completion_marker_is_trained_again(opt_ml, image):
    # Negative control: a model file alone (maybe cut short by the interruption) proves nothing.
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "1"})
    opt_ml.paths.checkpoints.mkdir(parents=True)
    (opt_ml.paths.checkpoints / "lora.safetensors").write_bytes(safetensors_bytes()[:-2])
    assert train(opt_ml, image) == 0
    assert len(opt_ml.runs()) == 1


def test_checkpoints_of_another_run_are_not_resumed(opt_ml, image):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "2", "learning_rate": "1e-4"})
    assert train(opt_ml, image) == 0
    opt_ml.hyperparameters({"max_train_epochs": "2", "learning_rate": "2e-4"})
    assert train(opt_ml, image) == 1
    assert opt_ml.failure().startswith("The checkpoint location holds the state of a different run")
    assert len(opt_ml.runs()) == 1


def test_a_base_model_channel_trains_offline(opt_ml, image):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "1"})
    model = opt_ml.paths.channel("base_model") / "chilloutmix_NiPrunedFp32Fix.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(safetensors_bytes())
    assert train(opt_ml, image) == 0
    [run] = opt_ml.runs()
    assert run["hf_offline"] == "1"
    assert run["argv"][run["argv"].index("--pretrained_model_name_or_path") + 1] == str(model)
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert metadata["base_model"] == {"kind": "single file", "name": "chilloutmix_NiPrunedFp32Fix.safetensors"}
    # The hyperparameter's default Hub id was not used, so it is not what the metadata names.
    assert metadata["hyperparameters"]["base_model"] == "chilloutmix_NiPrunedFp32Fix.safetensors"


@pytest.mark.parametrize(
    "layout, expected",
    [
        ({"sd/model_index.json": "{}", "sd/unet/config.json": "{}"}, "diffusers folder"),
        ({"a.ckpt": "x", "readme.md": "x"}, "single file"),
    ],
)
def test_base_model_channel_layouts(opt_ml, image, layout, expected):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "1"})
    for name, content in layout.items():
        path = opt_ml.paths.channel("base_model") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    assert train(opt_ml, image) == 0
    assert json.loads((opt_ml.paths.model / "training-metadata.json").read_text())["base_model"]["kind"] == expected


@pytest.mark.parametrize(
    "setup, hyperparameters, failure",
    [
        (None, {"network_dim": "0", "xformers": "true"}, 'Invalid hyperparameters (2 problems): "network_dim": must be at least 1, not "0"; "xformers": is set by the container'),
        ("no images", {}, "The dataset folder has no images"),
        ("two base models", {}, "The base_model channel holds 2 model files (a.safetensors, b.safetensors)"),
        ("channel and id", {"base_model": "owner/model"}, "Both a base_model channel and the base_model hyperparameter (owner/model) are given"),
        ("trainer crash", {}, "kohya-ss train_network.py failed with exit status 3: RuntimeError: CUDA out of memory."),
        ("bad json", None, "hyperparameters.json is not JSON"),
        ("shuffle and cache", {"model_type": "sdxl", "network_train_unet_only": "true", "cache_text_encoder_outputs": "true"}, "cache_text_encoder_outputs cannot be combined with shuffle_caption"),
    ],
)
def test_every_failure_leaves_a_reason_for_sagemaker(opt_ml, image, monkeypatch, setup, hyperparameters, failure):
    if setup != "no images":
        opt_ml.captioned_images(1)
    if setup in ("two base models", "channel and id"):
        for name in ("a.safetensors", "b.safetensors")[: 2 if setup == "two base models" else 1]:
            path = opt_ml.paths.channel("base_model") / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(safetensors_bytes())
    if setup == "trainer crash":
        monkeypatch.setenv("FAKE_KOHYA_EXIT", "3")
    if setup == "shuffle and cache":
        (opt_ml.dataset / "dataset.toml").write_text("[general]\nshuffle_caption = true\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n")
    if setup == "bad json":
        opt_ml.paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
        opt_ml.paths.hyperparameters.write_text("{")
    else:
        opt_ml.hyperparameters(hyperparameters)
    assert train(opt_ml, image) == 1
    assert opt_ml.failure().startswith(failure)
    assert len(opt_ml.failure()) <= 1024
    assert not (opt_ml.paths.model / "lora.safetensors").exists()
    assert len(opt_ml.runs()) == (1 if setup == "trainer crash" else 0)  # mistakes are caught before training


def test_the_failure_reason_is_cut_to_sagemakers_limit(opt_ml, image):
    opt_ml.hyperparameters({f"unknown_{index:03d}": "1" for index in range(60)})
    assert train(opt_ml, image) == 1
    assert len(opt_ml.failure()) == 1024


def test_an_unexpected_error_is_still_reported(opt_ml, image):
    opt_ml.captioned_images(1)
    trainer = Trainer(command=["/nonexistent/trainer"], gpus=1)
    assert train(opt_ml, image, trainer) == 1
    assert opt_ml.failure().startswith("Internal error in the training entrypoint: FileNotFoundError")


def test_only_the_train_argument_is_accepted(opt_ml, image):
    assert main(["serve"], opt_ml.paths, image, fake_trainer()) == 2
    assert "run it with the argument 'train'" in opt_ml.failure()


def test_sigterm_reaches_the_trainer(opt_ml, tmp_path):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({})
    marker = tmp_path / "trainer-got-sigterm"
    env = dict(os.environ, FAKE_KOHYA_HANG=str(marker))
    process = subprocess.Popen(
        [sys.executable, str(RUN_ENTRYPOINT), str(opt_ml.paths.root), str(opt_ml.paths.work)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 20
    while not Path(str(marker) + ".ready").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() is not None else "timeout"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert marker.read_text() == "SIGTERM received"
    assert process.returncode == 143
    assert "received SIGTERM; stopping the trainer" in output
    assert opt_ml.failure().startswith("Stopped by SIGTERM during epoch 1")
    assert json.loads(opt_ml.log.read_text().splitlines()[0])["epochs_run"] == []


def test_sigterm_before_training_starts_nothing(opt_ml, image):
    opt_ml.captioned_images(1)
    trainer = fake_trainer()
    trainer.forwarder.received = "SIGTERM"
    assert train(opt_ml, image, trainer) == 143
    assert opt_ml.runs() == []
    assert opt_ml.failure().startswith("Stopped by SIGTERM before training started")


def test_the_steps_per_epoch_are_saved_before_the_attempt_can_die(opt_ml, image, monkeypatch):
    # Resuming on several GPUs needs them, and a spot attempt may never reach its end.
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "4"})
    monkeypatch.setenv("FAKE_KOHYA_PROCESSES", "2")  # 10 batches an epoch, 5 on each GPU
    monkeypatch.setenv("FAKE_KOHYA_DIE_AFTER_EPOCH", "2")
    assert train(opt_ml, image, fake_trainer(gpus=2)) == 1
    record = json.loads((opt_ml.paths.checkpoints / "lora-run.json").read_text())
    assert (record["steps_per_epoch"], record["gpus"]) == (5, 2)
    monkeypatch.delenv("FAKE_KOHYA_DIE_AFTER_EPOCH")
    assert train(opt_ml, image, fake_trainer(gpus=2)) == 0
    second = opt_ml.runs()[1]["argv"]
    assert second[second.index("--resume") + 2 :] == ["--initial_step", "10"]
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert (metadata["gpus"], metadata["planned_steps_per_epoch"], metadata["kohya_steps_per_epoch"], metadata["steps"]) == (2, 5, 5, 20)


def test_steps_per_epoch_other_than_planned_are_warned_about(opt_ml, image, monkeypatch, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "2"})
    monkeypatch.setenv("FAKE_KOHYA_STEPS_PER_EPOCH", "7")  # kohya counted otherwise than buckets.py
    assert train(opt_ml, image) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("lora-trainer: WARNING: kohya reports"))
    assert lines[warning].startswith("lora-trainer: WARNING: kohya reports 7 steps per epoch on each of 1 GPU(s), the entrypoint planned 10: ")
    assert lines[warning - 1].startswith("override steps.")  # right after kohya's own line
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert (metadata["planned_steps_per_epoch"], metadata["kohya_steps_per_epoch"], metadata["steps"]) == (10, 7, 14)


@pytest.mark.parametrize("visible, expected", [("0,1,2", 3), ("1", 1), ("", None), ("all", None)])
def test_visible_gpus_decide_the_process_count(monkeypatch, visible, expected):
    from lora_trainer import main as entrypoint

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(entrypoint.subprocess, "run", lambda *a, **k: type("R", (), {"stdout": "GPU 0: A\nGPU 1: B\n"})())
    assert entrypoint._gpu_count() == (expected or 2)


def test_a_plan_without_resume_points_is_announced(opt_ml, image, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "3", "save_every_n_epochs": "3"})
    assert train(opt_ml, image) == 0
    assert "WARNING: 3 epoch(s) with a state every 3: no resume point" in capsys.readouterr().out


def test_latent_caching_refuses_image_augmentation_before_training(opt_ml, image):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({})
    (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\ncolor_aug = true\n")
    assert train(opt_ml, image) == 1
    assert opt_ml.failure().startswith("cache_latents cannot be combined with color_aug in dataset.toml")
    assert opt_ml.runs() == []
    opt_ml.hyperparameters({"cache_latents": "false"})  # control: without caching it trains
    assert train(opt_ml, image) == 0


def test_default_repeats_are_lowered_for_a_large_dataset(opt_ml, image):
    opt_ml.captioned_images(50)
    opt_ml.hyperparameters({"max_train_steps": "100"})
    assert train(opt_ml, image) == 0
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    # 10 repeats would be one 500-step epoch; 1 repeat gives 2 epochs of 50 steps.
    assert (metadata["dataset"]["subsets"][0]["num_repeats"], metadata["epochs"]) == (1, 2)


def test_without_nvidia_smi_one_process_is_started_and_said(monkeypatch, capsys):
    from lora_trainer import main as entrypoint

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert entrypoint._gpu_count() == 1
    assert "cannot list the GPUs" in capsys.readouterr().out
