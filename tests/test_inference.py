"""Tests for vlmlib.inference: batched greedy generation with left padding, then parsing."""

from __future__ import annotations

from vlmlib.inference import generate_answers, predict_boxes
from vlmlib.parsing import ParsedAnswer


def test_generate_answers_returns_one_answer_per_record(tiny_model, tiny_processor, tiny_splits):
    records = [tiny_splits["eval"][index] for index in range(3)]
    answers = generate_answers(tiny_model, tiny_processor, records, max_new_tokens=6, batch_size=2)
    assert len(answers) == 3 and all(isinstance(answer, str) for answer in answers)
    assert not any("<|im_end|>" in answer or "<|endoftext|>" in answer for answer in answers)


def test_generate_answers_batched_equals_one_at_a_time(tiny_model, tiny_processor, tiny_splits):
    # Images of different sizes give prompts of different lengths, so the batch needs left padding;
    # with it, greedy answers must not depend on the batch they were in.
    records = [tiny_splits["eval"][index] for index in range(4)]
    assert len({record["width"] * record["height"] for record in records}) > 1
    batched = generate_answers(tiny_model, tiny_processor, records, max_new_tokens=8, batch_size=4)
    single = [generate_answers(tiny_model, tiny_processor, [record], max_new_tokens=8)[0] for record in records]
    assert batched == single


def test_generate_answers_restores_training_mode_and_padding_side(tiny_model, tiny_processor, tiny_splits):
    tiny_model.train()
    tiny_processor.tokenizer.padding_side = "right"
    generate_answers(tiny_model, tiny_processor, [tiny_splits["eval"][0]], max_new_tokens=2)
    assert tiny_model.training
    assert tiny_processor.tokenizer.padding_side == "right"
    tiny_model.eval()


def test_predict_boxes_returns_a_parsed_answer_per_record(tiny_model, tiny_processor, tiny_splits):
    parsed = predict_boxes(tiny_model, tiny_processor, [tiny_splits["eval"][0]], max_new_tokens=4)
    assert len(parsed) == 1 and isinstance(parsed[0], ParsedAnswer)
    assert parsed[0].is_parse_failure  # an untrained model does not write a box in four tokens
