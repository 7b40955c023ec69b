"""A local stand-in for the Hub dataset `openfoodfacts/nutrition-table-detection`, in its layout.

Why: the `full` profile reads that repo's parquet files; the rehearsal reads files of the same
layout, schema and image format, through the same `vlmlib.data.load_split` call
(`data.local_path` set to the folder instead of `data.dataset_id` naming the Hub repo).

What is the Hub's: the layout `data/<split>-NNNNN-of-NNNNN.parquet` with splits `train` and `val`;
the features (`vlmlib.data.hub_features`, stored in each file's schema metadata as `push_to_hub`
stores them); JPEG photos at the sizes of Open Food Facts' photos (2592x1944 and 3120x4208 from
phones, 306x408 small uploads, and sizes between). What is not: the pictures are
`vlmlib.tiny.synthetic`'s labelled drawings, stretched to those sizes (a `box_hub` is a fraction
of the image, so stretching keeps every box exact).
"""

from __future__ import annotations

import io
from pathlib import Path

import datasets
from PIL import Image

from vlmlib.data import hub_features
from vlmlib.tiny.synthetic import generate_synthetic_dataset

__all__ = ["PHOTO_SIZES_PX", "build_dataset_repo"]

# (width, height) of each record's photo, per split. The first three are the extremes the issue
# names (a landscape phone photo, a small upload, a large portrait phone photo); others lie between.
PHOTO_SIZES_PX: dict[str, list[tuple[int, int]]] = {
    "train": [
        (2592, 1944),
        (306, 408),
        (3120, 4208),
        (1200, 1600),
        (1944, 2592),
        (800, 600),
        (2448, 3264),
        (640, 480),
    ],
    "val": [(2592, 1944), (306, 408), (3120, 4208), (1536, 2048)],
}
NUM_TRAIN_SHARDS = 2  # the Hub shards large splits; two shards make load_split read a list of files
JPEG_QUALITY = 90


def _as_hub_photo(record: dict, size_px: tuple[int, int]) -> dict:
    """Return the record with its drawing stretched to `size_px`, as JPEG bytes as on the Hub."""
    buffer = io.BytesIO()
    photo = record["image"].convert("RGB").resize(size_px, Image.Resampling.BILINEAR)
    photo.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    width_px, height_px = size_px
    return {
        **record,
        "image": {"bytes": buffer.getvalue(), "path": None},
        "width": width_px,
        "height": height_px,
    }


def build_dataset_repo(folder: Path, seed: int = 0) -> Path:
    """Write the stand-in dataset repo into `folder` (created): `data/{train,val}-*.parquet`.

    Why: `data.local_path=<folder>` then loads through `vlmlib.data.load_split`'s parquet path,
    the format the Hub serves.

    Returns:
        `folder`. Each split holds `len(PHOTO_SIZES_PX[split])` records with `hub_features()`.
    """
    folder = Path(folder)
    (folder / "data").mkdir(parents=True)
    drawn = generate_synthetic_dataset(
        num_train=len(PHOTO_SIZES_PX["train"]),
        num_val=len(PHOTO_SIZES_PX["val"]),
        seed=seed,
        min_side_px=160,
        max_side_px=320,
    )
    for split, sizes_px in PHOTO_SIZES_PX.items():
        records = [
            _as_hub_photo(record, size_px) for record, size_px in zip(drawn[split], sizes_px)
        ]
        columns = {name: [record[name] for record in records] for name in hub_features()}
        dataset = datasets.Dataset.from_dict(columns, features=hub_features())
        num_shards = NUM_TRAIN_SHARDS if split == "train" else 1
        for index in range(num_shards):
            shard = dataset.shard(num_shards, index, contiguous=True)
            name = f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            shard.to_parquet(str(folder / "data" / name))
    return folder
