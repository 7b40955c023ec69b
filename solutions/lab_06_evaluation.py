# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 6: scoring boxes
#
# This lab goes with chapter 6, "Evaluation". You will write, from scratch, the numbers the chapter
# reports for a model, and check each against the library:
#
# 1. **6.1** the IoU of two boxes (warm-up);
# 2. **6.2** one-to-one matching of predicted and true boxes, then precision and recall at an IoU threshold;
# 3. **6.3** COCO's average precision, the ranking-based figure behind mAP, compared with pycocotools.
#
# **How it works.** Each exercise is a code cell with a `TODO` and a `raise NotImplementedError`.
# Replace those two lines with your code, run the cell, then run the check cell below it. The check
# prints how many cases passed; if one fails, it shows the input, the expected and the actual
# result, and a hint. "not attempted yet" means the `raise NotImplementedError` is still there.
# No model runs in this lab: the predictions are made up from the ground truth, so you know what
# went wrong in each image.

# %% tags=["remove-cell"]
# Setup for Colab or a bare Jupyter: installs the course where it is missing and picks a profile.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("vlmlib") is None:
    repository = "git+https://github.com/vlm-course/qwen2vl-nutrition-tables"
    source = os.environ.get("VLM_INSTALL_SOURCE", repository)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
    importlib.invalidate_caches()

from vlmlib.notebook_setup import set_up_notebook

set_up_notebook()

# %% [markdown] tags=["solution"]
# > **This is the solved lab**, the single source of `labs/lab_06_evaluation.ipynb`: `vlmlib make-labs`
# > replaces each `BEGIN SOLUTION` ... `END SOLUTION` region with a TODO and drops the cells tagged
# > `solution` (like this one).

# %% [markdown]
# ## Setup

# %%
import dataclasses
import itertools

import numpy as np
import pandas as pd

from vlmlib import boxes, checks, data, evaluation
from vlmlib.config import load_config

config = load_config()
records = list(
    data.load_configured_splits(config)["eval"]
    .select_columns(["image_id", "width", "height", "objects"])
    .select(range(12))
)
print(
    f"profile {config.profile}: {len(records)} held-out images, "
    f"{sum(len(record['objects']['bbox']) for record in records)} tables"
)

# %% [markdown]
# ## The predictions to score
#
# Every box here is `box_xyxy`: `(x1, y1, x2, y2)` in pixels. We make up a model's answers from the
# ground truth: each image's first table is found, a little off (noise of 8% of its size); the other
# tables of multi-table images are missed; image 1 plays a parse failure (no box at all); image 3
# gets an invented box in its top-left corner. Each box has a confidence between 0.3 and 1, as
# `vlmlib.inference` gives one per answer.


# %%
def simulate_predictions(records: list[dict], seed: int = 0) -> list[evaluation.ImagePrediction]:
    """Return a made-up ImagePrediction per record (box_xyxy in pixels) with the mistakes above."""
    generator = np.random.default_rng(seed)
    predictions = []
    for index, record in enumerate(records):
        width_px, height_px = record["width"], record["height"]
        truth = [
            boxes.convert_hub_box_to_xyxy(box_hub, width_px, height_px)
            for box_hub in record["objects"]["bbox"]
        ]
        found = (
            [] if index == 1 else truth[:1]
        )  # image 1 is a parse failure; the others find their first table
        predicted = []
        for x1, y1, x2, y2 in found:
            noisy = np.add(
                (x1, y1, x2, y2), generator.normal(0, 0.08, 4) * ([x2 - x1, y2 - y1] * 2)
            )
            predicted.append(tuple(np.clip(noisy, 0, [width_px, height_px] * 2).round(1).tolist()))
        if index == 3:  # an invented box
            predicted.append((0.0, 0.0, round(0.2 * width_px, 1), round(0.2 * height_px, 1)))
        predictions.append(
            evaluation.ImagePrediction(
                image_id=str(record["image_id"]),
                width_px=width_px,
                height_px=height_px,
                ground_truth_xyxy=truth,
                predicted_xyxy=predicted,
                predicted_scores=generator.uniform(0.3, 1.0, len(predicted)).round(2).tolist(),
            )
        )
    return predictions


predictions = simulate_predictions(records)
pd.DataFrame(
    {
        "image_id": [p.image_id for p in predictions],
        "tables": [len(p.ground_truth_xyxy) for p in predictions],
        "predicted boxes": [len(p.predicted_xyxy) for p in predictions],
        "scores": [p.predicted_scores for p in predictions],
    }
)

# %% [markdown]
# ## Exercise 6.1: IoU
#
# The intersection over union of two boxes is the area they share divided by the area they cover
# together: 1 when they coincide, 0 when they do not overlap. The shared rectangle's left edge is the
# larger of the two left edges and its right edge the smaller of the two right edges (likewise top
# and bottom); when those cross, the boxes do not overlap. A box with no area has IoU 0 with anything.
# `vlmlib.metrics.compute_iou` is the answer.


# %% tags=["exercise"]
def compute_iou(box_a_xyxy: tuple[float, ...], box_b_xyxy: tuple[float, ...]) -> float:
    """Return the IoU of two (x1, y1, x2, y2) pixel boxes, from 0 to 1."""
    # BEGIN SOLUTION: where does the shared rectangle start and end? When is it empty?
    a_x1, a_y1, a_x2, a_y2 = box_a_xyxy
    b_x1, b_y1, b_x2, b_y2 = box_b_xyxy
    area_a = max(0.0, a_x2 - a_x1) * max(0.0, a_y2 - a_y1)
    area_b = max(0.0, b_x2 - b_x1) * max(0.0, b_y2 - b_y1)
    if area_a == 0 or area_b == 0:
        return 0.0
    intersection = max(0.0, min(a_x2, b_x2) - max(a_x1, b_x1)) * max(
        0.0, min(a_y2, b_y2) - max(a_y1, b_y1)
    )
    return intersection / (area_a + area_b - intersection)
    # END SOLUTION


# %%
checks.check_compute_iou(compute_iou)

# %% [markdown]
# ## Exercise 6.2: matching, then precision and recall
#
# With two tables in an image, a prediction must not score against the table it did not find, and
# one prediction must not count for two tables. So, in each image, pair predicted and true boxes
# **one-to-one**, choosing the pairing with the **largest total IoU** (with one to three tables,
# trying every pairing with `itertools.permutations` is quick). A pair whose IoU is at least the
# threshold is a true positive. Then, summed over all images:
#
# - precision = true positives / predicted boxes (how many answers were right);
# - recall = true positives / true boxes (how many tables were found).
#
# Write `compute_precision_recall(predictions, iou_threshold)`, returning `(precision, recall)`. Each
# prediction is a `vlmlib.evaluation.ImagePrediction` with `.predicted_xyxy` and `.ground_truth_xyxy`.
# `vlmlib.metrics.match_boxes` and `vlmlib.evaluation.evaluate_predictions` are the library's versions.


# %% tags=["exercise"]
def compute_precision_recall(
    predictions: list[evaluation.ImagePrediction], iou_threshold: float
) -> tuple[float, float]:
    """Return (precision, recall) over all images, from one-to-one matches of largest total IoU."""
    # BEGIN SOLUTION: each image's best one-to-one pairing first; what do you add up then?
    true_positives = 0
    for prediction in predictions:
        predicted, truth = prediction.predicted_xyxy, prediction.ground_truth_xyxy
        if not predicted or not truth:
            continue
        fewer, more = (predicted, truth) if len(predicted) <= len(truth) else (truth, predicted)
        best_ious = max(
            (
                [compute_iou(fewer[row], more[column]) for row, column in enumerate(columns)]
                for columns in itertools.permutations(range(len(more)), len(fewer))
            ),
            key=sum,
        )
        true_positives += sum(iou >= iou_threshold for iou in best_ious)
    num_predicted = sum(len(prediction.predicted_xyxy) for prediction in predictions)
    num_truth = sum(len(prediction.ground_truth_xyxy) for prediction in predictions)
    return true_positives / num_predicted, true_positives / num_truth
    # END SOLUTION


# %%
checks.check_precision_recall(compute_precision_recall)

# %% [markdown]
# ## Exercise 6.3: average precision, as COCO computes it
#
# Precision and recall describe one operating point. Average precision (AP) describes the ranking:
# it asks whether the model's *confident* boxes are the right ones. COCO's recipe at one IoU threshold
# ([cocodataset.org](https://cocodataset.org/#detection-eval), `pycocotools.cocoeval.COCOeval`):
#
# 1. put every predicted box of every image in one list, sorted by score, highest first (a stable
#    sort, so that equal scores keep the images' order);
# 2. walk down the list: a box is a true positive if, among its image's tables **not yet taken**, the
#    one it overlaps most has IoU >= threshold (that table is then taken); otherwise a false positive;
# 3. after each box, precision = true positives so far / boxes so far, recall = true positives so far / all tables;
# 4. make precision never increase as recall falls: replace each precision by the largest precision at
#    the same or a later point in the list;
# 5. at each recall level 0, 0.01, ..., 1 (101 levels), read the precision at the first point whose
#    recall reaches that level (0 when no point does); AP is the mean of those 101 numbers.
#
# Write `compute_average_precision(predictions, iou_threshold)`; each box's score is in
# `.predicted_scores`. mAP@0.5 is this at 0.5; mAP@[.5:.95] averages it over ten thresholds.


# %% tags=["exercise"]
def compute_average_precision(
    predictions: list[evaluation.ImagePrediction], iou_threshold: float
) -> float:
    """Return COCO's 101-point interpolated average precision at one IoU threshold, one class."""
    # BEGIN SOLUTION: the five steps above, in order; which numpy calls give running maxima?
    ranked = sorted(
        (
            (score, image_index, box)
            for image_index, prediction in enumerate(predictions)
            for box, score in zip(prediction.predicted_xyxy, prediction.predicted_scores)
        ),
        key=lambda item: -item[0],
    )
    taken, is_true_positive = set(), []
    for _, image_index, box in ranked:
        best_table, best_iou = None, iou_threshold
        for table_index, table in enumerate(predictions[image_index].ground_truth_xyxy):
            iou = compute_iou(box, table)
            if (image_index, table_index) not in taken and iou >= best_iou:
                best_table, best_iou = table_index, iou
        if best_table is not None:
            taken.add((image_index, best_table))
        is_true_positive.append(best_table is not None)
    true_positives = np.cumsum(is_true_positive)
    recall = true_positives / sum(len(prediction.ground_truth_xyxy) for prediction in predictions)
    precision = true_positives / np.arange(1, len(ranked) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    reached = [np.flatnonzero(recall >= level) for level in np.linspace(0, 1, 101)]
    return float(np.mean([precision[points[0]] if points.size else 0.0 for points in reached]))
    # END SOLUTION


# %%
checks.check_average_precision(compute_average_precision)

# %% [markdown]
# ## Comparing with the library
#
# `vlmlib.evaluation.evaluate_predictions` computes all of these (mAP through pycocotools). Here it
# scores the made-up predictions twice: with their scores, and with every score set to 1.0, which is
# what a model that gives no confidence looks like.

# %%
tied = [
    dataclasses.replace(prediction, predicted_scores=[1.0] * len(prediction.predicted_xyxy))
    for prediction in predictions
]
reports = {
    "with scores": evaluation.evaluate_predictions(predictions),
    "every score 1.0": evaluation.evaluate_predictions(tied),
}
evaluation.compare_reports(reports)[
    ["mean IoU", "precision@0.5", "recall@0.5", "mAP@0.5", "mAP@[.5:.95]"]
].round(3)

# %% [markdown]
# **Question.** Precision and recall at 0.5 are the same in both rows; mAP@0.5 is not, and it is below
# both. Explain the two differences.

# %% [markdown] tags=["solution"]
# **Answer.** Precision and recall count boxes and ignore scores, so changing scores cannot move them.
# AP depends on the *order* of the boxes: with real scores, the invented box sits where its confidence
# puts it; with every score 1.0 the order is simply the images' order, which says nothing about the
# model (so compare such mAPs only on the same split, in the same order). AP is below recall
# because the 101 recall levels above the highest recall reached (the missed tables and the parse
# failure cap it) count as precision 0, and below precision because the false positive, wherever it
# ranks, lowers the precision of every point after it.

# %% [markdown]
# ## What you built
#
# - IoU, the score of one box against another.
# - One-to-one matching by largest total IoU, and precision and recall summed over images.
# - COCO's average precision, which ranks boxes by confidence: the same number as pycocotools.
