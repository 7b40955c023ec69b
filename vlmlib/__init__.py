"""vlmlib: the one library behind the course "Fine-tuning Qwen2-VL to find nutrition tables".

Chapters, labs, tests and the command line (`python -m vlmlib`) import these modules, so each piece
of the pipeline is written once:

| module      | job                                                                  |
| ----------- | -------------------------------------------------------------------- |
| `config`    | typed configuration from YAML, the two profiles                      |
| `tokens`    | Qwen2-VL's special tokens by name                                    |
| `boxes`     | the three box conventions and conversions                            |
| `data`      | loading the dataset, checking records, building the chat             |
| `sources`   | where the model, processor and data come from, per profile           |
| `models`    | loading the model and processor from a source, LoRA                  |
| `collators` | `CollatorV1` to `CollatorV3`: which tokens the loss sees              |
| `training`  | SFTTrainer wiring, the answer-only loss, saving a run                |
| `callbacks` | gradient norms, IoU on held-out images while training, console log   |
| `optimizer_steps` | how far SGD and AdamW steps move the weights as the loss is scaled |
| `inference` | batched generation, with a confidence per answer                     |
| `parsing`   | reading boxes back from answers                                      |
| `metrics`   | IoU and one-to-one matching                                          |
| `evaluation`| a split's report: mean IoU, P/R/F1, mAP, parse failures              |
| `predictions` | one image's ground-truth and predicted boxes                       |
| `coco`      | COCO mAP through pycocotools                                         |
| `merging`   | merge a LoRA adapter and prove the answers did not change            |
| `viz`       | boxes on images, grids, the course's plots                           |
| `notes`     | a chapter's note shown under one profile only                        |
| `dataset_stats` | per-image and per-box statistics for chapter 01                  |
| `checks`, `labs` | lab self-checks, and the generator of labs/ from solutions/     |
| `cli`       | `vlmlib train`, `evaluate`, `predict`, `merge-lora`, `make-tiny`, ...|

The tiny profile's machinery (its model builder, synthetic data and pretraining) is the package
`vlmlib.tiny`, which builds on these modules; none of them imports it.
"""

import logging
import os

__version__ = "0.1.0"

# bitsandbytes (imported by peft and trl) logs a warning at import when its optional CPU 4-bit
# kernels are missing. Only the full profile's CPU rehearsal runs 4-bit on a CPU, where the
# missing kernels make it slower, not wrong; the message would only clutter every page and log.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# The fast tokenizer's own thread pool competes with torch's threads for the
# same cores while a batch is built; on a 2-core CPU, switching it off made a
# tiny-model training step 14% faster (0.211 s to 0.181 s).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def quiet_progress_bars() -> None:
    """Turn off the loading and dataset progress bars of transformers and datasets.

    Why: they write to stderr, which a built book page shows as noise; chapters call this once in
    their setup cell. The command line keeps its bars.
    """
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
