"""One image's ground-truth and predicted boxes: what every metric in the course scores.

Why: `vlmlib.evaluation` builds these from answers, and `vlmlib.coco` and the metrics read
them; keeping the type in its own module lets both import it without importing each other.
Explained in: chapter 06, "Scoring a split".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmlib.parsing import DEFAULT_LABEL

__all__ = ["BoxXyxy", "ImagePrediction"]

BoxXyxy = tuple[float, float, float, float]


@dataclass
class ImagePrediction:
    """One image's ground-truth and predicted boxes, as `box_xyxy` (x1, y1, x2, y2) in pixels.

    Labels default to `DEFAULT_LABEL` and scores to 1.0 when left empty. `is_parse_failure` is
    True when the answer gave no box; `failure_reason` then says why (from `ParsedAnswer`).
    """

    image_id: str
    width_px: int
    height_px: int
    ground_truth_xyxy: list[BoxXyxy]
    ground_truth_labels: list[str] = field(default_factory=list)
    predicted_xyxy: list[BoxXyxy] = field(default_factory=list)
    predicted_labels: list[str] = field(default_factory=list)
    predicted_scores: list[float] = field(default_factory=list)
    failure_reason: str | None = None
    answer_text: str | None = None

    def __post_init__(self) -> None:
        self.ground_truth_xyxy = [
            tuple(float(value) for value in box) for box in self.ground_truth_xyxy
        ]
        self.predicted_xyxy = [tuple(float(value) for value in box) for box in self.predicted_xyxy]
        self.ground_truth_labels = list(self.ground_truth_labels) or [DEFAULT_LABEL] * len(
            self.ground_truth_xyxy
        )
        self.predicted_labels = list(self.predicted_labels) or [DEFAULT_LABEL] * len(
            self.predicted_xyxy
        )
        self.predicted_scores = [float(score) for score in self.predicted_scores] or [1.0] * len(
            self.predicted_xyxy
        )
        for name, boxes, values in (
            ("ground_truth_labels", self.ground_truth_xyxy, self.ground_truth_labels),
            ("predicted_labels", self.predicted_xyxy, self.predicted_labels),
            ("predicted_scores", self.predicted_xyxy, self.predicted_scores),
        ):
            if len(values) != len(boxes):
                raise ValueError(
                    f"ImagePrediction {self.image_id!r} has {len(boxes)} boxes but "
                    f"{len(values)} {name}; pass one per box, or none for the defaults."
                )

    @property
    def is_parse_failure(self) -> bool:
        """True when the answer gave no usable box."""
        return not self.predicted_xyxy
