import json
import struct

import pytest

from fake_kohya import safetensors_bytes, save_state
from lora_trainer.checkpoints import clean_finished, file_problem, plan_resume, safetensors_problem, state_problem


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_whole_state_is_complete(tmp_path):
    save_state(tmp_path / "s", 2, fp16=True)
    assert state_problem(tmp_path / "s", fp16=True) is None


def test_fp16_needs_the_gradient_scaler(tmp_path):
    save_state(tmp_path / "s", 2, fp16=False)
    assert state_problem(tmp_path / "s", fp16=False) is None
    assert state_problem(tmp_path / "s", fp16=True) == "scaler.pt: missing"


@pytest.mark.parametrize(
    "name, damage, problem",
    [
        ("random_states_0.pkl", "delete", "random_states_0.pkl: missing"),
        ("optimizer.bin", "truncate", "optimizer.bin: unreadable"),
        ("scheduler.bin", "empty", "scheduler.bin: empty"),
        ("model.safetensors", "truncate", "model.safetensors: data cut short"),
        ("train_state.json", "truncate", "train_state.json: unreadable"),
    ],
)
def test_any_damaged_file_makes_the_state_incomplete(tmp_path, name, damage, problem):
    save_state(tmp_path / "s", 2, fp16=False)
    target = tmp_path / "s" / name
    if damage == "delete":
        target.unlink()
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(target.read_bytes()[:-3])
    assert state_problem(tmp_path / "s", fp16=False).startswith(problem)


def test_train_state_needs_its_epoch(tmp_path):
    save_state(tmp_path / "s", 2, fp16=False)
    (tmp_path / "s" / "train_state.json").write_text(json.dumps({"current_step": 3}))
    assert state_problem(tmp_path / "s", fp16=False) == "train_state.json: no current_epoch"


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x01\x02", "truncated header length"),
        (struct.pack("<Q", 500) + b"{}", "truncated header"),
        (struct.pack("<Q", 2) + b"[]", "header is not a JSON object"),
        (struct.pack("<Q", 3) + b"{x}", "header is not JSON"),
        (safetensors_bytes()[:-1], "data cut short"),
    ],
)
def test_safetensors_structure(tmp_path, content, problem):
    path = tmp_path / "m.safetensors"
    path.write_bytes(content)
    assert safetensors_problem(path).startswith(problem)


def test_whole_safetensors_and_missing_files(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(safetensors_bytes())
    assert file_problem(tmp_path / "m.safetensors") is None
    assert file_problem(tmp_path / "absent.safetensors") == "missing"


def test_resume_picks_the_newest_complete_state_and_keeps_only_it(tmp_path):
    for epoch in (1, 2):
        save_state(tmp_path / f"lora-{epoch:06d}-state", epoch, fp16=True)
        (tmp_path / f"lora-{epoch:06d}.safetensors").write_bytes(safetensors_bytes())
    save_state(tmp_path / "lora-000003-state", 3, fp16=True, partial=True)  # interrupted while saving
    (tmp_path / "lora-000003.safetensors").write_bytes(safetensors_bytes())
    (tmp_path / "other-000009-state").mkdir()  # another output name: not ours to touch
    plan = plan_resume(tmp_path, "lora", fp16=True)
    assert (plan.state.path.name, plan.state.epoch) == ("lora-000002-state", 2)
    assert plan.removed == (
        "lora-000003-state (scheduler.bin: unreadable (File is not a zip file))",
        "lora-000001-state (superseded by lora-000002-state)",
        "lora-000001.safetensors (intermediate model without its state)",
        "lora-000003.safetensors (intermediate model without its state)",
    )
    assert names(tmp_path) == ["lora-000002-state", "lora-000002.safetensors", "other-000009-state"]


def test_no_usable_state_means_a_fresh_start(tmp_path):
    save_state(tmp_path / "lora-000001-state", 1, fp16=False, partial=True)
    (tmp_path / "lora-state").mkdir()  # end-of-training state: kohya cannot resume from it
    plan = plan_resume(tmp_path, "lora", fp16=False)
    assert plan.state is None
    assert names(tmp_path) == []
    assert plan_resume(tmp_path / "absent", "lora", fp16=False).state is None


def test_output_names_with_regex_characters_match_literally(tmp_path):
    save_state(tmp_path / "my.lora-000004-state", 4, fp16=False)
    save_state(tmp_path / "myXlora-000005-state", 5, fp16=False)
    assert plan_resume(tmp_path, "my.lora", fp16=False).state.epoch == 4


def test_temporaries_of_interrupted_writes_are_removed(tmp_path):
    # A kill during files.write_atomically leaves '<name>.tmp', which S3 would otherwise keep.
    save_state(tmp_path / "lora-000001-state", 1, fp16=False)
    (tmp_path / "lora.safetensors.tmp").write_bytes(safetensors_bytes())
    (tmp_path / "lora-run.json.tmp").write_text("{")
    plan = plan_resume(tmp_path, "lora", fp16=False)
    assert plan.state.epoch == 1
    assert plan.removed == ("lora-run.json.tmp (unfinished write)", "lora.safetensors.tmp (unfinished write)")
    assert names(tmp_path) == ["lora-000001-state"]
    (tmp_path / "training-complete.json.tmp").write_text("{")
    assert clean_finished(tmp_path, "lora") == ["training-complete.json.tmp", "lora-000001-state"]
    assert names(tmp_path) == []


def test_the_samples_folder_survives_resume_planning_and_the_final_clean_up(tmp_path):
    # kohya's samples (a folder named "sample", whatever the output name) outlive every state.
    for epoch in (1, 2):
        save_state(tmp_path / f"sample-{epoch:06d}-state", epoch, fp16=False)
    (tmp_path / "sample-000002.safetensors").write_bytes(safetensors_bytes())
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "sample_e000001_00_20260101000000_1234.png").write_bytes(b"png")
    plan = plan_resume(tmp_path, "sample", fp16=False)
    assert plan.state.epoch == 2 and "sample-000001-state (superseded by sample-000002-state)" in plan.removed
    assert "sample" in names(tmp_path)
    (tmp_path / "sample.safetensors").write_bytes(safetensors_bytes())
    # Negative control: the states and the intermediate model go, the samples stay.
    assert sorted(clean_finished(tmp_path, "sample")) == ["sample-000002-state", "sample-000002.safetensors"]
    assert names(tmp_path) == ["sample", "sample.safetensors"]
    assert names(tmp_path / "sample") == ["sample_e000001_00_20260101000000_1234.png"]
