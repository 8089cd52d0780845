"""
Training learns: a tiny YOLACT trained for a few dozen steps on one image of shapes predicts its masks, and the
same run with the mask loss, the matcher or the flip augmentation broken on purpose does not.
"""
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from yolact_d2.data import YolactDatasetMapper
from yolact_d2.data import dataset_mapper as dataset_mapper_module
from yolact_d2.data.dataset_mapper import build_yolact_augmentation
from yolact_d2.modeling.loss import YolactLoss

ITERATIONS = 80
# Mean, over the image's 3 shapes, of the best mask IoU among the detections of the shape's class. The correct
# (seeded) run reaches 0.6; each broken one 0: no predicted mask of the right class overlaps its shape.
MIN_MEAN_MASK_IOU = 0.4


def _best_mask_ious(instances, gt_masks, gt_classes):
    """For each GT mask (G, H, W) the best IoU of a predicted mask of its class (0 if none)."""
    best = []
    for mask, cls in zip(gt_masks, gt_classes):
        preds = instances.pred_masks[instances.pred_classes == cls]
        inter = (preds & mask).flatten(1).sum(1).float()
        union = (preds | mask).flatten(1).sum(1).float()
        best.append(float((inter / union).max()) if len(preds) else 0.0)
    return best


def _mean_mask_iou_after_training(cfg, dataset):
    """
    Train a tiny YOLACT (R-18 frozen at its random weights: the FPN, protonet and head learn) on the mirror image
    of image 2 of ``dataset`` (3 shapes) at 64 x 64, as the mapper makes it with a horizontal flip; return the
    mean of :func:`_best_mask_ious` on that input, against the GT of the unflipped image mirrored here.
    """
    cfg.MODEL.YOLACT.INPUT_SIZE = 64
    cfg.MODEL.BACKBONE.FREEZE_AT = 5
    for key in ("PHOTOMETRIC", "EXPAND", "SAMPLE_CROP"):
        cfg.MODEL.YOLACT.AUGMENTATION[key] = False
    cfg.INPUT.RANDOM_FLIP = "none"
    resize = build_yolact_augmentation(cfg, is_train=True)
    image_dict = DatasetCatalog.get(dataset)[2]
    assert len(image_dict["annotations"]) == 3
    x = YolactDatasetMapper(cfg, is_train=True, augmentations=[T.RandomFlip(prob=1.0), *resize])(dict(image_dict))
    unflipped = YolactDatasetMapper(cfg, is_train=True, augmentations=resize)(dict(image_dict))
    torch.testing.assert_close(x["image"], unflipped["image"].flip(-1), rtol=0, atol=1)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0)
    for _ in range(ITERATIONS):
        loss = sum(model([x]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        instances = model.eval()([{"image": x["image"]}])[0]["instances"]
    gt = unflipped["instances"]
    return float(np.mean(_best_mask_ious(instances, gt.gt_masks.tensor.flip(-1), gt.gt_classes)))


def _zero_mask_loss(monkeypatch):
    monkeypatch.setattr(YolactLoss, "mask_loss", staticmethod(lambda samples: samples[0].logits.sum() * 0))


def _shuffle_matches(monkeypatch):
    """The masks of the positive anchors are trained towards the next GT of their image, not their own."""
    sample_masks = YolactLoss.sample_masks

    def shuffled(self, prototypes, coefs, gt_instances, matched, state):
        sizes = torch.tensor([max(len(gt), 1) for gt in gt_instances])[:, None]
        return sample_masks(self, prototypes, coefs, gt_instances, (matched + 1) % sizes, state)

    monkeypatch.setattr(YolactLoss, "sample_masks", shuffled)


def _flip_images_not_masks(monkeypatch):
    transform_annotations = dataset_mapper_module.transform_annotations

    def unflipped(annos, transforms, *args, **kwargs):
        kept = T.TransformList([t for t in transforms.transforms if not isinstance(t, T.HFlipTransform)])
        return transform_annotations(annos, kept, *args, **kwargs)

    monkeypatch.setattr(dataset_mapper_module, "transform_annotations", unflipped)


def test_a_tiny_model_learns_the_masks_of_one_image(cfg, tiny_dataset):
    """Also checks the flip of the images and masks against a mirror made here."""
    assert _mean_mask_iou_after_training(cfg, tiny_dataset) >= MIN_MEAN_MASK_IOU


@pytest.mark.parametrize("breakage", [_zero_mask_loss, _shuffle_matches, _flip_images_not_masks],
                         ids=["mask_loss_zeroed", "mask_matches_shuffled", "flip_misses_masks"])
def test_with_a_broken_loss_matcher_or_augmentation_it_does_not(cfg, tiny_dataset, monkeypatch,
                                                                 breakage):
    breakage(monkeypatch)
    assert _mean_mask_iou_after_training(cfg, tiny_dataset) < MIN_MEAN_MASK_IOU
