"""
YOLACT's training losses, with the original's definitions and normalisations: anchor matching, softmax
class loss with OHEM (or, as an option, the softmax focal loss), smooth-L1 box loss (or, as an option, GIoU on
the decoded boxes), mask BCE on assembled masks cropped by the GT box, and the semantic-segmentation auxiliary
loss.

Coordinates: anchors and GT boxes are XYXY in pixels of the (square, S x S) network input, except in the
matching, which compares them as the original does: as fractions of the input, float32 (see
:meth:`YolactLoss.match`).
"""
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fvcore.nn import giou_loss

from detectron2.config import configurable
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from .mask_rescoring import mask_iou
from .masks import assemble_mask_logits, batched_box_iou, box_crop_masks

__all__ = ["match_anchors", "force_best_anchors", "ohem_negatives", "softmax_focal_loss", "SampledMasks", "YolactLoss"]

POSITIVE, NEGATIVE, NEUTRAL = 1, 0, -1


class SampledMasks(NamedTuple):
    """The masks of one image's sampled positives, at prototype resolution (Hp, Wp)."""

    logits: torch.Tensor  # (D, Hp, Wp) assembled mask logits
    targets: torch.Tensor  # (D, Hp, Wp) {0, 1} GT masks, downsampled
    crop: torch.Tensor  # (D, Hp, Wp) bool, the GT box region (1 px padding)
    boxes: torch.Tensor  # (D, 4) GT boxes, XYXY in prototype pixels
    classes: torch.Tensor  # (D,) GT classes
    weight: float = 1.0  # the image's positives / D: its sampled masks stand for all of its positives


def _put_scalars(**values: float) -> None:
    """Record scalars in detectron2's event storage, as RetinaNet does; a no-op outside a training loop."""
    try:
        storage = get_event_storage()
    except (AssertionError, IndexError):  # no EventStorage context: a test or a tool calling the model
        return
    storage.put_scalars(**values)


def _crowd_overlap(anchors: torch.Tensor, crowd_boxes: torch.Tensor) -> torch.Tensor:
    """Best (intersection / anchor area) of each anchor (R, 4) with the crowd boxes (M, 4): (R,)."""
    if crowd_boxes.shape[0] == 0:
        return anchors.new_zeros(anchors.shape[0])
    lt = torch.maximum(anchors[:, None, :2], crowd_boxes[None, :, :2])
    rb = torch.minimum(anchors[:, None, 2:], crowd_boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = ((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])).clamp(min=1e-12)
    return (inter / area[:, None]).max(dim=1).values


def force_best_anchors(iou: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The original's forcing of each GT onto one anchor: repeatedly, the highest-IoU pair of a GT not yet
    forced and an anchor not yet claimed is forced; ties go to the lower GT index, then to the lower anchor
    index (the first maximum, as torch's ``max`` / ``argmax`` return it). Stops when every GT (or every
    anchor) is forced.

    That greedy order is computed in rounds instead of one step per GT: in a round every GT takes its best
    free anchor, and the pairs where the GT is also the anchor's best free GT are forced together. Such a
    pair precedes every other pair of its GT and of its anchor in the order above, so the greedy forces
    it too; the first pair of the order is always one, so each round forces at least one GT (usually all).
    A round reads one number from the device (the count forced).

    Args:
        iou: (G, R) IoU in [0, 1] of the GTs with the anchors.
    Returns:
        gts (F,) and anchors (F,) int64, the forced pairs, F = min(G, R), anchors distinct.
    """
    num_gt, num_anchors = iou.shape
    iou = iou.clone()
    gt_index = torch.arange(num_gt, device=iou.device)
    forced = torch.full_like(gt_index, -1)  # (G,) each GT's forced anchor, -1 while it has none
    left = min(num_gt, num_anchors)
    while left > 0:
        best_anchor = iou.argmax(dim=1)  # (G,) each GT's first best free anchor
        best_gt = iou[:, best_anchor].argmax(dim=0)  # (G,) the first best free GT of that anchor
        new = (forced < 0) & (best_gt == gt_index)
        forced = torch.where(new, best_anchor, forced)
        claimed = torch.zeros(num_anchors, dtype=torch.int64, device=iou.device).index_add_(0, best_anchor, new.long())
        iou.masked_fill_((claimed > 0)[None, :] | new[:, None], -1)  # out of the race, as in the original
        left -= int(new.sum())
    if num_gt > num_anchors:  # the GTs left without an anchor
        return gt_index[forced >= 0], forced[forced >= 0]
    return gt_index, forced


def match_anchors(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    crowd_boxes: torch.Tensor,
    positive_iou: float,
    negative_iou: float,
    crowd_iou: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    YOLACT's (SSD's) matching. Each anchor takes the GT it overlaps most (the lower GT index on a tie):
    positive if IoU >= positive_iou, negative if < negative_iou, neutral in between. Then each GT is forced
    onto its best anchor as a positive, greedily by decreasing IoU (:func:`force_best_anchors`). Finally
    non-positive anchors covered by a crowd box for more than ``crowd_iou`` of their area are neutral.

    Args:
        anchors: (R, 4); gt_boxes: (G, 4); crowd_boxes: (M, 4).
    Returns:
        matched (R,) int64 index of the matched GT (0 where G == 0), state (R,) int64: 1 positive,
        0 negative, -1 neutral.
    """
    num_anchors = anchors.shape[0]
    matched = torch.zeros(num_anchors, dtype=torch.int64, device=anchors.device)
    state = torch.full_like(matched, NEGATIVE)
    if gt_boxes.shape[0] > 0:
        iou = batched_box_iou(gt_boxes, anchors)  # (G, R)
        best_iou, matched = iou.max(dim=0)
        gts, forced = force_best_anchors(iou)
        best_iou[forced] = 2.0
        matched[forced] = gts
        state = torch.where(best_iou >= positive_iou, POSITIVE, torch.where(best_iou < negative_iou, NEGATIVE, NEUTRAL))
    crowded = (_crowd_overlap(anchors, crowd_boxes) > crowd_iou) & (state != POSITIVE)
    return matched, torch.where(crowded, torch.full_like(state, NEUTRAL), state)


def ohem_negatives(background_loss: torch.Tensor, state: torch.Tensor, neg_pos_ratio: int) -> torch.Tensor:
    """
    Online hard example mining: per image, the ``neg_pos_ratio * num_positives`` negatives with the highest
    background loss (-log p_background); positives and neutrals are never chosen.

    Args:
        background_loss: (N, R); state: (N, R) as from :func:`match_anchors`.
    Returns:
        bool (N, R), the chosen negatives.
    """
    loss = background_loss.detach().masked_fill(state != NEGATIVE, -1.0)
    rank = loss.argsort(dim=1, descending=True).argsort(dim=1)
    num_pos = (state == POSITIVE).sum(dim=1, keepdim=True)
    num_neg = (neg_pos_ratio * num_pos).clamp(max=state.shape[1] - 1)
    return (rank < num_neg) & (state == NEGATIVE)


def downsample_masks(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """bool/float masks (G, H, W) -> float {0, 1} (G, h, w): bilinear (half-pixel centres), then > 0.5."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    resized = F.interpolate(masks[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return (resized > 0.5).float()


def _smooth_l1_box_loss(deltas, anchors, gt_boxes, box2box_transform) -> torch.Tensor:
    """Smooth-L1 (beta 1) between predicted deltas (P, 4) and the encoding of the GT boxes, summed."""
    return F.smooth_l1_loss(deltas, box2box_transform.get_deltas(anchors, gt_boxes), beta=1.0, reduction="sum")


def _giou_box_loss(deltas, anchors, gt_boxes, box2box_transform) -> torch.Tensor:
    """1 - GIoU between the boxes decoded from (P, 4) deltas on their anchors and the GT boxes, summed."""
    return giou_loss(box2box_transform.apply_deltas(deltas, anchors), gt_boxes, reduction="sum")


BOX_REG_LOSSES = {"smooth_l1": _smooth_l1_box_loss, "giou": _giou_box_loss}
CLS_LOSS_TYPES = ("ohem", "softmax_focal")


def softmax_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """
    The focal loss on softmax probabilities, summed: -a (1 - p_t)^gamma log p_t for each row, where p_t is the
    softmax probability of the row's target class and a is ``alpha`` for a foreground target and 1 - alpha for
    the background (the last class), as RetinaNet weights its classes.

    Args:
        logits: (M, C + 1), background last; targets: (M,) int64 in [0, C].
    """
    log_pt = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    background = targets == logits.shape[-1] - 1
    weight = torch.where(background, torch.full_like(log_pt, 1 - alpha), torch.full_like(log_pt, alpha))
    return -(weight * (1 - log_pt.exp()) ** gamma * log_pt).sum()


class YolactLoss(nn.Module):
    """
    All of YOLACT's training losses. It has no parameters: the modules it trains (the semantic-segmentation
    head, the mask re-scoring net) are the model's; it receives their outputs or reads them. Box, class and
    mask losses are divided by the number of positives in the batch, the semantic loss by the batch size and
    the area of its feature map, as the original; with several levels, their normalised losses are summed.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        input_size: int,
        positive_iou: float,
        negative_iou: float,
        crowd_iou: float,
        loss_weights: Dict[str, float],
        cls_loss_type: str = "ohem",
        neg_pos_ratio: int = 3,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_reg_loss_type: str = "smooth_l1",
        masks_to_train: int = 100,
        min_gt_area: float = 25,
        detach_masks: bool = False,
    ):
        """
        Args:
            num_classes: C, foreground classes. input_size: S, the side of the square network input.
            positive_iou, negative_iou, crowd_iou: the matcher's thresholds (:func:`match_anchors`).
            loss_weights: the weight of each loss by name ("loss_cls", "loss_box_reg", "loss_mask", and the
                optional "loss_sem_seg" and "loss_mask_iou").
            cls_loss_type: one of :data:`CLS_LOSS_TYPES`; ``neg_pos_ratio`` for "ohem", ``focal_alpha`` and
                ``focal_gamma`` for "softmax_focal".
            box_reg_loss_type: a key of :data:`BOX_REG_LOSSES`.
            masks_to_train: positives per image whose masks are trained (sampled at random when more).
            min_gt_area: mask re-scoring leaves out GT masks of at most this many prototype pixels.
            detach_masks: feed the mask re-scoring net detached masks, so that its loss trains only that net
                (the original lets it train the coefficients and prototypes too).
        """
        super().__init__()
        if cls_loss_type not in CLS_LOSS_TYPES:
            raise ValueError(f"MODEL.YOLACT.LOSS.CLS_LOSS_TYPE={cls_loss_type!r} is not one of {CLS_LOSS_TYPES}")
        if box_reg_loss_type not in BOX_REG_LOSSES:
            raise ValueError(
                f"MODEL.YOLACT.LOSS.BOX_REG_LOSS_TYPE={box_reg_loss_type!r} is not one of {sorted(BOX_REG_LOSSES)}"
            )
        self.num_classes = num_classes
        self.input_size = input_size
        self.matcher_cfg = (positive_iou, negative_iou, crowd_iou)
        self.weights = dict(loss_weights)
        self.cls_loss_type = cls_loss_type
        self.neg_pos_ratio = neg_pos_ratio
        self.focal = (focal_alpha, focal_gamma)
        self.box_reg_loss_type = box_reg_loss_type
        self.masks_to_train = masks_to_train
        self.min_gt_area = min_gt_area
        self.detach_mask_iou_input = detach_masks

    @classmethod
    def from_config(cls, cfg):
        ycfg, lcfg = cfg.MODEL.YOLACT, cfg.MODEL.YOLACT.LOSS
        return {
            "num_classes": ycfg.NUM_CLASSES,
            "input_size": ycfg.INPUT_SIZE,
            "positive_iou": ycfg.MATCHER.POSITIVE_IOU,
            "negative_iou": ycfg.MATCHER.NEGATIVE_IOU,
            "crowd_iou": ycfg.MATCHER.CROWD_IOU,
            "loss_weights": {
                "loss_cls": lcfg.CLS_WEIGHT,
                "loss_box_reg": lcfg.BOX_WEIGHT,
                "loss_mask": lcfg.MASK_WEIGHT,
                "loss_sem_seg": lcfg.SEM_SEG_WEIGHT,
                "loss_mask_iou": ycfg.MASK_RESCORING.LOSS_WEIGHT,
            },
            "cls_loss_type": lcfg.CLS_LOSS_TYPE,
            "neg_pos_ratio": lcfg.OHEM_NEG_POS_RATIO,
            "focal_alpha": lcfg.FOCAL_LOSS_ALPHA,
            "focal_gamma": lcfg.FOCAL_LOSS_GAMMA,
            "box_reg_loss_type": lcfg.BOX_REG_LOSS_TYPE,
            "masks_to_train": lcfg.MASKS_TO_TRAIN,
            "min_gt_area": ycfg.MASK_RESCORING.MIN_GT_AREA,
            "detach_masks": ycfg.MASK_RESCORING.DETACH_MASKS,
        }

    def match(self, relative_anchors: torch.Tensor, gt_instances: List[Instances], crowd_boxes: List[Boxes]):
        """
        Per image :func:`match_anchors`, in the original's frame: the anchors as it builds them
        (``YolactAnchorGenerator.relative``), the GT and crowd boxes divided by S in float32, as it holds them.
        The anchors' IoUs tie exactly in pixels but not in that frame, so the frame decides which anchor a GT
        is forced onto.

        Args:
            relative_anchors: (R, 4) float32, XYXY as fractions of the S x S input.
            gt_instances: per image, ``gt_boxes`` (G, 4) XYXY in input pixels.
            crowd_boxes: per image, (M, 4) XYXY in input pixels.
        Returns:
            matched GT indices (N, R) and states (N, R), as from :func:`match_anchors`.
        """
        def relative(boxes: Boxes) -> torch.Tensor:
            return boxes.tensor.to(relative_anchors.dtype) / self.input_size

        results = [
            match_anchors(relative_anchors, relative(gt.gt_boxes), relative(crowd), *self.matcher_cfg)
            for gt, crowd in zip(gt_instances, crowd_boxes)
        ]
        return torch.stack([r[0] for r in results]), torch.stack([r[1] for r in results])

    def class_loss(self, cls_logits, gt_instances, matched, state) -> torch.Tensor:
        """
        The class loss, summed (background is the last class): "ohem", softmax CE over the positives and the
        OHEM negatives (the original), or "softmax_focal", the focal loss over every positive and negative.
        """
        gt_classes = torch.stack([
            gt.gt_classes[m] if len(gt) > 0 else torch.zeros_like(m) for gt, m in zip(gt_instances, matched)
        ])
        targets = torch.where(state == POSITIVE, gt_classes, torch.full_like(gt_classes, self.num_classes))
        if self.cls_loss_type == "softmax_focal":
            selected = state != NEUTRAL
            return softmax_focal_loss(cls_logits[selected].float(), targets[selected], *self.focal)
        background_loss = torch.logsumexp(cls_logits, dim=-1) - cls_logits[..., -1]
        selected = (state == POSITIVE) | ohem_negatives(background_loss, state, self.neg_pos_ratio)
        return F.cross_entropy(cls_logits[selected], targets[selected], reduction="sum")

    def box_loss(self, box_deltas, anchors, gt_instances, matched, state, box2box_transform) -> torch.Tensor:
        """
        The box loss of the positive anchors, summed: "smooth_l1" (beta 1) on the SSD-encoded deltas, as the
        original, or "giou", 1 - GIoU of the decoded boxes with their GT boxes.
        """
        losses = []
        for deltas, gt, m, s in zip(box_deltas, gt_instances, matched, state):
            pos = s == POSITIVE
            if pos.any():
                losses.append(BOX_REG_LOSSES[self.box_reg_loss_type](
                    deltas[pos], anchors[pos], gt.gt_boxes.tensor[m[pos]], box2box_transform
                ))
        return torch.stack(losses).sum() if losses else box_deltas.sum() * 0

    def sample_masks(self, prototypes, coefs, gt_instances, matched, state) -> List[SampledMasks]:
        """
        Per image, up to ``masks_to_train`` random positives with their assembled mask logits and GT at
        prototype resolution, the GT-box crop (1 px padding), GT boxes in prototype pixels and, when positives
        were left out, the weight positives / sampled that keeps the image's expected mask loss.
        """
        proto_size = tuple(prototypes.shape[-2:])
        scale = prototypes.new_tensor([proto_size[1], proto_size[0]] * 2) / self.input_size
        samples = []
        for protos, coef, gt, m, s in zip(prototypes, coefs, gt_instances, matched, state):
            pos = (s == POSITIVE).nonzero().squeeze(1)
            num_pos = pos.numel()
            if num_pos == 0:
                continue
            if num_pos > self.masks_to_train:
                pos = pos[torch.randperm(num_pos, device=pos.device)[: self.masks_to_train]]
            gt_idx = m[pos]
            boxes = gt.gt_boxes.tensor[gt_idx] * scale
            samples.append(SampledMasks(
                logits=assemble_mask_logits(protos, coef[pos]),
                targets=downsample_masks(gt.gt_masks.tensor, proto_size)[gt_idx],
                crop=box_crop_masks(boxes, proto_size),
                boxes=boxes,
                classes=gt.gt_classes[gt_idx],
                weight=num_pos / pos.numel(),
            ))
        return samples

    @staticmethod
    def mask_loss(samples: List[SampledMasks]) -> torch.Tensor:
        """
        BCE of sigmoid(P C^T) against the GT mask, both cropped by the GT box, each mask's sum divided by
        its GT box area in prototype pixels; summed, each image's sum times its sample's ``weight``.
        """
        total = []
        for x in samples:
            bce = F.binary_cross_entropy_with_logits(x.logits, x.targets, reduction="none") * x.crop
            area = ((x.boxes[:, 2] - x.boxes[:, 0]) * (x.boxes[:, 3] - x.boxes[:, 1])).clamp(min=1e-6)
            total.append((bce.sum(dim=(1, 2)) / area).sum() * x.weight)
        return torch.stack(total).sum()

    def mask_iou_loss(self, samples: List[SampledMasks], net: nn.Module) -> torch.Tensor:
        """
        YOLACT++ re-scoring: smooth-L1 between the IoU ``net`` predicts for the GT class from the cropped soft
        mask and the IoU of that mask thresholded at 0.5 with its GT; masks whose GT covers at most
        ``min_gt_area`` prototype pixels are left out. Summed. The loss trains the masks too (their coefficients
        and the prototypes), unless ``detach_mask_iou_input``.
        """
        keep = [x.targets.sum(dim=(1, 2)) > self.min_gt_area for x in samples]
        if not any(k.any() for k in keep):
            return sum(p.sum() for p in net.parameters()) * 0
        masks = torch.cat([(x.logits.sigmoid() * x.crop)[k] for x, k in zip(samples, keep)])
        if self.detach_mask_iou_input:
            masks = masks.detach()
        gt_masks = torch.cat([x.targets[k] for x, k in zip(samples, keep)])
        classes = torch.cat([x.classes[k] for x, k in zip(samples, keep)])
        predicted = net(masks).gather(1, classes[:, None]).squeeze(1)
        return F.smooth_l1_loss(predicted, mask_iou(masks > 0.5, gt_masks), beta=1.0, reduction="sum")

    def semantic_loss(self, sem_seg_logits: Dict[str, torch.Tensor], gt_instances) -> torch.Tensor:
        """
        Sigmoid BCE of the semantic-segmentation logits of each level (N, C, h, w), as the model's
        :class:`~.semantic_seg.YolactSemSegHead` gives them, against per-class unions of GT masks downsampled
        to (h, w), summed over the map and divided by h * w; summed over the levels.
        """
        total = []
        for logits in sem_seg_logits.values():
            size = tuple(logits.shape[-2:])
            targets = torch.stack([self._class_unions(gt, size) for gt in gt_instances]).to(logits.dtype)
            total.append(F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / (size[0] * size[1]))
        return torch.stack(total).sum()

    def _class_unions(self, gt: Instances, size: Tuple[int, int]) -> torch.Tensor:
        """(C, h, w) {0, 1}: for each class the union of its GT masks downsampled to ``size``."""
        masks = downsample_masks(gt.gt_masks.tensor, size).flatten(1)  # (G, h * w)
        one_hot = F.one_hot(gt.gt_classes, self.num_classes).t().to(masks.dtype)  # (C, G)
        return (one_hot @ masks).clamp(max=1).reshape(self.num_classes, *size)

    def check_gt_classes(self, gt_instances: List[Instances]) -> None:
        """
        Refuse GT class ids >= ``num_classes``, for GT held on the CPU only: reading a device tensor's
        maximum would stall the device at every step, and training from the project's loader needs no such
        check (its class count is checked when the loader is built, and the mapper's ids are below it).
        """
        for gt in gt_instances:
            classes = gt.gt_classes
            if classes.device.type == "cpu" and len(classes) > 0 and int(classes.max()) >= self.num_classes:
                raise ValueError(
                    f"A GT class id {int(classes.max())} is >= MODEL.YOLACT.NUM_CLASSES={self.num_classes}: the "
                    f"config's class count disagrees with the dataset"
                )

    def forward(self, predictions: Dict, gt_instances: List[Instances], crowd_boxes: List[Boxes],
                box2box_transform: Box2BoxTransform, mask_rescoring: Optional[nn.Module] = None
                ) -> Dict[str, torch.Tensor]:
        """
        Args:
            predictions: from ``YOLACT.predict``: cls_logits (N, R, C + 1), box_deltas (N, R, 4),
                coefs (N, R, k), prototypes (N, k, Hp, Wp), anchors (R, 4) XYXY in input pixels (box coding);
                added by ``YOLACT.forward_training``: relative_anchors (R, 4), the same anchors in the
                matching's frame (:meth:`match`), and, when the model has a semantic-segmentation head,
                sem_seg_logits (per level (N, C, h, w)).
            gt_instances: per image, ``gt_boxes``, ``gt_classes``, ``gt_masks`` (BitMasks, S x S).
            crowd_boxes: per image, crowd regions (M, 4).
            mask_rescoring: YOLACT++'s mask IoU net, trained when given.
        Returns:
            dict of weighted losses. Inside a training loop (an event storage), the number of positive
            anchors and of trained masks per image are recorded too (``num_pos_anchors``, ``num_masks_trained``).
        """
        self.check_gt_classes(gt_instances)
        if "relative_anchors" not in predictions:
            raise KeyError(
                "YolactLoss needs predictions['relative_anchors'], the anchors of YolactAnchorGenerator.relative "
                "(as YOLACT.forward_training adds them) for the matching"
            )
        anchors = predictions["anchors"]
        matched, state = self.match(predictions["relative_anchors"], gt_instances, crowd_boxes)
        positives = int((state == POSITIVE).sum())
        num_pos = max(positives, 1)
        losses = {
            "loss_cls": self.class_loss(predictions["cls_logits"], gt_instances, matched, state) / num_pos,
            "loss_box_reg": self.box_loss(
                predictions["box_deltas"], anchors, gt_instances, matched, state, box2box_transform
            ) / num_pos,
        }
        samples = self.sample_masks(predictions["prototypes"], predictions["coefs"], gt_instances, matched, state)
        _put_scalars(
            num_pos_anchors=positives / len(gt_instances),
            num_masks_trained=sum(len(x.classes) for x in samples) / len(gt_instances),
        )
        zero = predictions["prototypes"].sum() * 0 + predictions["coefs"].sum() * 0
        losses["loss_mask"] = (self.mask_loss(samples) if samples else zero) / num_pos
        if mask_rescoring is not None:
            losses["loss_mask_iou"] = self.mask_iou_loss(samples, mask_rescoring) / num_pos
        if predictions.get("sem_seg_logits") is not None:
            losses["loss_sem_seg"] = self.semantic_loss(predictions["sem_seg_logits"], gt_instances) / len(gt_instances)
        return {k: v * self.weights[k] for k, v in losses.items()}
