"""Give memory back once a model, a trainer or a batch is no longer needed.

Why: a chapter that trains, evaluates and then merges would otherwise keep every model it loaded. On
a 16 GB card, the trained 4-bit model with its optimizer, a second 4-bit base for the zero-shot
baseline and the bf16 model of the merge do not all fit at once.
Explained in: chapter 00, "Merge the adapter", and chapter 06, "Merging the adapter".

Deleting a name is the caller's job (`del model`); Python frees an object once nothing refers to it.
A trainer, its callbacks and its accelerator refer to each other in cycles, so only the garbage
collector frees them, and CUDA keeps freed blocks cached for the process until they are handed back.
"""

from __future__ import annotations

import gc
import logging

import torch

__all__ = ["free_memory"]

logger = logging.getLogger(__name__)


def free_memory() -> int:
    """Collect unreachable objects, then hand PyTorch's cached CUDA blocks back to the driver.

    Why: after `del trainer, model` a trainer's reference cycles keep the model and its optimizer
    state alive until the next garbage collection; this runs it now, before the next model loads.
    Explained in: chapter 06, "Merging the adapter".

    Returns:
        Bytes of CUDA memory still allocated by tensors after freeing (0 without CUDA).
    """
    gc.collect()
    if not torch.cuda.is_available():
        return 0
    torch.cuda.empty_cache()
    allocated = torch.cuda.memory_allocated()
    logger.info("after freeing: %.2f GiB of CUDA memory still allocated", allocated / 2**30)
    return allocated
