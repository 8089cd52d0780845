import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from yolact_d2.modeling.anchors import YolactAnchorGenerator, build_box2box_transform
from yolact_d2.modeling.loss import YolactLoss, force_best_anchors, match_anchors, ohem_negatives
from yolact_d2.modeling.masks import batched_box_iou
from yolact_d2.modeling.semantic_seg import YolactSemSegHead


def test_matcher_hand_worked_example():
    anchors = torch.tensor([
        [0.0, 0, 10, 10],    # 0: IoU 1.0 with gt0 -> positive
        [0, 0, 10, 12],      # 1: IoU 10/12 = 0.83 with gt0 -> positive
        [0, 0, 10, 22],      # 2: IoU 100/220 = 0.45 with gt0 -> neutral
        [0, 0, 10, 30],      # 3: IoU 0.33 -> negative
        [50, 50, 60, 60],    # 4: far from both -> negative
        [100, 100, 140, 140],  # 5: best anchor of gt1 (IoU 0.25) -> forced positive
        [200, 200, 210, 210],  # 6: inside the crowd box, negative -> neutral
    ])
    gt = torch.tensor([[0.0, 0, 10, 10], [100, 100, 120, 120]])
    crowd = torch.tensor([[195.0, 195, 215, 215]])
    matched, state = match_anchors(anchors, gt, crowd, 0.5, 0.4, 0.7)
    assert state.tolist() == [1, 1, -1, 0, 0, 1, -1]
    assert matched[[0, 1, 5]].tolist() == [0, 0, 1]
    # without the crowd box anchor 6 stays a negative
    _, state = match_anchors(anchors, gt, torch.zeros(0, 4), 0.5, 0.4, 0.7)
    assert state[6] == 0
    # no GT: everything is negative
    _, state = match_anchors(anchors, torch.zeros(0, 4), torch.zeros(0, 4), 0.5, 0.4, 0.7)
    assert (state == 0).all()


def test_matcher_forces_each_gt_onto_a_distinct_best_anchor():
    # both GTs have anchor 0 as their best; the higher-IoU GT (gt1) claims it, gt0 gets its next best anchor
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 30, 30]])
    gt = torch.tensor([[0.0, 0, 20, 20], [0, 0, 11, 11]])
    matched, state = match_anchors(anchors, gt, torch.zeros(0, 4), 0.5, 0.4, 0.7)
    assert state.tolist() == [1, 1]
    assert matched.tolist() == [1, 0]


def _pairwise_iou(gt, anchors):
    """IoU (G, R) by a plain loop over pairs (exact on the small-integer boxes of these tests)."""
    out = torch.zeros(len(gt), len(anchors))
    for g, (gx1, gy1, gx2, gy2) in enumerate(gt.tolist()):
        for a, (ax1, ay1, ax2, ay2) in enumerate(anchors.tolist()):
            inter = max(min(gx2, ax2) - max(gx1, ax1), 0) * max(min(gy2, ay2) - max(gy1, ay1), 0)
            out[g, a] = inter / ((gx2 - gx1) * (gy2 - gy1) + (ax2 - ax1) * (ay2 - ay1) - inter)
    return out


def _original_forcing(iou):
    """
    dbolya/yolact's forcing (layers/box_utils.py, ``match``), restated: once per GT, every GT's best anchor and
    IoU by ``max(1)``, the GT of the highest of those by ``max(0)``, then that anchor's column and that GT's row
    set to -1. torch's max returns the first maximum, so ties go to the lower GT, then the lower anchor index.
    Returns {gt: anchor}.
    """
    iou = iou.clone()
    forced = {}
    for _ in range(iou.shape[0]):
        best_iou, best_anchor = iou.max(1)
        gt = int(best_iou.max(0)[1])
        anchor = int(best_anchor[gt])
        iou[:, anchor] = -1
        iou[gt, :] = -1
        forced[gt] = anchor
    return forced


def _original_match(anchors, gt, crowd, positive_iou, negative_iou, crowd_iou):
    """The original's whole matching restated: per-anchor best GT, forced anchors, thresholds, crowds."""
    iou = _pairwise_iou(gt, anchors)
    matched, state = [], []
    forced = {a: g for g, a in _original_forcing(iou).items()} if len(gt) else {}
    for a, anchor in enumerate(anchors.tolist()):
        column = iou[:, a].tolist()
        best = max(column, default=0.0)
        g = column.index(best) if column else 0
        if a in forced:
            g, best = forced[a], 2.0
        matched.append(g)
        state.append(1 if best >= positive_iou else 0 if best < negative_iou else -1)
        ax1, ay1, ax2, ay2 = anchor
        covered = max((max(min(cx2, ax2) - max(cx1, ax1), 0) * max(min(cy2, ay2) - max(cy1, ay1), 0)
                       for cx1, cy1, cx2, cy2 in crowd.tolist()), default=0.0) / ((ax2 - ax1) * (ay2 - ay1))
        if state[-1] != 1 and covered > crowd_iou:
            state[-1] = -1
    return torch.tensor(matched), torch.tensor(state)


def _square_grid(cells, stride, size):
    """Square anchors of side ``size`` centred on a cells x cells grid of ``stride`` pixels, row-major: (cells^2, 4)."""
    centre = (torch.arange(cells, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(centre, centre, indexing="ij")
    c = torch.stack([cx, cy], -1).reshape(-1, 2)
    return torch.cat([c - size / 2, c + size / 2], 1)


def test_forced_anchor_ties_go_to_the_first_anchor_and_the_first_gt_as_in_the_original():
    # 16-px anchors every 8 px on a 64-px input: a 4 x 4 GT at (20, 20) lies inside the anchors of rows and
    # columns 2 and 3, all at IoU 16 / 256 (< 0.4: only forcing makes them positive)
    anchors = _square_grid(8, 8, 16)
    gt = torch.tensor([[20.0, 20, 24, 24]] * 3 + [[44.0, 4, 48, 8]])
    iou = _pairwise_iou(gt, anchors)
    assert (iou[0] == iou[0].max()).nonzero().squeeze(1).tolist() == [18, 19, 26, 27]
    gts, forced = force_best_anchors(iou)
    # identical GTs 0, 1, 2 tie too: the lower GT first, each on the first anchor still free; GT 3 (IoU 16/256
    # with the anchors of rows 0, 1 and columns 5, 6) contends with none of them and takes row 0, column 5
    assert dict(zip(gts.tolist(), forced.tolist())) == {0: 18, 1: 19, 2: 26, 3: 5} == _original_forcing(iou)
    matched, state = match_anchors(anchors, gt, torch.zeros(0, 4), 0.5, 0.4, 0.7)
    assert state.nonzero().squeeze(1).tolist() == [5, 18, 19, 26]
    assert matched[[5, 18, 19, 26]].tolist() == [3, 0, 1, 2]
    # more GTs than anchors: each anchor is forced once, onto the GTs first in the order
    gts, forced = force_best_anchors(iou[:, [18, 19]])
    assert dict(zip(gts.tolist(), forced.tolist())) == {0: 0, 1: 1}


def _random_grid_case(g):
    """Anchors and GT boxes on a small integer grid (many exact IoU ties), some GTs duplicated, maybe a crowd."""
    num_anchors = int(torch.randint(1, 40, (1,), generator=g))
    num_gt = min(int(torch.randint(0, 9, (1,), generator=g)), num_anchors)

    def boxes(n):
        xy = torch.randint(0, 8, (n, 2), generator=g).float()
        return torch.cat([xy, xy + torch.randint(1, 5, (n, 2), generator=g).float()], 1)

    anchors, gt = boxes(num_anchors), boxes(num_gt)
    if num_gt > 1:
        gt[-1] = gt[0]
    crowd = boxes(int(torch.randint(0, 2, (1,), generator=g)))
    return anchors, gt, crowd


def test_matching_equals_the_originals_rule_on_random_tied_grids():
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        anchors, gt, crowd = _random_grid_case(g)
        iou = _pairwise_iou(gt, anchors)
        gts, forced = force_best_anchors(iou)
        assert dict(zip(gts.tolist(), forced.tolist())) == (_original_forcing(iou) if len(gt) else {})
        matched, state = match_anchors(anchors, gt, crowd, 0.5, 0.4, 0.3)
        expected_matched, expected_state = _original_match(anchors, gt, crowd, 0.5, 0.4, 0.3)
        assert state.tolist() == expected_state.tolist()
        assert matched.tolist() == expected_matched.tolist()


def test_forcing_at_coco_scale_equals_the_originals_rule():
    # the 6416 anchor positions of the 550-px layout, each three times (19248 anchors: every IoU ties three ways),
    # 20 GTs of which 5 share a centre and 5 are tiny: ties between anchors and contention between GTs
    g = torch.Generator().manual_seed(1)
    anchors = torch.cat([_square_grid(n, 550 / n, s) for n, s in [(69, 24), (35, 48), (18, 96), (9, 192), (5, 384)]])
    anchors = torch.cat([anchors, anchors, anchors])[:19248]
    centre = torch.rand(20, 2, generator=g) * 550
    centre[:5] = centre[0]
    half = torch.rand(20, 2, generator=g) * 100 + 2
    half[5:10] = 1.0
    gt = torch.cat([centre - half, centre + half], 1)
    iou = batched_box_iou(gt, anchors)
    gts, forced = force_best_anchors(iou)
    assert dict(zip(gts.tolist(), forced.tolist())) == _original_forcing(iou)


def _float32_jaccard(gt, anchors):
    """The original's ``jaccard`` (G, 4) x (R, 4) -> (G, R), restated, in float32."""
    inter = (torch.min(gt[:, None, 2:], anchors[None, :, 2:]) - torch.max(gt[:, None, :2], anchors[None, :, :2]))
    inter = inter.clamp(min=0).prod(-1)
    area_gt = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[:, None]
    area_anchors = ((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1]))[None]
    return inter / (area_gt + area_anchors - inter)


def test_forced_anchor_among_pixel_ties_is_the_one_of_the_originals_frame(cfg):
    """
    A 98 x 105 GT on the 48-px anchors of a 35 x 35 grid on 550 px has IoU 0.224 < 0.5 with nine anchors alike
    in pixels (the lowest index 126, row 3 column 21); the original compares GT / 550 with its float32 relative
    anchors, where rounding ranks anchor 161 (row 4) first. The loss forces the original's.
    """
    loss = _loss_module(cfg, input_size=550)
    generator = YolactAnchorGenerator([[48]], [1.0])
    grid, size = [(35, 35)], (550, 550)
    gt_box = torch.tensor([[306.0, 18.0, 404.0, 123.0]])
    pixel_iou = _float32_jaccard(gt_box, generator(grid, size))[0]
    relative_iou = _float32_jaccard(gt_box / 550, generator.relative(grid, size))[0]
    tied = (pixel_iou == pixel_iou.max()).nonzero().flatten().tolist()
    assert tied == [126, 127, 128, 161, 162, 163, 196, 197, 198] and pixel_iou.max() < 0.5
    assert int(pixel_iou.argmax()) == 126 and int(relative_iou.argmax()) == 161  # the frames break the tie apart
    image = Instances(size, gt_boxes=Boxes(gt_box), gt_classes=torch.tensor([0]))
    image.gt_masks = BitMasks(torch.ones(1, *size, dtype=torch.bool))
    no_crowd = [Boxes(torch.zeros(0, 4))]
    matched, state = loss.match(generator.relative(grid, size), [image], no_crowd)
    assert (state[0] == 1).nonzero().flatten().tolist() == [161] and int(matched[0, 161]) == 0
    # the loss matches with the relative anchors and codes the box on the pixel anchor: zero deltas cost the
    # smooth L1 of the GT's coding on anchor 161 (the only positive), not on anchor 126
    predictions = {"anchors": generator(grid, size), "relative_anchors": generator.relative(grid, size),
                   "cls_logits": torch.zeros(1, 1225, 4), "box_deltas": torch.zeros(1, 1225, 4),
                   "coefs": torch.zeros(1, 1225, 4), "prototypes": torch.zeros(1, 4, 8, 8)}
    transform = build_box2box_transform(cfg)
    box_loss = loss(predictions, [image], no_crowd, transform)["loss_box_reg"] / cfg.MODEL.YOLACT.LOSS.BOX_WEIGHT

    def coding_cost(anchor):
        return F.smooth_l1_loss(transform.get_deltas(predictions["anchors"][[anchor]], gt_box), torch.zeros(1, 4),
                                beta=1.0, reduction="sum")

    assert box_loss.item() == pytest.approx(coding_cost(161).item(), rel=1e-6)
    assert abs(coding_cost(126).item() - coding_cost(161).item()) > 0.1
    without = {k: v for k, v in predictions.items() if k != "relative_anchors"}
    with pytest.raises(KeyError, match="relative_anchors"):
        loss(without, [image], no_crowd, transform)


def test_ohem_picks_the_hardest_negatives_three_per_positive():
    bg_loss = torch.tensor([[0.1, 0.9, 0.5, 0.8, 0.7, 0.2, 0.95, 0.3, 0.6, 0.4]])
    state = torch.tensor([[1, 0, 0, 0, 0, 0, -1, 0, 0, 0]])
    neg = ohem_negatives(bg_loss, state, 3)
    # 1 positive -> 3 negatives: the highest losses among negatives (index 6 is neutral)
    assert neg.nonzero()[:, 1].tolist() == [1, 3, 4]
    state2 = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert ohem_negatives(bg_loss, state2, 3).sum() == 6
    assert ohem_negatives(bg_loss, torch.zeros_like(state), 3).sum() == 0  # no positive, no negative


def _loss_module(cfg, input_size=32, num_classes=3):
    cfg.MODEL.YOLACT.INPUT_SIZE = input_size
    cfg.MODEL.YOLACT.NUM_CLASSES = num_classes
    return YolactLoss(cfg)


def _two_object_image(num_anchors, seed):
    """Prototypes (1, 4, 8, 8) at 1/4 of a 32 x 32 input, coefficients (1, num_anchors, 4), GT of 2 boxed masks."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(1, 4, 8, 8, generator=g)
    coefs = torch.rand(1, num_anchors, 4, generator=g) * 2 - 1
    inst = Instances((32, 32))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 8.0, 20.0, 24.0], [16.0, 0.0, 32.0, 12.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 8:24, 4:20] = True
    masks[1, 0:12, 16:32] = True
    inst.gt_masks = BitMasks(masks)
    return protos, coefs, inst, masks


def test_mask_loss_matches_explicit_per_instance_computation(cfg):
    loss = _loss_module(cfg)
    protos, coefs, inst, masks = _two_object_image(3, seed=0)
    matched = torch.tensor([[0, 1, 0]])
    state = torch.tensor([[1, 1, 0]])
    got = loss.mask_loss(loss.sample_masks(protos, coefs, [inst], matched, state))
    expected = 0.0
    for a in range(2):
        box = inst.gt_boxes.tensor[matched[0, a]] / 4  # prototype pixels
        target = F.interpolate(masks[matched[0, a]][None, None].float(), (8, 8), mode="bilinear")[0, 0] > 0.5
        total = 0.0
        for r in range(8):
            for c in range(8):
                if not (max(box[0] - 1, 0) <= c < min(box[2] + 1, 8) and max(box[1] - 1, 0) <= r < min(box[3] + 1, 8)):
                    continue
                p = torch.sigmoid((coefs[0, a] * protos[0, :, r, c]).sum())
                t = float(target[r, c])
                total += -(t * math.log(p) + (1 - t) * math.log(1 - p))
        expected += total / float((box[2] - box[0]) * (box[3] - box[1]))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def _class_loss_inputs():
    """One image, 2 classes: anchor 0 positive (class 1), anchors 1-3 negative, anchor 4 neutral; logits (1, 5, 3)."""
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5]]])
    inst = Instances((32, 32))
    inst.gt_classes = torch.tensor([1])
    return logits, [inst], torch.zeros(1, 5, dtype=torch.int64), torch.tensor([[1, 0, 0, 0, -1]])


def test_class_loss_is_cross_entropy_over_positives_and_mined_negatives(cfg):
    loss = _loss_module(cfg, num_classes=2)
    logits, gt_instances, matched, state = _class_loss_inputs()
    got = loss.class_loss(logits, gt_instances, matched, state)
    # background is the last class; OHEM keeps 3 negatives per positive = all three negatives here
    expected = sum(-torch.log_softmax(logits[0, i], 0)[t] for i, t in [(0, 1), (1, 2), (2, 2), (3, 2)])
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_softmax_focal_class_loss_hand_worked_example(cfg):
    cfg.MODEL.YOLACT.LOSS.CLS_LOSS_TYPE = "softmax_focal"
    loss = _loss_module(cfg, num_classes=2)
    logits, gt_instances, matched, state = _class_loss_inputs()
    got = loss.class_loss(logits, gt_instances, matched, state)
    # every non-neutral anchor: -a (1 - p)^2 log p, p the softmax probability of its target; a = 0.25 for the
    # positive (class 1), 0.75 for the negatives (background, class 2); the neutral anchor 4 is left out.
    expected = 0.0
    for i, target, a in [(0, 1, 0.25), (1, 2, 0.75), (2, 2, 0.75), (3, 2, 0.75)]:
        row = [math.exp(v) for v in logits[0, i].tolist()]
        p = row[target] / sum(row)
        expected += -a * (1 - p) ** 2 * math.log(p)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_unknown_class_loss_type_is_a_clear_error(cfg):
    cfg.MODEL.YOLACT.LOSS.CLS_LOSS_TYPE = "sigmoid"
    with pytest.raises(ValueError, match="CLS_LOSS_TYPE='sigmoid'"):
        _loss_module(cfg)


def _box_loss_inputs():
    """Anchors 0 and 2 positive (matched to GT 0 and 1), anchor 1 negative; deltas (1, 3, 4)."""
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    inst = Instances((32, 32))
    inst.gt_boxes = Boxes(torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 0.0, 30.0, 10.0]]))
    deltas = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0], [0.0, 0.0, 0.0, 0.0]]])
    return deltas, anchors, [inst], torch.tensor([[0, 0, 1]]), torch.tensor([[1, 0, 1]])


@pytest.mark.parametrize("loss_type,expected", [
    # SSD coding, variances 0.1 / 0.2: GT 0 is the anchor moved by 5 = 0.5 anchor widths -> dx 5; GT 1 by 20 ->
    # dx 20; sizes equal -> dw = dh = 0. Smooth-L1 (beta 1): |1 - 5| - 0.5 + |0 - 20| - 0.5.
    ("smooth_l1", 3.5 + 19.5),
    # Deltas (1, 0, 0, 0) move the anchor by 0.1 * 10: [1, 0, 11, 10] against [5, 0, 15, 10]: intersection 60,
    # union 140, enclosing box 140 -> GIoU 3 / 7. The anchor itself against [20, 0, 30, 10]: IoU 0, union 200,
    # enclosing box 300 -> GIoU -1 / 3. The loss is 1 - GIoU per positive.
    ("giou", (1 - 3 / 7) + (1 + 1 / 3)),
])
def test_box_loss_hand_worked_examples(cfg, loss_type, expected):
    cfg.MODEL.YOLACT.LOSS.BOX_REG_LOSS_TYPE = loss_type
    loss = _loss_module(cfg)
    got = loss.box_loss(*_box_loss_inputs(), build_box2box_transform(cfg))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_box_loss_type_must_be_known(cfg):
    cfg.MODEL.YOLACT.LOSS.BOX_REG_LOSS_TYPE = "iou"
    with pytest.raises(ValueError, match="BOX_REG_LOSS_TYPE='iou'"):
        _loss_module(cfg)


def _semantic_expected(conv, feature, masks, classes, num_classes):
    """Brute force: per pixel and class, BCE of w . f + b against "some GT mask of the class covers it"."""
    n, _, h, w = feature.shape
    total = 0.0
    for i in range(n):
        down = F.interpolate(masks[i][None].float(), (h, w), mode="bilinear")[0] > 0.5
        for c in range(num_classes):
            for r in range(h):
                for col in range(w):
                    t = float(any(down[g, r, col] for g in range(len(classes[i])) if classes[i][g] == c))
                    x = float(conv.weight[c, :, 0, 0] @ feature[i, :, r, col] + conv.bias[c])
                    total += max(x, 0) - x * t + math.log1p(math.exp(-abs(x)))
    return total / (h * w)


@pytest.mark.parametrize("levels", [["p3"], ["p3", "p4"]])
def test_semantic_loss_matches_brute_force_per_level_sum(cfg, levels):
    from detectron2.layers import ShapeSpec
    cfg.MODEL.YOLACT.INPUT_SIZE = 32
    cfg.MODEL.YOLACT.NUM_CLASSES = 3
    cfg.MODEL.YOLACT.LOSS.SEM_SEG_IN_FEATURES = levels
    loss = YolactLoss(cfg)
    head = YolactSemSegHead(cfg, {"p3": ShapeSpec(channels=4, stride=8), "p4": ShapeSpec(channels=4, stride=16)})
    g = torch.Generator().manual_seed(1)
    features = {"p3": torch.randn(2, 4, 4, 4, generator=g), "p4": torch.randn(2, 4, 2, 2, generator=g)}
    masks = torch.zeros(2, 3, 32, 32, dtype=torch.bool)
    masks[0, 0, 0:16, 0:16] = True  # class 0
    masks[0, 1, 8:24, 8:32] = True  # class 0 again, overlapping the first: the union counts once
    masks[0, 2, 16:32, 0:8] = True  # class 2
    masks[1, 0, 0:32, 16:32] = True  # class 1
    classes = [[0, 0, 2], [1]]
    gts = []
    for i, count in enumerate([3, 1]):
        inst = Instances((32, 32))
        inst.gt_classes = torch.tensor(classes[i])
        inst.gt_masks = BitMasks(masks[i, :count])
        gts.append(inst)
    got = loss.semantic_loss(head(features), gts)
    expected = sum(
        _semantic_expected(head.conv, features[name], masks, classes, 3) for name in levels
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_semantic_loss_levels_must_exist_and_share_channels(cfg):
    from detectron2.layers import ShapeSpec
    cfg.MODEL.YOLACT.LOSS.SEM_SEG_IN_FEATURES = ["p3", "p9"]
    with pytest.raises(ValueError, match="p9"):
        YolactSemSegHead(cfg, {"p3": ShapeSpec(channels=4)})
    cfg.MODEL.YOLACT.LOSS.SEM_SEG_IN_FEATURES = ["p3", "p4"]
    with pytest.raises(ValueError, match="one channel count"):
        YolactSemSegHead(cfg, {"p3": ShapeSpec(channels=4), "p4": ShapeSpec(channels=8)})


def test_positive_anchors_and_trained_masks_per_image_go_to_the_event_storage(cfg):
    """The matcher example's image has 3 positives (anchors 0, 1, 5), of which MASKS_TO_TRAIN = 2 masks are trained;
    the second image has no GT: per image 1.5 positive anchors and 1 mask."""
    cfg.MODEL.YOLACT.LOSS.MASKS_TO_TRAIN = 2
    loss = _loss_module(cfg, input_size=256, num_classes=2)
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 10, 22], [0, 0, 10, 30], [50, 50, 60, 60],
                            [100, 100, 140, 140], [200, 200, 210, 210]])
    gts = []
    for boxes in ([[0.0, 0, 10, 10], [100, 100, 120, 120]], []):
        inst = Instances((256, 256))
        inst.gt_boxes = Boxes(torch.tensor(boxes).reshape(-1, 4))
        inst.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
        inst.gt_masks = BitMasks(torch.ones(len(boxes), 256, 256, dtype=torch.bool))
        gts.append(inst)
    predictions = {"anchors": anchors, "relative_anchors": anchors / 256, "cls_logits": torch.zeros(2, 7, 3), "box_deltas": torch.zeros(2, 7, 4),
                   "coefs": torch.zeros(2, 7, 4), "prototypes": torch.zeros(2, 4, 16, 16)}
    crowds = [Boxes(torch.zeros(0, 4))] * 2
    with EventStorage() as storage:
        loss(predictions, gts, crowds, build_box2box_transform(cfg))
    latest = storage.latest()
    assert latest["num_pos_anchors"][0] == 1.5 and latest["num_masks_trained"][0] == 1.0
    outside_storage = loss(predictions, gts, crowds, build_box2box_transform(cfg))  # no storage: nothing recorded
    assert set(outside_storage) == {"loss_cls", "loss_box_reg", "loss_mask"}


def _empty_image_inputs(num_images):
    """Random predictions for ``num_images`` 32 x 32 images on 6 anchors (anchor 0 on image 0's only object)."""
    g = torch.Generator().manual_seed(3)
    predictions = {
        "cls_logits": torch.randn(num_images, 6, 4, generator=g),
        "box_deltas": torch.randn(num_images, 6, 4, generator=g) * 0.1,
        "coefs": torch.randn(num_images, 6, 4, generator=g),
        "prototypes": torch.rand(num_images, 4, 8, 8, generator=g),
        "features": torch.randn(num_images, 4, 4, 4, generator=g),
        "anchors": torch.tensor(
            [[4.0, 4.0, 20.0, 20.0], [16.0, 16.0, 32.0, 32.0], [0.0, 16.0, 16.0, 32.0], [16.0, 0.0, 32.0, 16.0],
             [8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 32.0, 32.0]]
        ),
    }
    predictions["relative_anchors"] = predictions["anchors"] / 32
    image = Instances((32, 32), gt_boxes=Boxes(torch.tensor([[4.0, 4.0, 20.0, 20.0]])), gt_classes=torch.tensor([1]))
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 4:20, 4:20] = True
    image.gt_masks = BitMasks(masks)
    return predictions, image


def _images(predictions, index):
    """The predictions of the images ``index`` (a slice); the anchors are shared."""
    shared = ("anchors", "relative_anchors")
    per_image = {k: v[index] for k, v in predictions.items() if k not in shared}
    return dict(per_image, **{k: predictions[k] for k in shared})


def _with_sem_seg(head, predictions):
    """``predictions`` with the semantic-segmentation head's logits of its p3 ``features``."""
    return dict(predictions, sem_seg_logits=head({"p3": predictions["features"]}))


@pytest.mark.parametrize("crowd", [False, True], ids=["no annotation", "crowd only"])
def test_images_without_objects_add_only_background_semantic_loss(cfg, crowd):
    from detectron2.layers import ShapeSpec
    loss = _loss_module(cfg)
    head = YolactSemSegHead(cfg, {"p3": ShapeSpec(channels=4, stride=8)})
    empty = Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64),
                      gt_masks=BitMasks(torch.zeros(0, 32, 32, dtype=torch.bool)))
    no_crowd = Boxes(torch.zeros(0, 4))
    empty_crowd = Boxes(torch.tensor([[0.0, 0.0, 32.0, 32.0]])) if crowd else no_crowd
    predictions, image = _empty_image_inputs(2)
    transform = build_box2box_transform(cfg)
    both = loss(_with_sem_seg(head, predictions), [image, empty], [no_crowd, empty_crowd], transform)
    alone = loss(_with_sem_seg(head, _images(predictions, slice(0, 1))), [image], [no_crowd], transform)
    # Class (OHEM: 3 negatives per positive of the same image), box and mask terms: the empty image adds nothing.
    for key in ("loss_cls", "loss_box_reg", "loss_mask"):
        assert both[key].item() == pytest.approx(alone[key].item(), rel=1e-6), key
    assert alone["loss_cls"] > 0 and alone["loss_mask"] > 0
    # Semantic term: the mean over images; the empty one is trained towards background everywhere.
    weight = cfg.MODEL.YOLACT.LOSS.SEM_SEG_WEIGHT
    logits = head.conv(predictions["features"][1:])
    background = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="sum") / 16
    expected = (alone["loss_sem_seg"].item() / weight + background.item()) / 2
    assert both["loss_sem_seg"].item() == pytest.approx(expected * weight, rel=1e-5)
    # A batch of empty images only: zeros that still backpropagate.
    only_empty = _with_sem_seg(head, _images(predictions, slice(1, 2)))
    only_empty["cls_logits"].requires_grad_()
    losses = loss(only_empty, [empty], [empty_crowd], transform)
    assert [losses[k].item() for k in ("loss_cls", "loss_box_reg", "loss_mask")] == [0.0, 0.0, 0.0]
    sum(losses.values()).backward()
    assert only_empty["cls_logits"].grad is not None


def _busy_image(num_positives=5):
    """:func:`_two_object_image`'s inputs to ``sample_masks`` for P anchors, all positives (alternating GTs)."""
    protos, coefs, inst, _ = _two_object_image(num_positives, seed=1)
    matched = (torch.arange(num_positives) % 2)[None]
    state = torch.ones(1, num_positives, dtype=torch.int64)
    return protos, coefs, [inst], matched, state


def test_sub_sampled_mask_loss_equals_the_full_one_in_expectation(cfg, monkeypatch):
    """
    5 positives, 2 trained: averaged over every permutation randperm can draw (each equally likely), the
    rescaled loss of the 2 sampled masks equals the loss of all 5; each draw is the sampled masks' loss x 5 / 2.
    """
    loss = _loss_module(cfg)
    inputs = _busy_image(5)
    full = loss.mask_loss(loss.sample_masks(*inputs)).item()
    per_mask = [loss.mask_loss(loss.sample_masks(*inputs[:3], inputs[3], inputs[4] * (torch.arange(5) == a))).item()
                for a in range(5)]
    assert full == pytest.approx(sum(per_mask), rel=1e-5)
    loss.masks_to_train = 2
    draws = []
    for perm in itertools.permutations(range(5)):
        monkeypatch.setattr(torch, "randperm", lambda n, device=None, perm=perm: torch.tensor(perm, device=device))
        samples = loss.sample_masks(*inputs)
        assert samples[0].logits.shape[0] == 2 and samples[0].weight == 2.5
        draws.append(loss.mask_loss(samples).item())
        assert draws[-1] == pytest.approx(2.5 * (per_mask[perm[0]] + per_mask[perm[1]]), rel=1e-5)
    assert sum(draws) / len(draws) == pytest.approx(full, rel=1e-5)


def test_images_under_the_cap_keep_weight_one(cfg):
    loss = _loss_module(cfg)
    samples = loss.sample_masks(*_busy_image(5))
    assert samples[0].weight == 1.0 and samples[0].logits.shape[0] == 5


def test_gt_class_ids_are_checked_on_the_cpu_and_never_read_from_a_device(cfg):
    loss = _loss_module(cfg, num_classes=3)
    inst = Instances((32, 32))
    inst.gt_classes = torch.tensor([0, 3])
    with pytest.raises(ValueError, match="GT class id 3 is >= MODEL.YOLACT.NUM_CLASSES=3"):
        loss.check_gt_classes([inst])
    # a device tensor is left unread (no device sync per step): "meta" stands for any device, it has no values
    inst.gt_classes = torch.tensor([0, 3], device="meta")
    loss.check_gt_classes([inst])
