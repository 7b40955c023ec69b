"""Merge a LoRA adapter into its base model, and prove the merged model answers exactly as before.

Why: a merged model serves without PEFT and runs faster, but merging is easy to get silently wrong.
Merging into 4-bit (QLoRA) weights rounds the sum back to 4 bits and corrupts the adapter's update;
so the base is loaded unquantised, merged, and the merged model's greedy answers are compared with
base + adapter on real records before anything is called done.
Explained in: chapter 06, "Merging the adapter".
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlmlib.config import RUN_CONFIG_FILE
from vlmlib.data import load_configured_splits
from vlmlib.inference import generate_answers
from vlmlib.models import load_run

__all__ = ["MergeReport", "merge_lora"]

logger = logging.getLogger(__name__)


@dataclass
class MergeReport:
    """What `merge_lora` saved and what its check found."""

    output_dir: Path
    num_checked: int
    num_identical: int
    max_logit_difference: float
    mismatches: list[tuple[str, str, str]] = field(default_factory=list)  # (image_id, adapter answer, merged answer)

    @property
    def is_equivalent(self) -> bool:
        """True when every checked answer is identical."""
        return self.num_identical == self.num_checked


@torch.no_grad()
def _logits(model, processor, record: dict) -> torch.Tensor:
    """Return the logits (1, seq_len, vocab) of one full training example, as float32 on the CPU."""
    from vlmlib.collators import CollatorV1  # the plain batch: prompt and answer, no masking needed

    batch = CollatorV1(processor)([record])
    batch = {key: value.to(model.device) for key, value in batch.items() if key != "labels"}
    return model(**batch).logits.float().cpu()


def merge_lora(run_dir: Path | str, output_dir: Path | str, num_check_records: int = 8, max_new_tokens: int = 64) -> MergeReport:
    """Merge the run's adapter into an unquantised base, save it, and check its greedy answers.

    Why: see the module docstring; the check is what makes the merge trustworthy.

    Args:
        run_dir: a training run folder with an adapter (`vlmlib train` output).
        output_dir: where the merged model, processor and config go (a full model, no adapter).
        num_check_records: held-out records to compare answers on.
    Returns:
        A MergeReport; `is_equivalent` is False if any answer changed (the merged model is still saved,
        so it can be inspected).
    Raises:
        ValueError: the run folder holds no adapter (nothing to merge).
    """
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    if not (run_dir / "adapter_config.json").exists():
        raise ValueError(f"{run_dir} has no adapter_config.json: it holds no LoRA adapter to merge")
    # Unquantised base: merging into nf4 weights would round the adapter's update away.
    adapted, processor, config = load_run(run_dir, overrides=["model.load_in_4bit=false"])
    adapted.eval()
    split = load_configured_splits(config)["eval"]
    records = [split[index] for index in range(min(num_check_records, len(split)))]
    generation = dict(prompt=config.data.prompt, system_message=config.data.system_message, max_new_tokens=max_new_tokens)
    adapter_answers = generate_answers(adapted, processor, records, **generation)
    adapter_logits = _logits(adapted, processor, records[0])
    merged = adapted.merge_and_unload()  # folds (alpha / r) * B @ A into each adapted weight, in place
    merged_answers = generate_answers(merged, processor, records, **generation)
    report = MergeReport(
        output_dir=output_dir, num_checked=len(records),
        num_identical=sum(before == after for before, after in zip(adapter_answers, merged_answers)),
        max_logit_difference=float((adapter_logits - _logits(merged, processor, records[0])).abs().max()),
        mismatches=[(record["image_id"], before, after)
                    for record, before, after in zip(records, adapter_answers, merged_answers) if before != after],
    )
    if output_dir.exists():
        shutil.rmtree(output_dir)
    merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    (output_dir / RUN_CONFIG_FILE).write_text((run_dir / RUN_CONFIG_FILE).read_text())
    logger.info("merged %s into %s; %d of %d answers identical", run_dir, output_dir, report.num_identical, report.num_checked)
    return report
