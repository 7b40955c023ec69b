"""What both benchmarks run on: the config, a random-weight Qwen2-VL checkpoint,
synthetic photos, the machine.

Why: a benchmark of the published recipe needs the real Qwen2-VL-2B architecture, loaded
exactly as the `full` profile loads it (`vlmlib.models.load_model`: 4-bit nf4, double
quantisation, bf16 compute), but no download. Random weights cost the same time and memory
per training step as trained ones, so the weights are drawn at random from the published
config and saved once to the cache; the processor is the tiny profile's (the real Qwen2
vocabulary, chat template and image processor), so token counts are the real ones.
Explained in: book/costs.md, "How the figures are made".

On CUDA the workload is the `full` profile: Qwen2-VL-2B-Instruct's architecture,
bf16, QLoRA. On a CPU it is the `tiny` profile (the tiny random model, float32,
plain LoRA), because the course quantises with bitsandbytes' nf4 on CUDA only: a
CPU run checks that the benchmark works, not what the GPU recipe costs.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration

from vlmlib.config import Config, load_config, with_overrides
from vlmlib.models import load_model, resolve_compute_dtype
from vlmlib.sources import get_cache_dir
from vlmlib.tiny import build_tiny_model
from vlmlib.tiny.synthetic import generate_synthetic_dataset
from vlmlib.tokens import END_OF_TEXT_TOKEN, IM_END_TOKEN, QWEN2_VL_SPECIAL_TOKEN_IDS

__all__ = [
    "BYTES_PER_GIB",
    "PIXELS_PER_IMAGE_TOKEN",
    "QWEN2_VL_2B_CONFIG_FILE",
    "TRAIN_SPLIT_NUM_IMAGES",
    "build_benchmark_config",
    "build_photo_records",
    "describe_machine",
    "format_cell",
    "format_markdown_table",
    "ensure_random_checkpoint",
    "limit_gpu_memory",
    "load_benchmark_model",
    "load_qwen2_vl_2b_config",
    "read_peak_memory_gib",
    "reset_peak_memory",
    "resolve_benchmark_device",
    "synchronize",
    "write_json",
]

logger = logging.getLogger(__name__)

# Qwen/Qwen2-VL-2B-Instruct's published config.json, in the nested layout transformers 5 reads
# (`text_config` with `rope_parameters`, `vision_config`). Same sizes, token ids and rope settings.
QWEN2_VL_2B_CONFIG_FILE = Path(__file__).with_name("qwen2_vl_2b_instruct_config.json")
TRAIN_SPLIT_NUM_IMAGES = (
    1083  # openfoodfacts/nutrition-table-detection, train split (shared/COURSE_DESIGN.md)
)
PIXELS_PER_IMAGE_TOKEN = 28 * 28  # 14x14 patches, merged 2x2: one <|image_pad|> per 28x28 block
BYTES_PER_GIB = 1024**3


def resolve_benchmark_device(name: str) -> torch.device:
    """Return the device for "auto" (CUDA when visible), "cuda" or "cpu".

    Raises:
        RuntimeError: "cuda" is asked for and torch sees no CUDA GPU.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda, but torch sees no CUDA GPU; use --device cpu for the tiny configuration"
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_qwen2_vl_2b_config() -> Qwen2VLConfig:
    """Return Qwen2-VL-2B-Instruct's architecture (2,208,985,600 parameters)
    from the JSON shipped here.
    """
    return Qwen2VLConfig.from_json_file(str(QWEN2_VL_2B_CONFIG_FILE))


def build_benchmark_config(
    device: torch.device, budget_image_tokens: int, overrides: Sequence[str] = ()
) -> Config:
    """Return the profile's config (`full` on CUDA, `tiny` on a CPU) with the pixel budget set.

    Why: the budget is the lever that sets the sequence length, so each benchmark row sets it;
    everything else is the profile's recipe unless `overrides` ("section.key=value") change it.

    Args:
        budget_image_tokens: the most `<|image_pad|>` tokens an image may become
            (`model.max_pixels` / 784).
    """
    config = load_config(
        profile="full" if device.type == "cuda" else "tiny", overrides=list(overrides)
    )
    max_pixels = budget_image_tokens * PIXELS_PER_IMAGE_TOKEN
    min_pixels = min(config.model.min_pixels, max_pixels)
    return with_overrides(
        config,
        [
            f"model.min_pixels={min_pixels}",
            f"model.max_pixels={max_pixels}",
            f"gpu.device={device.type}",
        ],
    )


def _generation_config() -> GenerationConfig:
    """Greedy decoding that stops at `<|im_end|>` or `<|endoftext|>`, as the
    published generation config does.
    """
    return GenerationConfig(
        eos_token_id=[
            QWEN2_VL_SPECIAL_TOKEN_IDS[IM_END_TOKEN],
            QWEN2_VL_SPECIAL_TOKEN_IDS[END_OF_TEXT_TOKEN],
        ],
        pad_token_id=QWEN2_VL_SPECIAL_TOKEN_IDS[END_OF_TEXT_TOKEN],
        do_sample=False,
    )


def _build_random_model(config: Config) -> Qwen2VLForConditionalGeneration:
    """Return a random-weight model: the 2B architecture for `full`, the tiny one for `tiny`."""
    if config.profile == "tiny":
        return build_tiny_model(config)
    torch.manual_seed(0)
    # Drawing 2.2 B random numbers is quick on a GPU and slow on a CPU, so
    # initialise where the model will run.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2VLForConditionalGeneration._from_config(
            load_qwen2_vl_2b_config(), dtype=resolve_compute_dtype(config)
        )
    model.generation_config = _generation_config()
    return model


def ensure_random_checkpoint(config: Config) -> Path:
    """Save (once) a random-weight checkpoint for the config's profile and return its folder.

    Why: `vlmlib.models.load_model` loads from a folder, and loading is where the `full`
    profile quantises to nf4; going through a folder makes the benchmark load the model
    exactly as training does. The folder lives in the vlmlib cache (`VLM_CACHE_DIR`),
    named by a hash of what shapes it; the 2B one takes about 4.5 GB of disk.
    """
    shape = (
        QWEN2_VL_2B_CONFIG_FILE.read_text()
        if config.profile == "full"
        else json.dumps(asdict(config.tiny), sort_keys=True)
    )
    settings = f"{shape}|{resolve_compute_dtype(config)}|transformers {transformers.__version__}"
    folder = (
        get_cache_dir()
        / f"benchmark-{config.profile}-random-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    )
    if folder.exists():
        return folder
    logger.info("saving a random-weight %s checkpoint to %s", config.profile, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model = _build_random_model(config)
        model.save_pretrained(staging)
        del model
        staging.rename(
            folder
        )  # a rename, so an interrupted save never leaves a half checkpoint behind
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.exists():  # another process may have finished the same folder first
            raise
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return folder


def load_benchmark_model(config: Config) -> Qwen2VLForConditionalGeneration:
    """Return the random-weight model loaded by `vlmlib.models.load_model` (nf4
    on CUDA under `full`).
    """
    return load_model(config, ensure_random_checkpoint(config))


def build_photo_records(
    budget_image_tokens: int, num_records: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Return synthetic records (Hub schema) whose images are at least as large as the pixel budget.

    Why: the dataset's photos are far larger than any budget (phone photos), so the processor always
    shrinks them to about `budget_image_tokens` tokens; images of at least that area get the same
    sequence length, hence the same cost, as the real ones.
    """
    side_px = max(64, math.ceil(math.sqrt(budget_image_tokens * PIXELS_PER_IMAGE_TOKEN)))
    dataset = generate_synthetic_dataset(
        num_train=num_records,
        num_val=0,
        seed=seed,
        min_side_px=side_px,
        max_side_px=side_px * 3 // 2,
    )
    return [dict(record) for record in dataset["train"]]


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock time covers the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Free cached GPU blocks and restart the peak-memory counters (no-op on a CPU)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def read_peak_memory_gib(device: torch.device) -> tuple[float | None, float | None]:
    """Return (peak allocated, peak reserved) GPU memory in GiB since the last
    reset; (None, None) on a CPU.

    Allocated counts live tensors; reserved adds the blocks PyTorch's caching
    allocator holds, which is closer to what a card must have free (`nvidia-smi`
    shows reserved plus the CUDA context, ~0.5 GiB).
    """
    if device.type != "cuda":
        return None, None
    return (
        torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB,
        torch.cuda.max_memory_reserved(device) / BYTES_PER_GIB,
    )


def limit_gpu_memory(device: torch.device, limit_gib: float | None) -> None:
    """Make PyTorch refuse to allocate past `limit_gib` on this GPU, to act like a smaller card.

    Why: "fits an 8 GB card" is best shown by running under an 8 GiB cap on a bigger card.
    """
    if limit_gib is None or device.type != "cuda":
        return
    total_gib = torch.cuda.get_device_properties(device).total_memory / BYTES_PER_GIB
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib / total_gib), device)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine(device: torch.device) -> dict[str, Any]:
    """Return what a reader needs to judge the figures: the card or CPU, the
    load, the library versions.
    """
    facts: dict[str, Any] = {
        "device": device.type,
        "cpu": _cpu_name(),
        "num_cpu_cores": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "load_average_1_5_15_min": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {
            name: _package_version(name)
            for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "flash-attn")
        },
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        facts.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / BYTES_PER_GIB, 1),
            cuda=torch.version.cuda,
            compute_capability=f"{properties.major}.{properties.minor}",
        )
    return facts


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON, creating the folder; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def format_cell(value: Any, digits: int = 3) -> str:
    """Return a table cell: floats to `digits` significant digits, None as "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return str(value)


def format_markdown_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]
) -> str:
    """Return rows as a Markdown table, one column per (key, title), so it
    pastes into book/costs.md as it is.
    """
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row[key]) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)
