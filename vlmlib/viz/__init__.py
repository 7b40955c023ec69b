"""Draw boxes on images and lay images out in grids, with one look across the whole course.

Why: every chapter shows boxes, and a reader should never have to work out which colour is the
ground truth. Ground truth is always solid blue and a prediction always dashed orange (Okabe-Ito
colours, which stay distinct under the common forms of colour blindness), and every figure takes
its size from `FIGURE_SIZE` or `GRID_FIGURE_SIZE`.
Explained in: chapter 01, "Looking at the data".

`plot_*` functions return a `matplotlib.figure.Figure` made through pyplot and closed at once, so
Jupyter's inline backend renders it and a notebook cell that ends with the call shows it exactly
once; `draw_*` functions return a new PIL image. Nothing here calls `plt.show()` or writes files.

Import from `vlmlib.viz` itself (`from vlmlib.viz import draw_boxes`); each name
lives in one submodule:

- `style`: figure sizes, the ground-truth and prediction colours, `new_figure`.
- `images`: `draw_boxes`, image and record grids, `plot_record`, the record explorer (chapter 01).
- `eda`: the dataset's statistics: image sizes, histograms, count bars, box
  centres and sizes (chapter 01).
- `architecture`: how an image enters the model: patches, merged tokens, M-RoPE
  positions (chapter 02).
- `tokens`: patches and image tokens, the token strip, the token mask of each
  collator (chapters 02 and 03).
- `training`: one run's training curves, and one metric across several runs (chapters 04 and 05).
- `lora`: LoRA's update of one layer, and a training step's memory by kind (chapter 05).
- `evaluation`: the per-image IoU histogram, the threshold sweep, the prediction
  gallery (chapter 06).
"""

from vlmlib.viz.architecture import plot_model_architecture, plot_mrope_positions
from vlmlib.viz.eda import (
    plot_box_centre_heatmap,
    plot_box_size_scatter,
    plot_count_bars,
    plot_histogram,
    plot_size_histogram,
)
from vlmlib.viz.evaluation import (
    plot_iou_distribution,
    plot_prediction_gallery,
    plot_threshold_sweep,
)
from vlmlib.viz.images import (
    RecordExplorer,
    build_record_explorer,
    draw_boxes,
    plot_image_grid,
    plot_record,
    plot_record_grid,
    plot_records_with_boxes,
)
from vlmlib.viz.lora import plot_lora_update, plot_memory_breakdown
from vlmlib.viz.style import (
    FIGURE_SIZE,
    GRID_FIGURE_SIZE,
    GROUND_TRUTH_COLOR,
    PREDICTION_COLOR,
    new_figure,
)
from vlmlib.viz.tokens import (
    MASKED_COLOR,
    ROLE_COLORS,
    plot_patch_grid,
    plot_token_mask,
    plot_token_strip,
)
from vlmlib.viz.training import plot_loss_curves, plot_training_curves

__all__ = [
    "MASKED_COLOR",
    "ROLE_COLORS",
    "plot_token_mask",
    "new_figure",
    "FIGURE_SIZE",
    "GRID_FIGURE_SIZE",
    "GROUND_TRUTH_COLOR",
    "PREDICTION_COLOR",
    "draw_boxes",
    "plot_image_grid",
    "plot_records_with_boxes",
    "RecordExplorer",
    "build_record_explorer",
    "plot_box_centre_heatmap",
    "plot_box_size_scatter",
    "plot_count_bars",
    "plot_histogram",
    "plot_model_architecture",
    "plot_mrope_positions",
    "plot_patch_grid",
    "plot_record",
    "plot_record_grid",
    "plot_size_histogram",
    "plot_token_strip",
    "plot_iou_distribution",
    "plot_threshold_sweep",
    "plot_prediction_gallery",
    "plot_training_curves",
    "plot_loss_curves",
    "plot_lora_update",
    "plot_memory_breakdown",
]
