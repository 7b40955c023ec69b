"""The command line: `vlmlib COMMAND` (or `python -m vlmlib COMMAND`).

Why: practitioners run the same pipeline as the chapters without opening a notebook.
Explained in: README, "From the command line".
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from vlmlib.config import Config, ConfigError, config_to_dict, list_named_configs, load_config

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["build_parser", "main"]


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help=f"named config ({', '.join(list_named_configs())}) or YAML file; repeat to layer them",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one value, e.g. --set training.max_steps=20",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="vlmlib", description="Fine-tune Qwen2-VL to find nutrition tables."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    make_tiny = commands.add_parser(
        "make-tiny", help="build and cache the tiny profile's model, processor and dataset"
    )
    _add_config_arguments(make_tiny)
    make_tiny.add_argument("--rebuild", action="store_true", help="delete the cached copies first")
    show_config = commands.add_parser("show-config", help="print the resolved config as YAML")
    _add_config_arguments(show_config)
    train = commands.add_parser(
        "train", help="fine-tune with SFTTrainer; saves adapter, processor and config together"
    )
    _add_config_arguments(train)
    train.add_argument(
        "--output-dir", type=Path, help="where to save (default: training.output_dir)"
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from the latest checkpoint in the output folder, or from CHECKPOINT",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in the output folder (its checkpoints are deleted)",
    )
    evaluate = commands.add_parser(
        "evaluate", help="score a trained model (or, without --model, the base model zero-shot)"
    )
    _add_config_arguments(evaluate)
    evaluate.add_argument(
        "--model", type=Path, help="a run folder from `vlmlib train` or `vlmlib merge-lora`"
    )
    evaluate.add_argument(
        "--split",
        choices=["eval", "train"],
        default="eval",
        help="which split to score (default: eval)",
    )
    evaluate.add_argument("--limit", type=int, help="score only the first N images")
    evaluate.add_argument(
        "--output",
        type=Path,
        help="JSON report path (default: MODEL/evaluation_SPLIT.json or outputs/)",
    )
    predict = commands.add_parser("predict", help="find the nutrition tables in image files")
    predict.add_argument(
        "--model",
        type=Path,
        required=True,
        help="a run folder from `vlmlib train` or `vlmlib merge-lora`",
    )
    predict.add_argument(
        "--image",
        type=Path,
        nargs="+",
        required=True,
        help="image files, or folders of them (.jpg .jpeg .png .webp .bmp)",
    )
    predict.add_argument(
        "--save-dir", type=Path, help="also save each image with its boxes drawn, here"
    )
    merge = commands.add_parser(
        "merge-lora",
        help="merge a run's LoRA adapter into the base model and check the answers match",
    )
    merge.add_argument("--model", type=Path, required=True, help="a run folder with an adapter")
    merge.add_argument("--output", type=Path, required=True, help="folder for the merged model")
    merge.add_argument(
        "--num-check",
        type=int,
        default=8,
        help="held-out images to compare answers on (default: 8)",
    )
    merge.add_argument(
        "--overwrite", action="store_true", help="replace --output if it already holds something"
    )
    make_labs = commands.add_parser(
        "make-labs", help="write labs/ from solutions/ (TODOs in place of the solution regions)"
    )
    make_labs.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if labs/ differs from what would be written",
    )
    make_labs.add_argument(
        "--solutions",
        type=Path,
        default=Path("solutions"),
        help="folder of solved labs (default: solutions)",
    )
    make_labs.add_argument(
        "--labs",
        type=Path,
        default=Path("labs"),
        help="folder to write the labs into (default: labs)",
    )
    return parser


def _build_profile_assets(config: Config) -> None:
    """Build the tiny profile's model and data if they are not in the cache yet
    (the full profile needs nothing).

    Why: the command line is where a profile is resolved into things to load
    (`vlmlib.sources`); the loaders only read the folders.
    """
    if config.profile == "tiny":
        from vlmlib.tiny import ensure_tiny_assets

        ensure_tiny_assets(config)


def _run_make_tiny(arguments: argparse.Namespace) -> int:
    from vlmlib.models import count_parameters
    from vlmlib.tiny import ensure_tiny_assets, tiny_model_dir

    config = load_config(*arguments.config, overrides=arguments.overrides, profile="tiny")
    started = time.perf_counter()
    model_dir, dataset_dir = ensure_tiny_assets(config, rebuild=arguments.rebuild)
    seconds = time.perf_counter() - started
    from transformers import Qwen2VLForConditionalGeneration

    counts = count_parameters(
        Qwen2VLForConditionalGeneration.from_pretrained(tiny_model_dir(config))
    )
    print(f"tiny model and processor: {model_dir}")
    print(f"synthetic dataset:        {dataset_dir}")
    print(
        f"tiny model parameters:    {counts.total:,} (vision tower {counts.vision_tower:,}, "
        f"patch merger {counts.patch_merger:,}, language model {counts.language_model:,})"
    )
    print(f"ready in {seconds:.1f} s")
    return 0


def _run_show_config(arguments: argparse.Namespace) -> int:
    config = load_config(*arguments.config, overrides=arguments.overrides)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0


def _run_make_labs(arguments: argparse.Namespace) -> int:
    from vlmlib.labs import make_labs

    report = make_labs(arguments.solutions, arguments.labs, is_check=arguments.check)
    for path in report.written:
        print(f"wrote {path}")
    for path in report.differing:
        print(f"out of date: {path}")
    for path in report.extra:
        print(f"no solution for: {path} (delete it, or add its solution to {arguments.solutions})")
    if report.is_in_sync:
        print(
            f"labs in sync with {arguments.solutions}: "
            f"{len(report.written) + len(report.unchanged)} files"
        )
        return 0
    print(f"{arguments.labs} differs from what {arguments.solutions} gives; run: vlmlib make-labs")
    return 1


def _run_train(arguments: argparse.Namespace) -> int:
    from vlmlib.outputs import check_output_folder
    from vlmlib.run_folders import find_resumable_checkpoint
    from vlmlib.training import resolve_checkpoint_to_resume, train

    config = load_config(*arguments.config, overrides=arguments.overrides)
    output_dir = arguments.output_dir or Path(config.training.output_dir)
    is_main_process = (
        os.environ.get("RANK", "0") == "0"
    )  # under torchrun/accelerate, only rank 0 speaks
    if (
        not arguments.resume
    ):  # checked before anything loads; resuming continues the run that is there
        check_output_folder(
            output_dir,
            overwrite=arguments.overwrite,
            what="--output-dir",
            how_to_continue="pass --resume to continue it, ",
        )
        if arguments.overwrite and is_main_process:
            for checkpoint in output_dir.glob(
                "checkpoint-*"
            ):  # the old run's: a later --resume must not find them
                shutil.rmtree(checkpoint)
    else:
        arguments.resume = str(
            resolve_checkpoint_to_resume(output_dir, arguments.resume)
        )  # before any load
    _build_profile_assets(config)
    if is_main_process:
        print(
            f"training ({config.profile} profile, collator {config.training.collator}, "
            f"{config.training.mask_strategy})"
        )
    try:
        run = train(config, output_dir=output_dir, resume_from_checkpoint=arguments.resume)
    except KeyboardInterrupt:
        try:
            checkpoint_dir, _ = find_resumable_checkpoint(output_dir)
            where = (
                f"the newest complete checkpoint is {checkpoint_dir}; run the same "
                "command with --resume to continue"
            )
        except FileNotFoundError:
            where = (
                f"no checkpoint was saved in {output_dir} yet (one is saved every "
                f"{config.training.save_steps} steps)"
            )
        if sys.stderr.isatty():
            print(file=sys.stderr)  # below the progress bar, which Ctrl-C left without its newline
        print(f"vlmlib train: interrupted; {where}", file=sys.stderr)
        return 130
    if is_main_process:
        print(f"saved adapter, processor and config to {run.output_dir}")
    return 0


def _run_evaluate(arguments: argparse.Namespace) -> int:
    from vlmlib.data import load_configured_splits
    from vlmlib.evaluation import evaluate_model

    if arguments.model is not None:
        from vlmlib.models import load_run

        model, processor, config = load_run(arguments.model, overrides=arguments.overrides)
    else:
        from vlmlib.models import load_model_and_processor

        config = load_config(*arguments.config, overrides=arguments.overrides)
        _build_profile_assets(config)
        model, processor = load_model_and_processor(config)
    split = load_configured_splits(config)[arguments.split]
    if arguments.limit is not None:
        split = split.select(range(min(arguments.limit, len(split))))
    report, _ = evaluate_model(model, processor, split, config, show_progress=True)
    output = (
        arguments.output
        or (arguments.model or Path(config.training.output_dir))
        / f"evaluation_{arguments.split}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    report.save_json(output)
    print(report.summary_table(name=str(arguments.model or "zero-shot")).T.to_string())
    print(f"report written to {output}")
    return 0


IMAGE_SUFFIXES = (
    ".bmp",
    ".jpeg",
    ".jpg",
    ".png",
    ".webp",
)  # what `predict --image FOLDER` picks up


def _expand_image_paths(paths: list[Path]) -> list[Path]:
    """Return the image files to predict: files as given, each folder replaced
    by its images (sorted by name).
    """
    expanded: list[Path] = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        images = sorted(
            child
            for child in path.iterdir()
            if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise FileNotFoundError(
                f"folder {path} holds no image file ({' '.join(IMAGE_SUFFIXES)}, any case)"
            )
        print(f"{path}: predicting its {len(images)} image files ({' '.join(IMAGE_SUFFIXES)})")
        expanded.extend(images)
    return expanded


def _open_image_file(path: Path) -> Image.Image:
    """Open and decode an image file, refusing one above PIL's
    decompression-bomb limit with its size.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():  # PIL only warns up to twice its limit; one rule is clearer
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            Image.MAX_IMAGE_PIXELS = None  # only to read the header's size for the message
            try:
                with Image.open(path) as header:
                    width, height = header.size
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            raise ValueError(
                f"image {path} is {width}x{height} = {width * height:,} pixels, over PIL's "
                f"limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS, a guard against "
                "decompression bombs); downscale it first"
            ) from None
    image.load()
    return image


def _open_image_record(path: Path) -> dict:
    """Return a Hub-schema-like record for an image file (no ground truth), or
    raise naming the file.
    """
    from PIL import UnidentifiedImageError

    from vlmlib.data import convert_image_to_rgb, find_image_size_problem

    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        image = _open_image_file(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"image {path} does not open ({error}); pass a JPEG or PNG file") from None
    size_problem = find_image_size_problem(image.width, image.height)
    if size_problem is not None:
        raise ValueError(f"image {path}: {size_problem}")
    image = convert_image_to_rgb(image)
    return {
        "image_id": path.stem,
        "image": image,
        "width": image.width,
        "height": image.height,
        "objects": {"bbox": [], "category_id": [], "category_name": []},
    }


def _run_predict(arguments: argparse.Namespace) -> int:
    from vlmlib.boxes import convert_qwen_box_to_xyxy
    from vlmlib.inference import generate_answers
    from vlmlib.models import load_run
    from vlmlib.parsing import parse_box_answer
    from vlmlib.viz import draw_boxes

    image_paths = _expand_image_paths(arguments.image)
    records = [
        _open_image_record(path) for path in image_paths
    ]  # fail on a bad file before loading the model
    model, processor, config = load_run(arguments.model)
    answers = generate_answers(
        model,
        processor,
        records,
        config.data.prompt,
        config.data.system_message,
        config.callbacks.max_new_tokens,
        show_progress=True,
    )
    for path, record, answer in zip(image_paths, records, answers):
        parsed = parse_box_answer(answer)
        boxes_xyxy = [
            convert_qwen_box_to_xyxy(box.box_qwen, record["width"], record["height"])
            for box in parsed.boxes
        ]
        described = "; ".join(
            f"{box.label} ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) px"
            for box, (x1, y1, x2, y2) in zip(parsed.boxes, boxes_xyxy)
        )
        print(f"{path}: {described or 'no box (' + str(parsed.failure_reason) + ')'}")
        if arguments.save_dir is not None:
            arguments.save_dir.mkdir(parents=True, exist_ok=True)
            drawn = draw_boxes(
                record["image"],
                predicted_xyxy=boxes_xyxy,
                predicted_labels=[box.label for box in parsed.boxes],
            )
            drawn.save(arguments.save_dir / f"{path.stem}_boxes.png")
    if arguments.save_dir is not None:
        print(f"annotated images written to {arguments.save_dir}")
    return 0


def _run_merge_lora(arguments: argparse.Namespace) -> int:
    from vlmlib.merging import merge_lora

    report = merge_lora(
        arguments.model,
        arguments.output,
        num_check_records=arguments.num_check,
        overwrite=arguments.overwrite,
    )
    print(f"merged model written to {report.output_dir}")
    print(
        f"check: {report.num_identical} of {report.num_checked} greedy answers identical "
        f"to base + adapter; largest logit difference {report.max_logit_difference:.2e}, "
        f"tolerance for {report.dtype} {report.tolerance:.2e}"
    )
    for (
        image_id,
        before,
        after,
    ) in report.mismatches:  # within tolerance, a near tie that rounding broke
        print(f"  differs on {image_id}: adapter {before!r} vs merged {after!r}")
    if not report.is_equivalent:
        print(
            (
                "vlmlib merge-lora: error: the merged model's logits differ by more than "
                "rounding explains; do not use it"
            ),
            file=sys.stderr,
        )
        return 1
    return 0


_COMMANDS = {
    "make-tiny": _run_make_tiny,
    "show-config": _run_show_config,
    "train": _run_train,
    "evaluate": _run_evaluate,
    "predict": _run_predict,
    "merge-lora": _run_merge_lora,
    "make-labs": _run_make_labs,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a bad input ends in a one-line message and exit status 2, no traceback."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[arguments.command](arguments)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"vlmlib {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if (
            type(error).__name__ != "OutOfMemoryError"
        ):  # torch.cuda.OutOfMemoryError, without importing torch here
            raise
        print(
            (
                f"vlmlib {arguments.command}: error: the GPU ran out of memory "
                f"({str(error).splitlines()[0]}); halve training.per_device_train_batch_size "
                "and double training.gradient_accumulation_steps (the same batch in smaller "
                "pieces), or lower model.max_pixels"
            ),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (train says how to resume itself)
        print(f"vlmlib {arguments.command}: interrupted", file=sys.stderr)
        return 130
