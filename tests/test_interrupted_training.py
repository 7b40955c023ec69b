"""Training that is killed or interrupted resumes exactly (issue 21, points 4 and 8).

Each run is a real subprocess that receives a real SIGKILL or SIGINT
(tests/scripts/train_then_interrupt.py), with warmup and a cosine schedule, so
the scheduler's state is part of what a resume must restore.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmlib.run_folders import find_resumable_checkpoint

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).parent / "scripts" / "train_then_interrupt.py"
NUM_STEPS, SAVE_STEPS = 4, 2
TRAIN_ARGUMENTS = [
    "--set",
    "data.synthetic_num_train=24",
    "--set",
    "data.synthetic_num_val=8",
    "--set",
    "tiny.pretrain_steps=0",
    "--set",
    f"training.max_steps={NUM_STEPS}",
    "--set",
    f"training.save_steps={SAVE_STEPS}",
    "--set",
    "training.per_device_train_batch_size=2",
    "--set",
    "training.logging_steps=1",
    "--set",
    "training.warmup_ratio=0.25",
    "--set",
    "training.lr_scheduler_type=cosine",
    "--set",
    "callbacks.iou_eval=false",
    "--set",
    "callbacks.console_log=false",
]


def _train(mode: str, step: int, output_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(DRIVER),
        mode,
        str(step),
        "--",
        *TRAIN_ARGUMENTS,
        "--output-dir",
        str(output_dir),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _final_learning_rate(run_dir: Path) -> float:
    state = json.loads((run_dir / f"checkpoint-{NUM_STEPS}" / "trainer_state.json").read_text())
    return [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry][
        -1
    ]


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_assets, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = _train("none", 0, output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def _assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    expected = load_file(uninterrupted / "adapter_model.safetensors")
    actual = load_file(resumed / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected), (
        "resumed weights differ"
    )
    assert _final_learning_rate(resumed) == _final_learning_rate(uninterrupted)


def test_sigkill_after_a_checkpoint_resumes_bit_identical(uninterrupted_run: Path, tmp_path: Path):
    output_dir = tmp_path / "run"
    killed = _train("sigkill-after-save", SAVE_STEPS, output_dir)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (output_dir / "adapter_model.safetensors").exists()  # the run never finished
    resumed = _train("none", 0, output_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {output_dir / f'checkpoint-{SAVE_STEPS}'}" in resumed.stderr
    _assert_same_run(output_dir, uninterrupted_run)


def test_sigkill_during_a_save_resumes_from_the_checkpoint_before(
    uninterrupted_run: Path, tmp_path: Path
):
    output_dir = tmp_path / "run"
    killed = _train("sigkill-during-save", 2 * SAVE_STEPS, output_dir)
    assert killed.returncode == -9, killed.stderr[-3000:]
    half_written = output_dir / f"checkpoint-{2 * SAVE_STEPS}"
    assert (half_written / "adapter_model.safetensors").exists() and not (
        half_written / "optimizer.pt"
    ).exists()
    assert find_resumable_checkpoint(output_dir)[0] == output_dir / f"checkpoint-{SAVE_STEPS}"

    resumed = _train("none", 0, output_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skipped {half_written}: incomplete (no optimizer.pt)" in resumed.stderr
    _assert_same_run(output_dir, uninterrupted_run)


def test_ctrl_c_prints_one_line_that_says_how_to_resume(tiny_assets, tmp_path: Path):
    output_dir = tmp_path / "run"
    interrupted = _train("sigint-after-save", SAVE_STEPS, output_dir)
    assert interrupted.returncode == 130
    # A progress bar may leave its last state without a newline before the
    # message (`\r` ends its lines).
    our_lines = [
        line[line.index("vlmlib train:") :]
        for line in interrupted.stderr.splitlines()
        if "vlmlib train:" in line
    ]
    assert our_lines == [
        f"vlmlib train: interrupted; the newest complete checkpoint is "
        f"{output_dir / f'checkpoint-{SAVE_STEPS}'}; run the same command with --resume to continue"
    ]
    assert "Traceback" not in interrupted.stderr and "KeyboardInterrupt" not in interrupted.stderr


def test_resume_refuses_a_named_checkpoint_that_is_half_written(tmp_path: Path, capsys):
    from vlmlib.cli import main

    checkpoint = tmp_path / "run" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_model.safetensors").write_bytes(b"\x08\x00")
    assert main(["train", "--output-dir", str(tmp_path / "run"), "--resume", str(checkpoint)]) == 2
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1
        and f"the checkpoint {checkpoint} is incomplete (no optimizer.pt)" in error
    )


def test_find_resumable_checkpoint_skips_broken_ones_newest_first(tmp_path: Path):
    from safetensors.torch import save_file

    def make_checkpoint(step: int, trainer_state: str = "{}") -> Path:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        save_file({"w": torch.zeros(2)}, folder / "adapter_model.safetensors")
        for name in ("optimizer.pt", "scheduler.pt"):
            (folder / name).write_bytes(b"x")
        (folder / "trainer_state.json").write_text(trainer_state)
        return folder

    make_checkpoint(2)
    complete = make_checkpoint(10)  # numerically after checkpoint-9, though not alphabetically
    make_checkpoint(9)
    half_json = make_checkpoint(20, trainer_state='{"log_hist')
    truncated = make_checkpoint(30)
    (truncated / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00")
    checkpoint, skipped = find_resumable_checkpoint(tmp_path)
    assert checkpoint == complete
    assert [item.path for item in skipped] == [truncated, half_json]
    assert (
        "is truncated or corrupt" in skipped[0].reason and "is not valid JSON" in skipped[1].reason
    )


def test_find_resumable_checkpoint_names_each_broken_one_when_none_is_complete(tmp_path: Path):
    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"holds no complete checkpoint to resume from \(checkpoint-5: no "
    ):
        find_resumable_checkpoint(tmp_path)
