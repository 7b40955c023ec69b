"""Tests for vlmlib.metrics: IoU, one-to-one matching, and mean IoU per image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from vlmlib.metrics import (
    MAX_BOXES_FOR_EXACT_MATCHING,
    compute_image_mean_iou,
    compute_iou,
    compute_iou_matrix,
    match_boxes,
)


@st.composite
def box_xyxy_strategy(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """A box_xyxy with positive area on a small pixel grid, so that overlapping,
    touching and disjoint pairs are all common.
    """
    x1, y1 = draw(st.integers(0, 30)), draw(st.integers(0, 30))
    return (x1, y1, x1 + draw(st.integers(1, 20)), y1 + draw(st.integers(1, 20)))


@given(box_a_xyxy=box_xyxy_strategy(), box_b_xyxy=box_xyxy_strategy())
@settings(max_examples=200, deadline=None)
def test_iou_matches_torchvision_box_iou(
    box_a_xyxy: tuple[int, ...], box_b_xyxy: tuple[int, ...]
) -> None:
    expected = box_iou(
        torch.tensor([box_a_xyxy], dtype=torch.float64),
        torch.tensor([box_b_xyxy], dtype=torch.float64),
    )
    assert compute_iou(box_a_xyxy, box_b_xyxy) == pytest.approx(expected.item(), abs=1e-12)


@given(box_a_xyxy=box_xyxy_strategy(), box_b_xyxy=box_xyxy_strategy())
@settings(max_examples=100, deadline=None)
def test_iou_is_symmetric(box_a_xyxy: tuple[int, ...], box_b_xyxy: tuple[int, ...]) -> None:
    assert compute_iou(box_a_xyxy, box_b_xyxy) == compute_iou(box_b_xyxy, box_a_xyxy)


def test_iou_of_a_box_with_itself_is_one() -> None:
    assert compute_iou((10.5, 20.0, 110.5, 220.0), (10.5, 20.0, 110.5, 220.0)) == 1.0


@pytest.mark.parametrize(
    "box_b_xyxy",
    [(200, 200, 300, 300), (100, 0, 200, 100), (0, 100, 100, 200)],
    ids=["disjoint", "touching-right-edge", "touching-bottom-edge"],
)
def test_iou_is_zero_for_disjoint_or_touching_boxes(box_b_xyxy: tuple[int, ...]) -> None:
    assert compute_iou((0, 0, 100, 100), box_b_xyxy) == 0.0


@pytest.mark.parametrize(
    "degenerate_box_xyxy",
    [(10, 10, 10, 50), (10, 10, 50, 10), (50, 50, 10, 10)],
    ids=["zero-width", "zero-height", "inverted"],
)
def test_iou_is_zero_for_degenerate_boxes(degenerate_box_xyxy: tuple[int, ...]) -> None:
    assert compute_iou(degenerate_box_xyxy, (0, 0, 100, 100)) == 0.0
    assert compute_iou(degenerate_box_xyxy, degenerate_box_xyxy) == 0.0


def test_iou_of_half_overlapping_boxes_is_one_third() -> None:
    # Worked by hand: intersection 50x100 = 5000, union 10000 + 10000 - 5000 = 15000.
    assert compute_iou((0, 0, 100, 100), (50, 0, 150, 100)) == pytest.approx(1 / 3)


@given(
    boxes_a_xyxy=st.lists(box_xyxy_strategy(), max_size=4),
    boxes_b_xyxy=st.lists(box_xyxy_strategy(), max_size=4),
)
@settings(max_examples=50, deadline=None)
def test_iou_matrix_has_one_row_per_box_a_and_matches_torchvision(
    boxes_a_xyxy: list[tuple[int, ...]], boxes_b_xyxy: list[tuple[int, ...]]
) -> None:
    iou_matrix = compute_iou_matrix(boxes_a_xyxy, boxes_b_xyxy)
    assert iou_matrix.shape == (len(boxes_a_xyxy), len(boxes_b_xyxy))
    if boxes_a_xyxy and boxes_b_xyxy:
        expected = box_iou(
            torch.tensor(boxes_a_xyxy, dtype=torch.float64),
            torch.tensor(boxes_b_xyxy, dtype=torch.float64),
        )
        np.testing.assert_allclose(iou_matrix, expected.numpy(), atol=1e-12)


# Four boxes 10 px tall, laid out along x, where greedy matching goes wrong: box_a's best partner is
# ground_truth_x (IoU 9/11), which leaves box_b only ground_truth_y (IoU 1/15), total 0.885.
# Pairing box_a with ground_truth_y (6/10) and box_b with ground_truth_x (6/14) totals 1.029.
PREDICTED_A_XYXY = (0, 0, 10, 10)
PREDICTED_B_XYXY = (5, 0, 15, 10)
GROUND_TRUTH_X_XYXY = (1, 0, 11, 10)
GROUND_TRUTH_Y_XYXY = (0, 0, 6, 10)


def test_match_boxes_picks_the_best_total_where_greedy_would_not() -> None:
    matches = match_boxes(
        [PREDICTED_A_XYXY, PREDICTED_B_XYXY], [GROUND_TRUTH_X_XYXY, GROUND_TRUTH_Y_XYXY]
    )
    assert [
        (predicted_index, ground_truth_index) for predicted_index, ground_truth_index, _ in matches
    ] == [(0, 1), (1, 0)]
    assert [iou for _, _, iou in matches] == pytest.approx([6 / 10, 6 / 14])


def test_match_boxes_pairs_each_box_at_most_once_when_sides_differ_in_size() -> None:
    matches = match_boxes([PREDICTED_A_XYXY], [GROUND_TRUTH_X_XYXY, GROUND_TRUTH_Y_XYXY])
    assert matches == [(0, 0, pytest.approx(9 / 11))]


def test_match_boxes_leaves_out_pairs_that_do_not_overlap() -> None:
    assert match_boxes([(0, 0, 10, 10)], [(50, 50, 60, 60)]) == []


def test_match_boxes_returns_nothing_when_a_side_is_empty() -> None:
    assert match_boxes([], [GROUND_TRUTH_X_XYXY]) == []
    assert match_boxes([PREDICTED_A_XYXY], []) == []


def test_match_boxes_matches_shuffled_copies_when_boxes_outnumber_exact_matching_tries() -> None:
    num_boxes = MAX_BOXES_FOR_EXACT_MATCHING + 2
    ground_truth_xyxy = [(index * 5, 0, index * 5 + 10, 10) for index in range(num_boxes)]
    matches = match_boxes(ground_truth_xyxy[::-1], ground_truth_xyxy)
    assert matches == [(index, num_boxes - 1 - index, 1.0) for index in range(num_boxes)]


@pytest.mark.parametrize(
    ("predicted_xyxy", "expected_mean_iou"),
    [
        ([GROUND_TRUTH_X_XYXY], 1.0),
        ([GROUND_TRUTH_X_XYXY, (500, 500, 600, 600)], 0.5),
        ([], 0.0),
        ([(500, 500, 600, 600)], 0.0),
    ],
    ids=["perfect", "one-extra-prediction", "no-prediction", "prediction-elsewhere"],
)
def test_image_mean_iou_counts_unmatched_boxes_as_zero(
    predicted_xyxy: list[tuple[int, ...]], expected_mean_iou: float
) -> None:
    assert compute_image_mean_iou(predicted_xyxy, [GROUND_TRUTH_X_XYXY]) == pytest.approx(
        expected_mean_iou
    )


def test_image_mean_iou_divides_by_the_ground_truth_count_when_a_table_is_missed() -> None:
    mean_iou = compute_image_mean_iou(
        [GROUND_TRUTH_X_XYXY], [GROUND_TRUTH_X_XYXY, (500, 500, 600, 600)]
    )
    assert mean_iou == pytest.approx(0.5)


def test_image_mean_iou_is_nan_when_both_sides_are_empty() -> None:
    assert math.isnan(compute_image_mean_iou([], []))
