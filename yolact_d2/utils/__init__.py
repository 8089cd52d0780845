"""Helpers for using yolact_d2's outputs in other programs."""
# instances_to_coco_dicts, mask_to_polygons, coco_category_ids, coco_image_ids
from .coco_format import *  # noqa: F401,F403
