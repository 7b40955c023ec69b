"""Load Qwen2-VL and its processor for either profile, and add LoRA adapters.

Why: the chapters, the CLI and the tests ask for "the model" without caring where it comes from;
the profile decides (the Hub's Qwen2-VL-2B-Instruct in 4-bit on CUDA, or the cached tiny one on CPU).
Explained in: chapter 02, "Loading the model", and chapter 05, "Choosing LoRA".
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoProcessor, BitsAndBytesConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from vlmlib.config import RUN_CONFIG_FILE, Config, load_config
from vlmlib.tiny import ensure_tiny_assets

__all__ = [
    "ParameterCounts",
    "apply_lora",
    "build_lora_config",
    "count_parameters",
    "get_pixel_budget",
    "load_model",
    "load_model_and_processor",
    "load_run",
    "load_processor",
    "resolve_device",
]

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(config: Config) -> torch.device:
    """Return the device the config asks for ("auto" means CUDA when there is one).

    Raises:
        RuntimeError: gpu.device is "cuda" and no CUDA device is visible.
    """
    if config.gpu.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("gpu.device is 'cuda' but torch sees no CUDA GPU; use VLM_PROFILE=tiny or gpu.device=cpu")
    if config.gpu.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.gpu.device)


def _model_source(config: Config, model_path: Path | str | None) -> str:
    if model_path is not None:
        return str(model_path)
    if config.profile == "tiny":
        return str(ensure_tiny_assets(config)[0])
    return config.model.name


def load_processor(config: Config, model_path: Path | str | None = None) -> Qwen2VLProcessor:
    """Return the processor with the config's pixel budget (`model.min_pixels`, `model.max_pixels`).

    Why: the pixel budget sets how many `<|image_pad|>` tokens each image costs, so it must be the
    same at training and at inference.
    """
    budget = {"shortest_edge": config.model.min_pixels, "longest_edge": config.model.max_pixels}  # in pixels, not edges
    return AutoProcessor.from_pretrained(_model_source(config, model_path), size=budget)


def get_pixel_budget(processor: Qwen2VLProcessor) -> tuple[int, int]:
    """Return the processor's (min_pixels, max_pixels): the area an image is resized into.

    Why: `qwen_vl_utils.process_vision_info` resizes images before the processor does, so it must be
    given the same budget (transformers 5 stores it as `size["shortest_edge"]`/`size["longest_edge"]`).
    """
    size = processor.image_processor.size
    return int(size["shortest_edge"]), int(size["longest_edge"])


def load_model(config: Config, model_path: Path | str | None = None) -> Qwen2VLForConditionalGeneration:
    """Return Qwen2-VL on the configured device, in 4-bit nf4 when `model.load_in_4bit` (QLoRA).

    Why: 4-bit weights cut the 2B model's memory about four-fold, so it trains on an 8 GB card.
    Explained in: chapter 05, "QLoRA".

    Raises:
        ValueError: 4-bit is asked for without CUDA (bitsandbytes' CPU path is not what we train with).
    """
    device = resolve_device(config)
    quantization_config = None
    if config.model.load_in_4bit:
        if device.type != "cuda":
            raise ValueError(
                "model.load_in_4bit=true needs a CUDA GPU; on CPU set model.load_in_4bit=false (the tiny profile does)"
            )
        quantization_config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_DTYPES[config.model.dtype],
        )
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        _model_source(config, model_path),
        dtype=_DTYPES[config.model.dtype],
        attn_implementation=config.model.attn_implementation,
        quantization_config=quantization_config,
        device_map=config.gpu.device_map or ({"": device.index or 0} if device.type == "cuda" else None),
    )
    return model if quantization_config is not None or device.type == "cuda" else model.to(device)


def load_model_and_processor(
    config: Config, model_path: Path | str | None = None
) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    """Return (model, processor) for the config's profile; `model_path` overrides where both come from."""
    return load_model(config, model_path), load_processor(config, model_path)


def build_lora_config(config: Config) -> PeftLoraConfig:
    """Return PEFT's LoraConfig for the language model's linear layers (and the vision tower's, if asked).

    Why: a regular expression over full module names keeps adapters off the vision tower unless
    `lora.train_vision` is set, because names like `proj` appear in both halves of the model.
    """
    language_names = "|".join(re.escape(name) for name in config.lora.target_modules)
    pattern = rf".*language_model\.layers\.\d+\..*\.({language_names})"
    if config.lora.train_vision:
        pattern += r"|.*visual\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
    return PeftLoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=pattern, bias="none", task_type="CAUSAL_LM",
    )


def apply_lora(model: Qwen2VLForConditionalGeneration, config: Config) -> PeftModel:
    """Wrap the model with LoRA adapters; only the adapters train.

    Why: training 1-2% of the weights keeps memory and checkpoints small, and the base model intact.
    Explained in: chapter 05, "Choosing LoRA".
    """
    if getattr(model, "is_loaded_in_4bit", False):
        # Casts norms to float32 and enables input gradients, so checkpointed 4-bit layers pass gradients to LoRA.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.training.gradient_checkpointing)
    with warnings.catch_warnings():
        # peft 0.21 reads the deprecated `is_gradient_checkpointing` property of transformers 5; only the name is
        # deprecated, the behaviour is right, so the FutureWarning would only clutter every page.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, build_lora_config(config))


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts by part of Qwen2-VL. `lm_head` is 0 when it shares the embedding matrix."""

    vision_tower: int
    patch_merger: int
    language_model: int
    lm_head: int
    trainable: int

    @property
    def total(self) -> int:
        return self.vision_tower + self.patch_merger + self.language_model + self.lm_head


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    """Count parameters per part (each shared tensor once) and how many will train.

    Explained in: chapter 02, "The architecture".
    """
    counts = {"vision_tower": 0, "patch_merger": 0, "language_model": 0, "lm_head": 0}
    trainable = 0
    for name, parameter in model.named_parameters():  # named_parameters skips tied duplicates
        # bitsandbytes packs two 4-bit weights into one uint8 element
        numel = parameter.numel() * (2 if type(parameter).__name__ == "Params4bit" else 1)
        part = ("patch_merger" if "visual.merger" in name else "vision_tower" if "visual" in name
                else "lm_head" if "lm_head" in name else "language_model")
        counts[part] += numel
        trainable += numel if parameter.requires_grad else 0
    return ParameterCounts(**counts, trainable=trainable)


def load_run(run_dir: Path | str, overrides: list[str] | None = None) -> tuple[Qwen2VLForConditionalGeneration | PeftModel, Qwen2VLProcessor, Config]:
    """Load a saved training run: its config, the base model with its adapter (or a full model), its processor.

    Why: a run folder (`vlmlib train` or `vlmlib.training.train`) holds everything needed to use the model.
    Explained in: chapter 06, "Loading the fine-tuned model".

    Raises:
        FileNotFoundError: the folder does not exist, or holds no adapter, no model and no saved config.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"model folder {run_dir} does not exist; pass the output folder of `vlmlib train`")
    if not (run_dir / RUN_CONFIG_FILE).exists():
        raise FileNotFoundError(f"{run_dir} has no {RUN_CONFIG_FILE}; is it the output folder of `vlmlib train`?")
    config = load_config(run_dir / RUN_CONFIG_FILE, overrides=overrides or [])
    processor = load_processor(config, run_dir)
    if (run_dir / "adapter_config.json").exists():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(load_model(config), run_dir)
    elif (run_dir / "config.json").exists():
        model = load_model(config, run_dir)  # a full fine-tune or a merged model
    else:
        raise FileNotFoundError(f"{run_dir} holds neither adapter_config.json nor config.json: no model was saved there")
    return model, processor, config
