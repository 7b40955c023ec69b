"""Tests for vlmlib.evaluation (and its plots in vlmlib.viz): known answers, and
agreement with pycocotools and torchvision.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from vlmlib.data import CATEGORY_NAMES, format_answer
from vlmlib.evaluation import (
    DEFAULT_SWEEP_THRESHOLDS,
    EvaluationReport,
    ImagePrediction,
    build_image_predictions,
    compare_reports,
    evaluate_predictions,
    score_mean_box_baseline,
)
from vlmlib.parsing import DEFAULT_LABEL, parse_box_answer
from vlmlib.viz import (
    plot_iou_distribution,
    plot_prediction_gallery,
    plot_threshold_sweep,
)

# GT (0, 0, 100, 100) against (0, 0, 80, 80): intersection 80 * 80 = 6400, union
# 10000, so IoU 0.64 exactly.
SQUARE_XYXY = (0.0, 0.0, 100.0, 100.0)
SHRUNK_SQUARE_XYXY = (0.0, 0.0, 80.0, 80.0)
FAR_AWAY_XYXY = (150.0, 150.0, 190.0, 190.0)  # overlaps nothing above


def make_prediction(
    image_id: str, ground_truth: list, predicted: list = (), **fields: Any
) -> ImagePrediction:
    """An ImagePrediction on a 200x200 image; labels and scores take their defaults unless given."""
    return ImagePrediction(
        image_id, 200, 200, list(ground_truth), predicted_xyxy=list(predicted), **fields
    )


# --- known answers, worked out by hand ---


def test_evaluation_scores_perfect_predictions_as_one() -> None:
    boxes = [[SQUARE_XYXY], [SQUARE_XYXY, FAR_AWAY_XYXY], [FAR_AWAY_XYXY]]
    report = evaluate_predictions(
        [
            make_prediction(f"image-{index}", box_list, box_list)
            for index, box_list in enumerate(boxes)
        ]
    )
    assert (report.mean_iou, report.precision, report.recall, report.f1) == (1.0, 1.0, 1.0, 1.0)
    assert (report.map_50, report.map_50_95, report.parse_failure_rate) == pytest.approx(
        (1.0, 1.0, 0.0)
    )


def test_evaluation_counts_box_with_iou_0_64_at_0_5_but_not_at_0_75() -> None:
    report = evaluate_predictions([make_prediction("shifted", [SQUARE_XYXY], [SHRUNK_SQUARE_XYXY])])
    assert report.mean_iou == pytest.approx(0.64)
    assert report.at_threshold(0.5)["true_positives"] == 1
    assert report.at_threshold(0.75)["true_positives"] == 0
    assert report.map_50 == pytest.approx(1.0)  # a mean of 101 ones, so within rounding of 1


def test_evaluation_map_50_95_is_the_fraction_of_thresholds_the_iou_clears() -> None:
    report = evaluate_predictions([make_prediction("shifted", [SQUARE_XYXY], [SHRUNK_SQUARE_XYXY])])
    # IoU 0.64 clears 0.50, 0.55 and 0.60 (AP 1 at each) and none of 0.65 ...
    # 0.95 (AP 0): 3 of COCO's 10 thresholds.
    assert report.map_50_95 == pytest.approx(3 / 10)
    assert report.sweep["true_positives"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


def test_evaluation_missed_box_lowers_recall_and_mean_iou_but_not_precision() -> None:
    report = evaluate_predictions(
        [make_prediction("missed", [SQUARE_XYXY, FAR_AWAY_XYXY], [SQUARE_XYXY])]
    )
    assert (report.precision, report.recall) == (1.0, 0.5)
    assert report.f1 == pytest.approx(2 / 3)  # 2 * 1 * 0.5 / (1 + 0.5)
    assert report.mean_iou == 0.5  # one IoU of 1 over max(1 prediction, 2 ground-truth boxes)


def test_evaluation_extra_box_lowers_precision_and_mean_iou_but_not_recall() -> None:
    report = evaluate_predictions(
        [make_prediction("extra", [SQUARE_XYXY], [SQUARE_XYXY, FAR_AWAY_XYXY])]
    )
    assert (report.precision, report.recall) == (0.5, 1.0)
    assert report.mean_iou == 0.5  # one IoU of 1 over max(2 predictions, 1 ground-truth box)


def test_evaluation_counts_parse_failure_as_iou_zero_and_a_missed_box() -> None:
    predictions = [
        make_prediction("found", [SQUARE_XYXY], [SQUARE_XYXY]),
        make_prediction("unparsed", [SQUARE_XYXY], failure_reason="no box found"),
    ]
    report = evaluate_predictions(predictions)
    assert (report.parse_failure_rate, report.num_parse_failures) == (0.5, 1)
    assert (report.mean_iou, report.mean_iou_parsed) == (0.5, 1.0)
    assert (report.precision, report.recall) == (1.0, 0.5)
    assert report.failure_reasons == {"no box found": 1}


def test_evaluation_groups_failure_reasons_by_kind() -> None:
    reasons = [
        "all boxes rejected: '(5,5),(1,1)': inverted or zero-size box",
        "all boxes rejected: '(1,2),(3,2000)': outside",
        "truncated box",
    ]
    report = evaluate_predictions(
        [
            make_prediction(f"image-{index}", [SQUARE_XYXY], failure_reason=reason)
            for index, reason in enumerate(reasons)
        ]
    )
    assert report.failure_reasons == {"all boxes rejected": 2, "truncated box": 1}


def test_evaluation_with_no_predicted_box_at_all_gives_zero_map_and_undefined_precision() -> None:
    report = evaluate_predictions(
        [make_prediction(f"image-{index}", [SQUARE_XYXY]) for index in range(3)]
    )
    assert (report.map_50, report.map_50_95) == (0.0, 0.0)
    assert math.isnan(report.precision)
    assert (report.recall, report.f1, report.mean_iou, report.parse_failure_rate) == (
        0.0,
        0.0,
        0.0,
        1.0,
    )


def test_evaluation_map_with_equal_scores_depends_on_image_order() -> None:
    hit = make_prediction("hit", [SQUARE_XYXY], [SQUARE_XYXY])
    miss = make_prediction("miss", [SQUARE_XYXY], [FAR_AWAY_XYXY])
    # Precision 0.5 at recall 0.5 either way. COCO interpolates precision at 101 recall
    # points (0, 0.01, ..., 1); 51 of them are <= 0.5. Hit first: precision 1 at recall
    # 0.5, so AP = 51 / 101. Miss first: precision never beats 0.5, so AP = 0.5 * 51 /
    # 101. This pins pycocotools' tie-breaking, which the module docstring describes.
    assert evaluate_predictions([hit, miss]).map_50 == pytest.approx(51 / 101)
    assert evaluate_predictions([miss, hit]).map_50 == pytest.approx(0.5 * 51 / 101)


def test_evaluation_map_follows_given_scores_whatever_the_image_order() -> None:
    hit = make_prediction("hit", [SQUARE_XYXY], [SQUARE_XYXY], predicted_scores=[0.9])
    miss = make_prediction("miss", [SQUARE_XYXY], [FAR_AWAY_XYXY], predicted_scores=[0.1])
    assert evaluate_predictions([miss, hit]).map_50 == pytest.approx(
        51 / 101
    )  # the hit ranks first, as in the test above


def test_evaluation_reports_headline_figures_at_every_requested_threshold() -> None:
    report = evaluate_predictions(
        [make_prediction("shifted", [SQUARE_XYXY], [SHRUNK_SQUARE_XYXY])],
        iou_thresholds=(0.5, 0.75),
    )
    summary = report.summary_table("shifted")
    assert (summary.loc["shifted", "precision@0.5"], summary.loc["shifted", "precision@0.75"]) == (
        1.0,
        0.0,
    )
    assert report.precision == 1.0  # the first threshold backs the headline attributes


def test_evaluation_rejects_image_without_ground_truth_naming_it() -> None:
    with pytest.raises(ValueError, match="'no-tables'"):
        evaluate_predictions(
            [make_prediction("fine", [SQUARE_XYXY]), make_prediction("no-tables", [])]
        )


def test_evaluation_rejects_an_empty_list() -> None:
    with pytest.raises(ValueError, match="got no images"):
        evaluate_predictions([])


def test_image_prediction_rejects_labels_that_do_not_match_boxes() -> None:
    with pytest.raises(ValueError, match="1 boxes but 2 predicted_labels"):
        make_prediction("image", [SQUARE_XYXY], [SQUARE_XYXY], predicted_labels=["a", "b"])


def test_evaluation_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate_predictions([make_prediction("image", [SQUARE_XYXY], [SHRUNK_SQUARE_XYXY])])
    assert capsys.readouterr().out == ""  # pycocotools' progress lines would clutter every chapter


# --- per-category figures ---


def test_per_category_table_lists_every_category_and_marks_those_without_ground_truth() -> None:
    report = evaluate_predictions([make_prediction("image", [SQUARE_XYXY], [SQUARE_XYXY])])
    table = report.per_category.set_index("category")
    assert list(table.index) == list(CATEGORY_NAMES)
    assert table.loc[DEFAULT_LABEL, "ap_50"] == pytest.approx(1.0)
    assert table.drop(index=DEFAULT_LABEL)["ap_50"].isna().all()
    assert table.drop(index=DEFAULT_LABEL)["num_ground_truth"].eq(0).all()


def test_per_category_table_scores_a_right_box_with_a_wrong_label_as_a_miss() -> None:
    prediction = make_prediction(
        "image",
        [SQUARE_XYXY, FAR_AWAY_XYXY],
        [SQUARE_XYXY, FAR_AWAY_XYXY],
        ground_truth_labels=[CATEGORY_NAMES[0], CATEGORY_NAMES[3]],
        predicted_labels=[CATEGORY_NAMES[0], "nutrition facts"],
    )
    report = evaluate_predictions([prediction])
    table = report.per_category.set_index("category")
    assert list(table.index) == [
        *CATEGORY_NAMES,
        "nutrition facts",
    ]  # unknown labels get a row of their own
    assert (
        table.loc[CATEGORY_NAMES[0], "ap_50"],
        table.loc[CATEGORY_NAMES[3], "ap_50"],
    ) == pytest.approx((1.0, 0.0))
    assert math.isnan(table.loc["nutrition facts", "ap_50"])
    assert report.map_50 == pytest.approx(
        1.0
    )  # the headline mAP ignores labels: both boxes are in the right place


# --- agreement with independent computations on random box sets ---


@st.composite
def box_xyxy_strategy(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """A box_xyxy with positive area on a small pixel grid, so that overlapping
    and disjoint boxes are both common.
    """
    x1, y1 = draw(st.integers(0, 30)), draw(st.integers(0, 30))
    return (x1, y1, x1 + draw(st.integers(1, 20)), y1 + draw(st.integers(1, 20)))


def nudge_box(box_and_offsets: tuple[tuple[int, ...], list[int]]) -> tuple[int, int, int, int]:
    """Move each side of a box_xyxy by its offset, keeping it on the image
    (x, y >= 0) and at least 1 px wide and high.
    """
    (x1, y1, x2, y2), (dx1, dy1, dx2, dy2) = box_and_offsets
    x1, y1 = max(0, x1 + dx1), max(0, y1 + dy1)
    return (x1, y1, max(x1 + 1, x2 + dx2), max(y1 + 1, y2 + dy2))


@st.composite
def image_prediction_strategy(draw: st.DrawFn, index: int = 0) -> ImagePrediction:
    """One 64x64 image with 1-3 ground-truth boxes and 0-4 predictions, two
    categories, random or equal scores.
    """
    ground_truth = draw(st.lists(box_xyxy_strategy(), min_size=1, max_size=3))
    # About half the predictions are a ground-truth box nudged by a few pixels,
    # so IoUs near every threshold are common.
    nudged = st.tuples(
        st.sampled_from(ground_truth), st.lists(st.integers(-3, 3), min_size=4, max_size=4)
    ).map(nudge_box)
    predicted = draw(st.lists(box_xyxy_strategy() | nudged, min_size=0, max_size=4))
    labels = st.sampled_from(CATEGORY_NAMES[:2])
    score = st.just(1.0) | st.floats(0.01, 1.0)
    return ImagePrediction(
        f"image-{index}",
        64,
        64,
        ground_truth,
        draw(st.lists(labels, min_size=len(ground_truth), max_size=len(ground_truth))),
        predicted,
        draw(st.lists(labels, min_size=len(predicted), max_size=len(predicted))),
        draw(st.lists(score, min_size=len(predicted), max_size=len(predicted))),
    )


image_predictions_strategy = st.integers(1, 4).flatmap(
    lambda num_images: st.tuples(
        *(image_prediction_strategy(index) for index in range(num_images))
    ).map(list)
)


def run_cocoeval_directly(
    predictions: list[ImagePrediction], is_class_agnostic: bool
) -> list[float]:
    """COCOeval written out in the test: returns (AP@0.5, AP@[.5:.95]) from
    `summarize()`, per category or for all.
    """
    category_ids = {
        name: 1 if is_class_agnostic else position + 1
        for position, name in enumerate(CATEGORY_NAMES[:2])
    }
    categories = [
        {"id": category_id, "name": str(category_id)} for category_id in set(category_ids.values())
    ]
    ground_truth = {"images": [], "annotations": [], "categories": categories}
    detections = []
    for image_number, prediction in enumerate(predictions, start=1):
        ground_truth["images"].append({"id": image_number, "width": 64, "height": 64})
        for (x1, y1, x2, y2), label in zip(
            prediction.ground_truth_xyxy, prediction.ground_truth_labels
        ):
            ground_truth["annotations"].append(
                {
                    "id": len(ground_truth["annotations"]) + 1,
                    "image_id": image_number,
                    "iscrowd": 0,
                    "category_id": category_ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                }
            )
        predicted = zip(
            prediction.predicted_xyxy, prediction.predicted_labels, prediction.predicted_scores
        )
        for (x1, y1, x2, y2), label, score in predicted:
            detections.append(
                {
                    "image_id": image_number,
                    "category_id": category_ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    results = []
    with contextlib.redirect_stdout(io.StringIO()):
        coco_ground_truth = COCO()
        coco_ground_truth.dataset = ground_truth
        coco_ground_truth.createIndex()
        coco_detections = coco_ground_truth.loadRes(detections)
        for category_id in sorted(set(category_ids.values())):
            coco_eval = COCOeval(coco_ground_truth, coco_detections, "bbox")
            coco_eval.params.catIds = [category_id]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
            results += [
                coco_eval.stats[1],
                coco_eval.stats[0],
            ]  # stats[1] is AP@0.5, stats[0] AP@[.5:.95]
    return [
        math.nan if value == -1 else value for value in results
    ]  # -1: the category has no ground truth


@given(predictions=image_predictions_strategy)
@settings(max_examples=40, deadline=None)
def test_map_agrees_with_a_direct_cocoeval_run(predictions: list[ImagePrediction]) -> None:
    assume(
        any(prediction.predicted_xyxy for prediction in predictions)
    )  # loadRes needs one detection
    report = evaluate_predictions(predictions)
    assert [report.map_50, report.map_50_95] == pytest.approx(
        run_cocoeval_directly(predictions, True), abs=1e-12
    )


@given(predictions=image_predictions_strategy)
@settings(max_examples=30, deadline=None)
def test_per_category_ap_agrees_with_a_direct_cocoeval_run(
    predictions: list[ImagePrediction],
) -> None:
    assume(any(prediction.predicted_xyxy for prediction in predictions))
    table = evaluate_predictions(predictions).per_category.set_index("category")
    actual = [
        value
        for name in CATEGORY_NAMES[:2]
        for value in (table.loc[name, "ap_50"], table.loc[name, "ap_50_95"])
    ]
    assert actual == pytest.approx(
        run_cocoeval_directly(predictions, False), abs=1e-12, nan_ok=True
    )


def count_true_positives_by_brute_force(
    prediction: ImagePrediction, threshold: float
) -> tuple[int, int]:
    """Try every one-to-one assignment (each prediction to one free ground-truth
    box, or to none); among those with the largest total IoU (torchvision's), return
    the fewest and the most pairs with IoU >= threshold. They differ only on ties."""
    if not prediction.predicted_xyxy:
        return 0, 0
    ious = box_iou(
        torch.tensor(prediction.predicted_xyxy, dtype=torch.float64),
        torch.tensor(prediction.ground_truth_xyxy, dtype=torch.float64),
    ).tolist()
    options = [None, *range(len(prediction.ground_truth_xyxy))]
    scored = []
    for assignment in itertools.product(options, repeat=len(prediction.predicted_xyxy)):
        chosen = [column for column in assignment if column is not None]
        if len(chosen) == len(set(chosen)):
            pairs = [
                ious[row][column] for row, column in enumerate(assignment) if column is not None
            ]
            scored.append((sum(pairs), sum(iou >= threshold for iou in pairs)))
    best_total = max(total for total, _ in scored)
    counts = [count for total, count in scored if total > best_total - 1e-9]
    return min(counts), max(counts)


@given(predictions=image_predictions_strategy)
@settings(max_examples=40, deadline=None)
def test_precision_and_recall_agree_with_a_brute_force_count(
    predictions: list[ImagePrediction],
) -> None:
    report = evaluate_predictions(predictions)
    num_predicted = sum(len(prediction.predicted_xyxy) for prediction in predictions)
    num_ground_truth = sum(len(prediction.ground_truth_xyxy) for prediction in predictions)
    for threshold in DEFAULT_SWEEP_THRESHOLDS:
        bounds = [
            count_true_positives_by_brute_force(prediction, threshold) for prediction in predictions
        ]
        row = report.at_threshold(threshold)
        assert (
            sum(low for low, _ in bounds)
            <= row["true_positives"]
            <= sum(high for _, high in bounds)
        )
        assert row["recall"] == pytest.approx(row["true_positives"] / num_ground_truth)
        if num_predicted:
            assert row["precision"] == pytest.approx(row["true_positives"] / num_predicted)


@given(pairs=st.lists(st.tuples(box_xyxy_strategy(), box_xyxy_strategy()), min_size=1, max_size=5))
@settings(max_examples=30, deadline=None)
def test_per_image_iou_matches_torchvision_box_iou(
    pairs: list[tuple[tuple[int, ...], tuple[int, ...]]],
) -> None:
    predictions = [
        ImagePrediction(f"image-{index}", 64, 64, [truth], predicted_xyxy=[predicted])
        for index, (truth, predicted) in enumerate(pairs)
    ]
    expected = [
        box_iou(
            torch.tensor([predicted], dtype=torch.float64),
            torch.tensor([truth], dtype=torch.float64),
        ).item()
        for truth, predicted in pairs
    ]
    report = evaluate_predictions(predictions)
    assert report.per_image["iou"].tolist() == pytest.approx(expected, abs=1e-12)
    assert report.mean_iou == pytest.approx(np.mean(expected), abs=1e-12)


# --- from records and answers to predictions ---


def test_build_image_predictions_converts_hub_and_qwen_boxes_to_pixels() -> None:
    record = {
        "image_id": "r0",
        "width": 200,
        "height": 100,
        "objects": {
            "bbox": [[0.1, 0.2, 0.5, 0.6]],
            "category_id": [0],
            "category_name": [DEFAULT_LABEL],
        },
    }
    answer_text = "<|box_start|>(200,100),(600,500)<|box_end|>"
    (prediction,) = build_image_predictions(
        [record], [parse_box_answer(answer_text)], answers_text=[answer_text]
    )
    # box_hub [y_min 0.1, x_min 0.2, y_max 0.5, x_max 0.6] on 200x100 px, and box_qwen
    # (200,100),(600,500) on the 0-1000 grid, are both (40, 10, 120, 50) in pixels.
    assert prediction.ground_truth_xyxy == [pytest.approx((40.0, 10.0, 120.0, 50.0))]
    assert prediction.predicted_xyxy == [pytest.approx((40.0, 10.0, 120.0, 50.0))]
    assert (prediction.predicted_scores, prediction.answer_text, prediction.is_parse_failure) == (
        [1.0],
        answer_text,
        False,
    )


def test_build_image_predictions_keeps_the_failure_reason() -> None:
    record = {
        "image_id": "r0",
        "width": 10,
        "height": 10,
        "objects": {
            "bbox": [[0.1, 0.1, 0.5, 0.5]],
            "category_id": [0],
            "category_name": [DEFAULT_LABEL],
        },
    }
    (prediction,) = build_image_predictions([record], [parse_box_answer("I see no table.")])
    assert (prediction.is_parse_failure, prediction.failure_reason) == (True, "no box found")


def test_build_image_predictions_rejects_a_missing_answer() -> None:
    with pytest.raises(ValueError, match="2 records but 1 parsed_answers"):
        build_image_predictions([{}, {}], [parse_box_answer("")])


def test_target_answers_score_perfectly_apart_from_grid_truncation(
    synthetic_small_dataset_dict,
) -> None:
    records = list(
        synthetic_small_dataset_dict["val"].select_columns(
            ["image_id", "width", "height", "objects"]
        )
    )
    answers = [parse_box_answer(format_answer(record["objects"])) for record in records]
    report = evaluate_predictions(build_image_predictions(records, answers))
    assert report.mean_iou > 0.98  # the grid truncates each side by up to 0.1% of the image
    assert (report.precision, report.recall, report.map_50) == pytest.approx((1.0, 1.0, 1.0))


# --- the report: JSON, summary ---


def test_report_survives_a_json_round_trip(tmp_path: Path) -> None:
    predictions = [
        make_prediction("found", [SQUARE_XYXY], [SHRUNK_SQUARE_XYXY]),
        make_prediction("lost", [SQUARE_XYXY]),
    ]
    report = evaluate_predictions(predictions)
    report.save_json(tmp_path / "reports" / "report.json")
    loaded = EvaluationReport.load_json(tmp_path / "reports" / "report.json")
    assert loaded.to_dict() == report.to_dict()
    assert loaded.per_image["iou"].tolist() == report.per_image["iou"].tolist()


def test_report_json_writes_undefined_figures_as_null(tmp_path: Path) -> None:
    report = evaluate_predictions([make_prediction("lost", [SQUARE_XYXY])])
    report.save_json(tmp_path / "report.json")
    text = (tmp_path / "report.json").read_text()
    values = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not valid JSON"))
    assert values["precision"] is None
    assert math.isnan(EvaluationReport.load_json(tmp_path / "report.json").precision)


def test_compare_reports_gives_one_row_per_model() -> None:
    zero_shot = evaluate_predictions([make_prediction("image", [SQUARE_XYXY])])
    fine_tuned = evaluate_predictions([make_prediction("image", [SQUARE_XYXY], [SQUARE_XYXY])])
    table = compare_reports({"zero-shot": zero_shot, "fine-tuned": fine_tuned})
    assert list(table.index) == ["zero-shot", "fine-tuned"]
    assert table["mAP@0.5"].tolist() == pytest.approx([0.0, 1.0])
    assert table["parse failure rate"].tolist() == [1.0, 0.0]


# --- plots (vlmlib.viz) of evaluation results ---


def test_plot_iou_distribution_draws_one_labelled_histogram_per_model() -> None:
    figure = plot_iou_distribution(
        {"zero-shot": [0.0, 0.2, 0.7], "fine-tuned": [0.8, 0.9, math.nan]}
    )
    axis = figure.axes[0]
    assert isinstance(figure, Figure)
    assert axis.get_xlabel() and axis.get_ylabel() and axis.get_title()
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels[0].startswith("zero-shot (3 images") and labels[1].startswith(
        "fine-tuned (2 images"
    )


def test_plot_threshold_sweep_draws_precision_recall_and_f1_for_each_model() -> None:
    report = evaluate_predictions([make_prediction("shifted", [SQUARE_XYXY], [SHRUNK_SQUARE_XYXY])])
    figure = plot_threshold_sweep({"zero-shot": report.sweep, "fine-tuned": report.sweep})
    assert len(figure.axes[0].get_lines()) == 6  # 2 models x (precision, recall, F1)
    assert figure.axes[0].get_xlabel() == "IoU threshold for a true positive"


def test_plot_prediction_gallery_puts_the_iou_in_each_title() -> None:
    records = [
        {"image_id": image_id, "image": Image.new("RGB", (200, 200), "white")}
        for image_id in ("shifted", "lost")
    ]
    predictions = [
        make_prediction("shifted", [SQUARE_XYXY], [SHRUNK_SQUARE_XYXY]),
        make_prediction("lost", [SQUARE_XYXY], failure_reason="truncated box"),
    ]
    figure = plot_prediction_gallery(records, predictions)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["shifted\nIoU 0.64", "lost\nIoU 0, parse failure: truncated box"]


def test_plot_prediction_gallery_rejects_records_in_another_order() -> None:
    records = [{"image_id": "b", "image": Image.new("RGB", (200, 200))}]
    with pytest.raises(ValueError, match="same order"):
        plot_prediction_gallery(records, [make_prediction("a", [SQUARE_XYXY])])


def test_mean_box_baseline_scores_the_mean_training_box_on_every_image():
    def record(boxes: list[list[float]]) -> dict:
        return {"width": 200, "height": 100, "objects": {"bbox": boxes}}

    train = [record([[0.0, 0.0, 0.5, 0.5]]), record([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])]
    # mean box (hub [y_min, x_min, y_max, x_max]): [1/6, 1/6, 2/3, 2/3] ->
    # pixels x 33.3-133.3, y 16.7-66.7
    exact = record([[1 / 6, 1 / 6, 2 / 3, 2 / 3]])
    beside = record([[0.0, 0.7, 0.2, 1.0]])  # no overlap with the mean box
    two_tables = record(
        [[1 / 6, 1 / 6, 2 / 3, 2 / 3], [0.0, 0.7, 0.2, 1.0]]
    )  # one matched, one missed: 1/2
    assert score_mean_box_baseline(train, [exact]) == pytest.approx(1.0)
    assert score_mean_box_baseline(train, [beside]) == 0.0
    assert score_mean_box_baseline(train, [exact, beside, two_tables]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one training box"):
        score_mean_box_baseline([record([])], [exact])
