"""`evaluate` module: grounding mean IoU and precision / recall / F1 at an IoU threshold.

Load it offline with `evaluate.load(hf_meddiff.metrics.module_path("grounding"))`.
"""

import datasets
import evaluate

from hf_meddiff.metrics.grounding import grounding_scores

_DESCRIPTION = """Predicted boxes (`<box>[x0,y0,x1,y1]</box>` in the completion text) are matched one-to-one to the
reference boxes (0..999 xyxy) by the Hungarian algorithm on IoU; mean IoU averages over reference boxes, precision and
recall count matched pairs with IoU >= iou_threshold."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): completions holding <box> tags.
    references (`list[list[list[int]]]`): reference boxes per example.
    iou_threshold (`float`, defaults to 0.5).
Returns:
    mean_iou, precision, recall, f1, num_predicted, num_reference, num_hits.
Examples:
    >>> import evaluate
    >>> from hf_meddiff.metrics import module_path
    >>> metric = evaluate.load(module_path("grounding"))
    >>> metric.compute(predictions=["<box>[0,0,10,10]</box>"], references=[[[0, 0, 10, 10]]])["recall"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Grounding(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                }
            ),
        )

    def _compute(self, predictions, references, iou_threshold=0.5):
        return grounding_scores(predictions, references, iou_threshold=iou_threshold)
