"""Tests for vlmlib.checks: right answers pass, missing ones read "not
attempted", wrong ones fail with a verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from vlmlib import checks
from vlmlib.boxes import convert_hub_box_to_qwen, convert_qwen_box_to_hub
from vlmlib.collators import IGNORE_INDEX, CollatorV2, CollatorV3, find_answer_mask
from vlmlib.data import format_answer
from vlmlib.dataset_stats import compute_image_token_budget, describe_record_boxes
from vlmlib.parsing import parse_box_answer
from vlmlib.tokens import IM_END_TOKEN, IM_START_TOKEN


def _failure_kind(text: str) -> str | None:
    reason = parse_box_answer(text).failure_reason
    return None if reason is None else reason.split(":")[0]


# check -> a right answer, built from the library function the check compares against
RIGHT_ANSWERS: dict[Callable[..., checks.CheckResult], Callable[..., Any]] = {
    checks.check_convert_hub_box_to_qwen: convert_hub_box_to_qwen,
    checks.check_convert_qwen_box_to_hub: convert_qwen_box_to_hub,
    checks.check_describe_record_boxes: describe_record_boxes,
    checks.check_format_answer: format_answer,
    checks.check_count_image_tokens_from_grid: lambda grid_thw: (
        grid_thw[0] * grid_thw[1] * grid_thw[2] // 4
    ),
    checks.check_count_image_tokens: lambda *size_and_budget: (
        compute_image_token_budget(*size_and_budget).num_image_tokens
    ),
    checks.check_parse_boxes: lambda text: [box.box_qwen for box in parse_box_answer(text).boxes],
    checks.check_describe_parse_failure: _failure_kind,
}
CHECK_IDS = [check.__name__ for check in RIGHT_ANSWERS]


def _not_written(*arguments: Any) -> Any:
    raise NotImplementedError("Exercise 9.9: write this")


@pytest.mark.parametrize("check", RIGHT_ANSWERS, ids=CHECK_IDS)
def test_check_passes_the_library_answer(check, capsys: pytest.CaptureFixture[str]):
    result = check(RIGHT_ANSWERS[check])
    assert result.passed and result.num_passed == result.num_cases >= 3
    assert "cases passed." in capsys.readouterr().out


@pytest.mark.parametrize("check", RIGHT_ANSWERS, ids=CHECK_IDS)
def test_check_reports_not_attempted_on_not_implemented_error(
    check, capsys: pytest.CaptureFixture[str]
):
    result = check(_not_written)
    assert not result.passed and not result.is_attempted
    assert "not attempted yet (Exercise 9.9: write this)" in capsys.readouterr().out


@pytest.mark.parametrize("check", RIGHT_ANSWERS, ids=CHECK_IDS)
def test_check_fails_a_constant_answer_without_raising(check, capsys: pytest.CaptureFixture[str]):
    result = check(lambda *arguments: None)
    output = capsys.readouterr().out
    assert result.is_attempted and not result.passed
    assert "First failing case" in output and "Hint:" in output


def test_check_verdict_shows_input_expected_actual_and_the_case_hint(
    capsys: pytest.CaptureFixture[str],
):
    def convert_without_cap(box_hub):  # truncates, but forgets that 1.0 must become 999
        y_min, x_min, y_max, x_max = box_hub
        return int(x_min * 1000), int(y_min * 1000), int(x_max * 1000), int(y_max * 1000)

    result = checks.check_convert_hub_box_to_qwen(convert_without_cap)
    output = capsys.readouterr().out
    assert (result.num_passed, result.num_cases) == (3, 4)
    assert "the whole image" in output and "expected: (0, 0, 999, 999)" in output
    assert "got:      (0, 0, 1000, 1000)" in output and "never 1000" in output


def test_check_convert_hub_box_to_qwen_fails_a_rounding_answer_and_names_truncation(
    capsys: pytest.CaptureFixture[str],
):
    def convert_rounding(box_hub):  # round() instead of Qwen2-VL's truncation
        y_min, x_min, y_max, x_max = box_hub
        return round(x_min * 1000), round(y_min * 1000), round(x_max * 1000), round(y_max * 1000)

    def convert_rounding_capped(box_hub):  # capped at 999, still wrong where round and floor differ
        return tuple(min(value, 999) for value in convert_rounding(box_hub))

    assert not checks.check_convert_hub_box_to_qwen(convert_rounding).passed
    assert "truncated" in capsys.readouterr().out
    result = checks.check_convert_hub_box_to_qwen(convert_rounding_capped)
    output = capsys.readouterr().out
    assert not result.passed
    assert "expected: (678, 123, 999, 500)" in output and "got:      (679, 123, 999, 500)" in output
    assert "round() gives 679" in output


def test_check_reports_a_student_error_with_its_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
):
    def count_tokens(grid_thw):
        return grid_thw[3]

    result = checks.check_count_image_tokens_from_grid(count_tokens)
    output = capsys.readouterr().out
    assert not result.passed
    assert (
        "an error, IndexError" in output
        and "return grid_thw[3]" in output
        and "Traceback" not in output
    )


def test_check_says_when_an_int_came_back_as_a_float(capsys: pytest.CaptureFixture[str]):
    checks.check_count_image_tokens_from_grid(
        lambda grid_thw: grid_thw[0] * grid_thw[1] * grid_thw[2] / 4
    )
    assert "the value is right but it is a float; return an int" in capsys.readouterr().out


def test_check_points_at_the_first_differing_character_of_a_string(
    capsys: pytest.CaptureFixture[str],
):
    checks.check_format_answer(lambda objects: format_answer(objects).replace("),(", "), ("))
    assert "first difference at character" in capsys.readouterr().out


def test_check_result_shows_nothing_more_in_a_notebook(capsys: pytest.CaptureFixture[str]):
    result = checks.check_convert_qwen_box_to_hub(convert_qwen_box_to_hub)
    assert result._ipython_display_() is None
    assert repr(result) == "<check convert_qwen_box_to_hub: 4/4 passed>"


def test_run_check_accepts_floats_within_tolerance_only():
    cases = [checks.CheckCase("a third", {"x": 1.0}, 1 / 3)]
    assert checks.run_check(lambda x: 0.3333333, cases, hint="", tolerance=1e-6).passed
    assert not checks.run_check(lambda x: 0.33, cases, hint="", tolerance=1e-6).passed


def test_run_check_gives_each_case_a_copy_of_its_inputs():
    cases = [
        checks.CheckCase("first", {"values": [1, 2]}, 2),
        checks.CheckCase("second", {"values": [1, 2]}, 2),
    ]

    def pop_and_count(values):
        values.pop()
        return len(values) + 1

    assert checks.run_check(pop_and_count, cases, hint="").passed
    assert cases[0].inputs["values"] == [1, 2]


# Lab 05: reading a run's curves. A small log shaped like a Trainer's, with a callback's own rows.
RUN_LOGS = {
    "r=2": [
        {"loss": 2.0, "step": 5},
        {"eval_answer_loss": 1.8, "step": 5},
        {"loss": 1.5, "eval_mean_iou": 0.3, "step": 10},
        {"eval_answer_loss": 1.6, "step": 10},
        {"train_loss": 1.75, "train_runtime": 3.0, "step": 10},
    ],
    "r=16": [
        {"loss": 1.9, "step": 5},
        {"eval_answer_loss": 1.4, "step": 5},
        {"loss": 1.6, "eval_mean_iou": 0.5, "step": 10},
        {"eval_answer_loss": 1.7, "step": 10},
        {"train_loss": 1.75, "train_runtime": 3.0, "step": 10},
    ],
}


def _read_curve(log_history, metric):
    return [(row["step"], row[metric]) for row in log_history if metric in row]


def _pick_better_run(histories, metric, is_higher_better):
    last = {name: _read_curve(history, metric)[-1][1] for name, history in histories.items()}
    best = max(last.values()) if is_higher_better else min(last.values())
    winners = [name for name, value in last.items() if value == best]
    return winners[0] if len(winners) == 1 else "tie"


def test_check_read_curve_passes_a_right_answer_and_fails_a_substring_match(
    capsys: pytest.CaptureFixture[str],
):
    def read_by_substring(log_history, metric):  # also takes the summary row's "train_loss"
        return [
            (row["step"], value)
            for row in log_history
            for key, value in row.items()
            if metric in key and key != "step"
        ]

    assert checks.check_read_curve(_read_curve, RUN_LOGS["r=2"]).passed
    assert not checks.check_read_curve(read_by_substring, RUN_LOGS["r=2"]).passed
    assert "'train_loss' is not 'loss'" in capsys.readouterr().out  # the case's own hint


def test_check_pick_better_run_takes_its_expected_answers_from_the_logs_given():
    # On these logs r=16 ends with the higher IoU, r=2 with the lower answer loss; swapping the
    # logs' names swaps the answers the check expects, so a hard-coded answer cannot pass both.
    def always_r16(histories, metric, is_higher_better):
        return "r=16" if "r=16" in histories else "tie"

    swapped = {"r=2": RUN_LOGS["r=16"], "r=16": RUN_LOGS["r=2"]}
    assert checks.check_pick_better_run(_pick_better_run, RUN_LOGS).passed
    assert checks.check_pick_better_run(_pick_better_run, swapped).passed
    assert not checks.check_pick_better_run(always_r16, RUN_LOGS).passed


def test_check_pick_better_run_fails_the_best_value_instead_of_the_last(
    capsys: pytest.CaptureFixture[str],
):
    def pick_by_best_value(histories, metric, is_higher_better):
        choose = max if is_higher_better else min
        best = {
            name: choose(value for _, value in _read_curve(history, metric))
            for name, history in histories.items()
        }
        return choose(best, key=best.get)

    assert not checks.check_pick_better_run(pick_by_best_value, RUN_LOGS).passed
    assert "LAST logged value" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check",
    [checks.check_read_curve, checks.check_pick_better_run],
    ids=["read_curve", "pick_better_run"],
)
def test_training_log_checks_report_not_attempted(check, capsys: pytest.CaptureFixture[str]):
    logs = RUN_LOGS["r=2"] if check is checks.check_read_curve else RUN_LOGS
    assert not check(_not_written, logs).is_attempted
    assert "not attempted yet" in capsys.readouterr().out


# Lab 07: the planted bug, as the lab ships it: the slice starts on the header's newline and stops
# before the closing <|im_end|>.
class _AnswerSpanCollator(CollatorV2):
    def __init__(self, processor, padding_side: str = "right"):
        super().__init__(processor, padding_side=padding_side)
        tokenizer = processor.tokenizer
        self.marker_ids = tokenizer.encode(IM_START_TOKEN + "assistant", add_special_tokens=False)
        self.im_end_id = tokenizer.convert_tokens_to_ids(IM_END_TOKEN)
        self.header_offset, self.stop_offset = 2, 0  # the bug; the fix is 3 and 1

    def __call__(self, records):
        batch = self.encode(records)
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, row_ids in enumerate(batch["input_ids"].tolist()):
            for start in range(len(row_ids) - 1):
                if row_ids[start : start + 2] == self.marker_ids:
                    end = row_ids.index(self.im_end_id, start)
                    first, stop = start + self.header_offset, end + self.stop_offset
                    labels[row, first:stop] = batch["input_ids"][row, first:stop]
        batch["labels"] = labels
        return batch


class _FixedSpanCollator(_AnswerSpanCollator):
    def __init__(self, processor, padding_side: str = "right"):
        super().__init__(processor, padding_side)
        self.header_offset, self.stop_offset = 3, 1


@pytest.fixture(scope="module")
def lab_records(tiny_splits) -> list[dict]:
    train = tiny_splits["train"]
    by_count = {}
    for index, objects in enumerate(train["objects"]):
        by_count.setdefault(len(objects["bbox"]), index)
    return [train[by_count[count]] for count in sorted(by_count)[:3]]


def test_check_fixed_collator_fails_the_planted_bug_and_names_both_tokens(
    tiny_processor, lab_records, capsys: pytest.CaptureFixture[str]
):
    result = checks.check_fixed_collator(_AnswerSpanCollator, tiny_processor, lab_records)
    output = capsys.readouterr().out
    assert result.is_attempted and result.num_passed == 0
    assert "'\\n')]" in output and "'<|im_end|>')]" in output


def test_check_fixed_collator_passes_the_fix_and_collator_v3(tiny_processor, lab_records):
    assert checks.check_fixed_collator(_FixedSpanCollator, tiny_processor, lab_records).passed
    assert checks.check_fixed_collator(CollatorV3, tiny_processor, lab_records).passed


def test_check_fixed_collator_fails_v2_which_trains_the_prompt(tiny_processor, lab_records):
    assert not checks.check_fixed_collator(CollatorV2, tiny_processor, lab_records).passed


def test_check_list_trained_tokens_passes_a_right_answer_and_fails_one_that_keeps_padding(
    tiny_processor, lab_records
):
    def list_trained(input_ids, labels, tokenizer):
        trained_ids = input_ids[labels != IGNORE_INDEX].tolist()
        return [tokenizer.decode([token_id]) for token_id in trained_ids]

    def list_every_token(input_ids, labels, tokenizer):  # reads input_ids, never the labels
        return [tokenizer.decode([token_id]) for token_id in input_ids.tolist()]

    check = checks.check_list_trained_tokens
    assert check(list_trained, tiny_processor, lab_records).passed
    assert not check(list_every_token, tiny_processor, lab_records).passed


def test_check_find_mislabelled_tokens_fails_an_answer_that_only_reports_extra_tokens(
    tiny_processor, lab_records
):
    def find_with_library_mask(batch, tokenizer):
        im_start_id, im_end_id = tokenizer.convert_tokens_to_ids([IM_START_TOKEN, IM_END_TOKEN])
        mask = find_answer_mask(
            batch["input_ids"],
            batch["attention_mask"],
            im_start_id,
            im_end_id,
            tokenizer.encode("assistant\n", add_special_tokens=False),
        )
        is_trained = batch["labels"] != IGNORE_INDEX

        def describe(where):
            return [
                (row, position, tokenizer.decode([int(batch["input_ids"][row, position])]))
                for row, position in torch.nonzero(where).tolist()
            ]

        return {
            "trained, not in the answer": describe(is_trained & ~mask),
            "in the answer, not trained": describe(mask & ~is_trained),
        }

    def find_extra_only(batch, tokenizer):
        found = find_with_library_mask(batch, tokenizer)
        return {**found, "in the answer, not trained": []}

    check = checks.check_find_mislabelled_tokens
    assert check(find_with_library_mask, tiny_processor, lab_records).passed
    assert not check(find_extra_only, tiny_processor, lab_records).passed


DEBUGGING_CHECKS = [
    checks.check_list_trained_tokens,
    checks.check_find_mislabelled_tokens,
    checks.check_fixed_collator,
]


@pytest.mark.parametrize(
    "check",
    DEBUGGING_CHECKS,
    ids=["list_trained_tokens", "find_mislabelled_tokens", "fixed_collator"],
)
def test_debugging_checks_report_not_attempted(
    check, tiny_processor, lab_records, capsys: pytest.CaptureFixture[str]
):
    class NotWrittenCollator:
        def __init__(self, *arguments, **options):
            raise NotImplementedError("Exercise 9.9: write this")

    function = NotWrittenCollator if check is checks.check_fixed_collator else _not_written
    assert not check(function, tiny_processor, lab_records).is_attempted
    assert "not attempted yet" in capsys.readouterr().out
