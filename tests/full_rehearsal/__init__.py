"""Local stand-ins for the `full` profile's Hub repos, for the full-path rehearsal (issue 18).

Why: the `full` profile (Qwen2-VL-2B-Instruct in 4-bit nf4, the Open Food Facts dataset) runs on a
rented GPU, where a bug costs an hour. `tests/test_full_rehearsal.py` runs that profile's code on
the CPU instead, through bitsandbytes' CPU backend, on stand-ins that copy the Hub repos' files
(names, formats, legacy keys) and shrink only the sizes:

| module         | stands in for                              | built in (2 cores) |
| -------------- | ------------------------------------------ | ------------------ |
| `model_repo`   | `Qwen/Qwen2-VL-2B-Instruct`                | about 6 s          |
| `dataset_repo` | `openfoodfacts/nutrition-table-detection`  | about 3 s          |

The rehearsal points the `full` config at them (`model.name=<folder>`, `data.local_path=<folder>`);
everything else is the published profile's code path.
"""

from tests.full_rehearsal.dataset_repo import PHOTO_SIZES_PX, build_dataset_repo
from tests.full_rehearsal.model_repo import (
    HUB_MODEL_FILES,
    HUB_PREPROCESSOR_CONFIG,
    build_model_repo,
)

__all__ = [
    "HUB_MODEL_FILES",
    "HUB_PREPROCESSOR_CONFIG",
    "PHOTO_SIZES_PX",
    "build_dataset_repo",
    "build_model_repo",
]
