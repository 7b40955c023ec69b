"""Tests for benchmarks/: both benchmarks run end to end on the tiny CPU
configuration (shapes, not timings), and the shipped Qwen2-VL-2B config builds a
model of the published size. The CUDA tests run on a GPU box only."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Qwen2VLForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
if (
    str(ROOT) not in sys.path
):  # `benchmarks` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu_generate, gpu_train_step, tiny_learning  # noqa: E402
from benchmarks.workload import TRAIN_SPLIT_NUM_IMAGES, load_qwen2_vl_2b_config  # noqa: E402
from vlmlib.config import Config  # noqa: E402
from vlmlib.models import count_parameters  # noqa: E402
from vlmlib.tokens import QWEN2_VL_SPECIAL_TOKEN_IDS  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _qwen2_vl_2b_parameter_count_by_arithmetic() -> dict[str, int]:
    """Count Qwen2-VL-2B's parameters from its published sizes alone, layer by
    layer (no transformers code).

    Sizes from the published config.json: text hidden 1536, MLP 8960, 28 layers,
    12 query heads and 2 key/value heads of 128 dims, vocabulary 151,936, output
    head tied to the embedding; vision: 32 blocks of width 1280, MLP ratio 4,
    14x14x2 patches of 3 channels, merged 2x2 into the text width.
    """
    hidden, mlp, layers, kv_width, vocab = 1536, 8960, 28, 2 * 128, 151_936
    attention = (
        (hidden * hidden + hidden) + 2 * (hidden * kv_width + kv_width) + hidden * hidden
    )  # q, k, v with bias; o without
    text_layer = (
        attention + 3 * hidden * mlp + 2 * hidden
    )  # gate/up/down projections, two RMSNorm weights
    language_model = (
        vocab * hidden + layers * text_layer + hidden
    )  # embedding, layers, final norm; tied head adds nothing
    width, depth, patch_inputs = 1280, 32, 3 * 2 * 14 * 14
    vision_block = (
        2 * 2 * width
        + (width * 3 * width + 3 * width)
        + (width * width + width)
        + (width * 4 * width + 4 * width)
        + (4 * width * width + width)
    )  # two LayerNorms, qkv, proj, fc1, fc2 (all with bias)
    vision_tower = (
        patch_inputs * width + depth * vision_block
    )  # Conv3d patch embedding without bias, then the blocks
    merged = 4 * width  # 2x2 neighbouring patches concatenated
    patch_merger = (
        2 * width + (merged * merged + merged) + (merged * hidden + hidden)
    )  # LayerNorm, then a two-layer MLP
    return {
        "vision_tower": vision_tower,
        "patch_merger": patch_merger,
        "language_model": language_model,
    }


def test_qwen2_vl_2b_config_builds_the_published_parameter_count_on_meta_device():
    with torch.device("meta"):  # no memory: shapes only
        model = Qwen2VLForConditionalGeneration(load_qwen2_vl_2b_config())
    counts = count_parameters(model)
    expected = _qwen2_vl_2b_parameter_count_by_arithmetic()
    assert sum(expected.values()) == 2_208_985_600  # "2.21B" on the model card
    assert counts.total == pytest.approx(sum(expected.values()), rel=0.01)
    for part, number in expected.items():
        assert getattr(counts, part) == pytest.approx(number, rel=0.01), part
    assert counts.lm_head == 0  # tied to the embedding


def test_qwen2_vl_2b_config_uses_the_special_token_ids_of_the_tokenizer():
    config = load_qwen2_vl_2b_config()
    ids = {
        "<|image_pad|>": config.image_token_id,
        "<|video_pad|>": config.video_token_id,
        "<|vision_start|>": config.vision_start_token_id,
        "<|vision_end|>": config.vision_end_token_id,
        "<|endoftext|>": config.text_config.bos_token_id,
        "<|im_end|>": config.text_config.eos_token_id,
    }
    assert ids == {token: QWEN2_VL_SPECIAL_TOKEN_IDS[token] for token in ids}
    assert config.text_config.rope_parameters["mrope_section"] == [16, 24, 24]


def _run_main(main, argv: list[str]) -> tuple[dict[str, Any], str]:
    """Run a benchmark's command line; return its JSON report and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    json_path = Path(argv[argv.index("--json") + 1])
    return json.loads(json_path.read_text()), printed.getvalue()


@pytest.fixture(scope="module")
def train_step_run(
    tiny_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], str]:
    """The train-step benchmark's command line on the CPU: V1 and V3, batches 1
    and 2, one budget, one timed step.
    """
    json_path = tmp_path_factory.mktemp("benchmarks") / "train_step.json"
    return _run_main(
        gpu_train_step.main,
        [
            "--device",
            "cpu",
            "--batch-sizes",
            "1",
            "2",
            "--budgets",
            "16",
            "--warmup-steps",
            "0",
            "--steps",
            "1",
            "--json",
            str(json_path),
        ],
    )


@pytest.mark.slow
def test_train_step_benchmark_measures_v1_and_v3_at_each_batch_size(train_step_run):
    report, _ = train_step_run
    measured = sorted(
        (row["collator"], row["batch_size"], row["budget_image_tokens"]) for row in report["rows"]
    )
    assert measured == [("v1", 1, 16), ("v1", 2, 16), ("v3", 1, 16), ("v3", 2, 16)]
    assert all(row["status"] == "ok" and math.isfinite(row["loss"]) for row in report["rows"])


@pytest.mark.slow
def test_train_step_benchmark_derives_samples_and_epoch_from_step_time(train_step_run):
    for row in train_step_run[0]["rows"]:
        assert row["step_s"] > 0
        assert row["samples_per_second"] == pytest.approx(row["batch_size"] / row["step_s"])
        assert row["epoch_minutes"] == pytest.approx(
            TRAIN_SPLIT_NUM_IMAGES / row["samples_per_second"] / 60
        )
        assert row["peak_allocated_gib"] is None  # no GPU memory to measure on a CPU


@pytest.mark.slow
def test_train_step_benchmark_v3_labels_fewer_tokens_than_v1(train_step_run):
    labelled = {
        (row["collator"], row["batch_size"]): row["labelled_tokens_per_sample"]
        for row in train_step_run[0]["rows"]
    }
    assert (
        labelled[("v3", 1)] < labelled[("v1", 1)]
    )  # V3 keeps the answer only; V1 keeps every position


@pytest.mark.slow
def test_train_step_benchmark_says_the_cpu_run_is_tiny_and_not_quantised(train_step_run):
    report, printed = train_step_run
    assert report["workload"]["profile"] == "tiny"
    assert report["workload"]["quantization"].startswith("none")
    assert report["goal"]["judged"] is False
    assert "not quantised" in printed and "goal not judged" in printed


@pytest.mark.slow
def test_train_step_benchmark_prints_one_table_line_per_row(train_step_run):
    report, printed = train_step_run
    table_lines = [line for line in printed.splitlines() if line.startswith("| v")]
    assert len(table_lines) == len(report["rows"])
    assert "| collator | batch |" in printed


@pytest.fixture(scope="module")
def generate_run(
    tiny_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], str]:
    """The generation benchmark's command line on the CPU: batch size 2, one
    timed batch, 4 tokens per answer.
    """
    json_path = tmp_path_factory.mktemp("benchmarks") / "generate.json"
    return _run_main(
        gpu_generate.main,
        [
            "--device",
            "cpu",
            "--batch-sizes",
            "1",
            "2",
            "--num-batches",
            "1",
            "--new-tokens",
            "4",
            "--json",
            str(json_path),
        ],
    )


@pytest.mark.slow
def test_generate_benchmark_reports_answers_per_second_per_batch_size(generate_run):
    report, printed = generate_run
    assert [row["batch_size"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["status"] == "ok" and row["num_answers"] == row["batch_size"]
        assert row["answers_per_second"] == pytest.approx(row["num_answers"] / row["seconds"])
        assert row["new_tokens_per_second"] == pytest.approx(row["answers_per_second"] * 4)
    assert "| batch | answers |" in printed


def test_count_one_box_answer_tokens_counts_answer_and_end_of_turn(tiny_processor):
    # 23 answer tokens plus <|im_end|>, read off the real Qwen2 vocabulary: 4
    # grounding tokens, "nutrition" and "-table", and 17 for
    # "(500,250),(950,750)": one per digit, and "(", ",", "),(", ",", ")".
    assert gpu_generate.count_one_box_answer_tokens(tiny_processor) == 24


@pytest.mark.gpu
@requires_cuda
def test_train_step_benchmark_trains_the_2b_model_with_qlora_on_cuda():
    report = gpu_train_step.run_train_step_benchmark(
        gpu_train_step.TrainStepSettings(
            device="cuda",
            batch_sizes=(1,),
            budgets=(256,),
            collators=("v3",),
            warmup_steps=1,
            timed_steps=1,
        )
    )
    assert report["workload"]["profile"] == "full"
    assert report["workload"]["quantization"].startswith("nf4")
    (row,) = report["rows"]
    assert row["status"] == "ok" and math.isfinite(row["loss"]) and row["peak_allocated_gib"] > 0


@pytest.mark.gpu
@requires_cuda
def test_generate_benchmark_answers_with_the_2b_model_on_cuda():
    report = gpu_generate.run_generate_benchmark(
        gpu_generate.GenerateSettings(
            device="cuda", batch_sizes=(2,), budget=256, num_batches=1, new_tokens=8
        )
    )
    (row,) = report["rows"]
    assert report["workload"]["quantization"].startswith("nf4") and row["status"] == "ok"


def test_tiny_learning_benchmark_runs_from_random_weights_to_scores(
    tiny_config: Config, tmp_path: Path
):
    """Pretraining, fine-tuning and scoring end to end, at a few steps: the
    figures exist and are in range.
    """
    json_path = tmp_path / "tiny_learning.json"
    report, printed = _run_main(
        tiny_learning.main,
        [
            "--seed",
            "3",
            "--num-held-out",
            "4",
            "--json",
            str(json_path),
            "--set",
            "tiny.pretrain_steps=3",
            "--set",
            "tiny.pretrain_num_images=8",
            "--set",
            "data.synthetic_num_train=16",
            "--set",
            "data.synthetic_num_val=4",
            "--set",
            "training.max_steps=2",
            "--set",
            "training.save_steps=2",
        ],
    )
    for key in ("mean_iou", "zero_shot_mean_iou", "mean_box_baseline_iou", "parse_failure_rate"):
        assert 0 <= report[key] <= 1, key
    assert (
        report["pretraining_steps"] == 3
        and report["fine_tuning_steps"] == 2
        and report["wall_seconds"] > 0
    )
    assert report["meets_goal"] is False  # 4 held-out images cannot meet a goal set on 100
    assert "seed 3: mean IoU" in printed and "goal NOT met" in printed
