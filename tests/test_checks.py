"""Tests for vlmlib.checks: right answers pass, missing ones read "not attempted", wrong ones fail with a verdict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vlmlib import checks
from vlmlib.boxes import convert_hub_box_to_qwen, convert_qwen_box_to_hub
from vlmlib.data import format_answer
from vlmlib.dataset_stats import compute_image_token_budget, describe_record_boxes
from vlmlib.parsing import parse_box_answer


def _failure_kind(text: str) -> str | None:
    reason = parse_box_answer(text).failure_reason
    return None if reason is None else reason.split(":")[0]


# check -> a right answer, built from the library function the check compares against
RIGHT_ANSWERS: dict[Callable[..., checks.CheckResult], Callable[..., Any]] = {
    checks.check_convert_hub_box_to_qwen: convert_hub_box_to_qwen,
    checks.check_convert_qwen_box_to_hub: convert_qwen_box_to_hub,
    checks.check_describe_record_boxes: describe_record_boxes,
    checks.check_format_answer: format_answer,
    checks.check_count_image_tokens_from_grid: lambda grid_thw: grid_thw[0] * grid_thw[1] * grid_thw[2] // 4,
    checks.check_count_image_tokens: lambda *size_and_budget: compute_image_token_budget(*size_and_budget).num_image_tokens,
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
def test_check_reports_not_attempted_on_not_implemented_error(check, capsys: pytest.CaptureFixture[str]):
    result = check(_not_written)
    assert not result.passed and not result.is_attempted
    assert "not attempted yet (Exercise 9.9: write this)" in capsys.readouterr().out


@pytest.mark.parametrize("check", RIGHT_ANSWERS, ids=CHECK_IDS)
def test_check_fails_a_constant_answer_without_raising(check, capsys: pytest.CaptureFixture[str]):
    result = check(lambda *arguments: None)
    output = capsys.readouterr().out
    assert result.is_attempted and not result.passed
    assert "First failing case" in output and "Hint:" in output


def test_check_verdict_shows_input_expected_actual_and_the_case_hint(capsys: pytest.CaptureFixture[str]):
    def convert_without_cap(box_hub):  # truncates, but forgets that 1.0 must become 999
        y_min, x_min, y_max, x_max = box_hub
        return int(x_min * 1000), int(y_min * 1000), int(x_max * 1000), int(y_max * 1000)

    result = checks.check_convert_hub_box_to_qwen(convert_without_cap)
    output = capsys.readouterr().out
    assert (result.num_passed, result.num_cases) == (3, 4)
    assert "the whole image" in output and "expected: (0, 0, 999, 999)" in output
    assert "got:      (0, 0, 1000, 1000)" in output and "never 1000" in output


def test_check_convert_hub_box_to_qwen_fails_a_rounding_answer_and_names_truncation(
        capsys: pytest.CaptureFixture[str]):
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


def test_check_reports_a_student_error_with_its_line_not_a_traceback(capsys: pytest.CaptureFixture[str]):
    def count_tokens(grid_thw):
        return grid_thw[3]

    result = checks.check_count_image_tokens_from_grid(count_tokens)
    output = capsys.readouterr().out
    assert not result.passed
    assert "an error, IndexError" in output and "return grid_thw[3]" in output and "Traceback" not in output


def test_check_says_when_an_int_came_back_as_a_float(capsys: pytest.CaptureFixture[str]):
    checks.check_count_image_tokens_from_grid(lambda grid_thw: grid_thw[0] * grid_thw[1] * grid_thw[2] / 4)
    assert "the value is right but it is a float; return an int" in capsys.readouterr().out


def test_check_points_at_the_first_differing_character_of_a_string(capsys: pytest.CaptureFixture[str]):
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
    cases = [checks.CheckCase("first", {"values": [1, 2]}, 2), checks.CheckCase("second", {"values": [1, 2]}, 2)]

    def pop_and_count(values):
        values.pop()
        return len(values) + 1

    assert checks.run_check(pop_and_count, cases, hint="").passed
    assert cases[0].inputs["values"] == [1, 2]
