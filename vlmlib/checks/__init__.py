"""Self-checks for the labs: run a student's function on named cases and print a plain verdict.

Why: a lab exercise is only useful if the student learns *what* is wrong. Each check runs the
function on a few named cases whose expected answers come from `vlmlib` itself, then prints how many
passed, the first failing input with expected and actual values, and one hint. A check never raises:
an unfinished exercise (`NotImplementedError`) reads "not attempted yet", and any other error is
reported as the case's result, with the line that raised it.
Explained in: book/labs, "How the self-checks work".

Every `check_*` function takes the student's function and returns a `CheckResult` (`.passed` is what
the tests read). The verdict is printed, so it shows in notebooks and in plain `python lab.py` runs.
Import the checks from here (`from vlmlib import checks`); each submodule holds one job:

- `runner`: `CheckCase`, `CheckResult` and `run_check`, which runs the cases and prints the verdict.
- `data`: box conversions, per-image box statistics, the answer text,
  image-token counts (labs 01 and 02).
- `parsing`: boxes parsed from an answer, and why an answer gives none (lab 02).
- `collators`: `TOY_TOKEN_IDS`, V2's labels, answer positions and the batched answer mask (lab 03).
- `masking`: the trained share of each role, the answer's loss weight, each
  role's share of the loss (lab 04).
- `training`: LoRA's parameter count, a run's curves read from its log, the IoU callback (lab 05).
- `debugging`: the trained tokens, labels that differ from the answer mask, a
  fixed collator (lab 07).
- `evaluation`: IoU, precision and recall, average precision (lab 06).
"""

from __future__ import annotations

from vlmlib.checks.collators import (
    TOY_TOKEN_IDS,
    check_build_answer_mask,
    check_build_v2_labels,
    check_find_answer_positions,
)
from vlmlib.checks.data import (
    check_convert_hub_box_to_qwen,
    check_convert_qwen_box_to_hub,
    check_count_image_tokens,
    check_count_image_tokens_from_grid,
    check_describe_record_boxes,
    check_format_answer,
)
from vlmlib.checks.debugging import (
    check_find_mislabelled_tokens,
    check_fixed_collator,
    check_list_trained_tokens,
)
from vlmlib.checks.evaluation import (
    check_average_precision,
    check_compute_iou,
    check_precision_recall,
)
from vlmlib.checks.masking import (
    check_answer_loss_weight,
    check_loss_share_by_role,
    check_trained_fraction_by_role,
)
from vlmlib.checks.parsing import check_describe_parse_failure, check_parse_boxes
from vlmlib.checks.runner import CheckCase, CheckResult, run_check
from vlmlib.checks.training import (
    check_count_lora_parameters,
    check_iou_callback,
    check_pick_better_run,
    check_read_curve,
)

__all__ = [
    "CheckCase",
    "CheckResult",
    "check_convert_hub_box_to_qwen",
    "check_convert_qwen_box_to_hub",
    "check_count_image_tokens",
    "check_count_image_tokens_from_grid",
    "check_describe_parse_failure",
    "check_describe_record_boxes",
    "check_format_answer",
    "check_parse_boxes",
    "check_average_precision",
    "check_compute_iou",
    "check_count_lora_parameters",
    "check_iou_callback",
    "check_pick_better_run",
    "check_read_curve",
    "check_precision_recall",
    "TOY_TOKEN_IDS",
    "check_build_v2_labels",
    "check_find_answer_positions",
    "check_build_answer_mask",
    "check_trained_fraction_by_role",
    "check_answer_loss_weight",
    "check_loss_share_by_role",
    "check_list_trained_tokens",
    "check_find_mislabelled_tokens",
    "check_fixed_collator",
    "run_check",
]
