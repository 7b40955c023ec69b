"""Ask Qwen2-VL where the nutrition tables are: batched greedy generation, then parsing.

Why: zero-shot baselines, the IoU callback, evaluation and `vlmlib predict` all need the same
"records in, boxes out" step; writing it once keeps them comparable.
Explained in: chapter 02, "Zero-shot answers", and chapter 06, "Evaluation".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from qwen_vl_utils import process_vision_info
from tqdm.auto import tqdm
from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from vlmlib.data import DEFAULT_PROMPT, DEFAULT_SYSTEM_MESSAGE, build_conversation
from vlmlib.models import get_pixel_budget
from vlmlib.parsing import ParsedAnswer, parse_box_answer
from vlmlib.tokens import END_OF_TEXT_TOKEN, IM_END_TOKEN

__all__ = [
    "GREEDY_GENERATION_SETTINGS",
    "ScoredAnswer",
    "generate_answers",
    "generate_scored_answers",
    "predict_boxes",
]

logger = logging.getLogger(__name__)

# Greedy decoding, spelled out in full. `generate` takes every setting not passed to it
# from the model folder's generation_config.json, and Qwen2-VL-2B-Instruct's turns sampling
# on (do_sample true, top_k 1, top_p 0.001, temperature 0.1) with repetition_penalty 1.05,
# which would push answers away from digits already written. Passing do_sample=False alone
# still leaves that penalty on. The values below are transformers' own defaults: they leave
# the logits unchanged and raise no warning about unused flags.
GREEDY_GENERATION_SETTINGS = {
    "do_sample": False,
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
}


def _build_generation_batch(
    processor: Qwen2VLProcessor, records: Sequence[dict[str, Any]], prompt: str, system_message: str
) -> dict[str, torch.Tensor]:
    """Return processor outputs for prompts that end with
    `<|im_start|>assistant\\n`, padded on the left.
    """
    min_pixels, max_pixels = get_pixel_budget(processor)
    conversations = [
        build_conversation(
            record,
            prompt,
            system_message,
            include_answer=False,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
        for record in records
    ]
    texts = [
        processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        for conversation in conversations
    ]
    images, _ = process_vision_info(conversations)
    original_side = processor.tokenizer.padding_side
    processor.tokenizer.padding_side = (
        "left"  # generation appends on the right, so the padding must be on the left
    )
    try:
        return processor(text=texts, images=images, padding=True, return_tensors="pt")
    finally:
        processor.tokenizer.padding_side = original_side


@dataclass(frozen=True)
class ScoredAnswer:
    """A generated answer and the model's confidence in it: exp(mean
    log-probability of its tokens), in 0-1.
    """

    text: str
    confidence: float


def _answer_confidences(
    scores: tuple[torch.Tensor, ...], new_tokens: torch.Tensor, pad_token_id: int
) -> list[float]:
    """Return exp(mean log-prob) of each row's generated tokens, up to and
    including its end-of-turn token.
    """
    log_probs = torch.stack(
        [torch.log_softmax(step.float(), dim=-1) for step in scores], dim=1
    )  # (batch, new, vocab)
    chosen = log_probs.gather(2, new_tokens.unsqueeze(-1)).squeeze(-1)  # (batch, new)
    is_real = new_tokens != pad_token_id  # generate pads finished rows with the pad token
    mean_log_prob = (chosen * is_real).sum(dim=1) / is_real.sum(dim=1).clamp(min=1)
    return torch.exp(mean_log_prob).tolist()


@torch.no_grad()
def generate_scored_answers(
    model: Qwen2VLForConditionalGeneration,
    processor: Qwen2VLProcessor,
    records: Sequence[dict[str, Any]],
    prompt: str = DEFAULT_PROMPT,
    system_message: str = DEFAULT_SYSTEM_MESSAGE,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    show_progress: bool = False,
) -> list[ScoredAnswer]:
    """Return the model's greedy answer to each record with its confidence;
    special tokens kept, end-of-turn removed.

    Why: the grounding tokens (`<|box_start|>` ...) are special tokens, so decoding
    must keep them for the parser to see the answer's structure; the confidence
    ranks answers for COCO's average precision. Decoding is greedy whatever the
    model folder's generation_config.json says (`GREEDY_GENERATION_SETTINGS`).
    Explained in: chapter 02, "Zero-shot answers", and chapter 06, "Evaluation".

    Args:
        records: Hub-schema records with decoded PIL images.
        batch_size: records per `generate` call; lower it if memory runs out.
        show_progress: show a progress bar over batches (the command line does).
    Returns:
        One ScoredAnswer per record, in order.
    """
    was_training = model.training
    model.eval()
    answers: list[ScoredAnswer] = []
    pad_token_id = processor.tokenizer.pad_token_id
    try:
        for start in tqdm(
            range(0, len(records), batch_size),
            desc="generating",
            unit="batch",
            disable=not show_progress,
        ):
            batch = _build_generation_batch(
                processor, records[start : start + batch_size], prompt, system_message
            )
            batch = batch.to(model.device)
            output = model.generate(
                **batch,
                **GREEDY_GENERATION_SETTINGS,
                max_new_tokens=max_new_tokens,
                output_scores=True,
                return_dict_in_generate=True,
            )
            new_tokens = output.sequences[:, batch["input_ids"].shape[1] :]
            confidences = _answer_confidences(output.scores, new_tokens, pad_token_id)
            for text, confidence in zip(
                processor.batch_decode(new_tokens, skip_special_tokens=False), confidences
            ):
                answers.append(
                    ScoredAnswer(
                        text.replace(END_OF_TEXT_TOKEN, "").split(IM_END_TOKEN)[0].strip(),
                        confidence,
                    )
                )
    finally:
        model.train(was_training)
    return answers


def generate_answers(
    model: Qwen2VLForConditionalGeneration,
    processor: Qwen2VLProcessor,
    records: Sequence[dict[str, Any]],
    prompt: str = DEFAULT_PROMPT,
    system_message: str = DEFAULT_SYSTEM_MESSAGE,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    show_progress: bool = False,
) -> list[str]:
    """Return the model's greedy answer to each record (the text of `generate_scored_answers`)."""
    scored = generate_scored_answers(
        model, processor, records, prompt, system_message, max_new_tokens, batch_size, show_progress
    )
    return [answer.text for answer in scored]


def predict_boxes(
    model: Qwen2VLForConditionalGeneration,
    processor: Qwen2VLProcessor,
    records: Sequence[dict[str, Any]],
    **generation_options: Any,
) -> list[ParsedAnswer]:
    """Generate an answer per record and parse it into boxes (`vlmlib.parsing.parse_box_answer`).

    Why: the one call the callbacks, the evaluation and the CLI use, so they all read answers alike.
    """
    return [
        parse_box_answer(answer)
        for answer in generate_answers(model, processor, records, **generation_options)
    ]
