"""Make a small synthetic copy of the nutrition-table dataset for the offline tiny profile.

Why: the tiny profile runs with no network, on a CPU, in minutes. It needs data
that (a) has exactly the Hub dataset's schema (`vlmlib.data.hub_features()`), so
every later step reads it through the same code, and (b) is easy enough that a
tiny model can learn *where* the tables are in a few hundred steps.
Explained in: chapter 01, "The tiny profile's synthetic data".

What an image looks like (each side between `min_side_px` and `max_side_px`, so
sizes and aspect ratios vary):

- a product-label background: a linear gradient between two saturated mid-tone colours;
- decorations that are *not* tables: a logo (ellipse or regular polygon) and a
  few lines of fake product text;
- one to three tables, drawn last, on top. Each is a light panel with a dark
  one-or-two-pixel border, and its look depends on its category: "nutrition-table" has
  a dark header bar and rows of text separated by rules; "nutrition-table-small" is a
  compact table with no header; "nutrition-table-small-energy" is a small rounded badge
  with energy values; "nutrition-table-text" is a block of text lines with no rules.

The label is correct by construction: each table is drawn into its own sub-image
(which clips its text) and pasted at its box, so the box's outermost pixels are
the table's border. Tables sit in separate strips of the image, so they never
overlap. Boxes are listed largest first, a fixed rule the model can learn.

Determinism: image `i` of split `s` ("train" is 0, "val" is 1) draws from its own random stream,
`SeedSequence(seed, spawn_key=(s, i))`. The same seed gives identical records, pixels included;
train and val never share a stream; and the val split does not change when `num_train` does.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import math
from collections.abc import Callable
from typing import TypeVar

import datasets
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlmlib.boxes import convert_xyxy_box_to_hub
from vlmlib.data import CATEGORY_NAMES, hub_features

__all__ = [
    "BOX_COUNT_RATES",
    "EXTRA_AREA_FRACTION_RANGE",
    "EXTRA_CATEGORY_RATES",
    "MAIN_AREA_FRACTION_RANGE",
    "MAIN_CATEGORY_RATES",
    "LOGO_CATEGORY_NAME",
    "generate_pretraining_records",
    "generate_synthetic_dataset",
]

logger = logging.getLogger(__name__)

# How many tables an image holds. The Hub dataset is mostly one table per image, with some two
# or three; these rates copy that shape (they are chosen, not measured on the Hub dataset).
BOX_COUNT_RATES: dict[int, float] = {1: 0.75, 2: 0.20, 3: 0.05}
# The main (largest) table is usually a full nutrition table; extra tables are
# more often the small kinds.
MAIN_CATEGORY_RATES: dict[str, float] = {"nutrition-table": 0.9, "nutrition-table-text": 0.1}
EXTRA_CATEGORY_RATES: dict[str, float] = {
    "nutrition-table": 0.4,
    "nutrition-table-small": 0.3,
    "nutrition-table-small-energy": 0.2,
    "nutrition-table-text": 0.1,
}
# Target table area as a fraction of the image area. A table is shrunk when its strip of the image
# is too small, so in images with two or three tables the main one can end up below the lower bound.
MAIN_AREA_FRACTION_RANGE: tuple[float, float] = (0.10, 0.50)
EXTRA_AREA_FRACTION_RANGE: tuple[float, float] = (0.03, 0.12)
# The tiny model's pretraining grounds the logo as well as the tables (see
# `generate_pretraining_records`).
LOGO_CATEGORY_NAME = "logo"

_SPLIT_NAMES = ("train", "val")
_MARGIN_PX = (
    3  # gap between a table and its strip's edge: tables never touch each other or the image edge
)
_MIN_TABLE_SIDE_PX = 12
_MIN_SIDE_LIMIT_PX = (
    64  # at 64 px a table in a narrow strip of a three-table image is already only ~5 px wide
)
_NUTRIENTS = ("Energy", "Fat", "Saturates", "Carbohydrate", "Sugars", "Fibre", "Protein", "Salt")
_HEADERS = ("Nutrition Facts", "Nutrition", "Per 100 g", "Valeurs nutritionnelles")
_LABEL_WORDS = (
    "Organic",
    "Crunchy",
    "Oat",
    "Biscuits",
    "Natural",
    "Whole",
    "Grain",
    "Tomato",
    "Soup",
    "Light",
    "Recipe",
    "Classic",
    "Dark",
    "Chocolate",
    "Ingredients",
    "Best",
    "Before",
    "Net",
    "Weight",
    "500 g",
)
Colour = tuple[int, int, int]
BoxXyxy = tuple[int, int, int, int]  # (x1, y1, x2, y2) in pixels, x2 and y2 exclusive
KeyT = TypeVar("KeyT")


@functools.cache
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Return Pillow's bundled default font at a size (no system font paths, so
    it works on any machine).
    """
    return ImageFont.load_default(size=size_px)


def _random_colour(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
) -> Colour:
    """Return an RGB colour with a random hue and saturation/value drawn from the given ranges."""
    red, green, blue = colorsys.hsv_to_rgb(
        rng.random(), rng.uniform(*saturation), rng.uniform(*value)
    )
    return (round(red * 255), round(green * 255), round(blue * 255))


def _random_words(rng: np.random.Generator, words: tuple[str, ...], num_words: int) -> str:
    """Return `num_words` words picked from `words`, joined by spaces."""
    return " ".join(words[index] for index in rng.integers(0, len(words), size=num_words))


def _draw_background(width_px: int, height_px: int, rng: np.random.Generator) -> Image.Image:
    """Return a linear gradient between two mid-tone colours, at a random angle."""
    start = np.array(_random_colour(rng, (0.3, 0.9), (0.45, 0.95)), dtype=np.float32)
    end = np.array(_random_colour(rng, (0.3, 0.9), (0.45, 0.95)), dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    rows, columns = np.mgrid[0:height_px, 0:width_px].astype(np.float32)
    position = columns * math.cos(angle) + rows * math.sin(
        angle
    )  # (height, width), distance along the gradient
    position = (position - position.min()) / max(float(np.ptp(position)), 1.0)
    pixels = start + position[..., None] * (end - start)  # (height, width, 3) float32
    return Image.fromarray(np.round(pixels).astype(np.uint8))


def _draw_decorations(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Draw what makes the image look like a label without being a table: a logo
    and a few text lines.

    Returns:
        The logo's mask (mode "L", 255 where the logo is drawn): the tiny
        model's pretraining boxes the logo too.
    """
    draw = ImageDraw.Draw(image)
    logo_mask = Image.new("L", image.size, 0)
    mask_draw = ImageDraw.Draw(logo_mask)
    width_px, height_px = image.size
    radius = int(min(width_px, height_px) * rng.uniform(0.08, 0.16))
    centre_x, centre_y = (
        int(rng.integers(radius, width_px - radius)),
        int(rng.integers(radius, height_px - radius)),
    )
    logo_colour = _random_colour(rng, (0.6, 1.0), (0.3, 1.0))
    if rng.random() < 0.5:
        stretch = rng.uniform(0.6, 1.0)
        ellipse = [
            centre_x - radius,
            centre_y - radius * stretch,
            centre_x + radius,
            centre_y + radius * stretch,
        ]
        draw.ellipse(ellipse, fill=logo_colour, outline=_random_colour(rng, (0.0, 0.3), (0.9, 1.0)))
        mask_draw.ellipse(ellipse, fill=255, outline=255)
    else:
        num_sides = int(rng.integers(3, 7))
        rotation = rng.uniform(0, 360)
        draw.regular_polygon(
            (centre_x, centre_y, radius), num_sides, rotation=rotation, fill=logo_colour
        )
        mask_draw.regular_polygon(
            (centre_x, centre_y, radius), num_sides, rotation=rotation, fill=255
        )
    text_colour = (20, 20, 20) if rng.random() < 0.6 else (250, 250, 250)
    for _ in range(int(rng.integers(2, 5))):
        font_size = int(rng.integers(8, 15))
        position = (
            int(rng.integers(0, width_px // 2)),
            int(rng.integers(0, height_px - font_size)),
        )
        draw.text(
            position,
            _random_words(rng, _LABEL_WORDS, int(rng.integers(1, 4))),
            fill=text_colour,
            font=_font(font_size),
        )
    return logo_mask


def _split_into_regions(
    width_px: int, height_px: int, num_tables: int, rng: np.random.Generator
) -> list[BoxXyxy]:
    """Cut the image into side-by-side strips, one per table, the first (widest) for the main table.

    Why: a table placed inside its own strip can never overlap another table.
    """
    if num_tables == 1:
        return [(0, 0, width_px, height_px)]
    is_cut_across_width = (width_px >= height_px) == (
        rng.random() < 0.8
    )  # mostly cut the longer side
    length_px = width_px if is_cut_across_width else height_px
    main_fraction = rng.uniform(0.5, 0.65)
    fractions = [main_fraction] + [(1 - main_fraction) / (num_tables - 1)] * (num_tables - 1)
    order = rng.permutation(num_tables)  # where along the image each strip goes
    starts = np.concatenate([[0.0], np.cumsum([fractions[index] for index in order])])
    regions: list[BoxXyxy] = [(0, 0, 0, 0)] * num_tables
    for position, table_index in enumerate(order):
        start, end = round(starts[position] * length_px), round(starts[position + 1] * length_px)
        regions[table_index] = (
            (start, 0, end, height_px) if is_cut_across_width else (0, start, width_px, end)
        )
    return regions


def _place_table(region: BoxXyxy, area_px: float, rng: np.random.Generator) -> BoxXyxy:
    """Return a box of about `area_px` pixels, at a random place inside
    `region`, with a random aspect ratio.
    """
    region_x1, region_y1, region_x2, region_y2 = region
    available_width = region_x2 - region_x1 - 2 * _MARGIN_PX
    available_height = region_y2 - region_y1 - 2 * _MARGIN_PX
    height_over_width = math.exp(rng.uniform(math.log(0.6), math.log(1.8)))
    table_width = int(
        np.clip(round(math.sqrt(area_px / height_over_width)), _MIN_TABLE_SIDE_PX, available_width)
    )
    table_height = int(
        np.clip(round(table_width * height_over_width), _MIN_TABLE_SIDE_PX, available_height)
    )
    x1 = region_x1 + _MARGIN_PX + int(rng.integers(0, available_width - table_width + 1))
    y1 = region_y1 + _MARGIN_PX + int(rng.integers(0, available_height - table_height + 1))
    return (x1, y1, x1 + table_width, y1 + table_height)


def _draw_rows(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    top_px: int,
    ink: Colour,
    rule: Colour | None,
    rng: np.random.Generator,
) -> None:
    """Draw "nutrient ... value" rows from `top_px` down, with a horizontal rule
    under each row if `rule` is set.
    """
    width_px, height_px = size
    font_size = int(np.clip(height_px // 9, 6, 11))
    font = _font(font_size)
    row_height = font_size + 3
    y = top_px
    while y + row_height <= height_px - 2:
        name, value = (
            _NUTRIENTS[int(rng.integers(0, len(_NUTRIENTS)))],
            f"{rng.uniform(0, 60):.1f} g",
        )
        value_x = width_px - 3 - draw.textlength(value, font=font)
        draw.text((3, y), name, fill=ink, font=font)
        if (
            draw.textlength(name, font=font) + 6 < value_x
        ):  # a narrow table shows the name only, as printed ones do
            draw.text((value_x, y), value, fill=ink, font=font)
        y += row_height
        if rule is not None:
            draw.line([(2, y - 1), (width_px - 3, y - 1)], fill=rule, width=1)


def _draw_full_table(table: Image.Image, ink: Colour, rng: np.random.Generator) -> None:
    """Draw a nutrition table's inside: a dark header bar with a title, then
    rows separated by rules.
    """
    paper = table.getpixel((0, 0))  # the panel's colour, read before anything covers it
    draw = ImageDraw.Draw(table)
    width_px, height_px = table.size
    header_height = max(3, round(height_px * rng.uniform(0.12, 0.2)))
    draw.rectangle([0, 0, width_px - 1, header_height], fill=ink)
    font_size = int(np.clip(header_height - 3, 6, 12))
    draw.text(
        (3, 1), _HEADERS[int(rng.integers(0, len(_HEADERS)))], fill=paper, font=_font(font_size)
    )
    rule = tuple((channel + 160) // 2 for channel in ink)
    _draw_rows(draw, table.size, header_height + 2, ink, rule, rng)


def _draw_small_table(table: Image.Image, ink: Colour, rng: np.random.Generator) -> None:
    """Draw a compact table's inside: rows with rules, no header."""
    _draw_rows(ImageDraw.Draw(table), table.size, 2, ink, ink, rng)


def _draw_energy_badge(table: Image.Image, ink: Colour, rng: np.random.Generator) -> None:
    """Draw an energy badge's inside: the energy in kJ and kcal, centred."""
    draw = ImageDraw.Draw(table)
    kilocalories = int(rng.integers(20, 600))
    font = _font(int(np.clip(table.size[1] // 4, 6, 11)))
    lines = (f"{round(kilocalories * 4.184)} kJ", f"{kilocalories} kcal")
    for line_index, line in enumerate(lines):
        draw.text(
            (table.size[0] // 2, table.size[1] * (line_index + 1) // 3),
            line,
            fill=ink,
            font=font,
            anchor="mm",
        )


def _draw_text_block(table: Image.Image, ink: Colour, rng: np.random.Generator) -> None:
    """Draw a nutrition statement written as running text: lines of words and values, no rules."""
    draw = ImageDraw.Draw(table)
    font_size = int(np.clip(table.size[1] // 8, 6, 10))
    for y in range(2, table.size[1] - font_size - 1, font_size + 2):
        words = _random_words(rng, _NUTRIENTS, 2).lower()
        draw.text(
            (3, y), f"{words} {rng.uniform(0, 60):.1f} g, energy", fill=ink, font=_font(font_size)
        )


_DRAWERS: dict[str, Callable[[Image.Image, Colour, np.random.Generator], None]] = {
    "nutrition-table": _draw_full_table,
    "nutrition-table-small": _draw_small_table,
    "nutrition-table-small-energy": _draw_energy_badge,
    "nutrition-table-text": _draw_text_block,
}


def _draw_table(
    image: Image.Image, box_xyxy: BoxXyxy, category_name: str, rng: np.random.Generator
) -> None:
    """Draw one table of the given category so that it fills `box_xyxy` exactly, border included.

    Why: drawing into a sub-image clips the text to the box, and the border drawn last makes
    the box's outermost pixels the border, so the label cannot drift from the picture.
    """
    x1, y1, x2, y2 = box_xyxy
    size = (x2 - x1, y2 - y1)
    ink = _random_colour(rng, (0.0, 0.8), (0.05, 0.25))
    table = Image.new("RGB", size, _random_colour(rng, (0.0, 0.08), (0.93, 1.0)))
    _DRAWERS[category_name](table, ink, rng)
    border_width = 2 if min(size) >= 60 else 1
    mask = Image.new("L", size, 0)
    if category_name == "nutrition-table-small-energy":
        radius = (
            min(size) // 4
        )  # a quarter of the short side keeps the middle half of each edge straight
        ImageDraw.Draw(table).rounded_rectangle(
            [0, 0, size[0] - 1, size[1] - 1], radius, outline=ink, width=border_width
        )
        ImageDraw.Draw(mask).rounded_rectangle([0, 0, size[0] - 1, size[1] - 1], radius, fill=255)
    else:
        ImageDraw.Draw(table).rectangle(
            [0, 0, size[0] - 1, size[1] - 1], outline=ink, width=border_width
        )
        mask.paste(255, (0, 0, size[0], size[1]))
    image.paste(table, (x1, y1), mask)


def _choose(rng: np.random.Generator, rates: dict[KeyT, float]) -> KeyT:
    """Return one key of `rates`, drawn with the given probabilities."""
    keys = list(rates)
    return keys[int(rng.choice(len(keys), p=list(rates.values())))]


def _draw_label(
    rng: np.random.Generator, min_side_px: int, max_side_px: int, is_square: bool
) -> tuple[Image.Image, list[tuple[BoxXyxy, str]], BoxXyxy | None]:
    """Draw one synthetic label: (image, its tables largest first as (box,
    category), the logo's visible box).

    The logo's box is None when tables cover more than half of it.
    """
    if is_square:
        width_px = height_px = int(rng.integers(min_side_px, max_side_px + 1))
    else:
        width_px, height_px = (
            int(side) for side in rng.integers(min_side_px, max_side_px + 1, size=2)
        )
    image = _draw_background(width_px, height_px, rng)
    logo_mask = _draw_decorations(image, rng)
    logo_area_px = int(np.count_nonzero(np.asarray(logo_mask)))
    num_tables = _choose(rng, BOX_COUNT_RATES)
    tables: list[tuple[BoxXyxy, str]] = []
    for table_index, region in enumerate(_split_into_regions(width_px, height_px, num_tables, rng)):
        is_main = table_index == 0
        category_name = _choose(rng, MAIN_CATEGORY_RATES if is_main else EXTRA_CATEGORY_RATES)
        area_fraction = rng.uniform(
            *(MAIN_AREA_FRACTION_RANGE if is_main else EXTRA_AREA_FRACTION_RANGE)
        )
        box_xyxy = _place_table(region, area_fraction * width_px * height_px, rng)
        _draw_table(image, box_xyxy, category_name, rng)
        logo_mask.paste(0, box_xyxy)  # a table drawn over the logo hides that part of it
        tables.append((box_xyxy, category_name))
    tables.sort(
        key=lambda table: -(table[0][2] - table[0][0]) * (table[0][3] - table[0][1])
    )  # largest first
    is_logo_visible = np.count_nonzero(np.asarray(logo_mask)) > logo_area_px / 2
    return image, tables, logo_mask.getbbox() if is_logo_visible else None


def _make_record(
    rng: np.random.Generator,
    min_side_px: int,
    max_side_px: int,
    is_square: bool = False,
    label_logo: bool = False,
) -> dict:
    """Draw one synthetic label and return its record in the Hub schema.

    With `label_logo`, the logo's box follows the tables' as one more object, category
    "logo" (id -1): the tiny model's pretraining data, which is not in the Hub schema.
    """
    image, tables, logo_box = _draw_label(rng, min_side_px, max_side_px, is_square)
    width_px, height_px = image.size
    barcode = "".join(str(digit) for digit in rng.integers(0, 10, size=13))
    off_image_id = str(int(rng.integers(1, 40)))
    # Open Food Facts' layout for 13 digits
    folder = f"{barcode[0:3]}/{barcode[3:6]}/{barcode[6:9]}/{barcode[9:]}"
    objects = {
        "bbox": [convert_xyxy_box_to_hub(box_xyxy, width_px, height_px) for box_xyxy, _ in tables],
        "category_id": [CATEGORY_NAMES.index(category_name) for _, category_name in tables],
        "category_name": [category_name for _, category_name in tables],
    }
    if label_logo and logo_box is not None:
        objects["bbox"].append(convert_xyxy_box_to_hub(logo_box, width_px, height_px))
        objects["category_id"].append(-1)
        objects["category_name"].append(LOGO_CATEGORY_NAME)
    return {
        "image_id": f"{barcode}_{off_image_id}",
        "image": image,
        "width": width_px,
        "height": height_px,
        "meta": {
            "barcode": barcode,
            "off_image_id": off_image_id,
            "image_url": (
                f"https://images.openfoodfacts.org/images/products/{folder}/{off_image_id}.jpg"
            ),
        },
        "objects": objects,
    }


def generate_synthetic_dataset(
    num_train: int,
    num_val: int,
    seed: int,
    min_side_px: int = 112,
    max_side_px: int = 224,
    is_square: bool = False,
) -> datasets.DatasetDict:
    """Return a synthetic nutrition-table dataset with splits "train" and "val", in the Hub schema.

    Why: the tiny profile must run offline and fast, on data the code reads
    exactly like the Hub dataset.
    Explained in: chapter 01, "The tiny profile's synthetic data".

    Args:
        num_train, num_val: how many records each split gets (0 is allowed).
        seed: a non-negative integer; the same seed gives identical records, pixels included.
        min_side_px, max_side_px: each image's width and height are drawn
            uniformly from this range (inclusive).
        is_square: draw one side for both (the tiny profile does: see book/tiny_model.md).
    Returns:
        A `DatasetDict` whose splits have `features == vlmlib.data.hub_features()`;
        each box is a `box_hub` ([y_min, x_min, y_max, x_max], 0-1) that is exactly
        the drawn table, border included.
    Raises:
        ValueError: a count or the seed is negative, or the side range is empty or below 64 px.
    """
    _check_generator_arguments(num_train, num_val, seed, min_side_px, max_side_px)
    splits = {}
    for split_index, (split_name, num_records) in enumerate(
        zip(_SPLIT_NAMES, (num_train, num_val))
    ):
        records = [
            _make_record(
                np.random.default_rng(
                    np.random.SeedSequence(seed, spawn_key=(split_index, record_index))
                ),
                min_side_px,
                max_side_px,
                is_square,
            )
            for record_index in range(num_records)
        ]
        columns = {
            name: [record[name] for record in records] for name in hub_features()
        }  # works for 0 records too
        splits[split_name] = datasets.Dataset.from_dict(columns, features=hub_features())
    logger.info(
        "generated %d train and %d val synthetic records (seed %d)", num_train, num_val, seed
    )
    return datasets.DatasetDict(splits)


def generate_pretraining_records(
    num_records: int,
    seed: int,
    min_side_px: int = 112,
    max_side_px: int = 224,
    is_square: bool = False,
) -> list[dict]:
    """Return labels drawn like the dataset's, each boxing its tables and then
    its logo (category "logo").

    Why: the tiny model's stand-in for Qwen2-VL's pretraining. It learns to
    ground every object, logo included, so zero-shot it also boxes the logo;
    fine-tuning teaches it that this dataset wants tables only.
    Explained in: book/tiny_model.md. The records are plain dicts (the Hub
    schema has no "logo" category).
    """
    _check_generator_arguments(num_records, 0, seed, min_side_px, max_side_px)
    return [
        _make_record(
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, record_index))),
            min_side_px,
            max_side_px,
            is_square,
            label_logo=True,
        )
        for record_index in range(num_records)
    ]


def _check_generator_arguments(
    num_train: int, num_val: int, seed: int, min_side_px: int, max_side_px: int
) -> None:
    """Raise ValueError on a negative count or seed, or a side range too small for three tables."""
    if min(num_train, num_val, seed) < 0:
        raise ValueError(
            f"num_train={num_train}, num_val={num_val} and seed={seed} must all be 0 or more"
        )
    if not _MIN_SIDE_LIMIT_PX <= min_side_px <= max_side_px:
        raise ValueError(
            f"need {_MIN_SIDE_LIMIT_PX} <= min_side_px <= max_side_px, got {min_side_px} "
            f"and {max_side_px}; three tables with margins do not fit in a smaller image"
        )
