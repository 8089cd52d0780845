"""The YOLACT meta-architecture: detectron2's ``list[dict]`` in, ``Instances`` (or losses) out."""
import logging
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances

from ..layers import PRECISIONS, convert_group_norms, inference_autocast, input_region, resolve_precision
from .anchors import YolactAnchorGenerator, build_box2box_transform
from .config_checks import check_yolact_config
from .head import build_yolact_head
from .loss import YolactLoss
from .mask_rescoring import MaskIoUNet
from .masks import assemble_mask_logits, box_crop_masks
from .postprocessing import build_postprocessor, masks_to_image
from .protonet import build_protonet
from .semantic_seg import YolactSemSegHead

__all__ = ["YOLACT", "Detections", "as_float_image", "resize_to_input", "detections_to_instances",
           "output_image_size"]

logger = logging.getLogger(__name__)

# Parameter prefixes of checkpoints written before the semantic-segmentation conv moved from the loss to its
# own head: old prefix -> new prefix.
_RENAMED_PARAMETERS = {"loss.semantic_seg_conv.": "sem_seg_head.conv."}


class Detections(NamedTuple):
    """One image's detections at network-input resolution, before they are mapped to the output image."""

    boxes: torch.Tensor  # (D, 4) XYXY in input pixels, clipped to the image's region
    scores: torch.Tensor  # (D,) by decreasing value
    classes: torch.Tensor  # (D,) int64
    masks: torch.Tensor  # (D, Hp, Wp) soft, cropped by the boxes, at prototype resolution over the whole input
    mask_scores: Optional[torch.Tensor] = None  # (D,) YOLACT++: score * predicted mask IoU; None without re-scoring

# MODEL.YOLACT.MASK_RESCORING.BOX_SCORES: what YOLACT++ scores its boxes with.
BOX_SCORES = ("class", "rescored")


def as_float_image(image: torch.Tensor) -> torch.Tensor:
    """A model input's ``image`` (3, H, W) or (1, H, W), uint8 or float, as float32 (3, H, W), same device."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"YOLACT expects each 'image' as a (3, H, W) tensor in INPUT.FORMAT (a 1-channel image is "
            f"replicated); got shape {tuple(image.shape)}. Convert 4-channel (alpha) images to 3 channels."
        )
    return image.to(torch.float32).expand(3, -1, -1)


def output_image_size(x: Dict) -> Tuple[int, int]:
    """(H, W) of the image a model input's detections are returned in: its ``height`` and ``width``, else its
    ``image``'s."""
    return int(x.get("height", x["image"].shape[-2])), int(x.get("width", x["image"].shape[-1]))


def resize_to_input(
    image: torch.Tensor, input_size: int, preserve_aspect_ratio: bool, pad_value: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """
    YOLACT's one test-time resize (the original's ``FastBaseTransform``): place a float image (3, H, W) of
    pixel values in the square network input. It is resized with bilinear ``F.interpolate`` (half-pixel
    centres, no antialiasing, no rounding) to its region (h, w) = :func:`yolact_d2.layers.input_region`, then
    padded at the bottom and right with ``pad_value`` (3,) (the pixel mean: zero once normalised; default 0) to
    (3, S, S), S = ``input_size``; an image already of its region's size is only padded.

    Returns:
        the input (3, S, S) and the region (h, w) it occupies at its top left.
    """
    region = input_region(*image.shape[-2:], input_size, preserve_aspect_ratio)
    if tuple(image.shape[-2:]) != region:
        image = F.interpolate(image[None], size=region, mode="bilinear", align_corners=False)[0]
    if region == (input_size, input_size):
        return image, region
    padded = image.new_zeros(image.shape[0], input_size, input_size)
    if pad_value is not None:
        padded[:] = pad_value.to(image).reshape(-1, 1, 1)
    padded[:, : region[0], : region[1]] = image
    return padded, region


def detections_to_instances(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor,
    region: Tuple[int, int], input_size: int, output_size: Tuple[int, int], mask_threshold: float,
    mask_scores: Optional[torch.Tensor] = None,
) -> Instances:
    """
    Map one image's detections from the network input to its output image.

    Args:
        boxes: (D, 4) XYXY in input pixels, inside ``region``; scores (D,); classes (D,) int64.
        masks: (D, Hp, Wp) soft masks covering the whole S x S input, S = ``input_size``.
        region: (h, w), the top-left part of the input the image occupies; it maps onto ``output_size`` (H, W).
        mask_scores: (D,) scores of the masks where they differ from the boxes' (YOLACT++'s re-scoring).
    Returns:
        :class:`Instances` of ``output_size`` with ``pred_boxes`` (clipped), ``scores``, ``pred_classes``,
        ``pred_masks`` (bool (D, H, W), the masks resized and binarised at ``mask_threshold``) and, when given,
        ``mask_scores``.
    """
    boxes = Boxes(boxes)
    boxes.scale(output_size[1] / region[1], output_size[0] / region[0])
    boxes.clip(output_size)
    result = Instances(output_size)
    result.pred_boxes = boxes
    result.scores = scores
    result.pred_classes = classes
    result.pred_masks = masks_to_image(masks, region, (input_size, input_size), output_size, mask_threshold)
    if mask_scores is not None:
        result.mask_scores = mask_scores
    return result


def _to_float32(predictions: Dict) -> Dict:
    """``predictions`` with every tensor, also those in nested dicts, cast to float32."""
    return {
        name: _to_float32(value) if isinstance(value, dict) else value.float() for name, value in predictions.items()
    }


def _resolve_config_precision(cfg) -> str:
    """:func:`resolve_precision` of ``MODEL.YOLACT.PRECISION`` on ``MODEL.DEVICE``, its errors naming the key."""
    try:
        return resolve_precision(cfg.MODEL.YOLACT.PRECISION, cfg.MODEL.DEVICE)
    except ValueError as e:
        raise ValueError(f"MODEL.YOLACT.PRECISION={cfg.MODEL.YOLACT.PRECISION!r} with MODEL.DEVICE "
                         f"{cfg.MODEL.DEVICE!r}: {e}") from e


@META_ARCH_REGISTRY.register()
class YOLACT(nn.Module):
    """
    YOLACT (and YOLACT++ by config): a backbone with an FPN, a protonet producing k prototypes, a head
    predicting per anchor class scores, box deltas and k mask coefficients; masks are sigmoid(P C^T) cropped
    by the box. YOLACT++ adds deformable convs to the backbone, more anchors, and a mask IoU net whose
    prediction multiplies the scores of the masks (``mask_rescoring``; of the boxes too with ``box_scores``
    "rescored").

    Inputs (detectron2's format): a list of dicts with ``image`` (3, H, W) in ``INPUT.FORMAT`` (uint8 or
    float, any size: images are resized to the square network input inside the model), optional ``height``
    / ``width`` (output size, default the image's size) and, in training, ``instances`` (``gt_boxes``,
    ``gt_classes``, ``gt_masks`` in pixels of the network input) and optional ``crowd_boxes``.
    Outputs: in training a dict of losses; at inference a list of ``{"instances": Instances}`` with
    ``pred_boxes`` (XYXY, output pixels), ``scores``, ``pred_classes``, ``pred_masks`` (bool, H x W) and, with
    re-scoring, ``mask_scores``. At inference the network runs in ``MODEL.YOLACT.PRECISION`` (float32, or
    bfloat16 / float16 by autocast) and the post-processing in float32 (:meth:`inference`).

    ``forward`` dispatches to :meth:`forward_training` or :meth:`forward_inference`, as detectron2's models.
    The steps of inference are public: :meth:`preprocess_image` (and :meth:`normalize` for one image),
    :meth:`predict` (the network's raw outputs), :meth:`inference` (per-image :class:`Detections` at network
    input resolution, what export records) and :func:`detections_to_instances`. Each step runs inside a
    ``torch.profiler.record_function`` range named ``yolact/<step>`` (preprocess, backbone, protonet, head,
    decode_nms, masks, to_instances), so that any PyTorch profile shows where inference spends its time.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        protonet: nn.Module,
        head: nn.Module,
        anchor_generator: YolactAnchorGenerator,
        box2box_transform: Box2BoxTransform,
        postprocessor: nn.Module,
        loss: nn.Module,
        sem_seg_head: Optional[nn.Module] = None,
        mask_rescoring: Optional[nn.Module] = None,
        in_features: List[str],
        input_size: int,
        preserve_aspect_ratio: bool,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        mask_threshold: float,
        channels_last: bool = False,
        box_scores: str = "class",
        precision: str = "float32",
    ):
        """
        The modules and settings are those :meth:`from_config` builds from ``MODEL.YOLACT``. ``precision``, what
        the network runs in at inference (:meth:`inference`), one of :data:`yolact_d2.layers.PRECISIONS`, is taken
        as given: :meth:`from_config` resolves ``MODEL.YOLACT.PRECISION`` for ``MODEL.DEVICE`` with
        :func:`yolact_d2.layers.resolve_precision`.
        """
        super().__init__()
        self.backbone = backbone
        self.protonet = protonet
        self.head = head
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.postprocessor = postprocessor
        self.loss = loss
        self.sem_seg_head = sem_seg_head
        self.mask_rescoring = mask_rescoring
        self.in_features = list(in_features)
        self.input_size = input_size
        self.preserve_aspect_ratio = preserve_aspect_ratio
        self.mask_threshold = mask_threshold
        self.channels_last = channels_last
        if box_scores not in BOX_SCORES:
            raise ValueError(f"MODEL.YOLACT.MASK_RESCORING.BOX_SCORES={box_scores!r} is not one of {BOX_SCORES}")
        self.box_scores = box_scores
        if precision not in PRECISIONS:
            raise ValueError(f"MODEL.YOLACT.PRECISION={precision!r} is not one of {PRECISIONS}")
        self.precision = precision
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if channels_last:  # conv weights in the layout of the activations: no reordering at every step
            convert_group_norms(self).to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        check_yolact_config(cfg)
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        in_features = list(cfg.MODEL.YOLACT.IN_FEATURES)
        missing = [f for f in in_features + [cfg.MODEL.YOLACT.PROTONET.IN_FEATURE] if f not in shapes]
        if missing:
            raise ValueError(f"MODEL.YOLACT features {missing} are not backbone outputs {sorted(shapes)}")
        anchor_generator = YolactAnchorGenerator(cfg)
        return {
            "backbone": backbone,
            "protonet": build_protonet(cfg, shapes),
            "head": build_yolact_head(cfg, [shapes[f] for f in in_features], anchor_generator.num_anchors),
            "anchor_generator": anchor_generator,
            "box2box_transform": build_box2box_transform(cfg),
            "postprocessor": build_postprocessor(cfg),
            "loss": YolactLoss(cfg),
            "sem_seg_head": YolactSemSegHead(cfg, shapes) if cfg.MODEL.YOLACT.LOSS.SEM_SEG else None,
            "mask_rescoring": MaskIoUNet(cfg) if cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED else None,
            "in_features": in_features,
            "input_size": cfg.MODEL.YOLACT.INPUT_SIZE,
            "preserve_aspect_ratio": cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "mask_threshold": cfg.MODEL.YOLACT.POSTPROCESS.MASK_THRESH,
            "channels_last": cfg.MODEL.YOLACT.CHANNELS_LAST,
            "box_scores": cfg.MODEL.YOLACT.MASK_RESCORING.BOX_SCORES,
            "precision": _resolve_config_precision(cfg),
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def class_dependent_layers(self) -> List[str]:
        """
        The names of the layers with one output per class: the class scores, the semantic segmentation conv and
        the last conv of the mask re-scoring net, where the model has them. A checkpoint trained for another class
        count fits everything else (see :class:`yolact_d2.engine.YolactCheckpointer`).
        """
        layers = [self.head.cls_score, self.sem_seg_head.conv if self.sem_seg_head is not None else None]
        if self.mask_rescoring is not None:
            layers.append([m for m in self.mask_rescoring.modules() if isinstance(m, nn.Conv2d)][-1])
        names = {module: name for name, module in self.named_modules()}
        return [names[layer] for layer in layers if layer is not None]

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """One input ``image`` (C, H, W) as :func:`as_float_image` takes it: float (3, H, W), (x - mean) / std."""
        return (as_float_image(image.to(self.device)) - self.pixel_mean) / self.pixel_std

    def preprocess_image(self, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """
        Resize each image into the square network input (:func:`resize_to_input`: padded with the pixel mean
        when the aspect ratio is preserved), normalise and batch them.

        Returns:
            images (N, 3, S, S) and, per image, the (h, w) region of the input it occupies.
        """
        if len(batched_inputs) == 0:
            raise ValueError("YOLACT got an empty list of inputs")
        images, regions = [], []
        for x in batched_inputs:
            image, region = resize_to_input(
                as_float_image(x["image"].to(self.device)), self.input_size, self.preserve_aspect_ratio,
                self.pixel_mean,
            )
            images.append(self.normalize(image))
            regions.append(region)
        return torch.stack(images), regions

    def anchor_grid(self, features: Dict[str, torch.Tensor]) -> List[Tuple[int, int]]:
        """(Hl, Wl) of each of the head's feature maps, the grid of its anchors."""
        return [tuple(features[f].shape[-2:]) for f in self.in_features]

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Backbone, protonet and head on a normalised batch (N, 3, S, S).

        Returns:
            dict: ``features`` (the backbone's, by name), ``prototypes`` (N, k, Hp, Wp), ``cls_logits``
            (N, R, C + 1), ``box_deltas`` (N, R, 4), ``coefs`` (N, R, k), ``anchors`` (R, 4) XYXY in input pixels.
        """
        if self.channels_last:  # the convolutions keep the layout of their input
            images = images.contiguous(memory_format=torch.channels_last)
        with record_function("yolact/backbone"):
            features = self.backbone(images)
        with record_function("yolact/protonet"):
            prototypes = self.protonet(features)
        with record_function("yolact/head"):
            head_features = [features[f] for f in self.in_features]
            cls_logits, box_deltas, coefs = self.head(head_features)
            anchors = self.anchor_generator(
                self.anchor_grid(features), tuple(images.shape[-2:]), images.device, images.dtype
            )
        return {
            "features": features,
            "prototypes": prototypes,
            "cls_logits": cls_logits,
            "box_deltas": box_deltas,
            "coefs": coefs,
            "anchors": anchors,
        }

    def forward(self, batched_inputs: List[Dict]):
        """:meth:`forward_training` in training mode, else :meth:`forward_inference`."""
        if self.training:
            return self.forward_training(batched_inputs)
        return self.forward_inference(batched_inputs)

    def forward_training(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        """The weighted losses (see :class:`YolactLoss`) of a batch whose inputs all hold ``instances``."""
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("YOLACT in training mode needs 'instances' in every input dict")
        images, _ = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        crowd_boxes = [x.get("crowd_boxes", Boxes(torch.zeros(0, 4))).to(self.device) for x in batched_inputs]
        predictions = self.predict(images)
        predictions["relative_anchors"] = self.anchor_generator.relative(
            self.anchor_grid(predictions["features"]), tuple(images.shape[-2:]), images.device
        )
        if self.sem_seg_head is not None:
            predictions["sem_seg_logits"] = self.sem_seg_head(predictions["features"])
        # The losses run in float32 whatever precision the network ran in (autocast): OHEM's ranking, the mask
        # products and the logs see float32 casts of the network's outputs, as inference's post-processing does.
        del predictions["features"]
        with torch.autocast(self.device.type, enabled=False):
            return self.loss(
                _to_float32(predictions), gt_instances, crowd_boxes, self.box2box_transform, self.mask_rescoring
            )

    def forward_inference(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """Per input, ``{"instances": Instances}`` in the output image's pixels (see the class docstring)."""
        with record_function("yolact/preprocess"):
            images, regions = self.preprocess_image(batched_inputs)
        detections = self.inference(images, regions)
        with record_function("yolact/to_instances"):
            return [
                {"instances": detections_to_instances(
                    d.boxes, d.scores, d.classes, d.masks, region, self.input_size, output_image_size(x),
                    self.mask_threshold, d.mask_scores,
                )}
                for d, region, x in zip(detections, regions, batched_inputs)
            ]

    def inference(self, images: torch.Tensor, regions: List[Tuple[int, int]]) -> List[Detections]:
        """
        Detect on a normalised batch (N, 3, S, S) whose image i occupies ``regions[i]`` (h, w) of the input:
        per image, its :class:`Detections` at network input resolution, before pasting onto the image.
        The network (:meth:`predict`, and the mask re-scoring net) runs in ``self.precision``; its outputs
        return to float32 before :meth:`detect`, so that box decoding, NMS (whose IoUs bfloat16's 8-bit
        mantissa would distort) and mask assembly run in float32.
        """
        with inference_autocast(self.precision, self.device):
            predictions = self.predict(images)
        # the features are not needed after the network
        predictions = {name: value.float() for name, value in predictions.items() if name != "features"}
        return [self.detect(predictions, i, region) for i, region in enumerate(regions)]

    def decode(self, predictions: Dict, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Image ``i``'s boxes (R, 4), XYXY in input pixels, and foreground class probabilities (R, C)."""
        scores = predictions["cls_logits"][i].softmax(dim=-1)[:, :-1]
        boxes = self.box2box_transform.apply_deltas(predictions["box_deltas"][i], predictions["anchors"])
        return boxes, scores

    def assemble_masks(self, prototypes: torch.Tensor, coefs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """
        Soft masks sigmoid(P C^T) of the kept detections, cropped by their boxes (1 px padding).

        Args:
            prototypes: (k, Hp, Wp); coefs: (D, k); boxes: (D, 4) XYXY in input pixels.
        Returns:
            (D, Hp, Wp) in [0, 1], zero outside the boxes.
        """
        proto_size = tuple(prototypes.shape[-2:])
        scale = boxes.new_tensor([proto_size[1], proto_size[0]] * 2) / self.input_size
        return assemble_mask_logits(prototypes, coefs).sigmoid() * box_crop_masks(boxes * scale, proto_size)

    def rescore(self, masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """
        YOLACT++: scores (D,) times the mask IoU that the re-scoring net, run in ``self.precision``, predicts for
        each class (masks (D, Hp, Wp), classes (D,) int64); float32.
        """
        with inference_autocast(self.precision, self.device):
            mask_ious = self.mask_rescoring(masks)
        return scores * mask_ious.float().gather(1, classes[:, None]).squeeze(1)

    def detect(self, predictions: Dict, i: int, region: Tuple[int, int]) -> Detections:
        """
        Decode, NMS, assemble and crop the masks (and re-score) of image ``i`` of :meth:`predict`'s output, at
        network input resolution. Traceable: no Python control flow depends on tensor values.
        With YOLACT++'s re-scoring, ``mask_scores`` is score * predicted mask IoU; with ``box_scores``
        "rescored" the scores are the mask scores too, and the detections are re-sorted by them.
        """
        with record_function("yolact/decode_nms"):
            boxes, scores = self.decode(predictions, i)
            keep, classes, det_scores = self.postprocessor(boxes, scores)
        with record_function("yolact/masks"):
            boxes = boxes[keep]
            boxes = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([region[1], region[0]] * 2))
            masks = self.assemble_masks(predictions["prototypes"][i], predictions["coefs"][i][keep], boxes)
            if self.mask_rescoring is None:
                return Detections(boxes, det_scores, classes, masks)
            mask_scores = self.rescore(masks, classes, det_scores)
            if self.box_scores == "rescored":
                mask_scores, order = mask_scores.sort(descending=True)
                boxes, det_scores, classes, masks = boxes[order], mask_scores, classes[order], masks[order]
        return Detections(boxes, det_scores, classes, masks, mask_scores)

    @staticmethod
    def rename_legacy_keys(state_dict: Dict, prefix: str = "") -> None:
        """Rename, in place, the parameters of checkpoints written before a module moved (:data:`_RENAMED_PARAMETERS`)."""
        for old, new in _RENAMED_PARAMETERS.items():
            renamed = [k for k in state_dict if k.startswith(prefix + old)]
            for key in renamed:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
            if renamed:
                logger.info(f"Checkpoint in an earlier layout: loaded its '{old}*' parameters as '{new}*'")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.rename_legacy_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
