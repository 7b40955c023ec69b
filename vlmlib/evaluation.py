"""Score a model's boxes on a whole split: mean IoU, precision/recall/F1, COCO
mAP and parse failures.

Why: one number hides too much. A model can place boxes well but answer in the
wrong format, or answer every time but in the wrong place; the report keeps those
apart, so zero-shot and fine-tuned models can be compared figure by figure.
Explained in: chapter 06, "Evaluation".

Every box here is `box_xyxy`, (x1, y1, x2, y2) in pixels (`build_image_predictions` converts the
dataset's `box_hub` and the model's `box_qwen`). The figures:

- mean IoU: `compute_image_mean_iou` per image, averaged over images. Unmatched boxes
  count as IoU 0, so an image whose answer gave no box (a parse failure) scores 0.
- precision, recall, F1 at IoU t: one-to-one matching per image (`match_boxes`, largest total IoU);
  a matched pair with IoU >= t is a true positive; counts are summed over all images.
- mAP@0.5 and mAP@[.5:.95]: pycocotools' `COCOeval`, class-agnostic (the task is
  "find nutrition tables").
- parse failure rate: the fraction of images whose answer gave no box, reported on its own.
- per category: `COCOeval` again, with the labels as categories.

A generative model gives no confidence per box, so every predicted box scores 1.0 unless scores are
passed. There is then a single operating point (one precision, one recall), and AP has no ranking to
reward: pycocotools sorts tied detections by image order, so the curve before that
point, and with it AP, depends on the order of the split, not only on the model. Compare
mAP only on the same split in the same order, and read it next to precision and recall.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlmlib.boxes import convert_hub_box_to_xyxy, convert_qwen_box_to_xyxy
from vlmlib.coco import average_defined, run_coco_eval
from vlmlib.config import Config
from vlmlib.data import CATEGORY_NAMES
from vlmlib.inference import generate_scored_answers
from vlmlib.metrics import compute_image_mean_iou, match_boxes
from vlmlib.parsing import ParsedAnswer, parse_box_answer
from vlmlib.predictions import ImagePrediction

__all__ = [
    "DEFAULT_SWEEP_THRESHOLDS",
    "EvaluationReport",
    "ImagePrediction",
    "build_image_predictions",
    "compare_reports",
    "evaluate_model",
    "evaluate_predictions",
    "score_mean_box_baseline",
]

logger = logging.getLogger(__name__)

# 0.50, 0.55, ..., 0.95: the ten thresholds COCO's mAP@[.5:.95] averages over
# (cocodataset.org/#detection-eval).
DEFAULT_SWEEP_THRESHOLDS: tuple[float, ...] = tuple(
    round(0.5 + 0.05 * step, 2) for step in range(10)
)
_SWEEP_COLUMNS = [
    "iou_threshold",
    "true_positives",
    "false_positives",
    "false_negatives",
    "precision",
    "recall",
    "f1",
]


def build_image_predictions(
    records: Sequence[Mapping[str, Any]],
    parsed_answers: Sequence[ParsedAnswer],
    answers_text: Sequence[str] | None = None,
    scores: Sequence[Sequence[float]] | None = None,
) -> list[ImagePrediction]:
    """Pair each record's ground truth with the model's parsed answer, both converted to pixels.

    Why: the dataset stores `box_hub` and the model writes `box_qwen`; scoring
    needs both as `box_xyxy`.
    Explained in: chapter 06, "From answers to boxes".

    Args:
        records: Hub-schema records (`image_id`, `width`, `height`, `objects.bbox` as `box_hub`
            [y_min, x_min, y_max, x_max] in 0-1). The image is not read, so
            `split.select_columns(["image_id", "width", "height", "objects"])` saves decoding it.
        parsed_answers: one `ParsedAnswer` per record (boxes as `box_qwen`, 0-1000 grid).
        answers_text: the raw answers, kept for the gallery and the JSON report; None to skip.
        scores: one confidence per parsed box, per record; None gives every box 1.0.
    Raises:
        ValueError: the sequences have different lengths.
    """
    for name, values in (
        ("parsed_answers", parsed_answers),
        ("answers_text", answers_text),
        ("scores", scores),
    ):
        if values is not None and len(values) != len(records):
            raise ValueError(
                f"build_image_predictions got {len(records)} records but {len(values)} "
                f"{name}; pass one per record."
            )
    predictions = []
    for index, (record, answer) in enumerate(zip(records, parsed_answers)):
        width_px, height_px = int(record["width"]), int(record["height"])
        objects = record["objects"]
        predictions.append(
            ImagePrediction(
                image_id=str(record["image_id"]),
                width_px=width_px,
                height_px=height_px,
                ground_truth_xyxy=[
                    convert_hub_box_to_xyxy(box_hub, width_px, height_px)
                    for box_hub in objects["bbox"]
                ],
                ground_truth_labels=list(objects["category_name"]),
                predicted_xyxy=[
                    convert_qwen_box_to_xyxy(box.box_qwen, width_px, height_px)
                    for box in answer.boxes
                ],
                predicted_labels=[box.label for box in answer.boxes],
                predicted_scores=list(scores[index]) if scores is not None else [],
                failure_reason=answer.failure_reason,
                answer_text=answers_text[index] if answers_text is not None else None,
            )
        )
    return predictions


def _to_json_value(value: Any) -> Any:
    """Return the value with NaN as None (JSON has no NaN) and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(key): _to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_value(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class EvaluationReport:
    """Everything `evaluate_predictions` measured on one split. NaN marks a
    figure that is undefined.

    Attributes:
        mean_iou: over all images, parse failures included as 0; `mean_iou_parsed` leaves them out.
        map_50, map_50_95: COCO mAP@0.5 and mAP@[.5:.95], class-agnostic.
        precision, recall, f1: at the first of `iou_thresholds` (0.5 by
            default); precision is NaN when no box was predicted at all.
        sweep: one row per IoU threshold: true/false positives, false negatives,
            precision, recall, F1.
        per_category: one row per category: box counts, AP@0.5, AP@[.5:.95], COCO recall at IoU 0.5
            (NaN where the category has no ground truth).
        per_image: one row per image: image_id, iou, box counts, is_parse_failure, failure_reason.
        failure_reasons: parse failures counted by kind ("no box found", "truncated box", ...).
    """

    num_images: int
    num_ground_truth_boxes: int
    num_predicted_boxes: int
    num_parse_failures: int
    parse_failure_rate: float
    mean_iou: float
    mean_iou_parsed: float
    map_50: float
    map_50_95: float
    iou_thresholds: list[float]
    precision: float
    recall: float
    f1: float
    sweep: pd.DataFrame
    per_category: pd.DataFrame
    per_image: pd.DataFrame
    failure_reasons: dict[str, int]

    def at_threshold(self, iou_threshold: float) -> pd.Series:
        """Return the sweep row (precision, recall, f1, counts) at one IoU threshold."""
        rows = self.sweep[np.isclose(self.sweep["iou_threshold"], iou_threshold)]
        if rows.empty:
            evaluated = self.sweep["iou_threshold"].tolist()
            raise KeyError(
                f"IoU threshold {iou_threshold} was not evaluated; choose from {evaluated}."
            )
        return rows.iloc[0]

    def summary_table(self, name: str = "model") -> pd.DataFrame:
        """Return one row of headline figures, indexed by `name`; concatenate
        rows to compare models.
        """
        row: dict[str, float] = {
            "images": self.num_images,
            "parse failure rate": self.parse_failure_rate,
            "mean IoU": self.mean_iou,
            "mean IoU (parsed)": self.mean_iou_parsed,
        }
        for threshold in self.iou_thresholds:
            counts = self.at_threshold(threshold)
            row |= {
                f"precision@{threshold:g}": counts["precision"],
                f"recall@{threshold:g}": counts["recall"],
                f"F1@{threshold:g}": counts["f1"],
            }
        row |= {"mAP@0.5": self.map_50, "mAP@[.5:.95]": self.map_50_95}
        return pd.DataFrame([row], index=pd.Index([name], name="model"))

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-ready values: tables as lists of rows, NaN as None."""
        tables = {
            "sweep": self.sweep,
            "per_category": self.per_category,
            "per_image": self.per_image,
        }
        values = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name not in tables
        }
        values |= {name: table.to_dict(orient="records") for name, table in tables.items()}
        return _to_json_value(values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvaluationReport:
        """Rebuild a report from `to_dict()` output (None becomes NaN again)."""
        tables = {
            name: pd.DataFrame.from_records(values[name])
            for name in ("sweep", "per_category", "per_image")
        }
        scalars = {
            name: math.nan if value is None else value
            for name, value in values.items()
            if name not in tables
        }
        return cls(**scalars, **tables)

    def save_json(self, path: Path) -> None:
        """Write `to_dict()` to `path` as indented JSON, creating the folder if needed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: Path) -> EvaluationReport:
        """Read a report written by `save_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def compare_reports(reports: Mapping[str, EvaluationReport]) -> pd.DataFrame:
    """Return one summary row per model, e.g.
    `compare_reports({"zero-shot": before, "fine-tuned": after})`.
    """
    return pd.concat([report.summary_table(name) for name, report in reports.items()])


def score_mean_box_baseline(
    train_records: Sequence[Mapping[str, Any]], eval_records: Sequence[Mapping[str, Any]]
) -> float:
    """Return the mean IoU of answering every image with one box: the mean of all training boxes.

    Why: a model that learned only the answer format, not where tables are, scores
    about this much. Fine-tuning has taught localisation only if it clearly beats
    it. Records need "objects" (and, for eval, "width" and "height"); select those
    columns of a `datasets.Dataset` to skip decoding its images.
    """
    train_boxes = [box for record in train_records for box in record["objects"]["bbox"]]
    if not train_boxes:
        raise ValueError(
            "the mean-box baseline needs at least one training box; the training split has none"
        )
    mean_box_hub = np.mean(train_boxes, axis=0)
    scores = []
    for record in eval_records:
        width, height = record["width"], record["height"]
        truth = [convert_hub_box_to_xyxy(box, width, height) for box in record["objects"]["bbox"]]
        scores.append(
            compute_image_mean_iou([convert_hub_box_to_xyxy(mean_box_hub, width, height)], truth)
        )
    return float(np.mean(scores))


def _check_predictions(predictions: Sequence[ImagePrediction]) -> None:
    """Raise ValueError when there is nothing to evaluate or an image has no ground truth."""
    if len(predictions) == 0:
        raise ValueError(
            "evaluate_predictions got no images; pass one ImagePrediction per evaluated record."
        )
    for index, prediction in enumerate(predictions):
        if not prediction.ground_truth_xyxy:
            raise ValueError(
                f"image {index} (image_id {prediction.image_id!r}) has no ground-truth "
                "box, so recall and IoU are undefined for it; clean the split first "
                "(vlmlib.data.clean_split drops such records)."
            )


def _count_matches(
    predictions: Sequence[ImagePrediction], thresholds: Sequence[float]
) -> pd.DataFrame:
    """Return the sweep table: matched pairs with IoU >= threshold are true
    positives, summed over images.
    """
    matched_ious = np.array(
        [
            iou
            for prediction in predictions
            for _, _, iou in match_boxes(prediction.predicted_xyxy, prediction.ground_truth_xyxy)
        ]
    )
    num_predicted = sum(len(prediction.predicted_xyxy) for prediction in predictions)
    num_ground_truth = sum(len(prediction.ground_truth_xyxy) for prediction in predictions)
    rows = []
    for threshold in thresholds:
        true_positives = int(np.count_nonzero(matched_ious >= threshold))
        false_positives, false_negatives = (
            num_predicted - true_positives,
            num_ground_truth - true_positives,
        )
        rows.append(
            [
                threshold,
                true_positives,
                false_positives,
                false_negatives,
                true_positives / num_predicted
                if num_predicted
                else math.nan,  # undefined with no box predicted
                true_positives / num_ground_truth,
                # the harmonic mean of precision and recall, written so that it
                # is 0 (not NaN) with no predictions
                2 * true_positives / (2 * true_positives + false_positives + false_negatives),
            ]
        )
    return pd.DataFrame(rows, columns=_SWEEP_COLUMNS)


def _build_per_category_table(
    predictions: Sequence[ImagePrediction], category_names: Sequence[str]
) -> pd.DataFrame:
    """Return one row per category (the given names, then any other label seen),
    with COCO AP and recall.
    """
    ground_truth_counts = Counter(
        label for prediction in predictions for label in prediction.ground_truth_labels
    )
    predicted_counts = Counter(
        label for prediction in predictions for label in prediction.predicted_labels
    )
    extra_labels = sorted((set(ground_truth_counts) | set(predicted_counts)) - set(category_names))
    category_ids = {
        name: index for index, name in enumerate([*category_names, *extra_labels], start=1)
    }
    coco_results = run_coco_eval(predictions, category_ids)
    precision, recall = coco_results["precision"], coco_results["recall"]
    rows = []
    for column, name in enumerate(category_ids):  # COCOeval orders categories by id, as here
        rows.append(
            {
                "category": name,
                "num_ground_truth": ground_truth_counts[name],
                "num_predicted": predicted_counts[name],
                "ap_50": average_defined(precision[0, :, column, 0, -1]),
                "ap_50_95": average_defined(precision[:, :, column, 0, -1]),
                "recall_50": average_defined(recall[0, column, 0, -1]),
            }
        )
    return pd.DataFrame(rows)


def _build_per_image_table(predictions: Sequence[ImagePrediction]) -> pd.DataFrame:
    """Return one row per image: its mean IoU (0 for a parse failure), box
    counts and failure reason.
    """
    return pd.DataFrame(
        [
            {
                "image_id": prediction.image_id,
                "iou": compute_image_mean_iou(
                    prediction.predicted_xyxy, prediction.ground_truth_xyxy
                ),
                "num_ground_truth": len(prediction.ground_truth_xyxy),
                "num_predicted": len(prediction.predicted_xyxy),
                "is_parse_failure": prediction.is_parse_failure,
                "failure_reason": (prediction.failure_reason or "no box")
                if prediction.is_parse_failure
                else None,
            }
            for prediction in predictions
        ]
    )


def evaluate_predictions(
    predictions: Sequence[ImagePrediction],
    iou_thresholds: Sequence[float] = (0.5,),
    sweep_thresholds: Sequence[float] = DEFAULT_SWEEP_THRESHOLDS,
    category_names: Sequence[str] = CATEGORY_NAMES,
) -> EvaluationReport:
    """Measure predictions against ground truth on a split and return every figure in one report.

    Why: the zero-shot baseline, the training callback, the CLI and chapter 06 must compute the
    same figures the same way, or their numbers cannot be compared.
    Explained in: chapter 06, "Evaluation".

    Args:
        predictions: one `ImagePrediction` per image (see `build_image_predictions`).
        iou_thresholds: thresholds for the headline precision, recall and F1 in `summary_table`;
            the first one gives `report.precision`, `.recall` and `.f1`.
        sweep_thresholds: further thresholds for the sweep table; the default is COCO's ten.
        category_names: categories always listed in `per_category`, even with no ground truth.
    Returns:
        An `EvaluationReport`; see the module docstring for how each figure is computed.
    Raises:
        ValueError: no predictions, an image with no ground-truth box (named by
            image_id), or no valid IoU threshold.
    """
    _check_predictions(predictions)
    headline_thresholds = [round(float(threshold), 4) for threshold in iou_thresholds]
    if not headline_thresholds or not all(0 < threshold <= 1 for threshold in headline_thresholds):
        raise ValueError(
            "iou_thresholds must hold at least one value in (0, 1], e.g. (0.5,); got "
            f"{list(iou_thresholds)}."
        )
    sweep = _count_matches(
        predictions, sorted({*headline_thresholds, *(round(float(t), 4) for t in sweep_thresholds)})
    )
    headline = sweep[np.isclose(sweep["iou_threshold"], headline_thresholds[0])].iloc[0]
    per_image = _build_per_image_table(predictions)
    parsed_ious = per_image.loc[~per_image["is_parse_failure"], "iou"]
    coco_precision = run_coco_eval(predictions, category_ids=None)["precision"]
    report = EvaluationReport(
        num_images=len(predictions),
        num_ground_truth_boxes=int(per_image["num_ground_truth"].sum()),
        num_predicted_boxes=int(per_image["num_predicted"].sum()),
        num_parse_failures=int(per_image["is_parse_failure"].sum()),
        parse_failure_rate=float(per_image["is_parse_failure"].mean()),
        mean_iou=float(per_image["iou"].mean()),
        mean_iou_parsed=float(parsed_ious.mean()) if len(parsed_ious) else math.nan,
        map_50=average_defined(coco_precision[0, :, :, 0, -1]),
        map_50_95=average_defined(coco_precision[:, :, :, 0, -1]),
        iou_thresholds=headline_thresholds,
        precision=float(headline["precision"]),
        recall=float(headline["recall"]),
        f1=float(headline["f1"]),
        sweep=sweep,
        per_category=_build_per_category_table(predictions, category_names),
        per_image=per_image,
        failure_reasons=dict(
            Counter(
                reason.split(":")[0] for reason in per_image["failure_reason"].dropna()
            ).most_common()
        ),
    )
    logger.info(
        "evaluated %d images: mean IoU %.3f, %d parse failures, mAP@0.5 %.3f",
        report.num_images,
        report.mean_iou,
        report.num_parse_failures,
        report.map_50,
    )
    return report


def evaluate_model(
    model,
    processor,
    split: Sequence[Mapping[str, Any]],
    config: Config,
    show_progress: bool = False,
) -> tuple[EvaluationReport, list[ImagePrediction]]:
    """Answer every record of a split, parse the answers and score them: the
    whole evaluation in one call.

    Why: the zero-shot baseline, the fine-tuned model, the CLI and chapter 06
    must be scored identically.
    Explained in: chapter 06, "Evaluation".

    Each box is scored with its answer's confidence (exp of the mean token
    log-probability), so COCO's AP ranks confident answers first instead of by image order.
    Returns:
        The report, and the per-image predictions (for galleries and failure analysis).
    """
    records = [split[index] for index in range(len(split))]
    scored = generate_scored_answers(
        model,
        processor,
        records,
        config.data.prompt,
        config.data.system_message,
        config.callbacks.max_new_tokens,
        config.training.per_device_eval_batch_size,
        show_progress,
    )
    parsed = [parse_box_answer(answer.text) for answer in scored]
    predictions = build_image_predictions(
        records,
        parsed,
        answers_text=[answer.text for answer in scored],
        scores=[[answer.confidence] * len(result.boxes) for answer, result in zip(scored, parsed)],
    )
    return evaluate_predictions(predictions), predictions
