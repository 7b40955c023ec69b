"""The tiny profile's machinery: a tiny Qwen2-VL, its synthetic dataset, and its pretraining.

Why: the course runs offline on a laptop with a model of the real architecture and
the real vocabulary, shrunk. This package builds that model and data; it depends
on the core of `vlmlib` (config, data, collators, models), and the core never
imports it: the loaders read the folders it writes, which `vlmlib.sources` names.
Explained in: book/setup, "The tiny profile", and book/tiny_model.md.

| module        | job                                                                          |
| ------------- | ---------------------------------------------------------------------------- |
| `assets`      | the real-vocabulary processor, the tiny model, `ensure_tiny_assets` (cache)   |
| `synthetic`   | synthetic product photos with nutrition tables, in the Hub dataset's schema   |
| `pretraining` | the tiny model's pretraining (sampled softmax), run once by `vlmlib make-tiny` |
"""

from vlmlib.tiny import assets
from vlmlib.tiny.assets import *  # noqa: F403 (the names in assets.__all__)

__all__ = list(assets.__all__)
