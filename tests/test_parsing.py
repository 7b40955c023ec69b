"""Tests for vlmlib.parsing: reading boxes back out of Qwen2-VL's answers."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmlib.boxes import convert_hub_box_to_qwen
from vlmlib.data import CATEGORY_NAMES, format_answer
from vlmlib.parsing import DEFAULT_LABEL, ParsedAnswer, ParsedBox, parse_box_answer
from vlmlib.tokens import (
    BOX_END_TOKEN,
    BOX_START_TOKEN,
    END_OF_TEXT_TOKEN,
    IM_END_TOKEN,
    OBJECT_REF_END_TOKEN,
    OBJECT_REF_START_TOKEN,
)

# The example answer of vlmlib.data.format_answer's docstring.
RAW_SINGLE_BOX_ANSWER = (
    f"{OBJECT_REF_START_TOKEN}nutrition-table{OBJECT_REF_END_TOKEN}"
    f"{BOX_START_TOKEN}(120,340),(560,910){BOX_END_TOKEN}"
)


def test_parse_box_answer_reads_one_well_formed_box() -> None:
    answer = parse_box_answer(RAW_SINGLE_BOX_ANSWER)
    assert answer == ParsedAnswer(
        boxes=[ParsedBox("nutrition-table", (120, 340, 560, 910))], failure_reason=None, rejected=[]
    )
    assert not answer.is_parse_failure


def test_parse_box_answer_reads_every_box_in_order() -> None:
    text = (
        RAW_SINGLE_BOX_ANSWER
        + f"{OBJECT_REF_START_TOKEN}nutrition-table-small{OBJECT_REF_END_TOKEN}"
        f"{BOX_START_TOKEN}(10,20),(30,40){BOX_END_TOKEN}"
    )
    assert parse_box_answer(text).boxes == [
        ParsedBox("nutrition-table", (120, 340, 560, 910)),
        ParsedBox("nutrition-table-small", (10, 20, 30, 40)),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "nutrition-table(120,340),(560,910)",
        "nutrition-table( 120 , 340 ) , ( 560 ,910 )",
        RAW_SINGLE_BOX_ANSWER + IM_END_TOKEN,
        RAW_SINGLE_BOX_ANSWER + END_OF_TEXT_TOKEN,
        (
            f"{OBJECT_REF_START_TOKEN} nutrition-table {OBJECT_REF_END_TOKEN} "
            f"{BOX_START_TOKEN} (120,340), (560,910) {BOX_END_TOKEN}"
        ),
    ],
    ids=[
        "special-tokens-stripped",
        "spaces-around-numbers",
        "trailing-im-end",
        "trailing-endoftext",
        "spaces-around-tokens",
    ],
)
def test_parse_box_answer_accepts_the_tolerated_variants(text: str) -> None:
    assert parse_box_answer(text).boxes == [ParsedBox("nutrition-table", (120, 340, 560, 910))]


def test_parse_box_answer_reads_several_boxes_with_special_tokens_stripped() -> None:
    answer = parse_box_answer(
        "nutrition-table(120,340),(560,910)nutrition-table-small(10,20),(30,40)"
    )
    assert [box.label for box in answer.boxes] == ["nutrition-table", "nutrition-table-small"]


@pytest.mark.parametrize(
    "text",
    [
        f"{BOX_START_TOKEN}(120,340),(560,910){BOX_END_TOKEN}",
        "(120,340),(560,910)",
        "The table is at (120,340),(560,910)",
    ],
    ids=["box-tokens-only", "bare-coordinates", "sentence-before-box"],
)
def test_parse_box_answer_gives_default_label_when_box_has_none(text: str) -> None:
    assert parse_box_answer(text).boxes == [ParsedBox(DEFAULT_LABEL, (120, 340, 560, 910))]


def test_parse_box_answer_default_label_is_the_first_category_name() -> None:
    assert DEFAULT_LABEL == CATEGORY_NAMES[0]


@given(
    box_hub_list=st.lists(
        st.tuples(
            st.floats(0.0, 0.49), st.floats(0.0, 0.49), st.floats(0.51, 1.0), st.floats(0.51, 1.0)
        ),
        min_size=1,
        max_size=3,
    ),
    category_indices=st.lists(st.integers(0, len(CATEGORY_NAMES) - 1), min_size=3, max_size=3),
)
@settings(max_examples=100, deadline=None)
def test_parse_box_answer_reads_back_what_format_answer_wrote(
    box_hub_list: list[tuple[float, float, float, float]], category_indices: list[int]
) -> None:
    # Each box_hub is [y_min, x_min, y_max, x_max] with min < 0.5 < max, so it
    # survives rounding to the grid.
    category_names = [CATEGORY_NAMES[index] for index in category_indices[: len(box_hub_list)]]
    text = format_answer(
        {"bbox": [list(box_hub) for box_hub in box_hub_list], "category_name": category_names}
    )
    answer = parse_box_answer(text)
    assert answer.boxes == [
        ParsedBox(name, convert_hub_box_to_qwen(box_hub))
        for name, box_hub in zip(category_names, box_hub_list)
    ]
    assert answer.rejected == []


@pytest.mark.parametrize(
    "text",
    [
        f"{BOX_START_TOKEN}(120,340),(56",
        "nutrition-table(120,340),(56",
        f"{OBJECT_REF_START_TOKEN}nutrition-table{OBJECT_REF_END_TOKEN}",
        "nutrition-table(120,340),",
        "nutrition-table(120,340),(560,910",
    ],
    ids=[
        "inside-coordinates",
        "tokens-stripped",
        "after-label",
        "after-first-corner",
        "before-last-bracket",
    ],
)
def test_parse_box_answer_returns_reason_for_truncated_text(text: str) -> None:
    answer = parse_box_answer(text)
    assert answer.is_parse_failure
    assert answer.failure_reason == "truncated box"


@pytest.mark.parametrize(
    "text",
    [
        "(10,20,30,40)",
        "The box is (10, 20)",
        "nutrition-table(120,340)",
        "(1, 2) and (3, 4) apples",
    ],
    ids=[
        "four-numbers-one-bracket",
        "one-corner-in-a-sentence",
        "label-and-one-corner",
        "two-pairs-then-words",
    ],
)
def test_parse_box_answer_calls_closed_groups_that_are_not_boxes_no_box_found(text: str) -> None:
    """Truncated means cut off inside a box; an answer whose brackets all close
    is a wrong format instead.
    """
    answer = parse_box_answer(text)
    assert answer.failure_reason == "no box found"
    assert answer.rejected == []


def test_parse_box_answer_keeps_whole_boxes_before_a_truncated_one() -> None:
    answer = parse_box_answer(RAW_SINGLE_BOX_ANSWER + f"{BOX_START_TOKEN}(10,20),(3")
    assert answer.boxes == [ParsedBox("nutrition-table", (120, 340, 560, 910))]
    assert answer.failure_reason is None
    assert "truncated" in answer.rejected[0]


@pytest.mark.parametrize(
    ("text", "expected_words"),
    [
        ("(1200,340),(560,910)", "outside 0-1000"),
        ("(-5,340),(560,910)", "outside 0-1000"),
        ("(120,340),(560,99999999999999999999999)", "outside 0-1000"),
        ("(560,340),(120,910)", "inverted"),
        ("(120,910),(560,340)", "inverted"),
        ("(120,340),(120,910)", "zero-size"),
    ],
    ids=["x-above-1000", "negative", "huge-number", "x-inverted", "y-inverted", "zero-width"],
)
def test_parse_box_answer_rejects_boxes_that_break_the_rule(text: str, expected_words: str) -> None:
    answer = parse_box_answer(text)
    assert answer.boxes == []
    assert answer.failure_reason is not None and answer.failure_reason.startswith(
        "all boxes rejected"
    )
    assert len(answer.rejected) == 1 and expected_words in answer.rejected[0]


def test_parse_box_answer_keeps_valid_boxes_next_to_a_rejected_one() -> None:
    answer = parse_box_answer("nutrition-table(120,340),(1560,910)nutrition-table(10,20),(30,40)")
    assert answer.boxes == [ParsedBox("nutrition-table", (10, 20, 30, 40))]
    assert answer.failure_reason is None
    assert len(answer.rejected) == 1


@pytest.mark.parametrize(
    ("text", "expected_reason"),
    [
        ("", "empty answer"),
        (f"  {IM_END_TOKEN}", "empty answer"),
        ("I cannot see a table.", "no box found"),
        (f"{BOX_START_TOKEN}(1.5,2),(3,4){BOX_END_TOKEN}", "no box found"),
    ],
    ids=["empty", "only-end-token", "prose", "decimal-coordinates"],
)
def test_parse_box_answer_names_the_failure_when_no_box_is_found(
    text: str, expected_reason: str
) -> None:
    answer = parse_box_answer(text)
    assert answer.is_parse_failure
    assert answer.failure_reason == expected_reason


_FRAGMENTS = st.sampled_from(
    [
        "(",
        ")",
        ",",
        " ",
        "-",
        ".",
        "0",
        "7",
        "120",
        "1000",
        "1001",
        "99999999999",
        "nutrition-table",
        "é",
        "\n",
        BOX_START_TOKEN,
        BOX_END_TOKEN,
        OBJECT_REF_START_TOKEN,
        OBJECT_REF_END_TOKEN,
        IM_END_TOKEN,
        END_OF_TEXT_TOKEN,
    ]
)


def _check_is_well_formed(answer: ParsedAnswer) -> None:
    """The promises every answer keeps: boxes on the grid and the right way
    round, and a reason exactly when none.
    """
    assert isinstance(answer, ParsedAnswer)
    assert answer.is_parse_failure == (answer.failure_reason is not None)
    for box in answer.boxes:
        x1, y1, x2, y2 = box.box_qwen
        assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000


@given(text=st.text())
@settings(max_examples=300, deadline=None)
def test_parse_box_answer_never_raises_on_arbitrary_text(text: str) -> None:
    _check_is_well_formed(parse_box_answer(text))


@given(text=st.lists(_FRAGMENTS, max_size=40).map("".join))
@settings(max_examples=300, deadline=None)
def test_parse_box_answer_never_raises_on_text_built_from_box_fragments(text: str) -> None:
    _check_is_well_formed(parse_box_answer(text))


@pytest.mark.parametrize(
    "text",
    [
        "a" * 50_000,
        "nutrition-table" * 5_000,
        "(1" * 25_000,
        "(1" * 25_000 + "x",
        OBJECT_REF_START_TOKEN * 5_000,
        OBJECT_REF_START_TOKEN + " " * 50_000 + "x",
        "(1 " + " " * 50_000,
    ],
    ids=[
        "letters",
        "repeated-label",
        "open-brackets",
        "open-brackets-then-letter",
        "open-tokens",
        "spaces-inside-label",
        "spaces-inside-box",
    ],
)
def test_parse_box_answer_takes_linear_time_on_long_runaway_answers(text: str) -> None:
    # Earlier, backtracking regexes took about a minute on 50,000 letters, 4 s
    # on "(1" * 25,000 + "x", and a minute on 5,000 spaces inside a label.
    start_seconds = time.perf_counter()
    parse_box_answer(text)
    assert time.perf_counter() - start_seconds < 1.0


def test_parse_box_answer_failure_reason_stays_short_when_many_boxes_are_rejected() -> None:
    answer = parse_box_answer("(10,20),(5,40)" * 100)
    assert len(answer.rejected) == 100
    assert answer.failure_reason is not None and answer.failure_reason.endswith("(and 97 more)")
