"""Self-checks for the labs: run a student's function on named cases and print a plain verdict.

Why: a lab exercise is only useful if the student learns *what* is wrong. Each check runs the
function on a few named cases whose expected answers come from `vlmlib` itself, then prints how many
passed, the first failing input with expected and actual values, and one hint. A check never raises:
an unfinished exercise (`NotImplementedError`) reads "not attempted yet", and any other error is
reported as the case's result, with the line that raised it.
Explained in: book/labs, "How the self-checks work".

Every `check_*` function takes the student's function and returns a `CheckResult` (`.passed` is what
the tests read). The verdict is printed, so it shows in notebooks and in plain `python lab.py` runs.
"""

from __future__ import annotations

import copy
import math
import numbers
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlmlib.boxes import convert_hub_box_to_qwen, convert_qwen_box_to_hub
from vlmlib.data import format_answer
from vlmlib.dataset_stats import MERGE_SIZE, compute_image_token_budget, describe_record_boxes
from vlmlib.parsing import parse_box_answer

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
    "check_choose_checkpoint",
    "check_compute_iou",
    "check_count_lora_parameters",
    "check_iou_callback",
    "check_precision_recall",
    "TOY_TOKEN_IDS",
    "check_build_v2_labels",
    "check_find_answer_positions",
    "check_build_answer_mask",
    "check_trained_fraction_by_role",
    "check_answer_loss_weight",
    "check_loss_share_by_role",
    "run_check",
]

_MAX_VALUE_CHARS = 160  # longer inputs and outputs are cut in the verdict, so it stays readable


@dataclass(frozen=True)
class CheckCase:
    """One named input for a check: the arguments (passed in order) and the expected result."""

    name: str
    inputs: dict[str, Any]
    expected: Any
    hint: str | None = None  # shown when this case is the first to fail; None uses the check's hint


@dataclass(frozen=True)
class CheckResult:
    """What a check found. `verdict` is the text it printed."""

    function_name: str
    num_cases: int
    num_passed: int
    is_attempted: bool
    verdict: str

    @property
    def passed(self) -> bool:
        """True when the function was written and every case gave the expected result."""
        return self.is_attempted and self.num_passed == self.num_cases

    def __repr__(self) -> str:
        state = "not attempted" if not self.is_attempted else f"{self.num_passed}/{self.num_cases} passed"
        return f"<check {self.function_name}: {state}>"

    def _ipython_display_(self) -> None:
        """Show nothing: the check printed its verdict already, and a second copy would only repeat it."""


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _matches(actual: Any, expected: Any, tolerance: float) -> bool:
    """Return True when `actual` equals `expected`: floats within `tolerance`, ints exactly and as ints."""
    if isinstance(actual, np.ndarray):
        actual = actual.tolist()
    if expected is None or isinstance(expected, (bool, str)):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, numbers.Integral):
        return isinstance(actual, numbers.Integral) and not isinstance(actual, bool) and actual == expected
    if isinstance(expected, numbers.Real):
        return (isinstance(actual, numbers.Real) and not isinstance(actual, bool)
                and math.isclose(actual, expected, rel_tol=tolerance, abs_tol=tolerance))
    if isinstance(expected, Mapping):
        return (isinstance(actual, Mapping) and set(actual) == set(expected)
                and all(_matches(actual[key], value, tolerance) for key, value in expected.items()))
    if isinstance(expected, Sequence):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(_matches(item, wanted, tolerance) for item, wanted in zip(actual, expected)))
    return actual == expected


def _describe_difference(actual: Any, expected: Any) -> str:
    """Return an extra line pointing at what differs, where that helps more than the two values."""
    if isinstance(expected, str) and isinstance(actual, str):
        index = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), min(len(actual), len(expected)))
        return f"\n  first difference at character {index}: expected ...{expected[index:index + 20]!r}, got ...{actual[index:index + 20]!r}"
    if isinstance(expected, numbers.Integral) and isinstance(actual, numbers.Real) and actual == expected:
        return f"\n  the value is right but it is a {type(actual).__name__}; return an int"
    return ""


def _describe_error(error: Exception, function: Callable[..., Any]) -> str:
    """Return the error in one line, with the line of the student's code that raised it (or led to it)."""
    frames = traceback.extract_tb(error.__traceback__)
    own_file = getattr(getattr(function, "__code__", None), "co_filename", None)
    frame = next((frame for frame in reversed(frames) if frame.filename == own_file), frames[-1])
    where = f" at line {frame.lineno}: {frame.line.strip()}" if frame.line else ""
    return f"an error, {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}{where}"


def run_check(function: Callable[..., Any], cases: Sequence[CheckCase], hint: str, tolerance: float = 1e-6) -> CheckResult:
    """Run `function` on every case, print the verdict, and return it as a `CheckResult`. Never raises.

    Why: the one place that turns a student's answer into a readable verdict, for every lab.
    Explained in: book/labs, "How the self-checks work".

    Args:
        function: the student's function; each case's inputs are passed positionally, as deep copies.
        cases: named inputs and expected results, easiest first.
        hint: shown when the first failing case has no hint of its own.
        tolerance: relative and absolute tolerance for floats.
    """
    name = getattr(function, "__name__", repr(function))
    num_passed, failure = 0, None
    for case in cases:
        try:
            actual = function(*copy.deepcopy(list(case.inputs.values())))
        except NotImplementedError as error:
            verdict = (f"check {name}: not attempted yet ({error or 'NotImplementedError'}).\n"
                       "Replace the TODO and the `raise NotImplementedError(...)` line with your code, "
                       "run that cell, then run this check again.")
            print(verdict)
            return CheckResult(name, len(cases), 0, is_attempted=False, verdict=verdict)
        except Exception as error:  # a student's bug is this case's result, never a crash of the check
            failure = failure or (case, _describe_error(error, function), "")
            continue
        if _matches(actual, case.expected, tolerance):
            num_passed += 1
        else:
            failure = failure or (case, _shorten(actual), _describe_difference(actual, case.expected))
    if failure is None:
        verdict = f"check {name}: all {len(cases)} cases passed."
    else:
        case, actual_text, difference = failure
        inputs = ", ".join(f"{key}={_shorten(value)}" for key, value in case.inputs.items())
        verdict = (f"check {name}: {num_passed} of {len(cases)} cases passed.\n"
                   f"First failing case, {case.name}:\n  input:    {inputs}\n"
                   f"  expected: {_shorten(case.expected)}\n  got:      {actual_text}{difference}\n"
                   f"Hint: {case.hint or hint}")
    print(verdict)
    return CheckResult(name, len(cases), num_passed, is_attempted=True, verdict=verdict)


# --- lab 01: the data ---

_HUB_BOXES = {  # name -> box_hub ([y_min, x_min, y_max, x_max], 0-1)
    "a box in the middle of the image": [0.25, 0.1, 0.75, 0.6],
    "the whole image": [0.0, 0.0, 1.0, 1.0],
    "a tall, narrow box": [0.1, 0.4, 0.9, 0.45],
    "values that need rounding": [0.12345, 0.6789, 0.5, 0.99951],
}


def check_convert_hub_box_to_qwen(function: Callable[[list[float]], Any]) -> CheckResult:
    """Check a function that turns `box_hub` into Qwen's (x1, y1, x2, y2) on the 0-1000 grid (lab 01, exercise 1.1)."""
    cases = [CheckCase(name, {"box_hub": box_hub}, convert_hub_box_to_qwen(box_hub)) for name, box_hub in _HUB_BOXES.items()]
    cases[-1] = CheckCase(cases[-1].name, cases[-1].inputs, cases[-1].expected,
                          hint="round to the nearest integer with round(); int() cuts 678.9 down to 678.")
    return run_check(function, cases, hint="the Hub writes y first, Qwen writes x first: (x_min, y_min, x_max, y_max), times 1000.")


def check_convert_qwen_box_to_hub(function: Callable[[Sequence[int]], Any]) -> CheckResult:
    """Check a function that turns Qwen's (x1, y1, x2, y2) on the 0-1000 grid back into `box_hub` (exercise 1.2)."""
    boxes_qwen = {"a box in the middle of the image": (100, 250, 600, 750), "the whole image": (0, 0, 1000, 1000),
                  "a wide, flat box": (50, 700, 950, 760), "a box near the bottom-right corner": (812, 903, 999, 1000)}
    cases = [CheckCase(name, {"box_qwen": box_qwen}, convert_qwen_box_to_hub(box_qwen)) for name, box_qwen in boxes_qwen.items()]
    return run_check(function, cases, hint="divide by 1000 and put y first: [y_min, x_min, y_max, x_max].")


def _record(width_px: int, height_px: int, boxes_hub: list[list[float]], category_names: list[str]) -> dict[str, Any]:
    return {"image_id": "check", "width": width_px, "height": height_px,
            "objects": {"bbox": boxes_hub, "category_id": [0] * len(boxes_hub), "category_name": category_names}}


def check_describe_record_boxes(function: Callable[[dict[str, Any]], Any]) -> CheckResult:
    """Check per-image box statistics against `vlmlib.dataset_stats.describe_record_boxes` (exercise 1.3)."""
    records = {
        "one square box in a square image": (_record(200, 200, [[0.25, 0.25, 0.75, 0.75]], ["nutrition-table"]), None),
        "one box in a wide image (aspect ratio in pixels, not fractions)": (
            _record(400, 100, [[0.1, 0.1, 0.9, 0.3]], ["nutrition-table"]),
            "measure the aspect ratio in pixels: width fraction x image width over height fraction x image height."),
        "two boxes, the largest listed second": (
            _record(300, 300, [[0.0, 0.0, 0.2, 0.2], [0.5, 0.2, 0.9, 0.9]], ["nutrition-table-small", "nutrition-table"]),
            "the largest box is the one with the largest area, wherever it is in the list."),
        "three boxes": (_record(640, 480, [[0.1, 0.1, 0.5, 0.6], [0.6, 0.1, 0.9, 0.3], [0.6, 0.5, 0.95, 0.9]],
                                ["nutrition-table", "nutrition-table-text", "nutrition-table-small"]),
                        "area_fraction adds up the areas of all the boxes."),
    }
    cases = [CheckCase(name, {"record": record}, describe_record_boxes(record), hint) for name, (record, hint) in records.items()]
    return run_check(function, cases, tolerance=1e-4,
                     hint="return a dict with num_boxes, area_fraction and largest_box_aspect_ratio.")


def check_format_answer(function: Callable[[dict[str, list]], Any]) -> CheckResult:
    """Check a function that writes the training answer for a record's objects against `vlmlib.data.format_answer` (1.4)."""
    examples = {
        "one table": _record(100, 100, [[0.34, 0.12, 0.91, 0.56]], ["nutrition-table"]),
        "two tables of different categories": _record(100, 100, [[0.1, 0.1, 0.5, 0.6], [0.6, 0.7, 0.8, 0.95]],
                                                      ["nutrition-table", "nutrition-table-small-energy"]),
        "coordinates that need rounding": _record(100, 100, [[0.12345, 0.6789, 0.5, 0.99951]], ["nutrition-table-text"]),
    }
    cases = [CheckCase(name, {"objects": record["objects"]}, format_answer(record["objects"])) for name, record in examples.items()]
    return run_check(function, cases, hint="one group per box, no spaces: <|object_ref_start|>LABEL<|object_ref_end|>"
                                           "<|box_start|>(x1,y1),(x2,y2)<|box_end|>, coordinates from exercise 1.1.")


# --- lab 02: the model ---

def check_count_image_tokens_from_grid(function: Callable[[Sequence[int]], Any]) -> CheckResult:
    """Check a function that turns one row of `image_grid_thw` into its number of `<|image_pad|>` tokens (2.1)."""
    grids = {"a 112x168 px image": [1, 12, 8], "a 224x224 px image": [1, 16, 16], "a 728x504 px image": [1, 36, 52]}
    cases = [CheckCase(name, {"grid_thw": grid}, grid[0] * grid[1] * grid[2] // MERGE_SIZE**2) for name, grid in grids.items()]
    return run_check(function, cases, hint="the grid counts 14 px patches (time, height, width); 2x2 patches merge into "
                                           "one token, so divide their product by 4.")


def check_count_image_tokens(function: Callable[[int, int, int, int], Any]) -> CheckResult:
    """Check image-token counts for a size and pixel budget against `compute_image_token_budget` (exercise 2.2)."""
    tiny, full = (12544, 50176), (200704, 501760)  # the (min_pixels, max_pixels) of configs tiny.yaml and full.yaml
    sizes = {  # name -> (width_px, height_px, (min_pixels, max_pixels), hint)
        "already a multiple of 28, inside the budget": (224, 224, tiny, None),
        "a side that must be rounded to a multiple of 28": (113, 175, tiny, "round each side to the nearest multiple of 28."),
        "a phone photo above max_pixels": (3024, 4032, full, "above max_pixels, divide both sides by "
                                           "sqrt(width * height / max_pixels), then round DOWN to a multiple of 28."),
        "a small image below min_pixels": (60, 80, full, "below min_pixels, multiply both sides by "
                                           "sqrt(min_pixels / (width * height)), then round UP to a multiple of 28."),
        "a very wide image": (1400, 100, full, None),
    }
    cases = [CheckCase(name, {"width_px": width, "height_px": height, "min_pixels": low, "max_pixels": high},
                       compute_image_token_budget(width, height, low, high).num_image_tokens, hint)
             for name, (width, height, (low, high), hint) in sizes.items()]
    return run_check(function, cases, hint="resize as in chapter 02, then count (height / 28) * (width / 28) tokens.")


_ANSWERS = {  # name -> (answer text, hint)
    "one box with special tokens": (
        "<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(560,910)<|box_end|>", None),
    "two boxes": ("<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(10,20),(300,400)<|box_end|>"
                  "<|object_ref_start|>nutrition-table-small<|object_ref_end|><|box_start|>(500,600),(700,800)<|box_end|>",
                  "find every box, not only the first: re.finditer or re.findall."),
    "special tokens stripped by the decoder": ("nutrition-table(120,340),(560,910)", "the special tokens may be missing; "
                                               "match the two bracketed pairs themselves."),
    "an answer in words": ("The nutrition table is in the lower half of the image.", "no box in the text: return []."),
    "a box cut off by max_new_tokens": ("<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(56",
                                        "a box without its second bracketed pair is not a box."),
    "a coordinate beyond the grid": ("<|box_start|>(120,340),(1560,910)<|box_end|>", "coordinates above 1000 are off the grid: drop that box."),
    "an inverted box": ("<|box_start|>(560,910),(120,340)<|box_end|>", "a box needs x2 > x1 and y2 > y1: drop it otherwise."),
}


def check_parse_boxes(function: Callable[[str], Any]) -> CheckResult:
    """Check a parser returning [(x1, y1, x2, y2), ...] against `vlmlib.parsing.parse_box_answer` (exercise 2.3)."""
    cases = [CheckCase(name, {"text": text}, [box.box_qwen for box in parse_box_answer(text).boxes], hint)
             for name, (text, hint) in _ANSWERS.items()]
    return run_check(function, cases, hint="a box is (x1,y1),(x2,y2) with integers from 0 to 1000.")


def _failure_kind(text: str) -> str | None:
    reason = parse_box_answer(text).failure_reason
    return None if reason is None else reason.split(":")[0]


def check_describe_parse_failure(function: Callable[[str], Any]) -> CheckResult:
    """Check a function that names why an answer gives no box, as `parse_box_answer` does (exercise 2.4)."""
    answers = {
        "an empty answer": ("", "an answer of nothing (or only spaces) is 'empty answer'."),
        "only spaces": ("   \n", "an answer of nothing (or only spaces) is 'empty answer'."),
        "a good answer": (_ANSWERS["one box with special tokens"][0], "an answer with a usable box has no failure: return None."),
        "an answer in words": (_ANSWERS["an answer in words"][0], None),
        "a box cut off by max_new_tokens": (_ANSWERS["a box cut off by max_new_tokens"][0],
                                            "text that stops inside a box is 'truncated box'."),
        "every box off the grid": (_ANSWERS["a coordinate beyond the grid"][0],
                                   "boxes were found but none was valid: 'all boxes rejected'."),
        "one good box, then a cut-off one": (_ANSWERS["one box with special tokens"][0] + "<|box_start|>(1", None),
    }
    cases = [CheckCase(name, {"text": text}, _failure_kind(text), hint) for name, (text, hint) in answers.items()]
    return run_check(function, cases, hint="return None when at least one box parses, else one of 'empty answer', "
                                           "'no box found', 'truncated box', 'all boxes rejected'.")


# --- lab 05: training ---

def _qwen2_vl_linear_shapes(hidden_size: int, intermediate_size: int, key_value_size: int, num_layers: int,
                            vision_size: int, vision_depth: int, vocab_size: int = 151936) -> dict[str, tuple[int, int]]:
    """Return {module name: (in_features, out_features)} of every nn.Linear in a Qwen2-VL of these sizes."""
    shapes: dict[str, tuple[int, int]] = {}
    for block in range(vision_depth):
        prefix = f"model.visual.blocks.{block}."
        shapes |= {prefix + "attn.qkv": (vision_size, 3 * vision_size), prefix + "attn.proj": (vision_size, vision_size),
                   prefix + "mlp.fc1": (vision_size, 4 * vision_size), prefix + "mlp.fc2": (4 * vision_size, vision_size)}
    merged_size = 4 * vision_size  # the merger joins 2x2 patches
    shapes |= {"model.visual.merger.mlp.0": (merged_size, merged_size), "model.visual.merger.mlp.2": (merged_size, hidden_size)}
    for layer in range(num_layers):
        prefix = f"model.language_model.layers.{layer}."
        shapes |= {prefix + "self_attn.q_proj": (hidden_size, hidden_size), prefix + "self_attn.k_proj": (hidden_size, key_value_size),
                   prefix + "self_attn.v_proj": (hidden_size, key_value_size), prefix + "self_attn.o_proj": (hidden_size, hidden_size),
                   prefix + "mlp.gate_proj": (hidden_size, intermediate_size), prefix + "mlp.up_proj": (hidden_size, intermediate_size),
                   prefix + "mlp.down_proj": (intermediate_size, hidden_size)}
    return shapes | {"lm_head": (hidden_size, vocab_size)}


def _count_lora_parameters_with_peft(linear_shapes: Mapping[str, tuple[int, int]], target_modules: list[str], r: int) -> int:
    """Build a module tree of these linear layers on the meta device, let PEFT add adapters, count what trains."""
    import torch
    from peft import inject_adapter_in_model

    from vlmlib.config import Config, LoRAConfig
    from vlmlib.models import build_lora_config

    root = torch.nn.Module()
    for name, (in_features, out_features) in linear_shapes.items():
        *parents, leaf = name.split(".")
        parent = root
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, torch.nn.Linear(in_features, out_features, bias=False, device="meta"))
    config = Config(lora=LoRAConfig(r=r, alpha=2 * r, target_modules=list(target_modules)))
    model = inject_adapter_in_model(build_lora_config(config), root)
    return sum(parameter.numel() for name, parameter in model.named_parameters() if "lora_" in name)


def check_count_lora_parameters(function: Callable[[dict[str, tuple[int, int]], list[str], int], Any]) -> CheckResult:
    """Check a by-hand count of LoRA's trainable parameters against PEFT's own (lab 05, exercise 5.1)."""
    tiny = _qwen2_vl_linear_shapes(128, 512, 64, num_layers=4, vision_size=64, vision_depth=2)
    full = _qwen2_vl_linear_shapes(1536, 8960, 256, num_layers=28, vision_size=1280, vision_depth=32)  # Qwen2-VL-2B
    every_layer_type = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    settings = {  # name -> (shapes, target_modules, r, hint)
        "tiny sizes, the default config (r=16, seven layer types)": (
            tiny, every_layer_type, 16, None),
        "tiny sizes, attention only (q_proj and v_proj, r=8: the lightweight config)": (
            tiny, ["q_proj", "v_proj"], 8, "keep a layer only when the last part of its name is in target_modules."),
        "a name the vision tower uses too ('proj'), with q_proj and v_proj": (
            tiny, ["q_proj", "v_proj", "proj"], 8, "adapters go on model.language_model.layers.* only: skip model.visual.* "
                                                   "and lm_head, even when the last part of the name matches."),
        "Qwen2-VL-2B's sizes, the default config": (full, every_layer_type, 16, None),
        "Qwen2-VL-2B's sizes, r=64 on the MLP only": (full, ["gate_proj", "up_proj", "down_proj"], 64, None),
    }
    cases = [CheckCase(name, {"linear_shapes": shapes, "target_modules": targets, "r": r},
                       _count_lora_parameters_with_peft(shapes, targets, r), hint)
             for name, (shapes, targets, r, hint) in settings.items()]
    return run_check(function, cases, hint="each adapted layer adds A (r x in_features) and B (out_features x r): "
                                           "r * (in_features + out_features) parameters.")


def _last_checkpoint_by_transformers(listing: Mapping[str, bool]) -> str | None:
    """Recreate the listing in a temporary folder and ask `transformers.trainer_utils.get_last_checkpoint`."""
    import os
    import tempfile

    from transformers.trainer_utils import get_last_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        for name, is_folder in listing.items():
            path = os.path.join(folder, name)
            if is_folder:
                os.mkdir(path)
            else:
                open(path, "w").close()
        found = get_last_checkpoint(folder)
        return None if found is None else os.path.basename(found)


def check_choose_checkpoint(function: Callable[[dict[str, bool]], Any]) -> CheckResult:
    """Check the choice of the checkpoint to resume from against transformers' `get_last_checkpoint` (exercise 5.2)."""
    listings = {  # name -> ({entry name: is a folder}, hint)
        "three checkpoints and the saved adapter": (
            {"checkpoint-20": True, "checkpoint-40": True, "checkpoint-60": True, "adapter_model.safetensors": False}, None),
        "steps compared as numbers, not as text": (
            {"checkpoint-40": True, "checkpoint-100": True, "checkpoint-80": True},
            "as text 'checkpoint-100' < 'checkpoint-40'; compare int(step) instead."),
        "a file named like a checkpoint": ({"checkpoint-80": False, "checkpoint-60": True, "runs": True},
                                           "a checkpoint is a folder; skip plain files."),
        "a save that never finished": ({"tmp-checkpoint-80": True, "checkpoint-60": True},
                                       "the whole name must be checkpoint-<digits>; an unfinished save has another name."),
        "names that only look like checkpoints": ({"checkpoint-best": True, "checkpoint-7": True, "my-checkpoint-9": True}, None),
        "no checkpoint yet": ({"runs": True, "README.md": False}, "with no checkpoint folder, return None."),
    }
    cases = [CheckCase(name, {"listing": listing}, _last_checkpoint_by_transformers(listing), hint)
             for name, (listing, hint) in listings.items()]
    return run_check(function, cases, hint="keep folders named exactly checkpoint-<digits> and return the one with the largest step.")


def _build_toy_regression() -> tuple[Any, list[dict[str, Any]]]:
    """Return a two-weight torch model and 16 examples that a real `transformers.Trainer` trains in a second."""
    import torch

    class ToyRegression(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}

    inputs = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    return ToyRegression(), [{"x": row, "labels": row.sum()} for row in inputs]


def _drive_callback(callback_class: type, every_steps: int, num_steps: int, driven_by: str) -> list[tuple[int, float]]:
    """Run the student's callback through `num_steps` steps and return its `history`.

    The scorer returns 0.1 on its first call, 0.2 on the second, and so on, so the history shows
    when the callback scored and in which order; it returns NaN when given anything but the model.
    """
    import tempfile

    from transformers import PrinterCallback, Trainer, TrainerControl, TrainerState, TrainingArguments

    model, dataset = _build_toy_regression()
    num_calls = [0]

    def score_model(scored_model: Any) -> float:
        num_calls[0] += 1
        return round(0.1 * num_calls[0], 10) if scored_model is model else math.nan

    callback = callback_class(score_model, every_steps)
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(output_dir=output_dir, max_steps=num_steps, per_device_train_batch_size=2, report_to=[],
                                      save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
        if driven_by == "a real transformers Trainer":
            trainer = Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=[callback])
            trainer.remove_callback(PrinterCallback)  # it would print the toy run's final metrics into the lab
            trainer.train()
        else:  # the events a Trainer sends, in its order, with a state that holds only the step
            state, control = TrainerState(max_steps=num_steps), TrainerControl()
            for step in range(1, num_steps + 1):
                state.global_step = step
                callback.on_step_end(arguments, state, control, model=model)
            callback.on_train_end(arguments, state, control, model=model)
    return [tuple(entry) for entry in callback.history]


def check_iou_callback(callback_class: type) -> CheckResult:
    """Check a TrainerCallback that scores the model every N steps and at the end (exercise 5.3).

    The class is built as `callback_class(score_model, every_steps)` and must fill `history` with
    (step, score) pairs. It is driven by hand-made events and by a real `transformers.Trainer`.
    """
    def run_callback(every_steps: int, num_steps: int, driven_by: str) -> list[tuple[int, float]]:
        return _drive_callback(callback_class, every_steps, num_steps, driven_by)

    run_callback.__name__ = getattr(callback_class, "__name__", "callback")
    runs = {  # name -> (every_steps, num_steps, driven by, expected history, hint)
        "every 2 steps for 5 steps, and once at the end": (2, 5, "hand-made events", [(2, 0.1), (4, 0.2), (5, 0.3)],
                                                           "score when state.global_step % every_steps == 0, and in on_train_end."),
        "the last step was just scored: no second score": (2, 4, "hand-made events", [(2, 0.1), (4, 0.2)],
                                                           "in on_train_end, skip scoring when history already ends at this step."),
        "a run shorter than every_steps": (10, 3, "hand-made events", [(3, 0.1)], "on_train_end must score even if no step did."),
        "every 2 steps for 5 steps, in a real Trainer": (2, 5, "a real transformers Trainer", [(2, 0.1), (4, 0.2), (5, 0.3)],
                                                         "the hooks receive the model as the keyword argument `model`."),
    }
    cases = [CheckCase(name, {"every_steps": every, "num_steps": steps, "driven_by": driven_by}, expected, hint)
             for name, (every, steps, driven_by, expected, hint) in runs.items()]
    return run_check(run_callback, cases, hint="append (state.global_step, self.score_model(model)) to self.history.")


# --- lab 06: evaluation ---

def check_compute_iou(function: Callable[[Sequence[float], Sequence[float]], Any]) -> CheckResult:
    """Check IoU by hand against `vlmlib.metrics.compute_iou` (lab 06, exercise 6.1)."""
    from vlmlib.metrics import compute_iou

    pairs = {  # name -> (box_a_xyxy, box_b_xyxy, hint)
        "the same box": ((10, 20, 110, 70), (10, 20, 110, 70), None),
        "half of one box overlaps the other": ((0, 0, 100, 100), (50, 0, 150, 100),
                                               "union = area(a) + area(b) - intersection: the overlap counts once."),
        "one box inside the other": ((0, 0, 200, 100), (50, 25, 100, 75), None),
        "boxes that only touch": ((0, 0, 50, 50), (50, 0, 100, 50), "touching boxes share an edge, not an area: IoU 0."),
        "disjoint boxes": ((0, 0, 10, 10), (30, 30, 60, 60), "clip the intersection's width and height at 0: max(0, ...)."),
        "a box of zero width": ((20, 0, 20, 50), (0, 0, 50, 50), "a box with no area has IoU 0 with anything."),
        "pixel coordinates with fractions": ((12.5, 7.25, 80.0, 60.5), (30.0, 0.0, 95.5, 44.0), None),
    }
    cases = [CheckCase(name, {"box_a_xyxy": a, "box_b_xyxy": b}, compute_iou(a, b), hint) for name, (a, b, hint) in pairs.items()]
    return run_check(function, cases, hint="intersection width = min(right edges) - max(left edges), at least 0; likewise height.")


def _image(image_id: str, ground_truth_xyxy: list, predicted_xyxy: list, scores: list[float] | None = None) -> Any:
    from vlmlib.evaluation import ImagePrediction

    return ImagePrediction(image_id=image_id, width_px=400, height_px=300, ground_truth_xyxy=ground_truth_xyxy,
                           predicted_xyxy=predicted_xyxy, predicted_scores=scores or [])


# Named sets of predictions for exercises 6.2 and 6.3: name -> list of ImagePrediction arguments
# (image_id, ground truth, predictions, scores), all box_xyxy in pixels of a 400x300 image.
_TABLE = (40, 40, 200, 240)
_PREDICTION_SETS = {
    "one image, one good box": [("a", [_TABLE], [(45, 45, 205, 235)], [0.9])],
    "a box below the IoU threshold": [("a", [_TABLE], [(120, 40, 280, 240)], [0.9])],
    "two tables, one found": [("a", [_TABLE, (250, 50, 380, 150)], [(42, 38, 198, 244)], [0.8])],
    "an extra, invented box": [("a", [_TABLE], [(40, 40, 198, 238), (260, 200, 390, 290)], [0.9, 0.6])],
    "one prediction over two tables": [("a", [(40, 40, 200, 240), (60, 40, 220, 240)], [(50, 40, 210, 240)], [0.9])],
    "pairing by largest total IoU, not highest first": [
        ("a", [(50, 50, 250, 250), (150, 50, 350, 250)], [(90, 20, 260, 260), (60, 50, 310, 250)], [0.7, 0.9])],
    "several images, one with no box (a parse failure)": [
        ("a", [_TABLE], [(45, 45, 205, 235)], [0.9]), ("b", [(100, 60, 300, 200)], [], []),
        ("c", [(10, 10, 110, 90), (200, 150, 390, 290)], [(12, 8, 108, 95), (215, 165, 380, 280)], [0.8, 0.7])],
}


def _prediction_set(name: str) -> list:
    return [_image(*arguments) for arguments in _PREDICTION_SETS[name]]


def check_precision_recall(function: Callable[[Sequence[Any], float], Any]) -> CheckResult:
    """Check precision and recall at an IoU threshold against `vlmlib.evaluation.evaluate_predictions` (exercise 6.2)."""
    from vlmlib.evaluation import evaluate_predictions

    def expected(predictions: list, threshold: float) -> tuple[float, float]:
        row = evaluate_predictions(predictions, iou_thresholds=(threshold,)).at_threshold(threshold)
        return float(row["precision"]), float(row["recall"])

    hints = {"one prediction over two tables": "one-to-one: a prediction can match at most one table, and a table one prediction.",
             "pairing by largest total IoU, not highest first": "try every pairing (itertools.permutations) and keep the one "
                                                                "with the largest total IoU; greedy pairing loses a match here.",
             "several images, one with no box (a parse failure)": "add up true positives, predictions and tables over all "
                                                                  "images before dividing."}
    cases = [CheckCase(f"{name}, IoU {threshold}", {"predictions": _prediction_set(name), "iou_threshold": threshold},
                       expected(_prediction_set(name), threshold), hints.get(name))
             for name in _PREDICTION_SETS for threshold in [0.5]]
    cases.append(CheckCase("several images, IoU 0.75", {"predictions": _prediction_set("several images, one with no box (a parse "
                                                                                       "failure)"), "iou_threshold": 0.75},
                           expected(_prediction_set("several images, one with no box (a parse failure)"), 0.75),
                           "a matched pair is a true positive only when its IoU is at least the threshold."))
    return run_check(function, cases, hint="precision = true positives / predicted boxes; recall = true positives / "
                                           "ground-truth boxes; return (precision, recall).")


_AP_SETS = {  # name -> ImagePrediction arguments, for exercise 6.3
    "every table found": _PREDICTION_SETS["several images, one with no box (a parse failure)"][:1]
    + _PREDICTION_SETS["several images, one with no box (a parse failure)"][2:],
    "a confident false positive, ranked first": [("a", [_TABLE], [(45, 45, 205, 235)], [0.6]),
                                                 ("b", [(100, 60, 300, 200)], [(300, 10, 390, 60)], [0.95])],
    "the same false positive, ranked last": [("a", [_TABLE], [(45, 45, 205, 235)], [0.6]),
                                             ("b", [(100, 60, 300, 200)], [(300, 10, 390, 60)], [0.05])],
    "a missed table": _PREDICTION_SETS["several images, one with no box (a parse failure)"],
    "two boxes on one table": [("a", [_TABLE], [(45, 45, 205, 235), (38, 42, 196, 236)], [0.9, 0.8])],
    "equal scores: the order of the images decides": [("a", [_TABLE], [(300, 10, 390, 60)], [1.0]),
                                                      ("b", [_TABLE], [(45, 45, 205, 235)], [1.0])],
}


def check_average_precision(function: Callable[[Sequence[Any], float], Any]) -> CheckResult:
    """Check COCO-style average precision at one IoU threshold against pycocotools (exercise 6.3)."""
    from vlmlib.coco import average_defined, run_coco_eval
    from vlmlib.evaluation import DEFAULT_SWEEP_THRESHOLDS

    def expected(predictions: list, threshold: float) -> float:
        precision = run_coco_eval(predictions, category_ids=None)["precision"]  # (T, R, K, A, M)
        return average_defined(precision[DEFAULT_SWEEP_THRESHOLDS.index(threshold), :, 0, 0, -1])

    hints = {"the same false positive, ranked last": "rank all boxes of all images by score first; a false positive "
                                                     "after every true one costs nothing.",
             "a missed table": "recall levels never reached count as precision 0 in the 101-point average.",
             "two boxes on one table": "a table matched once is taken: the second box on it is a false positive.",
             "equal scores: the order of the images decides": "sort with a stable sort (sorted, or np.argsort(kind='mergesort')), "
                                                              "so that equal scores keep the images' order."}
    cases = [CheckCase(f"{name}, IoU {threshold}", {"predictions": [_image(*arguments) for arguments in sets],
                                                     "iou_threshold": threshold},
                       expected([_image(*arguments) for arguments in sets], threshold), hints.get(name))
             for name, sets in _AP_SETS.items() for threshold in [0.5]]
    tight = _AP_SETS["every table found"]
    cases.append(CheckCase("every table found, IoU 0.75", {"predictions": [_image(*arguments) for arguments in tight],
                                                            "iou_threshold": 0.75},
                           expected([_image(*arguments) for arguments in tight], 0.75), None))
    return run_check(function, cases, tolerance=1e-6,
                     hint="sort boxes by score, mark each a true positive if it takes an unmatched table at IoU >= threshold, "
                          "then average the interpolated precision at recall 0, 0.01, ..., 1.")


# --- labs 03 and 04: collators and masking ---

# Small made-up token ids for the first, readable cases of labs 03 and 04; the real ids have six digits.
# The functions under test take every id they need as an argument, so nothing may depend on these values.
TOY_TOKEN_IDS = {"<pad>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|vision_start|>": 3, "<|image_pad|>": 4,
                 "<|vision_end|>": 5, "system": 6, "user": 7, "assistant": 8, "\n": 9}  # other words: 10 and up
_TOY_SYSTEM = [1, 6, 9, 11, 2, 9]  # <|im_start|>system\n WORD <|im_end|>\n
_TOY_USER = [1, 7, 9, 3, 4, 4, 5, 12, 2, 9]  # <|im_start|>user\n <|vision_start|><|image_pad|>x2<|vision_end|> WORD <|im_end|>\n
_TOY_ANSWER = [1, 8, 9, 20, 21, 2, 9]  # <|im_start|>assistant\n WORD WORD <|im_end|>\n
_TOY_HEADER = [8, 9]  # "assistant", "\n": what follows <|im_start|> in an assistant turn


class _Raised:
    """Stands for "the function raised this error": equal to any other `_Raised` of the same type, whatever the message."""

    def __init__(self, error_type: str, description: str = "") -> None:
        self.error_type, self.description = error_type, description

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Raised) and other.error_type == self.error_type

    __hash__ = None  # mutable-looking and compared by type only: not for sets or dict keys

    def __repr__(self) -> str:
        return f"raises {self.error_type}" + (f" ({self.description})" if self.description else "")


def _to_plain(value: Any) -> Any:
    """Return tensors and arrays as nested lists, with True/False as 1/0 (shorter to read in a verdict)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    return value


class _PlainResult:
    """Call a student's function; give `run_check` its result as plain lists, and a ValueError as `_Raised`.

    The function's name and code are kept, so the verdict names the student's function and an error
    points at the student's line, not at this wrapper.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.__name__ = getattr(function, "__name__", repr(function))
        self.__code__ = getattr(function, "__code__", None)

    def __call__(self, *arguments: Any) -> Any:
        try:
            return _to_plain(self.function(*arguments))
        except ValueError as error:
            return _Raised("ValueError", _describe_error(error, self.function))


def _toy_batch(rows: Sequence[Sequence[int]], padding_side: str, pad_id: int = 0) -> tuple[Any, Any]:
    """Return (input_ids, attention_mask), (batch, longest row) int64 tensors, the rows padded on `padding_side`."""
    import torch

    length = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        padding = [pad_id] * (length - len(row))
        ids.append(list(row) + padding if padding_side == "right" else padding + list(row))
        mask.append([1] * len(row) + [0] * len(padding) if padding_side == "right" else [0] * len(padding) + [1] * len(row))
    return torch.tensor(ids), torch.tensor(mask)


def _real_batches(processor: Any, records: Sequence[dict[str, Any]], collator_class: type, **options: Any) -> dict[str, dict]:
    """Return {"right padding": batch, "left padding": batch} of the records through a vlmlib collator."""
    return {f"{side} padding": collator_class(processor, padding_side=side, **options)(list(records)) for side in ("right", "left")}


def _reference_answer_mask(input_ids: Any, attention_mask: Any, im_start_id: int, im_end_id: int,
                           assistant_header_ids: Sequence[int]) -> Any:
    """Return `vlmlib.collators.find_answer_mask`'s result as plain lists, or `_Raised` when it raises."""
    from vlmlib.collators import find_answer_mask

    try:
        return _to_plain(find_answer_mask(input_ids, attention_mask, im_start_id, im_end_id, assistant_header_ids))
    except ValueError:
        return _Raised("ValueError")


def check_build_v2_labels(function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]) -> CheckResult:
    """Check V2's labels (padding and vision tokens set to -100) against `CollatorV2` (lab 03, exercise 3.1).

    Args:
        function: the student's `build_v2_labels(input_ids, attention_mask, vision_token_ids)`.
        processor, records: real cases are built from these, with right and left padding.
    """
    from types import SimpleNamespace

    import torch

    from vlmlib.collators import CollatorV2
    from vlmlib.tokens import VISION_TOKENS

    def expected(input_ids: Any, attention_mask: Any, vision_token_ids: list[int]) -> list:
        stand_in = SimpleNamespace(vision_token_ids=torch.tensor(vision_token_ids))  # CollatorV2's method, on toy ids
        labels = CollatorV2.mask_padding_and_vision(stand_in, {"input_ids": input_ids, "attention_mask": attention_mask},
                                                    input_ids.clone())
        return _to_plain(labels)

    toy_vision = [TOY_TOKEN_IDS[token] for token in VISION_TOKENS]
    toy_cases = {  # name -> ((input_ids, attention_mask), hint)
        "one toy example, no padding": (_toy_batch([_TOY_USER + _TOY_ANSWER], "right"),
                                        "start from a copy of input_ids (.clone()) and set the vision tokens to -100."),
        "two toy examples, right padding": (_toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "right"),
                                            "positions where attention_mask is 0 are padding: -100."),
        "two toy examples, left padding": (_toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "left"), None),
        "padding written with an ordinary word's id (11)": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_SYSTEM], "right", pad_id=11),
            "find padding with attention_mask == 0, never with the pad token's id: some tokenizers pad with a real token."),
    }
    cases = [CheckCase(name, {"input_ids": ids, "attention_mask": mask, "vision_token_ids": toy_vision},
                       expected(ids, mask, toy_vision), hint) for name, ((ids, mask), hint) in toy_cases.items()]
    vision_ids = processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    for name, batch in _real_batches(processor, records, CollatorV2).items():
        cases.append(CheckCase(f"{len(records)} real examples, {name} (CollatorV2's labels)",
                               {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                                "vision_token_ids": vision_ids}, _to_plain(batch["labels"]), None))
    return run_check(_PlainResult(function), cases, hint="labels = input_ids.clone(); then -100 where attention_mask == 0 "
                                                         "and where torch.isin(input_ids, vision ids).")


def check_find_answer_positions(function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]) -> CheckResult:
    """Check a loop over one unpadded sequence that marks the answer, against `find_answer_mask` (exercise 3.2).

    Args:
        function: the student's `find_answer_positions(input_ids, im_start_id, im_end_id, assistant_header_ids)`,
            taking and returning lists.
        processor, records: a real case is built from the first record (`CollatorV3`, one example, no padding).
    """
    import torch

    from vlmlib.collators import CollatorV3

    def case(name: str, input_ids: list[int], im_start_id: int, im_end_id: int, header_ids: list[int], hint: str | None) -> CheckCase:
        ids = torch.tensor([input_ids])
        expected = _reference_answer_mask(ids, torch.ones_like(ids), im_start_id, im_end_id, header_ids)
        return CheckCase(name, {"input_ids": list(input_ids), "im_start_id": im_start_id, "im_end_id": im_end_id,
                                "assistant_header_ids": list(header_ids)},
                         expected if isinstance(expected, _Raised) else expected[0], hint)

    start, end = TOY_TOKEN_IDS["<|im_start|>"], TOY_TOKEN_IDS["<|im_end|>"]
    cases = [
        case("a user turn, then the answer", _TOY_USER + _TOY_ANSWER, start, end, _TOY_HEADER,
             "the answer starts after <|im_start|>assistant\\n and ends with its <|im_end|>, which is marked too."),
        case("system, user, answer", _TOY_SYSTEM + _TOY_USER + _TOY_ANSWER, start, end, _TOY_HEADER, None),
        case("two assistant turns", _TOY_USER + _TOY_ANSWER + _TOY_USER + [1, 8, 9, 22, 2, 9], start, end, _TOY_HEADER,
             "keep looking after the first answer: a conversation can have several assistant turns."),
        case("the words 'assistant\\n' inside the user's text", [1, 7, 9, 8, 9, 12, 2, 9] + _TOY_ANSWER, start, end, _TOY_HEADER,
             "a header counts only right after <|im_start|>."),
        case("an empty answer", _TOY_USER + [1, 8, 9, 2, 9], start, end, _TOY_HEADER, "an empty answer still has its <|im_end|>."),
        case("an answer cut off before its <|im_end|>", _TOY_USER + _TOY_ANSWER[:-2], start, end, _TOY_HEADER,
             "when the sequence ends inside an assistant turn, raise ValueError: training on half an answer teaches "
             "the model to stop early."),
    ]
    batch = CollatorV3(processor)(list(records[:1]))
    tokenizer = processor.tokenizer
    cases.append(case("a real example from CollatorV3", batch["input_ids"][0].tolist(), tokenizer.convert_tokens_to_ids("<|im_start|>"),
                      tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.encode("assistant\n", add_special_tokens=False), None))
    return run_check(_PlainResult(function), cases, hint="walk the ids once: at each <|im_start|> followed by the header, "
                                                         "mark everything after the header up to and including the next <|im_end|>.")


def check_build_answer_mask(function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]) -> CheckResult:
    """Check a vectorised answer mask for a padded batch against `vlmlib.collators.find_answer_mask` (exercise 3.3).

    Args:
        function: the student's `build_answer_mask(input_ids, attention_mask, im_start_id, im_end_id, assistant_header_ids)`.
        processor, records: real batches are built from these (`CollatorV2`), with right and left padding.
    """
    from vlmlib.collators import CollatorV2

    start, end = TOY_TOKEN_IDS["<|im_start|>"], TOY_TOKEN_IDS["<|im_end|>"]
    two_turns = _TOY_USER + _TOY_ANSWER + [1, 7, 9, 13, 2, 9, 1, 8, 9, 22, 2, 9]
    toy_cases = {  # name -> ((input_ids, attention_mask), hint)
        "two rows, right padding": (_toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "right"), None),
        "two rows, left padding": (_toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "left"),
                                   "never use absolute positions: with left padding the turns start later in short rows."),
        "two assistant turns in one row": (_toy_batch([two_turns, _TOY_USER + _TOY_ANSWER], "right"),
                                           "count <|im_start|> tokens along each row (cumsum) to number the turns."),
        "left padding written with <|im_end|>'s id": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "left", pad_id=end),
            "count only real tokens: multiply by attention_mask before counting <|im_start|> and <|im_end|>."),
        "a row whose answer was cut off": (_toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_USER + _TOY_ANSWER[:-2]], "right"),
                                           "raise ValueError when an assistant turn has no closing <|im_end|>."),
    }
    cases = [CheckCase(name, {"input_ids": ids, "attention_mask": mask, "im_start_id": start, "im_end_id": end,
                              "assistant_header_ids": _TOY_HEADER}, _reference_answer_mask(ids, mask, start, end, _TOY_HEADER), hint)
             for name, ((ids, mask), hint) in toy_cases.items()]
    tokenizer = processor.tokenizer
    real_ids = (tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|im_end|>"),
                tokenizer.encode("assistant\n", add_special_tokens=False))
    for name, batch in _real_batches(processor, records, CollatorV2).items():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "im_start_id": real_ids[0],
                  "im_end_id": real_ids[1], "assistant_header_ids": real_ids[2]}
        cases.append(CheckCase(f"{len(records)} real examples, {name}", inputs, _reference_answer_mask(*inputs.values()), None))
    return run_check(_PlainResult(function), cases, hint="mark assistant-header starts, number the turns with cumsum, and keep "
                                                         "positions after the header up to the turn's <|im_end|>; return a bool tensor.")


def _reference_trained_fraction(roles: Sequence[Sequence[str]], labels: Any) -> dict[str, float]:
    """Return the share of the trained positions (label not -100) in each role, as chapter 03 counts them."""
    from collections import Counter

    from vlmlib.collators import IGNORE_INDEX, TOKEN_ROLES

    counts = Counter(role for row_roles, row_labels in zip(roles, labels.tolist())
                     for role, label in zip(row_roles, row_labels) if label != IGNORE_INDEX)
    total = sum(counts.values())
    return {role: counts[role] / total for role in TOKEN_ROLES}


def check_trained_fraction_by_role(function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]) -> CheckResult:
    """Check the share of trained positions per role against chapter 03's count (lab 04, exercise 4.1).

    Args:
        function: the student's `trained_fraction_by_role(roles, labels)`.
        processor, records: real cases are the records through CollatorV1, V2 and V3 (both strategies).
    """
    import torch

    from vlmlib.collators import IGNORE_INDEX, CollatorV1, CollatorV2, CollatorV3, find_token_roles

    ignored = IGNORE_INDEX
    toy = {  # name -> (roles, labels, hint)
        "one row, everything trained": ([["system", "system", "user", "user", "assistant"]], [[1, 2, 3, 4, 5]],
                                        "return every role of TOKEN_ROLES as a key, 0.0 for roles with no trained position."),
        "one row, the prompt masked": ([["system", "user", "user", "assistant", "assistant"]], [[ignored, ignored, ignored, 7, 8]],
                                       "count only positions whose label is not -100."),
        "two rows of different lengths": (
            [["user", "assistant", "assistant", "padding"], ["user", "user", "user", "assistant"]],
            [[3, 4, 5, ignored], [3, 3, 3, 4]], "divide by the trained positions of the whole batch, not row by row."),
    }
    cases = [CheckCase(name, {"roles": roles, "labels": torch.tensor(labels)},
                       _reference_trained_fraction(roles, torch.tensor(labels)), hint) for name, (roles, labels, hint) in toy.items()]
    collators = {"V1": (CollatorV1, {}), "V2": (CollatorV2, {}), "V3 all_tokens": (CollatorV3, {"mask_strategy": "all_tokens"}),
                 "V3 assistant_only": (CollatorV3, {"mask_strategy": "assistant_only"})}
    for name, (collator_class, options) in collators.items():
        batch = collator_class(processor, **options)(list(records))
        roles = find_token_roles(batch["input_ids"], batch["attention_mask"], processor.tokenizer)
        cases.append(CheckCase(f"{len(records)} real examples through {name}", {"roles": roles, "labels": batch["labels"]},
                               _reference_trained_fraction(roles, batch["labels"]), None))
    return run_check(function, cases,
                     hint="count the trained positions of each role, then divide each count by the total number trained.")


def _reference_answer_weight(labels_all_tokens: Any, labels_assistant_only: Any) -> float:
    """Return answer tokens / trained tokens over the batch, counting only predicted positions (1 onwards)."""
    from vlmlib.collators import IGNORE_INDEX

    num_answer = int((labels_assistant_only[:, 1:] != IGNORE_INDEX).sum())
    return num_answer / int((labels_all_tokens[:, 1:] != IGNORE_INDEX).sum())


def check_answer_loss_weight(function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]) -> CheckResult:
    """Check the weight of the answer in the all_tokens loss, relative to assistant_only (lab 04, exercise 4.2).

    Args:
        function: the student's `answer_loss_weight(labels_all_tokens, labels_assistant_only)`.
        processor, records: a real case is the records through CollatorV3 with each strategy.
    """
    import torch

    from vlmlib.collators import IGNORE_INDEX, CollatorV3

    ignored = IGNORE_INDEX
    toy = {  # name -> (labels_all_tokens, labels_assistant_only, hint)
        "one row: 3 answer tokens of 6 in the loss": ([[ignored, 6, 7, 8, 20, 21, 2]], [[ignored] * 4 + [20, 21, 2]],
                                                      "weight = answer tokens in the loss / all tokens in the loss."),
        "the same labels: weight 1": ([[ignored, ignored, 20, 21, 2]], [[ignored, ignored, 20, 21, 2]], None),
        "rows of different lengths": (
            [[ignored, 6, 7, 20, 2, ignored, ignored], [ignored, 6, 7, 8, 9, 20, 2]],
            [[ignored, ignored, ignored, 20, 2, ignored, ignored], [ignored] * 5 + [20, 2]],
            "the loss is one mean over all the batch's tokens: divide the two totals, do not average per-row ratios."),
        "the first position is never predicted": (
            [[1, 6, 7, 20, 2]], [[ignored, ignored, ignored, 20, 2]],
            "position 0 has no token before it, so its label never reaches the loss: count from position 1 (labels[:, 1:])."),
    }
    cases = [CheckCase(name, {"labels_all_tokens": torch.tensor(all_tokens), "labels_assistant_only": torch.tensor(answer)},
                       _reference_answer_weight(torch.tensor(all_tokens), torch.tensor(answer)), hint)
             for name, (all_tokens, answer, hint) in toy.items()]
    labels = {strategy: CollatorV3(processor, mask_strategy=strategy)(list(records))["labels"]
              for strategy in ("all_tokens", "assistant_only")}
    cases.append(CheckCase(f"{len(records)} real examples through CollatorV3", {"labels_all_tokens": labels["all_tokens"],
                           "labels_assistant_only": labels["assistant_only"]},
                           _reference_answer_weight(labels["all_tokens"], labels["assistant_only"]), None))
    return run_check(function, cases, hint="count labels != -100 from position 1 under each strategy; "
                                                           "return the assistant_only count over the all_tokens count.")


def _reference_loss_share(logits: Any, labels: Any, roles: Sequence[Sequence[str]]) -> dict[str, float]:
    """Return each role's share of the summed next-token cross-entropy (logits at t predict the label at t + 1)."""
    import torch.nn.functional as F

    from vlmlib.collators import IGNORE_INDEX, TOKEN_ROLES

    targets = labels[:, 1:]
    token_losses = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    totals = {role: 0.0 for role in TOKEN_ROLES}
    for row, row_roles in enumerate(roles):
        for position in range(1, len(row_roles)):
            if int(labels[row, position]) != IGNORE_INDEX:
                totals[row_roles[position]] += float(token_losses[row, position - 1])
    total = sum(totals.values())
    return {role: value / total for role, value in totals.items()}


def check_loss_share_by_role(function: Callable[..., Any]) -> CheckResult:
    """Check each role's share of the loss, computed from logits with the next-token shift (lab 04, exercise 4.3)."""
    import torch

    from vlmlib.collators import IGNORE_INDEX

    ignored, vocab_size = IGNORE_INDEX, 8
    generator = torch.Generator().manual_seed(0)
    prompt_roles = ["system", "system", "user", "user", "assistant", "assistant", "assistant"]
    prompt_labels = [1, 6, 7, 3, 5, 4, 2]

    def confident(labels: list[int], confident_positions: set[int]) -> Any:
        """Return (1, len, vocab) logits, random except very sure of the next label after each given position."""
        logits = torch.randn(1, len(labels), vocab_size, generator=generator)
        for position in confident_positions:
            logits[0, position, labels[position + 1]] = 12.0
        return logits

    uniform = torch.zeros(1, len(prompt_labels), vocab_size)
    shifted_trap = torch.zeros(1, 4, vocab_size)
    shifted_trap[0, 0, 5] = 12.0  # position 0 is sure of the token at position 1 (5): the user token costs little
    toy = {  # name -> (logits, labels, roles, hint)
        "equal logits: every token costs the same": (
            uniform, [prompt_labels], [prompt_roles],
            "with equal logits every predicted token costs log(vocab size), so the shares are those of positions 1 onwards: "
            "position 0 is never predicted."),
        "a prompt the model is sure of": (
            confident(prompt_labels, {0, 1, 2}), [prompt_labels], [prompt_roles],
            "a token's loss is -log_softmax(logits)[label]: use F.cross_entropy(..., reduction='none')."),
        "the logits at t predict the token at t + 1": (
            shifted_trap, [[1, 5, 6, 7]], [["system", "user", "assistant", "assistant"]],
            "shift by one: logits[:, :-1] are scored against labels[:, 1:], and the loss belongs to the role at t + 1."),
        "only the answer trained": (torch.randn(1, 7, vocab_size, generator=generator),
                                    [[ignored] * 4 + [5, 4, 2]], [prompt_roles], "positions labelled -100 add nothing to the loss."),
        "a batch of two with padding": (torch.randn(2, 6, vocab_size, generator=generator),
                                        [[1, 6, 7, 5, 2, ignored], [1, 7, 3, 3, 5, 2]],
                                        [["system", "system", "user", "assistant", "assistant", "padding"],
                                         ["system", "user", "user", "vision", "assistant", "assistant"]],
                                        "add the losses of every row before dividing by the total."),
    }
    cases = [CheckCase(name, {"logits": logits, "labels": torch.tensor(labels), "roles": roles},
                       _reference_loss_share(logits, torch.tensor(labels), roles), hint)
             for name, (logits, labels, roles, hint) in toy.items()]
    return run_check(function, cases, tolerance=1e-5, hint="per-token cross-entropy of logits[:, :-1] against labels[:, 1:], "
                                                           "summed per role of the predicted token, divided by the total.")
