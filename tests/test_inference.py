"""Tests for vlmlib.inference: batched greedy generation with left padding, then parsing."""

from __future__ import annotations

import pytest

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


def test_generate_scored_answers_confidence_equals_teacher_forced_probability(tiny_model, tiny_processor, tiny_splits):
    import torch

    from vlmlib.inference import _build_generation_batch, generate_scored_answers

    record = tiny_splits["eval"][0]
    (scored,) = generate_scored_answers(tiny_model, tiny_processor, [record], max_new_tokens=6)
    assert 0.0 < scored.confidence <= 1.0
    # Independently: feed prompt + generated tokens back in one forward pass and average the log-probabilities.
    batch = _build_generation_batch(tiny_processor, [record], "Find every nutrition table in this product photo and give its bounding box.", "You are a helpful assistant.")
    generated = tiny_model.generate(**batch, max_new_tokens=6, do_sample=False)
    new_tokens = generated[0, batch["input_ids"].shape[1]:]
    full = dict(batch)
    full["input_ids"] = generated
    full["attention_mask"] = torch.ones_like(generated)
    full["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(new_tokens)[None]], dim=1)
    with torch.no_grad():
        logits = tiny_model(**full).logits[0, batch["input_ids"].shape[1] - 1:-1]
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, new_tokens[:, None]).squeeze(1)
    assert scored.confidence == pytest.approx(float(torch.exp(log_probs.mean())), rel=1e-3)
