"""Tests for the command line: help, make-tiny, show-config, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlmlib.cli import main


def test_python_m_vlmlib_help_lists_the_commands():
    result = subprocess.run(
        [sys.executable, "-m", "vlmlib", "--help"], capture_output=True, text=True, check=True
    )
    assert "make-tiny" in result.stdout and "show-config" in result.stdout


def test_make_tiny_prints_where_it_cached_the_assets(
    tiny_config, tiny_assets, capsys: pytest.CaptureFixture[str]
):
    # tiny_config points VLM_CACHE_DIR at this session's folder; the overrides
    # match it, so nothing is rebuilt.
    code = main(
        [
            "make-tiny",
            "--set",
            "data.synthetic_num_train=24",
            "--set",
            "data.synthetic_num_val=8",
            "--set",
            "tiny.pretrain_steps=0",
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    assert str(tiny_assets[0]) in output and str(tiny_assets[1]) in output
    assert "tiny model parameters:" in output


def test_show_config_prints_the_resolved_yaml(capsys: pytest.CaptureFixture[str]):
    assert main(["show-config", "--config", "lightweight", "--set", "training.seed=5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lora"]["r"] == 8 and printed["training"]["seed"] == 5


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["show-config", "--set", "training.learning_rte=1"],
            "unknown key 'training.learning_rte'",
        ),
        (["show-config", "--config", "no-such-config"], "unknown config 'no-such-config'"),
        (["show-config", "--config", "missing.yaml"], "config file missing.yaml does not exist"),
    ],
    ids=["unknown-key", "unknown-named-config", "missing-file"],
)
def test_cli_bad_input_gives_one_line_error_and_exit_2(
    arguments: list[str], expected: str, capsys: pytest.CaptureFixture[str]
):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert expected in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_cli_bad_yaml_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    assert main(["show-config", "--config", str(path)]) == 2
    assert "bad.yaml must hold a mapping" in capsys.readouterr().err


def test_train_command_saves_a_run_folder(cli_run_dir: Path):
    assert (cli_run_dir / "adapter_model.safetensors").exists() and (
        cli_run_dir / "vlmlib_config.yaml"
    ).exists()


def test_evaluate_command_writes_a_json_report(
    cli_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import json

    output = tmp_path / "report.json"
    assert (
        main(["evaluate", "--model", str(cli_run_dir), "--limit", "2", "--output", str(output)])
        == 0
    )
    report = json.loads(output.read_text())
    assert report["num_images"] == 2 and 0.0 <= report["parse_failure_rate"] <= 1.0
    assert f"report written to {output}" in capsys.readouterr().out


def test_predict_command_prints_boxes_and_saves_annotated_images(
    cli_run_dir: Path, tmp_path: Path, capsys
):
    from PIL import Image

    image_path = tmp_path / "product.png"
    Image.new("RGB", (160, 120), "white").save(image_path)
    assert (
        main(
            [
                "predict",
                "--model",
                str(cli_run_dir),
                "--image",
                str(image_path),
                "--save-dir",
                str(tmp_path / "drawn"),
            ]
        )
        == 0
    )
    assert str(image_path) in capsys.readouterr().out
    assert (tmp_path / "drawn" / "product_boxes.png").exists()


def test_merge_lora_command_checks_and_reports_equivalence(
    cli_run_dir: Path, tmp_path: Path, capsys
):
    assert (
        main(
            [
                "merge-lora",
                "--model",
                str(cli_run_dir),
                "--output",
                str(tmp_path / "merged"),
                "--num-check",
                "2",
            ]
        )
        == 0
    )
    assert "2 of 2 greedy answers identical" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["evaluate", "--model", "no/such/folder"], "model folder no/such/folder does not exist"),
        (
            ["predict", "--model", "no/such/folder", "--image", "missing.png"],
            "image missing.png does not exist",
        ),
        (
            ["merge-lora", "--model", "no/such/folder", "--output", "out"],
            "has no adapter_config.json",
        ),
        (["train", "--set", "training.learning_rte=1"], "unknown key 'training.learning_rte'"),
    ],
    ids=[
        "evaluate-missing-model",
        "predict-missing-image",
        "merge-missing-adapter",
        "train-unknown-key",
    ],
)
def test_pipeline_commands_bad_input_gives_one_line_error(
    command: list[str], expected: str, capsys
):
    assert main(command) == 2
    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1


def test_predict_command_names_an_image_that_does_not_open(
    cli_run_dir: Path, tmp_path: Path, capsys
):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert main(["predict", "--model", str(cli_run_dir), "--image", str(broken)]) == 2
    assert f"image {broken} does not open" in capsys.readouterr().err


# --- never lose a user's work: refusals happen before anything loads, and touch nothing ---


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_merge_lora_refuses_an_output_folder_that_holds_work(
    cli_run_dir: Path, tmp_path: Path, capsys
):
    documents = tmp_path / "mydocs"
    documents.mkdir()
    (documents / "notes.txt").write_text("x")
    assert (
        main(
            [
                "merge-lora",
                "--model",
                str(cli_run_dir),
                "--output",
                str(documents),
                "--num-check",
                "1",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "mydocs already holds 1 entry: notes.txt" in error and "--overwrite" in error
    assert error.count("\n") == 1 and _snapshot(documents) == {"notes.txt": b"x"}


def test_merge_lora_refuses_to_write_into_its_own_run(cli_run_dir: Path, capsys):
    before = _snapshot(cli_run_dir)
    for output in (cli_run_dir, cli_run_dir / "merged"):
        assert main(["merge-lora", "--model", str(cli_run_dir), "--output", str(output)]) == 2
        assert "is inside the input" in capsys.readouterr().err
    assert _snapshot(cli_run_dir) == before


def test_merge_lora_overwrite_replaces_the_folder(cli_run_dir: Path, tmp_path: Path, capsys):
    output = tmp_path / "merged"
    output.mkdir()
    (output / "old.txt").write_text("old")
    assert (
        main(
            [
                "merge-lora",
                "--model",
                str(cli_run_dir),
                "--output",
                str(output),
                "--num-check",
                "1",
                "--overwrite",
            ]
        )
        == 0
    )
    assert not (output / "old.txt").exists() and (output / "config.json").exists()
    assert not list(tmp_path.glob(".merged.*"))  # no staging or retired folder left behind


def test_train_refuses_a_folder_that_holds_a_finished_run(cli_run_dir: Path, capsys):
    before = _snapshot(cli_run_dir)
    assert main(["train", "--set", "tiny.pretrain_steps=0", "--output-dir", str(cli_run_dir)]) == 2
    error = capsys.readouterr().err
    assert "already holds" in error and "--resume" in error and "--overwrite" in error
    assert _snapshot(cli_run_dir) == before


def test_write_folder_atomically_keeps_the_old_result_when_writing_fails(tmp_path: Path):
    from vlmlib.outputs import write_folder_atomically

    target = tmp_path / "result"
    write_folder_atomically(target, lambda folder: (folder / "model.txt").write_text("old"))

    def fail_halfway(folder: Path) -> None:
        (folder / "model.txt").write_text("half")
        raise KeyboardInterrupt  # a Ctrl-C during the save

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(target, fail_halfway, overwrite=True)
    assert _snapshot(target) == {"model.txt": b"old"} and sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["result"]


# --- issue 21: every bad input gets one clear line, and nothing is lost ---


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], *expected: str) -> None:
    error = capsys.readouterr().err
    assert (
        error.startswith("vlmlib predict: error: ")
        and error.count("\n") == 1
        and "Traceback" not in error
    )
    for text in expected:
        assert text in error


@pytest.mark.parametrize(
    ("side_px", "num_pixels"),
    [(20000, "400,000,000"), (10000, "100,000,000")],
    ids=["over-twice-the-limit", "between-limit-and-twice"],
)
def test_predict_refuses_a_decompression_bomb_in_one_line(
    tmp_path: Path, capsys, side_px: int, num_pixels: str
):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (side_px, side_px)).save(bomb)  # a few KB: 1-bit, all black
    before = _snapshot(tmp_path)
    assert (
        main(["predict", "--model", "no/such/folder", "--image", str(bomb)]) == 2
    )  # refused before the model
    _assert_one_line_error(
        capsys,
        str(bomb),
        f"{side_px}x{side_px} = {num_pixels} pixels",
        f"limit of {Image.MAX_IMAGE_PIXELS:,}",
    )
    assert _snapshot(tmp_path) == before


def test_predict_opens_a_16_bit_png_as_a_gradient_not_a_white_image(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from vlmlib.cli import _open_image_record

    path = tmp_path / "scan16.png"
    Image.fromarray((np.arange(64 * 256).reshape(64, 256) * 4).astype(np.uint16)).save(
        path
    )  # mode I;16
    pixels = np.asarray(_open_image_record(path)["image"])
    assert (
        len(np.unique(pixels)) == 256 and 120 < pixels.mean() < 135
    )  # clipping gives 64 values, mean ~255


@pytest.mark.parametrize("size_px", [(1, 1), (20, 300)], ids=["1x1", "20x300"])
def test_predict_refuses_an_image_smaller_than_one_token(
    tmp_path: Path, capsys, size_px: tuple[int, int]
):
    from PIL import Image

    from vlmlib.data import MIN_IMAGE_SIDE_PX

    tiny_image = tmp_path / "dot.png"
    Image.new("RGB", size_px, "white").save(tiny_image)
    before = _snapshot(tmp_path)
    assert main(["predict", "--model", "no/such/folder", "--image", str(tiny_image)]) == 2
    _assert_one_line_error(
        capsys,
        str(tiny_image),
        f"{size_px[0]}x{size_px[1]} px",
        f"smaller than {MIN_IMAGE_SIDE_PX} px",
    )
    assert _snapshot(tmp_path) == before


def test_predict_on_a_folder_predicts_each_image_in_name_order(
    cli_run_dir: Path, tmp_path: Path, capsys
):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.JPG", "a.png", "c.webp"):
        Image.new("RGB", (64, 48), "white").save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    before = _snapshot(folder)
    assert main(["predict", "--model", str(cli_run_dir), "--image", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{folder}: predicting its 3 image files" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == [
        str(folder / name) for name in ("a.png", "b.JPG", "c.webp")
    ]
    assert _snapshot(folder) == before


def test_predict_on_a_folder_without_images_says_so(tmp_path: Path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["predict", "--model", "no/such/folder", "--image", str(tmp_path)]) == 2
    _assert_one_line_error(capsys, f"folder {tmp_path} holds no image file", ".jpg")


def _break_run(run_dir: Path, how: str) -> str:
    """Break a copy of a run folder one way; return the file name the error must mention."""
    if how == "missing-adapter-weights":
        (run_dir / "adapter_model.safetensors").unlink()
        return "adapter_model.safetensors"
    if how == "corrupt-adapter-config":
        (run_dir / "adapter_config.json").write_text('{"r": 8,')
        return "adapter_config.json"
    if how == "truncated-adapter-weights":
        weights = run_dir / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        return "adapter_model.safetensors"
    (run_dir / "tokenizer_config.json").unlink()
    return "tokenizer_config.json"


@pytest.mark.parametrize(
    "how",
    [
        "missing-adapter-weights",
        "corrupt-adapter-config",
        "truncated-adapter-weights",
        "missing-processor-file",
    ],
)
def test_predict_with_a_broken_run_folder_names_the_file(
    cli_run_dir: Path, tmp_path: Path, capsys, how: str
):
    import shutil

    from PIL import Image

    run_dir = tmp_path / "run"
    shutil.copytree(cli_run_dir, run_dir)
    file_name = _break_run(run_dir, how)
    image_path = tmp_path / "product.png"
    Image.new("RGB", (64, 48), "white").save(image_path)
    before = _snapshot(tmp_path)
    assert main(["predict", "--model", str(run_dir), "--image", str(image_path)]) == 2
    _assert_one_line_error(capsys, str(run_dir), file_name, "a complete run folder holds")
    assert _snapshot(tmp_path) == before


def test_running_out_of_gpu_memory_gives_one_line_that_says_what_to_lower(monkeypatch, capsys):
    import torch

    import vlmlib.cli as cli

    def run_out_of_memory(arguments):
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"
        )

    monkeypatch.setitem(cli._COMMANDS, "show-config", run_out_of_memory)
    assert main(["show-config"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Tried to allocate 2.00 GiB" in error
    assert "training.per_device_train_batch_size" in error and "model.max_pixels" in error
