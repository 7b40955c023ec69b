"""The bad-input corpus: every bad input the course has met, through the CLI, in
one process (issue 21).

Each case builds its input in a fresh folder, runs one `vlmlib` command, and asserts
the exit status, that a refusal is one line naming the file, folder or key at fault,
and that every file that existed before the command (the corpus and the trained run
it reads) is byte-identical afterwards. Inputs the course accepts (CMYK, RGBA, 16-bit
grayscale, a large photo, a folder of images) are here too: they must keep working.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmlib.cli import main

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """One bad (or odd but valid) input: how to make it, the command, and what must come out."""

    make: Callable[
        [Path, Path], list[str]
    ]  # (corpus folder, trained run) -> the command's arguments
    exit_code: int
    expected: tuple[
        str, ...
    ]  # texts the one-line error (or, for exit 0, stdout) must hold; {corpus} and {run} expand


def _image(
    name: str, mode: str = "RGB", size: tuple[int, int] = (160, 120), **save
) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        Image.new(mode, size, color=None if mode.startswith("I") else "white").save(path, **save)
        return path

    return make


def _predict(make_image: Callable[[Path], Path]) -> Callable[[Path, Path], list[str]]:
    return lambda corpus, run: ["predict", "--model", str(run), "--image", str(make_image(corpus))]


def _file(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return make


def _sixteen_bit_gray(folder: Path) -> Path:
    path = folder / "gray16.png"
    Image.fromarray((np.arange(120 * 160).reshape(120, 160) % 65536).astype(np.uint16)).save(path)
    return path


def _folder_of_images(folder: Path) -> Path:
    images = folder / "photos"
    images.mkdir()
    for name in ("a.jpg", "b.PNG"):
        Image.new("RGB", (160, 120), "white").save(images / name)
    (images / "notes.txt").write_text("not an image")
    return images


def _copy_of_run(corpus: Path, run: Path, damage: Callable[[Path], None]) -> Path:
    copy = corpus / "damaged_run"
    shutil.copytree(run, copy)
    damage(copy)
    return copy


def _evaluate_damaged(damage: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    return lambda corpus, run: [
        "evaluate",
        "--model",
        str(_copy_of_run(corpus, run, damage)),
        "--limit",
        "1",
    ]


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])

    return damage


def _folder_with_notes(corpus: Path) -> Path:
    documents = corpus / "mydocs"
    documents.mkdir()
    (documents / "notes.txt").write_text("my notes")
    return documents


def _half_written_checkpoint(corpus: Path) -> Path:
    checkpoint = corpus / "killed_run" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_model.safetensors").write_bytes(b"\x08\x00")
    return corpus / "killed_run"


CASES: dict[str, Case] = {
    # --- images (predict) ---
    "corrupt image": Case(
        _predict(_file("broken.jpg", b"not a jpeg")), 2, ("{corpus}/broken.jpg does not open",)
    ),
    "zero-byte image": Case(
        _predict(_file("empty.png", b"")), 2, ("{corpus}/empty.png does not open",)
    ),
    "missing image": Case(
        lambda corpus, run: ["predict", "--model", str(run), "--image", str(corpus / "nope.png")],
        2,
        ("image {corpus}/nope.png does not exist",),
    ),
    "decompression bomb": Case(
        _predict(_image("bomb.png", "1", (20000, 20000))),
        2,
        ("{corpus}/bomb.png", "20000x20000", "limit of"),
    ),
    "1x1 image": Case(
        _predict(_image("dot.png", size=(1, 1))), 2, ("{corpus}/dot.png", "1x1", "28")
    ),
    "extreme aspect ratio": Case(
        _predict(_image("strip.png", size=(8000, 30))), 2, ("{corpus}/strip.png", "200")
    ),
    "folder without images": Case(
        lambda corpus, run: ["predict", "--model", str(run), "--image", str(corpus)],
        2,
        ("folder {corpus} holds no image file",),
    ),
    "CMYK JPEG": Case(_predict(_image("cmyk.jpg", "CMYK")), 0, ("{corpus}/cmyk.jpg: ",)),
    "RGBA PNG": Case(_predict(_image("rgba.png", "RGBA")), 0, ("{corpus}/rgba.png: ",)),
    "16-bit grayscale PNG": Case(_predict(_sixteen_bit_gray), 0, ("{corpus}/gray16.png: ",)),
    "large photo": Case(
        _predict(_image("large.jpg", size=(4000, 3000))), 0, ("{corpus}/large.jpg: ",)
    ),
    "folder of images": Case(
        lambda corpus, run: [
            "predict",
            "--model",
            str(run),
            "--image",
            str(_folder_of_images(corpus)),
        ],
        0,
        ("{corpus}/photos/a.jpg: ", "{corpus}/photos/b.PNG: "),
    ),
    # --- run folders (evaluate, predict) ---
    "empty run folder": Case(
        lambda corpus, run: ["evaluate", "--model", str(corpus)],
        2,
        ("{corpus} has no vlmlib_config.yaml",),
    ),
    "missing adapter weights": Case(
        _evaluate_damaged(lambda run: (run / "adapter_model.safetensors").unlink()),
        2,
        ("damaged_run has no adapter_model.safetensors",),
    ),
    "truncated adapter weights": Case(
        _evaluate_damaged(_truncate("adapter_model.safetensors")),
        2,
        ("damaged_run/adapter_model.safetensors is truncated or corrupt",),
    ),
    "corrupt adapter_config.json": Case(
        _evaluate_damaged(_truncate("adapter_config.json")),
        2,
        ("damaged_run/adapter_config.json is not valid JSON",),
    ),
    # --- configs ---
    "misspelt key": Case(
        lambda corpus, run: ["show-config", "--set", "training.learning_rte=1"],
        2,
        ("unknown key 'training.learning_rte'",),
    ),
    "wrong type": Case(
        lambda corpus, run: ["show-config", "--set", "training.max_steps=many"],
        2,
        ("training.max_steps", "many"),
    ),
    "unknown config": Case(
        lambda corpus, run: ["train", "--config", "no-such-config"],
        2,
        ("unknown config 'no-such-config'",),
    ),
    # --- outputs that hold work (never lose it) ---
    "merge into a folder with notes": Case(
        lambda corpus, run: [
            "merge-lora",
            "--model",
            str(run),
            "--output",
            str(_folder_with_notes(corpus)),
        ],
        2,
        ("--output {corpus}/mydocs already holds 1 entry: notes.txt", "--overwrite"),
    ),
    "merge into its own run": Case(
        lambda corpus, run: ["merge-lora", "--model", str(run), "--output", str(run)],
        2,
        ("is inside the input",),
    ),
    "train over a finished run": Case(
        lambda corpus, run: ["train", "--output-dir", str(run)],
        2,
        ("already holds", "--resume", "--overwrite"),
    ),
    "train into a file": Case(
        lambda corpus, run: ["train", "--output-dir", str(_file("run.txt", b"x")(corpus))],
        2,
        ("--output-dir {corpus}/run.txt is a file",),
    ),
    "resume with only a half-written checkpoint": Case(
        lambda corpus, run: [
            "train",
            "--output-dir",
            str(_half_written_checkpoint(corpus)),
            "--resume",
        ],
        2,
        ("killed_run holds no complete checkpoint", "checkpoint-4: no optimizer.pt"),
    ),
}


def _snapshot(*folders: Path) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_clear_line_and_loses_nothing(
    name: str, cli_run_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    case = CASES[name]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    monkeypatch.chdir(
        tmp_path
    )  # a command that wrote to its default output folder would write here, visibly
    arguments = case.make(corpus, cli_run_dir)
    before = _snapshot(corpus, cli_run_dir)
    names_before = sorted(path.name for path in tmp_path.iterdir())

    code = main(arguments)

    output = capsys.readouterr()
    expected = [text.format(corpus=corpus, run=cli_run_dir) for text in case.expected]
    assert code == case.exit_code, output.err[-2000:]
    if case.exit_code == 0:
        assert all(text in output.out for text in expected), output.out
    else:
        assert output.err.count("\n") == 1 and "Traceback" not in output.err, output.err[-2000:]
        assert output.err.startswith(f"vlmlib {arguments[0]}: error: ")
        assert all(text in output.err for text in expected), output.err
    assert _snapshot(corpus, cli_run_dir) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == names_before
