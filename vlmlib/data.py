"""Load the nutrition-table dataset, check its records, and turn a record into a chat.

Why: every later step (collators, training, evaluation) reads records through these functions, so
the Hub dataset and the tiny profile's synthetic copy go down exactly the same path.
Explained in: chapter 01, "Loading the data" and "Bad records".

The Hub dataset `openfoodfacts/nutrition-table-detection` has splits `train` and `val`;
each record has `image_id`, `image`, `width`, `height`,
`meta{barcode, off_image_id, image_url}` and `objects{bbox, category_id, category_name}`,
with `bbox` as `box_hub` ([y_min, x_min, y_max, x_max], 0-1).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
from PIL import Image, UnidentifiedImageError

from vlmlib.boxes import convert_hub_box_to_qwen
from vlmlib.config import Config
from vlmlib.sources import resolve_sources
from vlmlib.tokens import (
    BOX_END_TOKEN,
    BOX_START_TOKEN,
    OBJECT_REF_END_TOKEN,
    OBJECT_REF_START_TOKEN,
)

__all__ = [
    "CATEGORY_NAMES",
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM_MESSAGE",
    "HUB_DATASET_ID",
    "MAX_IMAGE_ASPECT_RATIO",
    "MIN_IMAGE_SIDE_PX",
    "BadRecordError",
    "CleaningReport",
    "build_conversation",
    "clean_split",
    "convert_image_to_rgb",
    "find_image_size_problem",
    "find_record_problems",
    "format_answer",
    "hub_features",
    "load_configured_splits",
    "load_dataset_dict",
    "load_split",
]

logger = logging.getLogger(__name__)

HUB_DATASET_ID = "openfoodfacts/nutrition-table-detection"
CATEGORY_NAMES: tuple[str, ...] = (
    "nutrition-table",
    "nutrition-table-small",
    "nutrition-table-small-energy",
    "nutrition-table-text",
)
DEFAULT_SYSTEM_MESSAGE = "You are a helpful assistant."
DEFAULT_PROMPT = "Find every nutrition table in this product photo and give its bounding box."

# A coordinate this far outside 0-1 is treated as annotation jitter and clamped (and counted);
# anything further out means the record is wrong, and it is dropped.
BOX_CLAMP_TOLERANCE = 0.01

# Qwen2-VL sees an image as 28x28 px squares (patch_size 14 x merge_size 2), one token each. Both
# resizers (transformers' and qwen_vl_utils' `smart_resize`) stretch a smaller side up to 28 px,
# so a side below it shows the model invented pixels, and a box on it spans less than a pixel.
MIN_IMAGE_SIDE_PX = 28
# Both `smart_resize`s raise ValueError on a longer/shorter side ratio above 200.
MAX_IMAGE_ASPECT_RATIO = 200


def hub_features() -> datasets.Features:
    """Return the Hub dataset's features, as Open Food Facts declared them when they uploaded it.

    Why: the synthetic dataset must match this exactly, so the code that reads one reads the other.
    """
    return datasets.Features(
        {
            "image_id": datasets.Value("string"),
            "image": datasets.Image(),
            "width": datasets.Value("int64"),
            "height": datasets.Value("int64"),
            "meta": {
                "barcode": datasets.Value("string"),
                "off_image_id": datasets.Value("string"),
                "image_url": datasets.Value("string"),
            },
            "objects": {
                "bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                "category_id": datasets.Sequence(datasets.Value("int64")),
                "category_name": datasets.Sequence(datasets.Value("string")),
            },
        }
    )


def load_split(
    split: str, dataset_id: str = HUB_DATASET_ID, local_path: Path | None = None
) -> datasets.Dataset:
    """Load one split from a local copy (a `save_to_disk` folder or parquet files) or from the Hub.

    Why: the full profile reads the Hub; the tiny profile and the tests read
    local files in the same schema.
    Explained in: chapter 01, "Loading the data".

    Args:
        split: "train" or "val" (the Hub dataset's names).
        dataset_id: Hub id, used only when `local_path` is None.
        local_path: a folder written by `DatasetDict.save_to_disk`, or a folder of
            `<split>-*.parquet` files (the Hub's own layout, optionally under `data/`).
    Raises:
        FileNotFoundError: `local_path` holds neither form.
        KeyError: the split does not exist; the message lists the splits that do.
    """
    if local_path is None:
        return datasets.load_dataset(dataset_id, split=split)
    local_path = Path(local_path)
    if (local_path / "dataset_dict.json").exists():
        dataset_dict = datasets.load_from_disk(str(local_path))
        if split not in dataset_dict:
            raise KeyError(f"split '{split}' not in {local_path}; it has {sorted(dataset_dict)}")
        return dataset_dict[split]
    parquet_files = sorted(local_path.glob(f"{split}-*.parquet")) + sorted(
        local_path.glob(f"data/{split}-*.parquet")
    )
    if parquet_files:
        return datasets.load_dataset(
            "parquet", data_files=[str(p) for p in parquet_files], split="train"
        ).cast(hub_features())
    if not local_path.exists():
        raise FileNotFoundError(
            f"dataset folder {local_path} does not exist; check data.local_path "
            "(under the tiny profile, `vlmlib make-tiny` builds it)"
        )
    other_splits = {
        path.name.split("-")[0]
        for path in [*local_path.glob("*-*.parquet"), *local_path.glob("data/*-*.parquet")]
    }
    if other_splits:
        raise KeyError(f"split '{split}' not in {local_path}; it has {sorted(other_splits)}")
    raise FileNotFoundError(
        f"{local_path} holds no dataset_dict.json and no '{split}-*.parquet' files; "
        "point data.local_path at a save_to_disk folder or the Hub's parquet layout"
    )


def load_dataset_dict(
    dataset_id: str = HUB_DATASET_ID, local_path: Path | None = None
) -> datasets.DatasetDict:
    """Load the train and val splits together (see `load_split`)."""
    return datasets.DatasetDict(
        {split: load_split(split, dataset_id, local_path) for split in ("train", "val")}
    )


class BadRecordError(ValueError):
    """A record breaks the dataset's rules and the policy says to stop."""


@dataclass
class CleaningReport:
    """What `clean_split` did: how many records it kept, dropped and mended, and why."""

    num_input: int = 0
    num_kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> number of records dropped
    mended: Counter = field(
        default_factory=Counter
    )  # reason -> number of records kept after a stated fix
    examples: list[str] = field(default_factory=list)  # the first few messages, for the log

    def summary(self) -> str:
        """Return one line: kept/input, then each reason with its count."""
        parts = [f"kept {self.num_kept} of {self.num_input} records"]
        parts += [f"dropped {count} ({reason})" for reason, count in sorted(self.dropped.items())]
        parts += [f"mended {count} ({reason})" for reason, count in sorted(self.mended.items())]
        return "; ".join(parts)


def _open_image(image_value: Any) -> Image.Image:
    """Open an image cell that may be decoded (PIL) or raw ({'bytes', 'path'})."""
    if isinstance(image_value, Image.Image):
        return image_value
    if isinstance(image_value, dict):
        if image_value.get("bytes") is not None:
            image = Image.open(io.BytesIO(image_value["bytes"]))
        elif image_value.get("path"):
            image = Image.open(image_value["path"])
        else:
            raise UnidentifiedImageError("image cell has neither bytes nor path")
        image.load()
        return image
    raise UnidentifiedImageError(f"image cell of type {type(image_value).__name__}")


def convert_image_to_rgb(image: Image.Image) -> Image.Image:
    """Return the image in RGB mode, scaling high-bit-depth pixels down to 8
    bits instead of clipping them.

    Why: PIL's `convert("RGB")` clips a 16-bit grayscale image (mode "I;16", values
    0-65535) at 255, so a 16-bit scan becomes almost all white and the model sees no table.
    Explained in: chapter 01, "Bad records".

    Modes "I;16*" are shifted right by 8 bits. Modes "I" (32-bit int) and "F"
    (32-bit float) are scaled from the smallest of the ranges 0-1 (float only),
    0-255 and 0-65535 that holds their values, or else stretched from their
    minimum to their maximum. Other modes go through `convert("RGB")`.
    """
    if image.mode.startswith("I;16"):
        gray = np.asarray(image).astype(np.uint16) >> 8
    elif image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scales = ((1.0,) if image.mode == "F" else ()) + (255.0, 65535.0)
        full_scale = next((scale for scale in scales if low >= 0 and high <= scale), None)
        if full_scale is None:  # outside every usual range: stretch what is there
            values, full_scale = values - low, max(high - low, 1e-12)
        gray = np.round(values / full_scale * 255)
    else:
        return image.convert("RGB")
    return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), mode="L").convert("RGB")


def find_image_size_problem(width_px: int, height_px: int) -> str | None:
    """Return why Qwen2-VL cannot see an image of this size properly, or None when it can.

    Why: a 1x1 image is stretched to 28x28 px and the model's box on it is less than a pixel wide,
    a silent zero-area answer; an aspect ratio above 200 makes the processor raise.
    Explained in: chapter 01, "Bad records".
    """
    if min(width_px, height_px) < MIN_IMAGE_SIDE_PX:
        return (
            f"image of {width_px}x{height_px} px is smaller than {MIN_IMAGE_SIDE_PX} px on a side, "
            f"the least Qwen2-VL represents (one {MIN_IMAGE_SIDE_PX}x{MIN_IMAGE_SIDE_PX} px token)"
        )
    if max(width_px, height_px) / min(width_px, height_px) > MAX_IMAGE_ASPECT_RATIO:
        return (
            f"image of {width_px}x{height_px} px has an aspect ratio above "
            f"{MAX_IMAGE_ASPECT_RATIO}, the most Qwen2-VL's resizer accepts"
        )
    return None


def find_record_problems(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Return (fatal problems, mendable problems) of one record, as short reasons.

    Why: a wrong box teaches the model the wrong place; finding it before training is cheap.
    Explained in: chapter 01, "Bad records".

    Fatal: the image does not open; it is too small or too elongated for Qwen2-VL
    (`find_image_size_problem`); no objects; a box with a coordinate beyond the clamp
    tolerance; an inverted or zero-area box; a category name or id not in `CATEGORY_NAMES`;
    width/height that disagree with the image. Mendable: an image not in RGB mode
    (converted by `convert_image_to_rgb`); a coordinate just outside 0-1 (clamped).
    """
    fatal: list[str] = []
    mendable: list[str] = []
    try:
        image = _open_image(record["image"])
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        return [f"image does not open ({error})"], []
    size_problem = find_image_size_problem(*image.size)
    if size_problem is not None:
        fatal.append(size_problem)
    if image.mode != "RGB":
        mendable.append(f"image mode {image.mode} converted to RGB")
    if (record.get("width"), record.get("height")) != image.size:
        fatal.append(
            f"width/height {record.get('width')}x{record.get('height')} differ from the "
            f"image's {image.size[0]}x{image.size[1]}"
        )
    objects = record["objects"]
    if not objects["bbox"]:
        fatal.append("no objects")
    for box_index, (box_hub, category_id, category_name) in enumerate(
        zip(objects["bbox"], objects["category_id"], objects["category_name"])
    ):
        where = f"objects.bbox[{box_index}]={[round(v, 4) for v in box_hub]}"
        if len(box_hub) != 4:
            fatal.append(f"{where} does not have 4 values")
            continue
        if any(v < -BOX_CLAMP_TOLERANCE or v > 1 + BOX_CLAMP_TOLERANCE for v in box_hub):
            fatal.append(f"{where} is outside 0-1")
        elif any(v < 0 or v > 1 for v in box_hub):
            mendable.append(f"{where} clamped to 0-1")
        y_min, x_min, y_max, x_max = box_hub
        if y_max <= y_min or x_max <= x_min:
            fatal.append(f"{where} is inverted or has zero area")
        if (
            category_name not in CATEGORY_NAMES
            or CATEGORY_NAMES.index(category_name) != category_id
        ):
            fatal.append(
                f"objects.category {category_id}/{category_name!r} is not one of "
                f"{list(CATEGORY_NAMES)}"
            )
    return fatal, mendable


def _mend_record(record: dict[str, Any]) -> dict[str, Any]:
    """Apply the mendable fixes to a raw record: RGB conversion (stored as
    lossless PNG) and clamping into 0-1.

    Works on undecoded images so that records needing no conversion keep their original bytes;
    decoding them would make `datasets` re-encode every JPEG of the split (lossy, quality 75).
    """
    image = _open_image(record["image"])
    if image.mode != "RGB":
        buffer = io.BytesIO()
        convert_image_to_rgb(image).save(buffer, format="PNG")
        record["image"] = {"bytes": buffer.getvalue(), "path": None}
    record["objects"]["bbox"] = [
        [min(max(v, 0.0), 1.0) for v in box] for box in record["objects"]["bbox"]
    ]
    return record


def clean_split(
    dataset: datasets.Dataset, policy: Literal["drop", "raise"] = "drop", source: str = "dataset"
) -> tuple[datasets.Dataset, CleaningReport]:
    """Check every record; drop (or raise on) fatal ones, mend the rest, and report the counts.

    Why: a bad record must never turn into a silent wrong box; it is counted, named and logged.
    Explained in: chapter 01, "Bad records".

    Args:
        dataset: a split in the Hub schema.
        policy: "drop" removes fatal records and logs a summary; "raise" stops at the first one.
        source: a name for messages (e.g. the split or file).
    Returns:
        The cleaned dataset (same features) and a `CleaningReport`.
    Raises:
        BadRecordError: under policy "raise", naming the record index, image_id and problem.
    """
    report = CleaningReport(num_input=len(dataset))
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    keep: list[int] = []
    for index, record in enumerate(raw):
        fatal, mendable = find_record_problems(record)
        if fatal:
            message = f"{source} record {index} (image_id {record.get('image_id')!r}): {fatal[0]}"
            if policy == "raise":
                raise BadRecordError(
                    message + ". Fix the record or load with bad_record_policy='drop'."
                )
            report.dropped[_reason_kind(fatal[0])] += 1
            if len(report.examples) < 5:
                report.examples.append(message)
            continue
        for problem in mendable:
            report.mended[_reason_kind(problem)] += 1
        keep.append(index)
    report.num_kept = len(keep)
    cleaned = raw.select(keep)
    if report.mended:
        cleaned = cleaned.map(_mend_record, features=raw.features)
    cleaned = cleaned.cast_column("image", dataset.features["image"])
    if report.dropped or report.mended:
        logger.warning("%s: %s. First problems: %s", source, report.summary(), report.examples)
    return cleaned, report


def _reason_kind(problem: str) -> str:
    """Strip the values from a problem message so that counts group by kind."""
    for kind in (
        "image does not open",
        "smaller than",
        "aspect ratio above",
        "outside 0-1",
        "inverted or has zero area",
        "clamped to 0-1",
        "converted to RGB",
        "no objects",
        "differ from the image",
        "is not one of",
        "does not have 4 values",
    ):
        if kind in problem:
            return kind
    return problem


def format_answer(objects: dict[str, list]) -> str:
    """Return the target answer: one grounding group per box, in Qwen2-VL's own format.

    Why: Qwen2-VL was pretrained to answer grounding questions exactly like this, so fine-tuning
    starts from a format the model already knows.
    Explained in: chapter 02, "How a box answer is tokenised".

    Example:
    `<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(560,910)<|box_end|>`.
    """
    groups = []
    for box_hub, category_name in zip(objects["bbox"], objects["category_name"]):
        x1, y1, x2, y2 = convert_hub_box_to_qwen(box_hub)
        groups.append(
            f"{OBJECT_REF_START_TOKEN}{category_name}{OBJECT_REF_END_TOKEN}"
            f"{BOX_START_TOKEN}({x1},{y1}),({x2},{y2}){BOX_END_TOKEN}"
        )
    return "".join(groups)


def build_conversation(
    record: dict[str, Any],
    prompt: str = DEFAULT_PROMPT,
    system_message: str = DEFAULT_SYSTEM_MESSAGE,
    include_answer: bool = True,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> list[dict[str, Any]]:
    """Return the chat for one record: system, user (image + prompt), and the assistant's answer.

    Why: the processor's chat template and `qwen_vl_utils.process_vision_info` both read this form.
    Explained in: chapter 02, "The chat template".

    Args:
        record: one record in the Hub schema, with a decoded PIL image.
        include_answer: False for generation (the model writes the answer).
        min_pixels, max_pixels: the pixel budget, passed to `process_vision_info` with the image.
    """
    image_item: dict[str, Any] = {"type": "image", "image": record["image"]}
    if min_pixels is not None:
        image_item["min_pixels"] = min_pixels
    if max_pixels is not None:
        image_item["max_pixels"] = max_pixels
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": system_message}]},
        {"role": "user", "content": [image_item, {"type": "text", "text": prompt}]},
    ]
    if include_answer:
        conversation.append(
            {
                "role": "assistant",
                "content": [{"type": "text", "text": format_answer(record["objects"])}],
            }
        )
    return conversation


def load_configured_splits(config: Config) -> datasets.DatasetDict:
    """Return the config's train and eval splits, cleaned and cut to
    `data.num_train`/`data.num_eval`.

    Why: chapters, training and the CLI get their data in one call, whatever the
    profile; where it comes from (the Hub, a local copy, the tiny profile's
    cache) is `vlmlib.sources.resolve_sources`'s answer.
    Explained in: chapter 01, "Loading the data".

    Returns:
        A DatasetDict with keys "train" and "eval", in the Hub schema.
    """
    sources = resolve_sources(config)
    splits = {}
    for name, split, limit in (
        ("train", config.data.train_split, config.data.num_train),
        ("eval", config.data.eval_split, config.data.num_eval),
    ):
        dataset = load_split(split, sources.dataset_id, sources.dataset_path)
        dataset, _ = clean_split(
            dataset, policy=config.data.bad_record_policy, source=f"{split} split"
        )
        splits[name] = (
            dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset
        )
    return datasets.DatasetDict(splits)
