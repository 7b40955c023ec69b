"""Score predicted boxes against ground truth: IoU, one-to-one matching, and mean IoU per image.

Why: "the answer looks right" is not a measurement. IoU turns each predicted box into a number
between 0 and 1, and matching decides which prediction answers which ground-truth box when an
image has several.
Explained in: chapter 06, "From answers to figures".

Every box here is `box_xyxy`: (x1, y1, x2, y2) in pixels, x1 <= x2 and y1 <= y2. Convert `box_qwen`
with `vlmlib.boxes.convert_qwen_box_to_xyxy` and `box_hub` with
`vlmlib.boxes.convert_hub_box_to_xyxy` first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "MAX_BOXES_FOR_EXACT_MATCHING",
    "compute_image_mean_iou",
    "compute_iou",
    "compute_iou_matrix",
    "match_boxes",
]

# Up to this many boxes on each side, matching tries every pairing (8 boxes: 8!
# = 40,320 pairings, well under a second); beyond it, matching is greedy.
# scipy's linear_sum_assignment would be exact at any size, but the course's
# environment does not install scipy, and our images have one to three tables.
MAX_BOXES_FOR_EXACT_MATCHING = 8


def compute_iou(box_a_xyxy: Sequence[float], box_b_xyxy: Sequence[float]) -> float:
    """Return the intersection over union (IoU) of two boxes, a number from 0 to 1.

    Why: IoU is the standard score for one box against another: 1 when they coincide, 0 when they
    do not overlap, and it does not depend on the image's size.
    Explained in: chapter 06, "From answers to figures".

    The intersection is the rectangle both boxes cover: its left edge is the larger of the two left
    edges, its right edge the smaller of the two right edges (likewise top and bottom). When the
    boxes are disjoint or only touch, that rectangle has no width or height, so
    the intersection is 0. The union is area(a) + area(b) - intersection, because
    adding the two areas counts the overlap twice. A degenerate box (zero or
    negative width or height) has no area, and its IoU with anything is 0.

    Args:
        box_a_xyxy, box_b_xyxy: (x1, y1, x2, y2) in pixels.
    Returns:
        The IoU as a Python float in [0, 1].
    """
    a_x1, a_y1, a_x2, a_y2 = box_a_xyxy
    b_x1, b_y1, b_x2, b_y2 = box_b_xyxy
    area_a = max(0.0, a_x2 - a_x1) * max(0.0, a_y2 - a_y1)
    area_b = max(0.0, b_x2 - b_x1) * max(0.0, b_y2 - b_y1)
    if area_a == 0 or area_b == 0:
        return 0.0
    intersection_width = max(0.0, min(a_x2, b_x2) - max(a_x1, b_x1))
    intersection_height = max(0.0, min(a_y2, b_y2) - max(a_y1, b_y1))
    intersection = intersection_width * intersection_height
    union = area_a + area_b - intersection
    return float(intersection / union)


def compute_iou_matrix(
    boxes_a_xyxy: Sequence[Sequence[float]], boxes_b_xyxy: Sequence[Sequence[float]]
) -> np.ndarray:
    """Return the IoU of every box in `boxes_a_xyxy` with every box in `boxes_b_xyxy`.

    Why: matching needs all pairwise scores at once.
    Explained in: chapter 06, "From answers to figures".

    Returns:
        (len(boxes_a_xyxy), len(boxes_b_xyxy)) float64 array; entry [i, j] is
        the IoU of a[i] with b[j].
    """
    iou_matrix = np.zeros((len(boxes_a_xyxy), len(boxes_b_xyxy)), dtype=np.float64)
    for index_a, box_a_xyxy in enumerate(boxes_a_xyxy):
        for index_b, box_b_xyxy in enumerate(boxes_b_xyxy):
            iou_matrix[index_a, index_b] = compute_iou(box_a_xyxy, box_b_xyxy)
    return iou_matrix


def _match_exactly(iou_matrix: np.ndarray) -> list[tuple[int, int]]:
    """Try every one-to-one pairing of rows with columns and return the one with
    the largest total IoU.
    """
    is_transposed = iou_matrix.shape[0] > iou_matrix.shape[1]
    scores = (
        iou_matrix.T if is_transposed else iou_matrix
    ).tolist()  # now no more rows than columns
    num_rows, num_columns = len(scores), len(scores[0])
    best_columns = max(
        itertools.permutations(range(num_columns), num_rows),
        key=lambda columns: sum(scores[row][column] for row, column in enumerate(columns)),
    )
    pairs = list(enumerate(best_columns))
    return [(column, row) for row, column in pairs] if is_transposed else pairs


def _match_greedily(iou_matrix: np.ndarray) -> list[tuple[int, int]]:
    """Pair the highest-IoU row and column first, then the highest among those left, and so on."""
    used_rows: set[int] = set()
    used_columns: set[int] = set()
    pairs = []
    for flat_index in np.argsort(-iou_matrix, axis=None, kind="stable"):
        row, column = np.unravel_index(flat_index, iou_matrix.shape)
        if row not in used_rows and column not in used_columns:
            pairs.append((int(row), int(column)))
            used_rows.add(row)
            used_columns.add(column)
    return pairs


def match_boxes(
    predicted_xyxy: Sequence[Sequence[float]], ground_truth_xyxy: Sequence[Sequence[float]]
) -> list[tuple[int, int, float]]:
    """Pair each predicted box with at most one ground-truth box so that the total IoU is largest.

    Why: with two tables in an image, a prediction must not score against the table it did not
    find, and one prediction must not count for two tables.
    Explained in: chapter 06, "From answers to figures".

    When both sides have at most `MAX_BOXES_FOR_EXACT_MATCHING` boxes every pairing is tried, so the
    result is optimal. With more boxes the matching is greedy (highest IoU first), which can miss
    the best total when one prediction overlaps two ground-truth boxes. Pairs with IoU 0 overlap
    nowhere and are left out: those boxes count as unmatched.

    Args:
        predicted_xyxy: predicted boxes, (x1, y1, x2, y2) in pixels.
        ground_truth_xyxy: ground-truth boxes of the same image, in pixels.
    Returns:
        (predicted index, ground-truth index, IoU) for each matched pair, sorted by predicted index.
    """
    iou_matrix = compute_iou_matrix(predicted_xyxy, ground_truth_xyxy)
    if iou_matrix.size == 0:
        return []
    if max(iou_matrix.shape) <= MAX_BOXES_FOR_EXACT_MATCHING:
        pairs = _match_exactly(iou_matrix)
    else:
        pairs = _match_greedily(iou_matrix)
    matches = [
        (row, column, float(iou_matrix[row, column]))
        for row, column in pairs
        if iou_matrix[row, column] > 0
    ]
    return sorted(matches)


def compute_image_mean_iou(
    predicted_xyxy: Sequence[Sequence[float]], ground_truth_xyxy: Sequence[Sequence[float]]
) -> float:
    """Return one image's score: the matched IoUs summed, divided by the larger number of boxes.

    Why: dividing by the larger side punishes both a missed table (an unmatched ground-truth box)
    and an invented one (an unmatched prediction); each counts as an IoU of 0.
    Explained in: chapter 06, "From answers to figures".

    Returns:
        A float in [0, 1]; NaN when both lists are empty, since there is nothing to score (every
        image in our data has at least one ground-truth box, so this does not happen in evaluation).
    """
    num_boxes = max(len(predicted_xyxy), len(ground_truth_xyxy))
    if num_boxes == 0:
        return math.nan
    return sum(iou for _, _, iou in match_boxes(predicted_xyxy, ground_truth_xyxy)) / num_boxes
