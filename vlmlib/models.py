"""Load Qwen2-VL and its processor for either profile, and add LoRA adapters.

Why: the chapters, the CLI and the tests ask for "the model" without caring where it comes from;
the profile decides (the Hub's Qwen2-VL-2B-Instruct in 4-bit on CUDA, or the
cached tiny one on CPU).
Explained in: chapter 02, "Loading the model", and chapter 05, "Choosing LoRA".
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    BitsAndBytesConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)

from vlmlib.config import RUN_CONFIG_FILE, Config, load_config
from vlmlib.run_folders import check_run_folder
from vlmlib.sources import resolve_sources

__all__ = [
    "ParameterCounts",
    "align_pad_token",
    "apply_lora",
    "build_lora_config",
    "count_module_parameters",
    "count_parameters",
    "get_device_map",
    "get_pixel_budget",
    "load_model",
    "load_model_and_processor",
    "load_run",
    "load_processor",
    "resolve_compute_dtype",
    "resolve_device",
    "restrict_input_grads_to_language_model",
]

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(config: Config) -> torch.device:
    """Return the device the config asks for ("auto" means CUDA when there is one).

    Raises:
        RuntimeError: gpu.device is "cuda" and no CUDA device is visible.
    """
    if config.gpu.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "gpu.device is 'cuda' but torch sees no CUDA GPU; use VLM_PROFILE=tiny or "
            "gpu.device=cpu"
        )
    if config.gpu.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.gpu.device)


def _model_source(config: Config, model_path: Path | str | None) -> str:
    """Return `model_path` if given, else where the config's profile loads from (vlmlib.sources)."""
    if model_path is not None:
        return str(model_path)
    sources = resolve_sources(config)
    sources.check_model_is_built()
    return sources.model


def load_processor(config: Config, model_path: Path | str | None = None) -> Qwen2VLProcessor:
    """Return the processor with the config's pixel budget (`model.min_pixels`, `model.max_pixels`).

    Why: the pixel budget sets how many `<|image_pad|>` tokens each image costs, so it must be the
    same at training and at inference. The Hub repo's `preprocessor_config.json`
    still carries the old keys `min_pixels: 3136, max_pixels: 12845056`, and
    transformers 5.23 lets them override a `size=`
    argument: a 2592x1944 photo would then cost about 6,400 tokens instead of about 600. Passing the
    budget to the image processor under the old names makes ours win, and the
    check makes sure it did.
    Explained in: chapter 02, "From pixels to image tokens".

    Raises:
        RuntimeError: the loaded processor's budget is not the config's (a transformers change).
    """
    source = _model_source(config, model_path)
    minimum, maximum = config.model.min_pixels, config.model.max_pixels
    processor = AutoProcessor.from_pretrained(source)
    # Given to AutoProcessor, these keywords would also land in the tokenizer's
    # settings and be passed (deprecated) to every processor call; given to the
    # image processor alone they only set its budget.
    processor.image_processor = AutoImageProcessor.from_pretrained(
        source, min_pixels=minimum, max_pixels=maximum
    )
    if get_pixel_budget(processor) != (minimum, maximum):
        raise RuntimeError(
            f"the processor from {source} kept the pixel budget {get_pixel_budget(processor)} "
            f"instead of the config's ({minimum}, {maximum})"
        )
    return processor


def get_pixel_budget(processor: Qwen2VLProcessor) -> tuple[int, int]:
    """Return the processor's (min_pixels, max_pixels): the area an image is resized into.

    Why: `qwen_vl_utils.process_vision_info` resizes images before the processor does, so it must be
    given the same budget (transformers 5 stores it as
    `size["shortest_edge"]`/`size["longest_edge"]`).
    """
    size = processor.image_processor.size
    return int(size["shortest_edge"]), int(size["longest_edge"])


def resolve_compute_dtype(config: Config) -> torch.dtype:
    """Return the dtype the model computes in: `model.dtype`, with "auto" chosen from the hardware.

    Why: bf16 is the QLoRA recipe's dtype, but the T4 of free notebook services has no bf16; there
    "auto" falls back to fp16. This is the one place that decides: 4-bit compute, the weights' dtype
    and the trainer's mixed precision (`vlmlib.training.build_sft_config`) all read it.
    Explained in: chapter 05, "QLoRA on the full profile".
    """
    if config.model.dtype != "auto":
        return _DTYPES[config.model.dtype]
    if resolve_device(config).type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def get_device_map(config: Config) -> dict[str, int | str] | str | None:
    """Return `from_pretrained`'s `device_map`: the whole model on this process's device.

    Why: under `accelerate launch` or `torchrun` each process must load its copy onto its own GPU
    (`LOCAL_RANK`); loading every copy onto cuda:0 fills that card, and
    accelerate refuses to train a 4-bit model placed on another process's device.
    """
    if config.gpu.device_map:
        return config.gpu.device_map
    device = resolve_device(config)
    if device.type == "cuda":
        return {"": int(os.environ.get("LOCAL_RANK", device.index or 0))}
    return {"": "cpu"} if config.model.load_in_4bit else None


def load_model(
    config: Config, model_path: Path | str | None = None
) -> Qwen2VLForConditionalGeneration:
    """Return Qwen2-VL on the configured device, in 4-bit nf4 when `model.load_in_4bit` (QLoRA).

    Why: 4-bit weights cut the 2B model's memory about three-fold, not four-fold: the 1.97 B weights
    of its linear layers become nf4 (with double quantisation about 0.52 byte each), but the other
    236 M (the token embedding, biases, norms and the patch embedding) stay 16-bit, so 4.4 GB of
    bf16 weights become about 1.5 GB. It trains on an 8 GB card. On a CPU, bitsandbytes' CPU
    backend runs the same nf4 layers (slowly): the course's full-profile rehearsal uses it.
    Explained in: chapter 05, "QLoRA on the full profile".
    """
    dtype = resolve_compute_dtype(config)
    quantization_config = None
    if config.model.load_in_4bit:
        quantization_config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    device_map = get_device_map(config)
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        _model_source(config, model_path),
        dtype=dtype,
        attn_implementation=config.model.attn_implementation,
        quantization_config=quantization_config,
        device_map=device_map,
    )
    if quantization_config is not None and resolve_device(config).type == "cpu":
        _keep_cpu_4bit_layers_trainable(model)
    return model if device_map is not None else model.to(resolve_device(config))


def _keep_cpu_4bit_layers_trainable(model: torch.nn.Module) -> None:
    """Workaround for bitsandbytes 0.50 on CPUs with AVX512-BF16: stop 4-bit
    layers repacking for inference.

    Why: the first eval-mode, no-grad forward of a `Linear4bit` on such a CPU repacks its
    weight into an inference-only layout and never undoes it (bitsandbytes/nn/modules.py,
    `Linear4bit.forward`). Every later training forward then takes the inference path:
    layers with a bias crash ("a view of a leaf Variable ... in-place"), the others pass
    no gradient back. Generating before training (a zero-shot answer, the IoU callback's
    first score) triggers it. CUDA is unaffected; only the CPU rehearsal of the full
    profile needs this. The attribute is bitsandbytes' own switch for that path.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def align_pad_token(model: torch.nn.Module, processor: Qwen2VLProcessor) -> None:
    """Give the model's configs the tokenizer's padding id (`<|endoftext|>`) where they name none.

    Why: the Hub repo's config.json names no pad token. The Trainer would fill
    it in itself and say so on stderr ("The tokenizer has new PAD/BOS/EOS tokens
    ..."), which fails a book page; the value is the one it would choose.
    """
    pad_token_id = processor.tokenizer.pad_token_id
    text_config = model.config.get_text_config()
    if getattr(text_config, "pad_token_id", None) is None:
        text_config.pad_token_id = pad_token_id
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = pad_token_id


def load_model_and_processor(
    config: Config, model_path: Path | str | None = None
) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    """Return (model, processor) for the config's profile; `model_path`
    overrides where both come from.
    """
    return load_model(config, model_path), load_processor(config, model_path)


def build_lora_config(config: Config) -> PeftLoraConfig:
    """Return PEFT's LoraConfig for the language model's linear layers (and the
    vision tower's, if asked).

    Why: a regular expression over full module names keeps adapters off the vision tower unless
    `lora.train_vision` is set, because names like `proj` appear in both halves of the model.
    """
    language_names = "|".join(re.escape(name) for name in config.lora.target_modules)
    pattern = rf".*language_model\.layers\.\d+\..*\.({language_names})"
    if config.lora.train_vision:
        pattern += r"|.*visual\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
    return PeftLoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=pattern,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model: Qwen2VLForConditionalGeneration, config: Config) -> PeftModel:
    """Wrap the model with LoRA adapters; only the adapters train.

    Why: training 1-2% of the weights keeps memory and checkpoints small, and the base model intact.
    Explained in: chapter 05, "Choosing LoRA".
    """
    if getattr(model, "is_loaded_in_4bit", False):
        # Casts the norms to float32 and freezes the base. Checkpointing is left to the trainer
        # (SFTConfig.activation_checkpointing), which switches it on through the current API; PEFT's
        # own switch calls the deprecated `gradient_checkpointing_enable`, whose FutureWarning would
        # reach stderr, and hooks input gradients that non-reentrant checkpointing does not need.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    with warnings.catch_warnings():
        # peft 0.21 reads the deprecated `is_gradient_checkpointing` property of
        # transformers 5; only the name is deprecated, the behaviour is right,
        # so the FutureWarning would only clutter every page.
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        return get_peft_model(model, build_lora_config(config))


def restrict_input_grads_to_language_model(model: torch.nn.Module) -> int:
    """Remove the input-gradient hook from the vision tower's patch embedding;
    return how many were removed.

    Why: `enable_input_require_grads` (called by transformers when checkpointing
    starts, and by PEFT) hooks every input embedding of the model, the vision tower's
    `patch_embed` included. Its output then requires a gradient, so backward (and
    checkpoint recompute) runs through all 32 frozen vision blocks for nothing: 2-3x
    the vision compute. The language model's hook stays; call this after checkpointing
    is switched on, unless the vision tower itself trains (`lora.train_vision`).
    Explained in: chapter 05, "QLoRA on the full profile".
    """
    qwen = model
    while not isinstance(qwen, Qwen2VLForConditionalGeneration):
        qwen = qwen.module if hasattr(qwen, "module") else qwen.get_base_model()
    # PEFT and transformers may each have called it, and the second call forgets
    # the first's handles, so the hooks are found by their function's name on
    # the module rather than through the handles.
    patch_embed_hooks = qwen.model.visual.patch_embed._forward_hooks
    removed = [
        hook_id
        for hook_id, hook in patch_embed_hooks.items()
        if getattr(hook, "__name__", "")
        in {"make_inputs_require_grads", "make_inputs_require_grad"}
    ]
    for hook_id in removed:
        del patch_embed_hooks[hook_id]
    if hasattr(qwen, "_require_grads_hooks"):  # what `disable_input_require_grads` removes later
        qwen._require_grads_hooks = [
            hook for hook in qwen._require_grads_hooks if hook.id not in removed
        ]
    return len(removed)


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


def _count_weights(parameter: torch.nn.Parameter) -> int:
    """Return the weights a parameter stands for: bitsandbytes packs two 4-bit
    weights into one uint8 element.
    """
    return parameter.numel() * (2 if type(parameter).__name__ == "Params4bit" else 1)


def count_module_parameters(module: torch.nn.Module) -> int:
    """Return the weights of one module (each shared tensor once), 4-bit ones at
    their unpacked count.

    Why: `numel()` counts a 4-bit layer at half its size; per-module tables must
    add up like `count_parameters`.
    Explained in: chapter 02, "The architecture".
    """
    return sum(_count_weights(parameter) for parameter in module.parameters())


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    """Count parameters per part (each shared tensor once) and how many will train.

    Explained in: chapter 02, "The architecture".
    """
    counts = {"vision_tower": 0, "patch_merger": 0, "language_model": 0, "lm_head": 0}
    trainable = 0
    for name, parameter in model.named_parameters():  # named_parameters skips tied duplicates
        numel = _count_weights(parameter)
        part = (
            "patch_merger"
            if "visual.merger" in name
            else "vision_tower"
            if "visual" in name
            else "lm_head"
            if "lm_head" in name
            else "language_model"
        )
        counts[part] += numel
        trainable += numel if parameter.requires_grad else 0
    return ParameterCounts(**counts, trainable=trainable)


def load_run(
    run_dir: Path | str, overrides: list[str] | None = None
) -> tuple[Qwen2VLForConditionalGeneration | PeftModel, Qwen2VLProcessor, Config]:
    """Load a saved training run: its config, the base model with its adapter
    (or a full model), its processor.

    Why: a run folder (`vlmlib train` or `vlmlib.training.train`) holds
    everything needed to use the model.
    Explained in: chapter 06, "A model to evaluate".

    Raises:
        FileNotFoundError: the folder does not exist, or misses a file (see `check_run_folder`).
        ValueError: a file in it is broken (see `check_run_folder`); checked before any model loads.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"model folder {run_dir} does not exist; pass the output folder of `vlmlib train`"
        )
    if not (run_dir / RUN_CONFIG_FILE).exists():
        raise FileNotFoundError(
            f"{run_dir} has no {RUN_CONFIG_FILE}; is it the output folder of `vlmlib train`?"
        )
    check_run_folder(run_dir)
    config = load_config(run_dir / RUN_CONFIG_FILE, overrides=overrides or [])
    processor = load_processor(config, run_dir)
    if (run_dir / "adapter_config.json").exists():
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
            )
            model = PeftModel.from_pretrained(load_model(config), run_dir)
    elif (run_dir / "config.json").exists():
        model = load_model(config, run_dir)  # a full fine-tune or a merged model
    else:
        raise FileNotFoundError(
            f"{run_dir} holds neither adapter_config.json nor config.json: no model was saved there"
        )
    return model, processor, config
