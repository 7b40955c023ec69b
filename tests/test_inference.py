"""Tests for vlmlib.inference: batched greedy generation with left padding, then parsing."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

from vlmlib.data import DEFAULT_PROMPT, DEFAULT_SYSTEM_MESSAGE
from vlmlib.inference import _build_generation_batch, generate_answers, predict_boxes
from vlmlib.parsing import ParsedAnswer

# The sampling settings of Qwen/Qwen2-VL-2B-Instruct's generation_config.json on the Hub.
HUB_GENERATION_SETTINGS = {
    "do_sample": True,
    "top_k": 1,
    "top_p": 0.001,
    "temperature": 0.1,
    "repetition_penalty": 1.05,
}


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
    single = [
        generate_answers(tiny_model, tiny_processor, [record], max_new_tokens=8)[0]
        for record in records
    ]
    assert batched == single


def test_generate_answers_restores_training_mode_and_padding_side(
    tiny_model, tiny_processor, tiny_splits
):
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


def test_generate_scored_answers_confidence_equals_teacher_forced_probability(
    tiny_model, tiny_processor, tiny_splits
):
    import torch

    from vlmlib.inference import _build_generation_batch, generate_scored_answers

    record = tiny_splits["eval"][0]
    (scored,) = generate_scored_answers(tiny_model, tiny_processor, [record], max_new_tokens=6)
    assert 0.0 < scored.confidence <= 1.0
    # Independently: feed prompt + generated tokens back in one forward pass and
    # average the log-probabilities.
    batch = _build_generation_batch(
        tiny_processor,
        [record],
        "Find every nutrition table in this product photo and give its bounding box.",
        "You are a helpful assistant.",
    )
    generated = tiny_model.generate(**batch, max_new_tokens=6, do_sample=False)
    new_tokens = generated[0, batch["input_ids"].shape[1] :]
    full = dict(batch)
    full["input_ids"] = generated
    full["attention_mask"] = torch.ones_like(generated)
    full["mm_token_type_ids"] = torch.cat(
        [batch["mm_token_type_ids"], torch.zeros_like(new_tokens)[None]], dim=1
    )
    with torch.no_grad():
        logits = tiny_model(**full).logits[0, batch["input_ids"].shape[1] - 1 : -1]
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, new_tokens[:, None]).squeeze(1)
    assert scored.confidence == pytest.approx(float(torch.exp(log_probs.mean())), rel=1e-3)


def _reload_with_generation_settings(model, folder: Path, settings: dict):
    """Save the model with `settings` in its generation_config.json and load it
    back, as from the Hub.
    """
    model.save_pretrained(folder)
    generation_config = GenerationConfig(**{**model.generation_config.to_diff_dict(), **settings})
    generation_config.save_pretrained(folder)
    return Qwen2VLForConditionalGeneration.from_pretrained(folder, dtype=model.dtype)


def test_generate_answers_stay_greedy_with_the_hub_generation_config(
    tiny_model, tiny_processor, tiny_splits, tmp_path, monkeypatch, capfd
):
    records = [tiny_splits["eval"][index] for index in range(4)]
    expected = generate_answers(tiny_model, tiny_processor, records, max_new_tokens=16)
    reloaded = _reload_with_generation_settings(tiny_model, tmp_path, HUB_GENERATION_SETTINGS)
    assert reloaded.generation_config.repetition_penalty == 1.05
    used_configs = []  # the GenerationConfig each generate call used, the folder's merged in
    prepare = reloaded._prepare_generation_config

    def record_prepared_config(*args, **kwargs):
        prepared_config, model_kwargs = prepare(*args, **kwargs)
        used_configs.append(prepared_config)
        return prepared_config, model_kwargs

    monkeypatch.setattr(reloaded, "_prepare_generation_config", record_prepared_config)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = generate_answers(reloaded, tiny_processor, records, max_new_tokens=16)
    assert answers == expected
    (used,) = used_configs
    assert (used.do_sample, used.num_beams, used.repetition_penalty) == (False, 1, 1.0)
    used.validate(strict=True)  # raises on sampling flags left on for greedy decoding (they warn)
    assert not [warning for warning in caught if "generation" in warning.filename]
    assert "generation flags" not in capfd.readouterr().err


def test_generate_answers_ignore_a_repetition_penalty_that_changes_greedy_answers(
    tiny_model, tiny_processor, tiny_splits, tmp_path
):
    # 1.05 does not move the random tiny model's answers; 2.0 does, so this shows it is ignored.
    records = [tiny_splits["eval"][index] for index in range(4)]
    expected = generate_answers(tiny_model, tiny_processor, records, max_new_tokens=16)
    settings = {**HUB_GENERATION_SETTINGS, "repetition_penalty": 2.0}
    reloaded = _reload_with_generation_settings(tiny_model, tmp_path, settings)
    batch = _build_generation_batch(tiny_processor, records, DEFAULT_PROMPT, DEFAULT_SYSTEM_MESSAGE)
    # The call inference.py made before: do_sample=False alone leaves the folder's penalty on.
    reference = tiny_model.generate(**batch, max_new_tokens=16, do_sample=False)
    with_penalty = reloaded.generate(**batch, max_new_tokens=16, do_sample=False)
    assert not torch.equal(with_penalty, reference)
    assert generate_answers(reloaded, tiny_processor, records, max_new_tokens=16) == expected
