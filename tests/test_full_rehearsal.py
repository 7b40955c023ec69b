"""The full-path rehearsal (issue 18): the `full` profile's code on the CPU, on Hub stand-ins.

Why: the published book runs Qwen2-VL-2B-Instruct in 4-bit nf4 on a GPU, on the Hub dataset.
Those code paths (4-bit loading, the Hub repo's own processor files and generation config, the
parquet dataset, full-size photos) differ from the tiny profile's, and a bug in them used to show
only on a rented GPU. Here the `full` config loads `tests/full_rehearsal`'s stand-ins
(`model.name=<folder>`, `data.local_path=<folder>`, `gpu.device=cpu`) in 4-bit through
bitsandbytes' CPU backend, and runs:

1. the quick tour's steps (chapters/00_quick_tour.py) through the same `vlmlib` calls: data,
   zero-shot answer, collator batch, a short training, evaluation before and after, merge;
2. the command line, as subprocesses: `train`, `evaluate`, `predict`, `merge-lora`.

What is asserted: every photo costs the configured budget's image tokens (full.yaml's min/max
pixels, counted as `qwen_vl_utils.smart_resize` counts them), in training and after reloading the
saved run; answers are greedy whatever the Hub's generation_config.json says; the loss is finite
and logged at every logging step; every LoRA weight trained; the merged model reloads unquantised
and computes what the adapter does; and the command line writes nothing to stderr beyond
`_EXPECTED_STDERR`.

Cost: 62 s for the 29 tests on an otherwise idle 2-core machine (250 s with other jobs running
beside it), about half of it the command line's four interpreter starts and model loads.
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from qwen_vl_utils import smart_resize
from safetensors.torch import load_file

from tests.full_rehearsal import PHOTO_SIZES_PX, build_dataset_repo, build_model_repo
from vlmlib import data, evaluation, inference, merging, models, training
from vlmlib.collators import CollatorV3
from vlmlib.config import Config, load_config
from vlmlib.tokens import IMAGE_PAD_TOKEN

pytestmark = pytest.mark.slow
# The full profile's 4-bit layers run on bitsandbytes' CPU backend (pinned in requirements.txt).
bnb = pytest.importorskip("bitsandbytes")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 2  # step 1 is the warmup step (learning rate 0); step 2 moves the adapter
# The rehearsal's own settings on top of full.yaml: the CPU, a short run, a log row at every step.
# Everything else (4-bit nf4, pixel budget, batch size, gradient accumulation and checkpointing,
# learning rate, LoRA) is the published profile's.
REHEARSAL_OVERRIDES = [
    "gpu.device=cpu",
    f"training.max_steps={MAX_STEPS}",
    "training.logging_steps=1",
    f"training.save_steps={MAX_STEPS}",
    "training.dataloader_num_workers=2",  # full.yaml's 4 draws torch's warning on 2 cores
    # before the first step, and in the same log row as the last step's loss
    f"callbacks.iou_eval_every_steps={MAX_STEPS}",
    "callbacks.iou_eval_num_samples=2",
    "callbacks.max_new_tokens=24",  # a random model rarely closes its answer: most run this long
]


# --- the stand-ins, and the config that points `full` at them ---


@pytest.fixture(scope="module")
def hub_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in for `Qwen/Qwen2-VL-2B-Instruct` (about 6 s to build)."""
    return build_model_repo(tmp_path_factory.mktemp("hub") / "Qwen2-VL-2B-Instruct")


@pytest.fixture(scope="module")
def hub_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in for `openfoodfacts/nutrition-table-detection` (about 3 s to build)."""
    return build_dataset_repo(tmp_path_factory.mktemp("hub") / "nutrition-table-detection")


@pytest.fixture(scope="module")
def rehearsal_overrides(hub_model_dir: Path, hub_dataset_dir: Path) -> list[str]:
    return [
        f"model.name={hub_model_dir}",
        f"data.local_path={hub_dataset_dir}",
        *REHEARSAL_OVERRIDES,
    ]


@pytest.fixture(scope="module")
def full_config(rehearsal_overrides: list[str], tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The quick tour's config (`assistant_only` on the full profile), with the overrides above."""
    output_dir = tmp_path_factory.mktemp("tour") / "quick_tour"
    return load_config(
        "assistant_only",
        profile="full",
        overrides=[*rehearsal_overrides, f"training.output_dir={output_dir}"],
    )


def _count_expected_image_tokens(width_px: int, height_px: int, config: Config) -> int:
    """Return the `<|image_pad|>` tokens a photo costs under the config's budget (qwen_vl_utils).

    A token stands for one 28x28 block (14 px patches merged 2x2) of the photo resized into the
    budget by `smart_resize`.
    """
    block_px = 28
    resized_height_px, resized_width_px = smart_resize(
        height_px,
        width_px,
        factor=block_px,
        min_pixels=config.model.min_pixels,
        max_pixels=config.model.max_pixels,
    )
    return resized_height_px * resized_width_px // block_px**2


def _count_grid_tokens(image_grid_thw: torch.Tensor) -> list[int]:
    """Return the image tokens of each image in `image_grid_thw` (num_images, 3): patches / 4."""
    return (image_grid_thw.prod(dim=-1) // 4).tolist()  # 2x2 patches merge into one token


# --- the quick tour, step by step ---


@dataclass
class ZeroShot:
    """The tour's zero-shot answer, and what `generate` was asked for it."""

    answer: str
    generate_kwargs: dict[str, Any]
    model_generation_config: Any  # the model's GenerationConfig then (the Hub repo's file)


@pytest.fixture(scope="module")
def tour_splits(full_config: Config):
    """Step 1: the data, through `load_configured_splits` (the stand-in's parquet files)."""
    return data.load_configured_splits(full_config)


@pytest.fixture(scope="module")
def tour_model_and_processor(full_config: Config):
    """Step 2's model: `load_model_and_processor` on the full config (4-bit nf4 on the CPU)."""
    return models.load_model_and_processor(full_config)


@pytest.fixture(scope="module")
def tour_zero_shot(full_config: Config, tour_model_and_processor, tour_splits) -> ZeroShot:
    """Step 2: the answer to a held-out photo before training, with the `generate` call recorded."""
    model, processor = tour_model_and_processor
    with mock.patch.object(model, "generate", wraps=model.generate) as generate:
        answer = inference.generate_answers(
            model,
            processor,
            [tour_splits["eval"][0]],
            max_new_tokens=full_config.callbacks.max_new_tokens,
        )[0]
    return ZeroShot(answer, dict(generate.call_args.kwargs), copy.deepcopy(model.generation_config))


@pytest.fixture(scope="module")
def tour_run(
    full_config: Config, tour_model_and_processor, tour_splits, tour_zero_shot
) -> training.TrainingRun:
    """Step 4: the short training, on the model that answered zero-shot (as the tour does)."""
    model, processor = tour_model_and_processor
    budget = models.get_pixel_budget(processor)
    if budget != (full_config.model.min_pixels, full_config.model.max_pixels):
        pytest.fail(
            f"not training: the processor's pixel budget is {budget}, not full.yaml's; a "
            "3120x4208 photo would cost thousands of tokens"
        )
    return training.train(full_config, model=model, processor=processor, splits=tour_splits)


@pytest.fixture(scope="module")
def tour_reports(full_config: Config, tour_run, tour_model_and_processor, tour_splits):
    """Step 5: evaluation of a freshly loaded base model and of the fine-tuned one."""
    _, processor = tour_model_and_processor
    eval_split = tour_splits["eval"]
    base_model, _ = models.load_model_and_processor(full_config)
    zero_shot_report, _ = evaluation.evaluate_model(base_model, processor, eval_split, full_config)
    fine_tuned_report, _ = evaluation.evaluate_model(
        tour_run.trainer.model, processor, eval_split, full_config
    )
    return zero_shot_report, fine_tuned_report


@pytest.fixture(scope="module")
def tour_merge(full_config: Config, tour_run, tour_reports) -> merging.MergeReport:
    """Step 7: merge the adapter into the unquantised base, with merge_lora's own check."""
    merged_dir = Path(full_config.training.output_dir).with_name("quick_tour_merged")
    return merging.merge_lora(
        tour_run.output_dir,
        merged_dir,
        num_check_records=2,
        max_new_tokens=full_config.callbacks.max_new_tokens,
    )


def test_full_config_loads_the_hub_model_in_4bit_nf4_on_the_cpu(tour_model_and_processor):
    model, _ = tour_model_and_processor
    linear_layers = [
        module
        for name, module in model.named_modules()
        if "language_model.layers" in name and isinstance(module, torch.nn.Linear)
    ]
    assert getattr(model, "is_loaded_in_4bit", False) and model.device.type == "cpu"
    assert linear_layers and all(isinstance(layer, bnb.nn.Linear4bit) for layer in linear_layers)
    assert {layer.weight.quant_state.quant_type for layer in linear_layers} == {"nf4"}


# Parameters the 4-bit load keeps unquantised: (name in the Hub checkpoint, name in transformers 5).
_HUB_NAMES_OF_UNQUANTISED_WEIGHTS = [
    ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
    ("model.norm.weight", "model.language_model.norm.weight"),
    ("visual.patch_embed.proj.weight", "model.visual.patch_embed.proj.weight"),
    ("visual.blocks.0.attn.qkv.bias", "model.visual.blocks.0.attn.qkv.bias"),
]


@pytest.mark.parametrize(
    ("hub_name", "loaded_name"),
    _HUB_NAMES_OF_UNQUANTISED_WEIGHTS,
    ids=[hub_name for hub_name, _ in _HUB_NAMES_OF_UNQUANTISED_WEIGHTS],
)
def test_full_config_loads_a_weight_stored_under_its_hub_name(
    hub_model_dir: Path, tour_model_and_processor, hub_name: str, loaded_name: str
):
    # The Hub checkpoint names parameters as transformers 4 did (`model.embed_tokens`, `visual.*`);
    # a name transformers 5 failed to map would leave that weight random, with only a log line.
    model, _ = tour_model_and_processor
    stored = {}
    for shard in sorted(hub_model_dir.glob("model-*.safetensors")):
        stored.update(load_file(str(shard)))
    loaded = model.state_dict()[loaded_name]
    assert torch.equal(loaded.to(stored[hub_name].dtype), stored[hub_name])


def test_full_config_loads_every_record_of_the_hub_layout(tour_splits):
    sizes_px = {
        name: [(record["width"], record["height"]) for record in split]
        for name, split in tour_splits.items()
    }
    assert sizes_px == {"train": PHOTO_SIZES_PX["train"], "eval": PHOTO_SIZES_PX["val"]}


def test_processor_keeps_the_configured_budget(full_config: Config, tour_model_and_processor):
    _, processor = tour_model_and_processor
    budget = (full_config.model.min_pixels, full_config.model.max_pixels)
    assert models.get_pixel_budget(processor) == budget


@pytest.mark.parametrize(
    "index",
    range(len(PHOTO_SIZES_PX["val"])),
    ids=[f"{width}x{height}" for width, height in PHOTO_SIZES_PX["val"]],
)
def test_processor_alone_costs_a_photo_the_budgets_tokens(
    full_config: Config, tour_model_and_processor, tour_splits, index: int
):
    # The photo goes to the processor as it is, without qwen_vl_utils' resize first: the
    # processor's own budget decides (the Hub file's min_pixels/max_pixels must not).
    _, processor = tour_model_and_processor
    record = tour_splits["eval"][index]
    batch = processor(text=[IMAGE_PAD_TOKEN], images=[record["image"]], return_tensors="pt")
    expected = _count_expected_image_tokens(record["width"], record["height"], full_config)
    assert _count_grid_tokens(batch["image_grid_thw"]) == [expected]


def test_collator_batch_costs_each_photo_the_budgets_tokens(
    full_config: Config, tour_model_and_processor, tour_splits
):
    _, processor = tour_model_and_processor
    records = list(tour_splits["eval"])
    batch = CollatorV3(processor)(records)  # step 3 of the tour, on every held-out photo
    image_pad_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
    expected = [
        _count_expected_image_tokens(record["width"], record["height"], full_config)
        for record in records
    ]
    assert _count_grid_tokens(batch["image_grid_thw"]) == expected
    assert (batch["input_ids"] == image_pad_id).sum(dim=1).tolist() == expected


def test_zero_shot_answer_is_greedy_whatever_the_hub_generation_config_says(
    tour_zero_shot: ZeroShot,
):
    # generate() takes every setting it is not given from generation_config.json, and the Hub's
    # turns sampling on with repetition_penalty 1.05: generate runs with the file's settings
    # updated by the call's.
    assert tour_zero_shot.model_generation_config.repetition_penalty > 1.0  # the Hub's file
    effective = copy.deepcopy(tour_zero_shot.model_generation_config)
    effective.update(**tour_zero_shot.generate_kwargs)
    assert isinstance(tour_zero_shot.answer, str)
    settings = (effective.do_sample, effective.num_beams, effective.repetition_penalty)
    assert settings == (False, 1, 1.0)


def test_training_logs_a_finite_loss_at_every_logging_step(full_config: Config, tour_run):
    losses = {row["step"]: row["loss"] for row in tour_run.log_history if "loss" in row}
    logging_steps = full_config.training.logging_steps
    assert sorted(losses) == list(range(logging_steps, MAX_STEPS + 1, logging_steps))
    assert all(math.isfinite(loss) for loss in losses.values())


def test_training_moves_every_lora_weight_off_its_start(tour_run):
    # PEFT starts every lora_B at zero (the adapter starts as a no-op); a trained one is not zero.
    adapter = load_file(str(tour_run.output_dir / "adapter_model.safetensors"))
    lora_b = {name: tensor for name, tensor in adapter.items() if "lora_B" in name}
    untrained = [name for name, tensor in lora_b.items() if not tensor.abs().sum() > 0]
    assert lora_b and len(lora_b) == sum("lora_A" in name for name in adapter)
    assert untrained == []


def test_evaluation_scores_every_held_out_photo_before_and_after_training(
    tour_reports, tour_splits
):
    for report in tour_reports:
        assert report.num_images == len(tour_splits["eval"])
        assert math.isfinite(report.mean_iou) and 0.0 <= report.parse_failure_rate <= 1.0


def test_merge_check_finds_the_merged_model_equivalent_to_the_adapter(tour_merge):
    assert tour_merge.is_equivalent, (
        f"logits differ by {tour_merge.max_logit_difference:.2e}, "
        f"tolerance {tour_merge.tolerance:.2e}"
    )


def _compute_answer_logits(
    model, processor, record: dict[str, Any], num_positions: int = 32
) -> torch.Tensor:
    """Return float32 logits (num_positions, vocab) at the last positions of a training example.

    Those positions hold the answer and its `<|im_end|>`: where an adapter changes the output.
    """
    batch = CollatorV3(processor)([record])
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch, logits_to_keep=num_positions).logits[0].float()


def test_merged_run_reloads_unquantised_and_computes_what_the_adapter_does(
    tour_run, tour_merge, tour_splits
):
    merged, processor, _ = models.load_run(tour_merge.output_dir)
    # merge_lora's own base: the run, unquantised (merging into nf4 would round the update away)
    adapted, adapter_processor, _ = models.load_run(
        tour_run.output_dir, overrides=["model.load_in_4bit=false"]
    )
    assert not getattr(merged, "is_loaded_in_4bit", False)
    assert not any(isinstance(module, bnb.nn.Linear4bit) for module in merged.modules())
    for index in range(2):
        record = tour_splits["eval"][index]
        expected = _compute_answer_logits(adapted, adapter_processor, record)
        merged_logits = _compute_answer_logits(merged, processor, record)
        difference = float((merged_logits - expected).abs().max())
        tolerance = merging.merge_tolerance(merged.dtype, float(expected.abs().max()))
        assert difference <= tolerance, (
            f"photo {index}: the reloaded merged model's logits "
            f"differ from the adapter's by {difference:.2e}"
        )


# --- the command line, as subprocesses ---

# What the command line may write to stderr. By design it logs vlmlib's INFO lines there and keeps
# the progress bars of transformers, datasets and `evaluate`/`predict` (`quiet_progress_bars` is
# for pages). bitsandbytes' CPU backend adds a note about an optional kernel package, on CPUs with
# AVX512-BF16; on CUDA it is absent. Anything else (a warning, a traceback) fails the test.
_EXPECTED_STDERR = [
    re.compile(r"^INFO vlmlib(\.[\w.]+)?: "),
    re.compile(r"\[\d+:\d\d(<|,|\])"),  # a tqdm bar: "[elapsed<remaining, rate]", "[elapsed, ...]"
    re.compile(
        r"^Failed to load CPU gemm_4bit_forward from kernels-community: "
        r"No module named 'kernels'"
    ),
]


def _find_unexpected_stderr(stderr: str) -> list[str]:
    """Return the stderr lines (split at newlines and tqdm's carriage returns) not expected."""
    return [
        line
        for line in re.split(r"[\r\n]+", stderr)
        if line.strip() and not any(pattern.search(line) for pattern in _EXPECTED_STDERR)
    ]


@dataclass
class CommandResult:
    arguments: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def cli_results(
    rehearsal_overrides: list[str], tour_splits, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CommandResult]:
    """Run `train`, `evaluate`, `predict`, `merge-lora` in order; stop at the first failure."""
    folder = tmp_path_factory.mktemp("cli")
    run_dir, merged_dir, photo = folder / "run", folder / "merged", folder / "photo.jpg"
    largest = max(tour_splits["eval"], key=lambda record: record["width"] * record["height"])
    largest["image"].save(photo)
    settings = [argument for override in rehearsal_overrides for argument in ("--set", override)]
    commands = {
        "train": ["train", "--config", "full", *settings, "--output-dir", str(run_dir)],
        "evaluate": ["evaluate", "--model", str(run_dir)],
        "predict": ["predict", "--model", str(run_dir), "--image", str(photo)],
        "merge-lora": [
            "merge-lora",
            "--model",
            str(run_dir),
            "--output",
            str(merged_dir),
            "--num-check",
            "2",
        ],
    }
    python_path = os.pathsep.join(
        filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")])
    )
    environment = {
        **os.environ,
        "VLM_PROFILE": "full",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": python_path,
    }
    results = {}
    for name, arguments in commands.items():
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "vlmlib", *arguments],
            cwd=folder,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        results[name] = CommandResult(
            arguments,
            completed.returncode,
            completed.stdout,
            completed.stderr,
            time.perf_counter() - started,
        )
        if completed.returncode != 0:
            break
    return results


CLI_COMMANDS = ["train", "evaluate", "predict", "merge-lora"]


def _get_result(cli_results: dict[str, CommandResult], command: str) -> CommandResult:
    if command not in cli_results:
        failed = next(name for name, result in cli_results.items() if result.returncode != 0)
        pytest.fail(f"`vlmlib {command}` did not run: `vlmlib {failed}` failed before it")
    return cli_results[command]


@pytest.mark.parametrize("command", CLI_COMMANDS)
def test_cli_command_succeeds_on_the_full_profile(
    cli_results: dict[str, CommandResult], command: str
):
    result = _get_result(cli_results, command)
    assert result.returncode == 0, (
        f"vlmlib {command} exited {result.returncode}:\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize("command", CLI_COMMANDS)
def test_cli_command_writes_only_expected_lines_to_stderr(
    cli_results: dict[str, CommandResult], command: str
):
    unexpected = _find_unexpected_stderr(_get_result(cli_results, command).stderr)
    assert unexpected == [], f"vlmlib {command} wrote unexpected lines to stderr:\n" + "\n".join(
        unexpected
    )


def test_cli_run_reloads_with_the_budget_it_trained_with(
    cli_results: dict[str, CommandResult], full_config: Config, tour_splits
):
    run_dir = Path(_get_result(cli_results, "train").arguments[-1])
    _, processor, config = models.load_run(run_dir)
    record = tour_splits["eval"][0]
    batch = processor(text=[IMAGE_PAD_TOKEN], images=[record["image"]], return_tensors="pt")
    budget = (full_config.model.min_pixels, full_config.model.max_pixels)
    assert models.get_pixel_budget(processor) == budget
    expected = _count_expected_image_tokens(record["width"], record["height"], config)
    assert _count_grid_tokens(batch["image_grid_thw"]) == [expected]


def test_cli_evaluate_scores_every_held_out_photo(
    cli_results: dict[str, CommandResult], tour_splits
):
    run_dir = Path(_get_result(cli_results, "evaluate").arguments[-1])
    report = evaluation.EvaluationReport.load_json(run_dir / "evaluation_eval.json")
    assert report.num_images == len(tour_splits["eval"])


def test_cli_predict_answers_for_the_photo(cli_results: dict[str, CommandResult]):
    result = _get_result(cli_results, "predict")
    photo = result.arguments[result.arguments.index("--image") + 1]
    assert result.stdout.count(f"{photo}: ") == 1
