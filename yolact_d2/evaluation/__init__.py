"""COCO evaluation of YOLACT / YOLACT++ results (box and mask scores apart)."""
from .coco_evaluation import YolactCOCOEvaluator, instances_to_yolact_coco_json
