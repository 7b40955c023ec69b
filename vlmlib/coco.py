"""COCO average precision through pycocotools, for our predictions.

Why: mAP is the field's standard detection metric, and its details (101-point interpolation, area
ranges, -1 for undefined) are easy to get subtly wrong by hand; pycocotools is the reference.
Explained in: chapter 06, "COCO mAP".
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vlmlib.predictions import ImagePrediction

__all__ = ["average_defined", "build_coco_dataset", "run_coco_eval"]


def build_coco_dataset(
    predictions: Sequence[ImagePrediction], category_ids: Mapping[str, int] | None
) -> tuple[dict, list]:
    """Return COCO ground truth (a dataset dict) and detections (a result list);
    None means one category for all.
    """

    def category_id(label: str) -> int:
        return 1 if category_ids is None else category_ids[label]

    named_ids = {"any": 1} if category_ids is None else category_ids
    categories = [{"id": number, "name": name} for name, number in named_ids.items()]
    images, annotations, detections = [], [], []
    for image_id, prediction in enumerate(
        predictions, start=1
    ):  # COCO wants integer ids; ours are strings
        images.append(
            {"id": image_id, "width": prediction.width_px, "height": prediction.height_px}
        )
        for (x1, y1, x2, y2), label in zip(
            prediction.ground_truth_xyxy, prediction.ground_truth_labels
        ):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        predicted = zip(
            prediction.predicted_xyxy, prediction.predicted_labels, prediction.predicted_scores
        )
        for (x1, y1, x2, y2), label, score in predicted:
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": category_id(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )  # COCO boxes are (x, y, width, height)
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def run_coco_eval(
    predictions: Sequence[ImagePrediction], category_ids: Mapping[str, int] | None
) -> dict[str, np.ndarray]:
    """Run COCOeval and return its accumulated arrays: precision (T, R, K, A, M)
    and recall (T, K, A, M).

    T: 10 IoU thresholds 0.5-0.95, R: 101 recall points, K: categories, A: area ranges (0 = all),
    M: max detections per image (-1 = 100). Entries are -1 where undefined (a
    category with no ground truth).
    """
    ground_truth, detections = build_coco_dataset(predictions, category_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress at every step
        coco_ground_truth = COCO()
        coco_ground_truth.dataset = ground_truth
        coco_ground_truth.createIndex()
        if detections:
            coco_detections = coco_ground_truth.loadRes(detections)
        # loadRes fails on an empty list (it reads anns[0]); an empty result set scores AP 0 instead
        else:
            coco_detections = COCO()
            coco_detections.dataset = {**ground_truth, "annotations": []}
            coco_detections.createIndex()
        coco_eval = COCOeval(coco_ground_truth, coco_detections, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval.eval


def average_defined(values: np.ndarray) -> float:
    """Average the entries COCO defined (it writes -1 for undefined ones), as
    COCOeval.summarize does; NaN if none.
    """
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else math.nan
