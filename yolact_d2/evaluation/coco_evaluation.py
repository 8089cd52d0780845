"""
COCO evaluation of detections whose boxes and masks have different scores: YOLACT++ scores its boxes with the
class score and its masks with the class score times the predicted mask IoU (``Instances.mask_scores``), and
the original evaluates box AP with the first and mask AP with the second.
"""
import os
from typing import Dict, List, Optional, Sequence

from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances

__all__ = ["YolactCOCOEvaluator", "instances_to_yolact_coco_json"]


def instances_to_yolact_coco_json(instances: Instances, img_id: int) -> List[Dict]:
    """
    detectron2's ``instances_to_coco_json`` (``score`` from ``instances.scores``), with ``mask_score`` from
    ``instances.mask_scores`` in each result where the instances have them.
    """
    results = instances_to_coco_json(instances, img_id)
    if instances.has("mask_scores"):
        for result, score in zip(results, instances.mask_scores.tolist()):
            result["mask_score"] = score
    return results


class YolactCOCOEvaluator(DatasetEvaluator):
    """
    Two passes of detectron2's :class:`COCOEvaluator` over the same outputs: "bbox" over the instances' boxes
    with their ``scores``, "segm" over their masks with their ``mask_scores`` where they have them (YOLACT++
    with re-scoring), else with their ``scores``, so that instances without mask scores get exactly
    COCOEvaluator's numbers. Each mask is RLE-encoded once, by the "segm" pass.

    With ``output_dir``, the "bbox" pass writes COCOEvaluator's ``instances_predictions.pth`` and
    ``coco_instances_results.json`` (boxes, box scores) there, and the "segm" pass writes its own two (boxes and
    masks, mask scores: the file to submit for segm) to ``output_dir/segm``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] = ("bbox", "segm"),
        distributed: bool = True,
        output_dir: Optional[str] = None,
        **coco_evaluator_kwargs,
    ):
        """
        Args:
            dataset_name, distributed, output_dir, coco_evaluator_kwargs: as :class:`COCOEvaluator`'s
                (``max_dets_per_image``, ``use_fast_impl``...), given to both passes.
            tasks: a non-empty subset of ("bbox", "segm").
        """
        unknown = sorted(set(tasks) - {"bbox", "segm"})
        if unknown or not tasks:
            raise ValueError(f"YolactCOCOEvaluator evaluates tasks 'bbox' and 'segm'; got {tuple(tasks)}")
        self._passes = {}
        if "bbox" in tasks:
            self._passes["bbox"] = COCOEvaluator(
                dataset_name, ("bbox",), distributed, output_dir, **coco_evaluator_kwargs
            )
        if "segm" in tasks:
            segm_dir = os.path.join(output_dir, "segm") if output_dir else None
            self._passes["segm"] = COCOEvaluator(
                dataset_name, ("segm",), distributed, segm_dir, **coco_evaluator_kwargs
            )

    def reset(self):
        for evaluator in self._passes.values():
            evaluator.reset()

    def process(self, inputs: List[Dict], outputs: List[Dict]):
        for task, evaluator in self._passes.items():
            evaluator.process(inputs, [{"instances": _scored_for_task(o["instances"], task)} for o in outputs])

    def evaluate(self, img_ids: Optional[List[int]] = None) -> Dict[str, Dict[str, float]]:
        """
        ``{task: COCOEvaluator's metrics of that task}`` over the images ``img_ids`` (default: all); ``{}`` on
        processes other than the main one.
        """
        results = {}
        for evaluator in self._passes.values():
            results.update(evaluator.evaluate(img_ids))
        return results


def _scored_for_task(instances: Instances, task: str) -> Instances:
    """
    A shallow copy of ``instances`` (its fields shared) for the COCO ``task``: for "segm", ``scores`` replaced
    by ``mask_scores`` where the instances have them; for "bbox", without ``pred_masks`` (box results only).
    """
    fields = dict(instances.get_fields())
    if task == "segm" and "mask_scores" in fields:
        fields["scores"] = fields["mask_scores"]
    if task == "bbox":
        fields.pop("pred_masks", None)
    return Instances(instances.image_size, **fields)
