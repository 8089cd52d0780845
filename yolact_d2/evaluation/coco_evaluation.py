"""
COCO evaluation of detections whose boxes and masks have different scores: YOLACT++ scores its boxes with the
class score and its masks with the class score times the predicted mask IoU (``Instances.mask_scores``), and
the original evaluates box AP with the first and mask AP with the second.
"""
import itertools
from typing import Dict, List

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances

__all__ = ["YolactCOCOEvaluator", "instances_to_yolact_coco_json"]

# The key of a COCO result that holds its mask's score, where it differs from the box's ("score").
MASK_SCORE = "mask_score"


def instances_to_yolact_coco_json(instances: Instances, img_id: int) -> List[Dict]:
    """
    detectron2's ``instances_to_coco_json`` (``score`` from ``instances.scores``), with ``mask_score`` from
    ``instances.mask_scores`` in each result where the instances have them.
    """
    results = instances_to_coco_json(instances, img_id)
    if instances.has("mask_scores"):
        for result, score in zip(results, instances.mask_scores.tolist()):
            result[MASK_SCORE] = score
    return results


def _scored_for_task(predictions: List[Dict], task: str) -> List[Dict]:
    """
    Copies of the per-image predictions (``{"image_id", "instances": COCO results}``) whose results are scored
    for ``task``: "segm" takes each result's ``mask_score`` as its ``score`` where it has one.
    """
    def scored(result: Dict) -> Dict:
        result = dict(result)
        if task == "segm" and MASK_SCORE in result:
            result["score"] = result[MASK_SCORE]
        return result

    return [{**p, "instances": [scored(r) for r in p["instances"]]} for p in predictions]


class YolactCOCOEvaluator(COCOEvaluator):
    """
    detectron2's COCOEvaluator, evaluating bbox with the instances' ``scores`` and segm with their
    ``mask_scores`` where they have them (YOLACT++ with re-scoring); other instances are evaluated exactly as
    COCOEvaluator does. ``coco_instances_results.json`` holds each result's ``score`` and ``mask_score``.
    """

    def process(self, inputs, outputs):
        for x, output in zip(inputs, outputs):
            instances = output["instances"].to(self._cpu_device)
            self._predictions.append(
                {"image_id": x["image_id"], "instances": instances_to_yolact_coco_json(instances, x["image_id"])}
            )

    def _eval_predictions(self, predictions, img_ids=None):
        """COCOEvaluator's evaluation, one task at a time on the results scored for it; the results file once."""
        tasks = self._tasks or self._tasks_from_predictions(
            list(itertools.chain(*[p["instances"] for p in predictions]))
        )
        own_tasks, output_dir = self._tasks, self._output_dir
        try:
            for task in sorted(tasks):  # "bbox" first: the results file has the box scores
                self._tasks = (task,)
                super()._eval_predictions(_scored_for_task(predictions, task), img_ids=img_ids)
                self._output_dir = None
        finally:
            self._tasks, self._output_dir = own_tasks, output_dir
