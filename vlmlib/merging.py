"""Merge a LoRA adapter into its base model, and prove the merged model computes as base + adapter.

Why: a merged model serves without PEFT and runs faster, but merging is easy to get silently wrong.
Merging into 4-bit (QLoRA) weights rounds the sum back to 4 bits and corrupts the adapter's update;
so the base is loaded unquantised, merged, and the merged model is compared with base + adapter on
real records before anything is called done: its logits, within the rounding of the weights' dtype
(`merge_tolerance`), and its greedy answers.
Explained in: chapter 06, "Merging the adapter".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from qwen_vl_utils import process_vision_info
from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from vlmlib.config import RUN_CONFIG_FILE, Config, config_to_dict, with_overrides
from vlmlib.data import build_conversation, load_configured_splits
from vlmlib.inference import generate_answers
from vlmlib.models import get_pixel_budget, load_run
from vlmlib.outputs import check_output_folder, write_folder_atomically
from vlmlib.tokens import IM_END_TOKEN

__all__ = [
    "FLOAT32_RELATIVE_TOLERANCE",
    "ROUNDING_STEPS",
    "MergeReport",
    "merge_lora",
    "merge_tolerance",
]

logger = logging.getLogger(__name__)

# Two correct computations of a logit L in a 16-bit dtype differ by whole rounding steps of about
# eps * |L| (eps = torch.finfo(dtype).eps, the gap after 1.0: 2^-7 for bfloat16, whose unit
# roundoff is 2^-8; 2^-10 for float16): the logits are stored in 16 bits, and the merge rounds
# each weight W + (alpha / r) * B @ A to 16 bits once more. The tiny model's 16-bit merges differ
# by 1 to 4 steps at its largest logit (1.2e-2 in bfloat16 at logits near 1.3, with adapters up to
# 4 times the size of its weights); a correct merge of the 2B model differed by 1.2e-2 in bf16 too.
ROUNDING_STEPS = 4
# float32's steps (1.2e-7) are so small that what shows instead is the same products summed in
# another order, (W + BA) x against W x + B (A x), through every layer: up to 7e-5 of the logit
# scale on the tiny model with an adapter ten times the size of its weights. A real fault (an
# adapter merged at the wrong scale, or into 4-bit weights) moves the logits by a good part of
# what the adapter changes.
FLOAT32_RELATIVE_TOLERANCE = 1e-4


def merge_tolerance(dtype: torch.dtype, logit_scale: float) -> float:
    """Return the largest logit difference between merged and adapter model that rounding explains.

    Why: one fixed tolerance cannot serve every dtype. 1e-3 is far above float32's rounding but
    below bfloat16's (a correct 2B merge differs by 1.2e-2): a correct bf16 merge would fail.
    Explained in: chapter 06, "Merging the adapter".

    Args:
        dtype: the merged weights' dtype (the logits come out in it).
        logit_scale: the largest |logit| compared; below 1 it counts as 1.
    Returns:
        `logit_scale` times ROUNDING_STEPS * eps(dtype) or FLOAT32_RELATIVE_TOLERANCE, the larger.
    """
    relative = max(ROUNDING_STEPS * torch.finfo(dtype).eps, FLOAT32_RELATIVE_TOLERANCE)
    return relative * max(logit_scale, 1.0)


@dataclass
class MergeReport:
    """What `merge_lora` saved and what its check found.

    The check compares the logits of the merged model and of base + adapter at every position of
    the adapter model's own answers (teacher-forced), on every checked record; `is_equivalent` asks
    that they agree within `tolerance`. Greedy answers that differ while the logits agree are near
    ties: where the answers part, the two candidate tokens were within 2 * tolerance of each other,
    a tie that rounding may break either way, so either answer is as right. They are listed in
    `mismatches` but do not fail the check; bf16 merges can show them, float32 ones almost never.
    """

    output_dir: Path
    num_checked: int
    num_identical: int
    max_logit_difference: float
    tolerance: float  # the largest difference that rounding in `dtype` explains: `merge_tolerance`
    dtype: str  # the merged weights' dtype, e.g. "bfloat16"; the saved config loads them in it
    # (image_id, adapter answer, merged answer) for each answer that differs
    mismatches: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def is_equivalent(self) -> bool:
        """True when every compared logit is within `tolerance` (the class docstring says why)."""
        return self.max_logit_difference <= self.tolerance


@torch.no_grad()
def _answer_logits(
    model: Qwen2VLForConditionalGeneration,
    processor: Qwen2VLProcessor,
    record: dict[str, Any],
    answer: str,
    config: Config,
) -> torch.Tensor:
    """Return the logits (num_answer_tokens, vocab) that predict `answer`, model dtype, on the CPU.

    The answer is teacher-forced after the generation prompt and closed with `<|im_end|>`; only
    the positions that predict its tokens are projected to the vocabulary (`logits_to_keep`).
    """
    min_pixels, max_pixels = get_pixel_budget(processor)
    conversation = build_conversation(
        record,
        config.data.prompt,
        config.data.system_message,
        include_answer=False,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )
    prompt_text = processor.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    text = prompt_text + answer + IM_END_TOKEN
    tokenizer = processor.tokenizer
    num_answer_tokens = len(tokenizer(text).input_ids) - len(tokenizer(prompt_text).input_ids)
    images, _ = process_vision_info([conversation])
    batch = processor(text=[text], images=images, return_tensors="pt").to(model.device)
    # (1, num_answer_tokens + 1, vocab): the last position predicts what follows <|im_end|>
    logits = model(**batch, logits_to_keep=num_answer_tokens + 1, use_cache=False).logits
    return logits[0, :-1].cpu()


def _all_answer_logits(
    model, processor, records: Sequence[dict[str, Any]], answers: Sequence[str], config: Config
) -> list[torch.Tensor]:
    return [
        _answer_logits(model, processor, record, answer, config)
        for record, answer in zip(records, answers)
    ]


def merge_lora(
    run_dir: Path | str,
    output_dir: Path | str,
    num_check_records: int = 8,
    max_new_tokens: int = 64,
    overwrite: bool = False,
) -> MergeReport:
    """Merge the run's adapter into an unquantised base, save it, and check it against the adapter.

    Why: see the module docstring; the check is what makes the merge trustworthy.

    Args:
        run_dir: a training run folder with an adapter (`vlmlib train` output).
        output_dir: where the merged model, processor and config go (a full model, no adapter). Its
            config says `load_in_4bit: false` and the dtype of the merge, so `load_run` reloads the
            very model that was checked (a QLoRA run's config would quantise it again).
        num_check_records: held-out records to compare logits and answers on.
        overwrite: replace `output_dir` if it holds anything; without it such a folder is refused
            before anything loads. The merged folder is written beside it and renamed into place.
    Returns:
        A MergeReport; `is_equivalent` is False if the logits differ by more than rounding explains
        (the merged model is still saved, so it can be inspected).
    Raises:
        ValueError: the run folder holds no adapter (nothing to merge), or
            `output_dir` is inside it.
        FileExistsError: `output_dir` holds something and `overwrite` is False.
    """
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    if not (run_dir / "adapter_config.json").exists():
        raise ValueError(f"{run_dir} has no adapter_config.json: it holds no LoRA adapter to merge")
    check_output_folder(output_dir, inputs=[run_dir], overwrite=overwrite, what="--output")
    # Unquantised base: merging into nf4 weights would round the adapter's update away.
    adapted, processor, config = load_run(run_dir, overrides=["model.load_in_4bit=false"])
    adapted.eval()
    split = load_configured_splits(config)["eval"]
    records = [split[index] for index in range(min(num_check_records, len(split)))]
    generation = dict(
        prompt=config.data.prompt,
        system_message=config.data.system_message,
        max_new_tokens=max_new_tokens,
    )
    adapter_answers = generate_answers(adapted, processor, records, **generation)
    adapter_logits = _all_answer_logits(adapted, processor, records, adapter_answers, config)
    merged = adapted.merge_and_unload()  # folds (alpha / r) * B @ A into each adapted weight
    merged_answers = generate_answers(merged, processor, records, **generation)
    merged_logits = _all_answer_logits(merged, processor, records, adapter_answers, config)
    logit_scale = max(float(logits.float().abs().max()) for logits in adapter_logits)
    dtype_name = str(merged.dtype).removeprefix("torch.")
    answer_pairs = list(zip(records, adapter_answers, merged_answers))
    report = MergeReport(
        output_dir=output_dir,
        num_checked=len(records),
        num_identical=sum(before == after for _, before, after in answer_pairs),
        max_logit_difference=max(
            float((before.float() - after.float()).abs().max())
            for before, after in zip(adapter_logits, merged_logits)
        ),
        tolerance=merge_tolerance(merged.dtype, logit_scale),
        dtype=dtype_name,
        mismatches=[
            (record["image_id"], before, after)
            for record, before, after in answer_pairs
            if before != after
        ],
    )
    merged_config = with_overrides(config, [f"model.dtype={dtype_name}"])  # load_in_4bit is false
    config_text = yaml.safe_dump(config_to_dict(merged_config), sort_keys=False)

    def write_merged_run(folder: Path) -> None:
        merged.save_pretrained(folder)
        processor.save_pretrained(folder)
        (folder / RUN_CONFIG_FILE).write_text(config_text)

    write_folder_atomically(output_dir, write_merged_run, overwrite=overwrite)
    logger.info(
        "merged %s into %s (%s): logits within %.1e (tolerance %.1e); %d of %d same",
        run_dir,
        output_dir,
        dtype_name,
        report.max_logit_difference,
        report.tolerance,
        report.num_identical,
        report.num_checked,
    )
    return report
