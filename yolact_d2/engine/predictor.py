"""detectron2's DefaultPredictor for photographs as they come: any file, gray, with alpha, 16-bit."""
from typing import Union

import numpy as np

import detectron2.data.transforms as T
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from ..data.images import read_image, to_three_channels
from .checkpoint import YolactCheckpointer

__all__ = ["YolactPredictor"]


class YolactPredictor(DefaultPredictor):
    """
    :class:`DefaultPredictor` (one image in, the model's outputs for it out) that

    * takes an image file (read by :func:`yolact_d2.data.read_image`: EXIF orientation applied, gray
      replicated, alpha dropped, 16 bits scaled to 8) or an array in BGR order, (H, W) gray, (H, W, 3), or with
      alpha, uint8 or uint16 (:func:`yolact_d2.data.to_three_channels`), where DefaultPredictor takes only
      (H, W, 3) and fails on the others with a NumPy or PyTorch error;
    * loads ``MODEL.WEIGHTS`` with :class:`YolactCheckpointer`: weights of other shapes (another class count or
      architecture) are refused with their names, where DefaultPredictor leaves them random with a warning;
    * hands a YOLACT model the image as read, whatever ``INPUT.MIN_SIZE_TEST`` says: the model resizes it to its
      network input itself, once (:func:`yolact_d2.modeling.meta_arch.resize_to_input`). Other models get
      DefaultPredictor's shortest-edge resize of ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``. (DefaultPredictor
      on a YOLACT config hands it the image as read too when ``INPUT.MIN_SIZE_TEST`` is 0, as in the YOLACT
      configs: detectron2's "no resize at test time".)

    The outputs are those of the image's upright frame (H, W as read).
    """

    def __init__(self, cfg):  # pylint: disable=super-init-not-called
        # DefaultPredictor.__init__ with YolactCheckpointer instead of DetectionCheckpointer.
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg).eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        YolactCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        min_size = 0 if cfg.MODEL.META_ARCHITECTURE == "YOLACT" else cfg.INPUT.MIN_SIZE_TEST
        self.aug = T.ResizeShortestEdge([min_size] * 2, cfg.INPUT.MAX_SIZE_TEST)  # 0: no resize
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR'; got {self.input_format!r}")

    def __call__(self, image: Union[str, np.ndarray]):
        """
        Args:
            image: a file name, or an array in BGR order (see the class docstring).
        Returns:
            the model's outputs for the image, e.g. ``{"instances": Instances}`` of its (H, W).
        """
        image = read_image(image, "BGR") if isinstance(image, str) else to_three_channels(image)
        return super().__call__(image)
