"""The dataset mapper of YOLACT: reads an image and its annotations, augments them and builds the model inputs."""
import copy
import logging
from typing import List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, polygons_to_bitmask

from .images import UnusableImageError, read_image
from .transforms import (
    PhotometricDistort,
    RandomExpand,
    RandomFlip,
    RandomSampleCrop,
    ResizeToSquare,
    TransposeTransform,
    box_centres_inside,
)

__all__ = ["YolactDatasetMapper", "build_yolact_augmentation", "transform_annotations"]

logger = logging.getLogger(__name__)


def build_yolact_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """
    The training augmentations of the original YOLACT in its order, each switched by
    ``cfg.MODEL.YOLACT.AUGMENTATION`` or ``cfg.INPUT.RANDOM_FLIP``: photometric distortion, expand, random sample
    crop, flip; then, with ``AUGMENTATION.DIHEDRAL`` (not in the original), a random vertical flip and a random
    transpose; then the resize to the ``MODEL.YOLACT.INPUT_SIZE`` square network input. The expand canvas and
    the padding are filled with ``MODEL.PIXEL_MEAN`` (rounded), in ``INPUT.FORMAT`` channel order.

    At test time there is none: the image goes to the model as read, and the model resizes it
    (:func:`yolact_d2.modeling.meta_arch.resize_to_input`), as every other way of running it does.
    """
    if not is_train:
        return []
    pad_value = tuple(int(round(v)) for v in cfg.MODEL.PIXEL_MEAN)
    aug_cfg = cfg.MODEL.YOLACT.AUGMENTATION
    augs = []
    if aug_cfg.PHOTOMETRIC:
        augs.append(PhotometricDistort(cfg.INPUT.FORMAT))
    if aug_cfg.EXPAND:
        augs.append(RandomExpand(aug_cfg.MAX_EXPAND, pad_value))
    if aug_cfg.SAMPLE_CROP:
        augs.append(RandomSampleCrop())
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal", vertical=cfg.INPUT.RANDOM_FLIP == "vertical")
        )
    if aug_cfg.DIHEDRAL:
        augs += [RandomFlip(horizontal=False, vertical=True), T.RandomApply(TransposeTransform(), prob=0.5)]
    augs.append(ResizeToSquare(cfg.MODEL.YOLACT.INPUT_SIZE, cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO, pad_value))
    return augs


def _annotation_boxes(annos: List[dict]) -> np.ndarray:
    """(N, 4) float32 boxes of the annotations, XYXY in absolute pixels."""
    boxes = [BoxMode.convert(anno["bbox"], anno["bbox_mode"], BoxMode.XYXY_ABS) for anno in annos]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _is_crowd(annos: List[dict]) -> np.ndarray:
    """(N,) bool array: whether each annotation is a crowd region."""
    return np.asarray([anno.get("iscrowd", 0) == 1 for anno in annos], dtype=bool)


def _segmentation_to_mask(segm, height: int, width: int) -> np.ndarray:
    """(height, width) uint8 0/1 mask of a segmentation: a list of polygons or a COCO RLE (compressed or not)."""
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, height, width).astype(np.uint8)
    if isinstance(segm["counts"], list):
        segm = mask_util.frPyObjects(segm, height, width)
    return mask_util.decode(segm)


def transform_annotations(
    annos: List[dict], transforms: T.TransformList, original_size: Tuple[int, int], image_size: Tuple[int, int]
) -> Tuple[Instances, Boxes]:
    """
    Apply ``transforms`` to the annotations of one image and build YOLACT's ground truth.

    Each mask is rasterised at the original size and transformed as a segmentation (nearest interpolation);
    its ground-truth box is the tight box of the transformed mask. An annotation is kept when the centre of its
    box, mapped by ``transforms``, lies strictly inside the transformed image (the SSD crop rule; always true
    without a crop) and its transformed box is more than 1 pixel wide and high.

    Args:
        annos: detectron2 annotations of the original image: ``bbox``, ``bbox_mode``, ``category_id``,
            ``segmentation`` (polygons or COCO RLE) and optionally ``iscrowd``.
        transforms: from the original image to the network input.
        original_size, image_size: (height, width) of the original image and of the network input.

    Returns:
        Instances: the kept non-crowd annotations, of ``image_size``, with ``gt_boxes`` (Boxes, (N, 4) XYXY in
            absolute pixels), ``gt_classes`` (int64 tensor (N,)) and ``gt_masks`` (BitMasks, bool (N, H, W)).
        Boxes: (M, 4) boxes of the kept crowd annotations, XYXY in absolute pixels.
    """
    h, w = image_size
    masks = torch.zeros((len(annos), h, w), dtype=torch.bool)
    for i, anno in enumerate(annos):
        mask = transforms.apply_segmentation(_segmentation_to_mask(anno["segmentation"], *original_size))
        masks[i] = torch.from_numpy(mask > 0)
    boxes = BitMasks(masks).get_bounding_boxes()
    sides = boxes.tensor[:, 2:] - boxes.tensor[:, :2]
    inside = box_centres_inside(transforms.apply_box(_annotation_boxes(annos)), (0, 0, w, h))
    keep = torch.from_numpy(inside) & (sides > 1).all(dim=1)
    is_crowd = torch.from_numpy(_is_crowd(annos))
    things = keep & ~is_crowd

    instances = Instances(image_size)
    instances.gt_boxes = boxes[things]
    instances.gt_classes = torch.tensor([anno["category_id"] for anno in annos], dtype=torch.int64)[things]
    instances.gt_masks = BitMasks(masks[things])
    return instances, boxes[keep & is_crowd]


class YolactDatasetMapper:
    """
    Map a dataset dict in detectron2's format to the inputs of YOLACT:

    1. read the image (``INPUT.FORMAT``) and check its size;
    2. in training, apply YOLACT's SSD-style augmentations (:func:`build_yolact_augmentation`) to the image,
       boxes and masks, and resize them to the square network input (and pad, with ``PRESERVE_ASPECT_RATIO``);
    3. in training, build the ground truth (:func:`transform_annotations`); at test time drop the annotations
       and keep the image as read: the model resizes it.

    An image that cannot be read (a missing, corrupt or truncated file) raises an ``OSError`` naming the file;
    in training with ``DATALOADER.SKIP_CORRUPT_IMAGES`` the mapper instead logs a warning naming it and returns
    None, on which detectron2's ``MapDataset`` maps another image of the dataset in its place.

    The output dict keeps the input's keys (``file_name``, ``image_id``, ``height`` and ``width`` of the
    original image, so that predictions are rendered at that size) and adds:

    * ``image`` in ``INPUT.FORMAT``: in training a float32 tensor (3, S, S) of pixel values, S =
      ``MODEL.YOLACT.INPUT_SIZE`` (the original's resize keeps the interpolated values unrounded); at test time
      the uint8 image as read (3, H, W);
    * training only: ``instances`` (:class:`Instances` of size (S, S) with ``gt_boxes``, ``gt_classes`` and
      ``gt_masks``) and ``crowd_boxes`` (:class:`Boxes` (M, 4), the crowd regions, not in ``instances``);
      boxes are XYXY in absolute pixels of the network input.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        skip_unreadable_images: bool = False,
    ):
        """
        Args:
            is_train: whether to build the ground truth (annotations are dropped otherwise).
            augmentations: applied in order; in training the last one must resize to the network input.
            image_format: "BGR" or "RGB" (``INPUT.FORMAT``).
            skip_unreadable_images: return None, with a warning, for an image that cannot be read, rather than
                raise; for training only: an evaluation must see every image.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.skip_unreadable_images = skip_unreadable_images
        mode = "training" if is_train else "inference"
        logger.info(f"[YolactDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_yolact_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "skip_unreadable_images": is_train and cfg.DATALOADER.SKIP_CORRUPT_IMAGES,
        }

    def _read_image(self, dataset_dict: dict) -> np.ndarray:
        """
        The (H, W, 3) uint8 image of ``dataset_dict`` (:func:`yolact_d2.data.read_image`: upright, gray, alpha and
        16-bit images made 8-bit three-channel), checked against its ``height`` and ``width``.
        """
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        return image

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        """
        Args:
            dataset_dict: one image in detectron2's dataset format.

        Returns:
            dict: the model input described in the class docstring; None for an image that cannot be read, with
            ``skip_unreadable_images``.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        try:
            image = self._read_image(dataset_dict)
        except (OSError, UnusableImageError) as e:  # not a SizeMismatchError: the dataset's error, never skipped
            if not self.skip_unreadable_images:
                raise
            logger.warning(f"Skipping an image that cannot be read (DATALOADER.SKIP_CORRUPT_IMAGES): {e}")
            return None
        original_size = image.shape[:2]
        annos = dataset_dict.pop("annotations", [])

        aug_input = T.AugInput(image, boxes=_annotation_boxes(annos)[~_is_crowd(annos)])
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if self.is_train:
            dataset_dict["instances"], dataset_dict["crowd_boxes"] = transform_annotations(
                annos, transforms, original_size, image.shape[:2]
            )
        return dataset_dict
