import math

import pytest
import torch

from yolact_d2.modeling.anchors import YolactAnchorGenerator, build_box2box_transform


def _loop_anchors(sizes, ratios, square, grids, image_size):
    """The original's make_priors, written as plain loops, in XYXY pixels."""
    h, w = image_size
    out = []
    for level, (gh, gw) in enumerate(grids):
        for i in range(gh):
            for j in range(gw):
                cx, cy = (j + 0.5) / gw * w, (i + 0.5) / gh * h
                for s in sizes[level]:
                    for ar in ratios:
                        aw = s * math.sqrt(ar)
                        ah = aw if square else s / math.sqrt(ar)
                        out.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return torch.tensor(out)


@pytest.mark.parametrize("square", [False, True])
def test_anchor_count_order_and_values_match_a_loop(square):
    sizes, ratios = [[10, 13], [20, 26]], [1.0, 0.5, 2.0]
    gen = YolactAnchorGenerator(sizes, ratios, square)
    grids, image_size = [(3, 4), (2, 2)], (30, 40)
    anchors = gen(grids, image_size)
    assert gen.num_anchors == 6
    assert anchors.shape == (3 * 4 * 6 + 2 * 2 * 6, 4)
    torch.testing.assert_close(anchors, _loop_anchors(sizes, ratios, square, grids, image_size))


def test_anchor_hand_worked_values():
    gen = YolactAnchorGenerator([[24]], [1.0, 0.5, 2.0], square=False)
    a = gen([(2, 2)], (100, 100))
    # cell (0, 0): centre (25, 25); ar 1 -> 24 x 24; ar 0.5 -> w = 24 * 0.7071 = 16.97, h = 33.94
    torch.testing.assert_close(a[0], torch.tensor([13.0, 13.0, 37.0, 37.0]))
    torch.testing.assert_close(a[1], torch.tensor([25 - 8.48528, 25 - 16.97056, 25 + 8.48528, 25 + 16.97056]))
    # the 4th anchor is cell (0, 1): centre x = 75
    torch.testing.assert_close(a[3], torch.tensor([63.0, 13.0, 87.0, 37.0]))
    # square anchors: the 1:2 anchor keeps its width as height (the v1 behaviour)
    sq = YolactAnchorGenerator([[24]], [1.0, 0.5, 2.0], square=True)([(2, 2)], (100, 100))
    torch.testing.assert_close(sq[1], torch.tensor([25 - 8.48528, 25 - 8.48528, 25 + 8.48528, 25 + 8.48528]))


def _original_priors(sizes, ratios, square, grids, max_size):
    """
    The original's ``make_priors`` (pixel scales, ratios not pre-rooted) for a square input then ``point_form``,
    restated: centre-size in Python floats, one float32 tensor, centre -/+ size / 2 in float32 (R, 4).
    """
    data = []
    for level, (conv_h, conv_w) in enumerate(grids):
        for y_cell in range(conv_h):
            for x_cell in range(conv_w):
                x, y = (x_cell + 0.5) / conv_w, (y_cell + 0.5) / conv_h
                for scale in sizes[level]:
                    for ar in ratios:
                        root = math.sqrt(ar)
                        w, h = scale * root / max_size, scale / root / max_size
                        data += [x, y, w, w if square else h]
    priors = torch.tensor(data, dtype=torch.float32).view(-1, 4)
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


@pytest.mark.parametrize("square", [False, True])
def test_relative_anchors_are_the_originals_bit_for_bit(square):
    """The matching's anchors equal the original's float32 priors exactly, in the order of the pixel anchors."""
    sizes = [[24, 24 * 2 ** (1 / 3), 24 * 2 ** (2 / 3)], [48, 48 * 2 ** (1 / 3), 48 * 2 ** (2 / 3)]]
    ratios, grids, size = [1.0, 0.5, 2.0], [(9, 9), (5, 5)], 550
    gen = YolactAnchorGenerator(sizes, ratios, square)
    relative = gen.relative(grids, (size, size))
    expected = _original_priors(sizes, ratios, square, grids, size)
    assert relative.dtype == torch.float32 and relative.shape == gen(grids, (size, size)).shape
    assert torch.equal(relative, expected)
    # the same anchors as the pixel ones, but not their rounding: dividing those by the size differs somewhere
    pixels = gen(grids, (size, size), dtype=torch.float64) / size
    torch.testing.assert_close(relative.double(), pixels, rtol=0, atol=1e-7)
    assert not torch.equal(relative, (gen(grids, (size, size)) / size))
    assert gen.relative(grids, (size, size)) is relative  # cached


def test_anchors_are_cached_per_size():
    gen = YolactAnchorGenerator([[24]], [1.0], square=False)
    assert gen([(2, 2)], (64, 64)) is gen([(2, 2)], (64, 64))
    assert gen([(3, 3)], (96, 96)).shape == (9, 4)


def test_mismatched_levels_raise(cfg):
    cfg.MODEL.YOLACT.ANCHOR.SIZES = [[24], [48]]
    with pytest.raises(ValueError, match="ANCHOR.SIZES has 2 levels"):
        YolactAnchorGenerator.from_config(cfg)


def test_ssd_box_coding_hand_worked_and_round_trip(cfg):
    t = build_box2box_transform(cfg)
    anchor = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size 20 x 40
    gt = torch.tensor([[12.0, 22.0, 36.0, 70.0]])  # centre (24, 46), size 24 x 48
    deltas = t.get_deltas(anchor, gt)
    # SSD: ((24 - 20) / (0.1 * 20), (46 - 40) / (0.1 * 40), log(24 / 20) / 0.2, log(48 / 40) / 0.2)
    expected = torch.tensor([[2.0, 1.5, math.log(1.2) / 0.2, math.log(1.2) / 0.2]])
    torch.testing.assert_close(deltas, expected)
    torch.testing.assert_close(t.apply_deltas(deltas, anchor), gt)
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(50, 2, generator=g) * 100
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(50, 2, generator=g) * 50], 1)
    boxes = torch.rand(50, 2, generator=g) * 100
    boxes = torch.cat([boxes, boxes + 5 + torch.rand(50, 2, generator=g) * 50], 1)
    torch.testing.assert_close(t.apply_deltas(t.get_deltas(anchors, boxes), anchors), boxes, rtol=1e-4, atol=1e-3)
