import numpy as np
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from yolact_d2.modeling.loss import SampledMasks, YolactLoss
from yolact_d2.modeling.mask_rescoring import MaskIoUNet, mask_iou


def test_mask_iou_net_layout_and_output():
    net = MaskIoUNet(num_classes=7, conv_dims=[8, 16, 32, 64, 128])
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == (
        [(d, (3, 3), (2, 2)) for d in (8, 16, 32, 64, 128)] + [(7, (1, 1), (1, 1))]
    )
    assert not any(isinstance(m, torch.nn.Linear) for m in net.modules())
    out = net(torch.rand(4, 138, 138))
    assert out.shape == (4, 7) and (out >= 0).all()
    # global max pool: the output is the max over the last feature map
    x = net.layers(torch.rand(2, 1, 138, 138))
    torch.testing.assert_close(net.layers[-2:](net.layers[:-2](torch.ones(1, 1, 64, 64))).amax(dim=(2, 3)),
                               net(torch.ones(1, 64, 64)))
    assert x.shape[-2:] == (3, 3)
    # inputs smaller than 63 x 63 are zero-padded to it
    small = torch.rand(2, 20, 30)
    torch.testing.assert_close(net(small), net(torch.nn.functional.pad(small, (0, 33, 0, 43))))


def test_mask_iou_hand_worked():
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, :2, :2] = True
    gt[0, :2, :] = True  # inter 4, union 8
    pred[1] = True
    gt[1] = True
    torch.testing.assert_close(mask_iou(pred, gt), torch.tensor([0.5, 1.0, 0.0]))


def test_mask_iou_loss_matches_explicit_computation(cfg):
    cfg.MODEL.YOLACT.NUM_CLASSES = 3
    cfg.MODEL.YOLACT.MASK_RESCORING.MIN_GT_AREA = 4
    loss = YolactLoss(cfg)
    net = MaskIoUNet(3, [4, 4])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, 12, generator=g) * 3
    targets = torch.zeros(3, 12, 12)
    targets[0, 2:8, 2:8] = 1
    targets[1, :2, :2] = 1  # area 4: not above MIN_GT_AREA, left out
    targets[2, 5:, 5:] = 1
    crop = torch.zeros(3, 12, 12, dtype=torch.bool)
    crop[:, 1:10, 1:10] = True
    classes = torch.tensor([2, 0, 1])
    sample = SampledMasks(logits, targets, crop, torch.zeros(3, 4), classes)
    got = loss.mask_iou_loss([sample], net)
    expected = 0.0
    for i in (0, 2):
        soft = logits[i].sigmoid() * crop[i]
        hard = soft > 0.5
        iou = (hard & (targets[i] > 0)).sum() / (hard | (targets[i] > 0)).sum()
        pred = net(soft[None])[0, classes[i]]
        expected += torch.nn.functional.smooth_l1_loss(pred, iou, reduction="sum")
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


class _ConstantIoU(torch.nn.Module):
    """Predicts IoU (c + 1) / 10 for class c, whatever the mask."""

    def forward(self, masks):
        return (torch.arange(5, dtype=torch.float32) + 1).div(10).expand(masks.shape[0], 5)


def _plain_and_rescored(cfg, box_scores):
    """Instances of one image from the model without re-scoring and with :class:`_ConstantIoU`'s."""
    cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED = True
    cfg.MODEL.YOLACT.MASK_RESCORING.BOX_SCORES = box_scores
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 30
    model = build_model(cfg).eval()
    assert isinstance(model.mask_rescoring, MaskIoUNet)
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    with torch.no_grad():
        model.mask_rescoring = None
        plain = model([{"image": image}])[0]["instances"]
        model.mask_rescoring = _ConstantIoU()
        rescored = model([{"image": image}])[0]["instances"]
    assert not plain.has("mask_scores")
    return plain, rescored


def test_inference_rescores_the_masks_and_keeps_class_scores_for_boxes(cfg):
    plain, rescored = _plain_and_rescored(cfg, "class")
    assert len(plain) == 30 and rescored.get_fields().keys() == {*plain.get_fields(), "mask_scores"}
    for field in ("scores", "pred_classes", "pred_masks"):
        assert torch.equal(rescored.get(field), plain.get(field))  # same detections, same (class score) order
    assert torch.equal(rescored.pred_boxes.tensor, plain.pred_boxes.tensor)
    assert (rescored.scores[:-1] >= rescored.scores[1:]).all()
    torch.testing.assert_close(rescored.mask_scores, plain.scores * (plain.pred_classes + 1).float() / 10)
    assert (rescored.mask_scores < rescored.scores).all()
    # the extra field follows indexing (the demo's threshold) and the Visualizer ignores it
    kept = rescored[rescored.scores >= rescored.scores[2]]
    assert torch.equal(kept.mask_scores, rescored.mask_scores[:3])
    drawn = Visualizer(np.zeros((96, 128, 3), dtype=np.uint8)).draw_instance_predictions(kept).get_image()
    assert drawn.shape == (96, 128, 3) and drawn.any()


def test_inference_multiplies_scores_by_the_predicted_iou_and_resorts(cfg):
    plain, rescored = _plain_and_rescored(cfg, "rescored")
    expected = plain.scores * (plain.pred_classes + 1).float() / 10
    expected, order = expected.sort(descending=True)
    torch.testing.assert_close(rescored.scores, expected)
    torch.testing.assert_close(rescored.mask_scores, expected)
    assert torch.equal(rescored.pred_classes, plain.pred_classes[order])
    torch.testing.assert_close(rescored.pred_boxes.tensor, plain.pred_boxes.tensor[order])
    assert torch.equal(rescored.pred_masks, plain.pred_masks[order])


@pytest.mark.parametrize("detach", [False, True])
def test_training_adds_a_finite_mask_iou_loss(cfg, detach):
    """The mask IoU loss trains the mask IoU net, and the masks (coefficients, prototypes) unless detached."""
    cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED = True
    cfg.MODEL.YOLACT.MASK_RESCORING.DETACH_MASKS = detach
    model = build_model(cfg).train()
    torch.nn.init.constant_(model.mask_rescoring.layers[-2].bias, 1.0)  # keep the final ReLU open
    inst = Instances((160, 160))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 120.0, 140.0]]))
    inst.gt_classes = torch.tensor([2])
    masks = torch.zeros(1, 160, 160, dtype=torch.bool)
    masks[0, 20:140, 10:120] = True
    inst.gt_masks = BitMasks(masks)
    losses = model([{"image": torch.randint(0, 256, (3, 160, 160), dtype=torch.uint8), "instances": inst}])
    assert torch.isfinite(losses["loss_mask_iou"]) and losses["loss_mask_iou"] > 0
    losses["loss_mask_iou"].backward()
    assert model.mask_rescoring.layers[0].weight.grad.abs().sum() > 0
    mask_branch = (model.head.coef_pred.weight, model.protonet.predictor.weight)
    if detach:
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in mask_branch)
    else:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mask_branch)
