"""Check the evaluation exercises: IoU, precision and recall at a threshold, average precision.

Why: the course's numbers are only as good as these metrics, so each is compared with
`vlmlib.metrics`, `vlmlib.evaluation` and pycocotools on sets of predictions
that catch common slips.
Explained in: book/labs, lab 06 (exercises 6.1 to 6.3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vlmlib.checks.runner import CheckCase, CheckResult, run_check

__all__ = ["check_average_precision", "check_compute_iou", "check_precision_recall"]


def check_compute_iou(function: Callable[[Sequence[float], Sequence[float]], Any]) -> CheckResult:
    """Check IoU by hand against `vlmlib.metrics.compute_iou` (lab 06, exercise 6.1)."""
    from vlmlib.metrics import compute_iou

    pairs = {  # name -> (box_a_xyxy, box_b_xyxy, hint)
        "the same box": ((10, 20, 110, 70), (10, 20, 110, 70), None),
        "half of one box overlaps the other": (
            (0, 0, 100, 100),
            (50, 0, 150, 100),
            "union = area(a) + area(b) - intersection: the overlap counts once.",
        ),
        "one box inside the other": ((0, 0, 200, 100), (50, 25, 100, 75), None),
        "boxes that only touch": (
            (0, 0, 50, 50),
            (50, 0, 100, 50),
            "touching boxes share an edge, not an area: IoU 0.",
        ),
        "disjoint boxes": (
            (0, 0, 10, 10),
            (30, 30, 60, 60),
            "clip the intersection's width and height at 0: max(0, ...).",
        ),
        "a box of zero width": (
            (20, 0, 20, 50),
            (0, 0, 50, 50),
            "a box with no area has IoU 0 with anything.",
        ),
        "pixel coordinates with fractions": (
            (12.5, 7.25, 80.0, 60.5),
            (30.0, 0.0, 95.5, 44.0),
            None,
        ),
    }
    cases = [
        CheckCase(name, {"box_a_xyxy": a, "box_b_xyxy": b}, compute_iou(a, b), hint)
        for name, (a, b, hint) in pairs.items()
    ]
    return run_check(
        function,
        cases,
        hint=(
            "intersection width = min(right edges) - max(left edges), at least 0; likewise height."
        ),
    )


def _image(
    image_id: str, ground_truth_xyxy: list, predicted_xyxy: list, scores: list[float] | None = None
) -> Any:
    from vlmlib.evaluation import ImagePrediction

    return ImagePrediction(
        image_id=image_id,
        width_px=400,
        height_px=300,
        ground_truth_xyxy=ground_truth_xyxy,
        predicted_xyxy=predicted_xyxy,
        predicted_scores=scores or [],
    )


# Named sets of predictions for exercises 6.2 and 6.3: name -> list of ImagePrediction arguments
# (image_id, ground truth, predictions, scores), all box_xyxy in pixels of a 400x300 image.
_TABLE = (40, 40, 200, 240)
_PREDICTION_SETS = {
    "one image, one good box": [("a", [_TABLE], [(45, 45, 205, 235)], [0.9])],
    "a box below the IoU threshold": [("a", [_TABLE], [(120, 40, 280, 240)], [0.9])],
    "two tables, one found": [("a", [_TABLE, (250, 50, 380, 150)], [(42, 38, 198, 244)], [0.8])],
    "an extra, invented box": [
        ("a", [_TABLE], [(40, 40, 198, 238), (260, 200, 390, 290)], [0.9, 0.6])
    ],
    "one prediction over two tables": [
        ("a", [(40, 40, 200, 240), (60, 40, 220, 240)], [(50, 40, 210, 240)], [0.9])
    ],
    "pairing by largest total IoU, not highest first": [
        (
            "a",
            [(50, 50, 250, 250), (150, 50, 350, 250)],
            [(90, 20, 260, 260), (60, 50, 310, 250)],
            [0.7, 0.9],
        )
    ],
    "several images, one with no box (a parse failure)": [
        ("a", [_TABLE], [(45, 45, 205, 235)], [0.9]),
        ("b", [(100, 60, 300, 200)], [], []),
        (
            "c",
            [(10, 10, 110, 90), (200, 150, 390, 290)],
            [(12, 8, 108, 95), (215, 165, 380, 280)],
            [0.8, 0.7],
        ),
    ],
}


def _prediction_set(name: str) -> list:
    return [_image(*arguments) for arguments in _PREDICTION_SETS[name]]


def check_precision_recall(function: Callable[[Sequence[Any], float], Any]) -> CheckResult:
    """Check precision and recall at an IoU threshold against
    `vlmlib.evaluation.evaluate_predictions` (exercise 6.2).
    """
    from vlmlib.evaluation import evaluate_predictions

    def expected(predictions: list, threshold: float) -> tuple[float, float]:
        row = evaluate_predictions(predictions, iou_thresholds=(threshold,)).at_threshold(threshold)
        return float(row["precision"]), float(row["recall"])

    hints = {
        "one prediction over two tables": (
            "one-to-one: a prediction can match at most one table, and a table one prediction."
        ),
        "pairing by largest total IoU, not highest first": (
            "try every pairing (itertools.permutations) and keep the one with the "
            "largest total IoU; greedy pairing loses a match here."
        ),
        "several images, one with no box (a parse failure)": (
            "add up true positives, predictions and tables over all images before dividing."
        ),
    }
    cases = [
        CheckCase(
            f"{name}, IoU {threshold}",
            {"predictions": _prediction_set(name), "iou_threshold": threshold},
            expected(_prediction_set(name), threshold),
            hints.get(name),
        )
        for name in _PREDICTION_SETS
        for threshold in [0.5]
    ]
    cases.append(
        CheckCase(
            "several images, IoU 0.75",
            {
                "predictions": _prediction_set("several images, one with no box (a parse failure)"),
                "iou_threshold": 0.75,
            },
            expected(_prediction_set("several images, one with no box (a parse failure)"), 0.75),
            "a matched pair is a true positive only when its IoU is at least the threshold.",
        )
    )
    return run_check(
        function,
        cases,
        hint="precision = true positives / predicted boxes; recall = true positives / "
        "ground-truth boxes; return (precision, recall).",
    )


_AP_SETS = {  # name -> ImagePrediction arguments, for exercise 6.3
    "every table found": _PREDICTION_SETS["several images, one with no box (a parse failure)"][:1]
    + _PREDICTION_SETS["several images, one with no box (a parse failure)"][2:],
    "a confident false positive, ranked first": [
        ("a", [_TABLE], [(45, 45, 205, 235)], [0.6]),
        ("b", [(100, 60, 300, 200)], [(300, 10, 390, 60)], [0.95]),
    ],
    "the same false positive, ranked last": [
        ("a", [_TABLE], [(45, 45, 205, 235)], [0.6]),
        ("b", [(100, 60, 300, 200)], [(300, 10, 390, 60)], [0.05]),
    ],
    "a missed table": _PREDICTION_SETS["several images, one with no box (a parse failure)"],
    "two boxes on one table": [
        ("a", [_TABLE], [(45, 45, 205, 235), (38, 42, 196, 236)], [0.9, 0.8])
    ],
    "equal scores: the order of the images decides": [
        ("a", [_TABLE], [(300, 10, 390, 60)], [1.0]),
        ("b", [_TABLE], [(45, 45, 205, 235)], [1.0]),
    ],
}


def check_average_precision(function: Callable[[Sequence[Any], float], Any]) -> CheckResult:
    """Check COCO-style average precision at one IoU threshold with pycocotools (exercise 6.3)."""
    from vlmlib.coco import average_defined, run_coco_eval
    from vlmlib.evaluation import DEFAULT_SWEEP_THRESHOLDS

    def expected(predictions: list, threshold: float) -> float:
        precision = run_coco_eval(predictions, category_ids=None)["precision"]  # (T, R, K, A, M)
        return average_defined(precision[DEFAULT_SWEEP_THRESHOLDS.index(threshold), :, 0, 0, -1])

    hints = {
        "the same false positive, ranked last": (
            "rank all boxes of all images by score first; a false positive after every "
            "true one costs nothing."
        ),
        "a missed table": (
            "recall levels never reached count as precision 0 in the 101-point average."
        ),
        "two boxes on one table": (
            "a table matched once is taken: the second box on it is a false positive."
        ),
        "equal scores: the order of the images decides": (
            "sort with a stable sort (sorted, or np.argsort(kind='mergesort')), so that "
            "equal scores keep the images' order."
        ),
    }
    cases = [
        CheckCase(
            f"{name}, IoU {threshold}",
            {"predictions": [_image(*arguments) for arguments in sets], "iou_threshold": threshold},
            expected([_image(*arguments) for arguments in sets], threshold),
            hints.get(name),
        )
        for name, sets in _AP_SETS.items()
        for threshold in [0.5]
    ]
    tight = _AP_SETS["every table found"]
    cases.append(
        CheckCase(
            "every table found, IoU 0.75",
            {"predictions": [_image(*arguments) for arguments in tight], "iou_threshold": 0.75},
            expected([_image(*arguments) for arguments in tight], 0.75),
            None,
        )
    )
    return run_check(
        function,
        cases,
        tolerance=1e-6,
        hint=(
            "sort boxes by score, mark each a true positive if it takes an unmatched table at "
            "IoU >= threshold, then average the interpolated precision at recall 0, 0.01, ..., 1."
        ),
    )
