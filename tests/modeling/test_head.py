import pytest
import torch

from detectron2.layers import ShapeSpec

from yolact_d2.modeling.head import build_yolact_head


def test_shapes_ranges_and_order(cfg):
    head = build_yolact_head(cfg, [ShapeSpec(channels=64)] * 2, num_anchors=3).eval()
    feats = [torch.randn(2, 64, 4, 5), torch.randn(2, 64, 2, 3)]
    with torch.no_grad():
        cls_logits, deltas, coefs = head(feats)
        r = (4 * 5 + 2 * 3) * 3
        assert cls_logits.shape == (2, r, 6) and deltas.shape == (2, r, 4) and coefs.shape == (2, r, 8)
        assert coefs.abs().max() <= 1
        # anchor a of cell (row 1, column 2) of level 0 is row (1 * 5 + 2) * 3 + a; its logits are channels
        # a * 6 ... a * 6 + 5 of the class conv at that cell
        raw = head.cls_score(head.shared(feats[0]))
        for a in range(3):
            torch.testing.assert_close(cls_logits[1, (1 * 5 + 2) * 3 + a], raw[1, a * 6:(a + 1) * 6, 1, 2])
        raw_coef = head.coef_pred(head.shared(feats[1]))
        torch.testing.assert_close(coefs[0, 60 + (1 * 3 + 0) * 3 + 2], raw_coef[0, 16:24, 1, 0].tanh())


def test_head_weights_are_shared_across_levels(cfg):
    head = build_yolact_head(cfg, [ShapeSpec(channels=64)] * 5, num_anchors=3)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in head.modules()) == 4


def test_norm_from_config(cfg):
    cfg = cfg.clone()
    cfg.MODEL.YOLACT.HEAD.NORM = "GN"
    cfg.MODEL.YOLACT.HEAD.SHARED_CONV_DIMS = [32, 32]
    head = build_yolact_head(cfg, [ShapeSpec(channels=64)] * 2, num_anchors=3)
    norms = [m for m in head.shared.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [n.num_channels for n in norms] == [32, 32] and all(n.num_groups == 32 for n in norms)


def test_decoupled_head_gives_each_branch_its_own_tower(cfg):
    cfg = cfg.clone()
    cfg.MODEL.YOLACT.HEAD.NAME = "YolactDecoupledHead"
    cfg.MODEL.YOLACT.HEAD.SHARED_CONV_DIMS = [32, 32]
    head = build_yolact_head(cfg, [ShapeSpec(channels=64)] * 2, num_anchors=3).eval()
    assert sum(isinstance(m, torch.nn.Conv2d) for m in head.modules()) == 3 * 2 + 3
    feats = [torch.randn(2, 64, 4, 5), torch.randn(2, 64, 2, 3)]
    with torch.no_grad():
        cls_logits, deltas, coefs = head(feats)
        # cell (row 1, column 2), anchor 1 of level 0; anchor 2 of cell (1, 0) of level 1
        torch.testing.assert_close(cls_logits[1, 7 * 3 + 1], head.cls_score(head.cls_tower(feats[0]))[1, 6:12, 1, 2])
        torch.testing.assert_close(deltas[0, 7 * 3 + 1], head.bbox_pred(head.box_tower(feats[0]))[0, 4:8, 1, 2])
        raw_coef = head.coef_pred(head.coef_tower(feats[1]))
        torch.testing.assert_close(coefs[0, 60 + 3 * 3 + 2], raw_coef[0, 16:24, 1, 0].tanh())
        # the towers are independent: changing the box tower leaves the class logits and coefficients as they were
        for p in head.box_tower.parameters():
            p.add_(1.0)
        cls2, deltas2, coefs2 = head(feats)
    torch.testing.assert_close(cls2, cls_logits)
    torch.testing.assert_close(coefs2, coefs)
    assert not torch.allclose(deltas2, deltas)


def test_prior_prob_starts_every_anchor_at_the_prior(cfg):
    cfg.MODEL.YOLACT.HEAD.PRIOR_PROB = 0.01
    head = build_yolact_head(cfg, [ShapeSpec(channels=64)], num_anchors=3).eval()
    with torch.no_grad():
        head.cls_score.weight.zero_()  # the logits are then the biases
        cls_logits, _, _ = head([torch.randn(1, 64, 2, 2)])
    probs = cls_logits.softmax(-1)  # 5 classes + background
    expected = torch.tensor([0.01] * 5 + [0.95]).expand_as(probs)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-7)


def test_prior_prob_that_leaves_no_background_is_a_clear_error(cfg):
    cfg.MODEL.YOLACT.HEAD.PRIOR_PROB = 0.2  # 5 classes x 0.2 = 1
    with pytest.raises(ValueError, match="PRIOR_PROB=0.2"):
        build_yolact_head(cfg, [ShapeSpec(channels=64)], num_anchors=3)
