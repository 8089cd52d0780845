import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import nms

from yolact_d2.modeling.masks import assemble_mask_logits, batched_box_iou, box_crop_masks
from yolact_d2.modeling.postprocessing import CrossClassFastNMS, FastNMS, StandardNMS, masks_to_image
from yolact_d2.modeling.postprocessing import _suppressed


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _random_dets(num, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + 4 + torch.rand(num, 2, generator=g) * 30], 1)
    scores = torch.rand(num, num_classes, generator=g) ** 3
    return boxes, scores


def _kwargs(**kw):
    base = dict(nms_thresh=0.5, top_k=200, score_thresh=0.05, second_score_thresh=False, max_detections=100)
    base.update(kw)
    return base


def _brute_force_fast_nms(boxes, scores, nms_thresh, top_k, score_thresh, second, max_dets):
    """Per class, a Python loop: j survives unless an earlier (better) box, suppressed or not, overlaps it."""
    candidates = [r for r in range(len(boxes)) if max(scores[r]) >= score_thresh]
    dets = []
    for c in range(len(scores[0])):
        ranked = sorted(candidates, key=lambda r: -scores[r][c])[:top_k]
        for j, rj in enumerate(ranked):
            if any(_iou(boxes[ri], boxes[rj]) > nms_thresh for ri in ranked[:j]):
                continue
            if second and scores[rj][c] < score_thresh:
                continue
            dets.append((scores[rj][c], rj, c))
    dets.sort(key=lambda d: -d[0])
    return dets[:max_dets]


@pytest.mark.parametrize("seed,top_k,second", [(0, 200, False), (1, 7, False), (2, 200, True), (3, 15, True)])
@pytest.mark.parametrize("max_dets", [1, 3, 40, 1000])
def test_fast_nms_matches_brute_force_loop(seed, top_k, second, max_dets):
    boxes, scores = _random_dets(60, 4, seed)
    post = FastNMS(**_kwargs(top_k=top_k, second_score_thresh=second, max_detections=max_dets))
    idx, classes, det_scores = post(boxes, scores)
    expected = _brute_force_fast_nms(boxes.tolist(), scores.tolist(), 0.5, top_k, 0.05, second, max_dets)
    assert [(int(i), int(c)) for i, c in zip(idx, classes)] == [(r, c) for _, r, c in expected]
    torch.testing.assert_close(det_scores, torch.tensor([s for s, _, _ in expected]))


@pytest.mark.parametrize("max_dets", [2, 6, 30])
def test_fast_nms_on_clustered_boxes_matches_brute_force_loop(max_dets):
    # Three tight clusters, the first scoring best in every class and the last worst: the best candidates are
    # one cluster's duplicates, so Fast NMS must widen its candidates to reach the other clusters' detections.
    g = torch.Generator().manual_seed(4)
    cluster = torch.randint(0, 3, (90,), generator=g)
    centers = torch.tensor([[20.0, 20], [50, 30], [35, 60]])[cluster]
    boxes = torch.cat([centers - 8, centers + 8], 1) + torch.rand(90, 4, generator=g) * 2
    scores = (1 - cluster[:, None] / 3) - torch.rand(90, 5, generator=g) / 4
    idx, classes, det_scores = FastNMS(**_kwargs(top_k=90, max_detections=max_dets))(boxes, scores)
    expected = _brute_force_fast_nms(boxes.tolist(), scores.tolist(), 0.5, 90, 0.05, False, max_dets)
    assert len(expected) == min(max_dets, 15)  # three clusters in each of five classes
    assert (cluster[idx] > 0).sum() == max(0, min(max_dets, 15) - 5)  # five from the best cluster, then others
    assert [(int(i), int(c)) for i, c in zip(idx, classes)] == [(r, c) for _, r, c in expected]
    torch.testing.assert_close(det_scores, torch.tensor([s for s, _, _ in expected]))


def test_fast_nms_relaxed_rule_hand_worked():
    # A > B > C in score; IoU(A, B) > 0.5 and IoU(B, C) > 0.5 but IoU(A, C) < 0.5: standard NMS keeps A, C;
    # Fast NMS lets the suppressed B suppress C and keeps only A.
    boxes = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    idx, _, _ = FastNMS(**_kwargs())(boxes, scores)
    assert idx.tolist() == [0]
    idx, _, _ = StandardNMS(**_kwargs())(boxes, scores)
    assert idx.tolist() == [0, 2]


def test_cross_class_fast_nms_matches_loop():
    boxes, scores = _random_dets(50, 3, 5)
    idx, classes, det_scores = CrossClassFastNMS(**_kwargs(top_k=30))(boxes, scores)
    best, best_cls = scores.max(1)
    ranked = [r for r in best.argsort(descending=True).tolist() if best[r] >= 0.05][:30]
    keep = [rj for j, rj in enumerate(ranked) if all(_iou(boxes[ri].tolist(), boxes[rj].tolist()) <= 0.5
                                                    for ri in ranked[:j])]
    assert idx.tolist() == keep
    assert classes.tolist() == best_cls[keep].tolist()
    torch.testing.assert_close(det_scores, best[keep])


def test_standard_nms_matches_torchvision_per_class():
    boxes, scores = _random_dets(80, 3, 7)
    idx, classes, det_scores = StandardNMS(**_kwargs(top_k=50, max_detections=1000))(boxes, scores)
    expected = []
    for c in range(3):
        ranked = scores[:, c].argsort(descending=True)[:50]
        ranked = ranked[scores[ranked, c] >= 0.05]
        for r in ranked[nms(boxes[ranked], scores[ranked, c], 0.5)].tolist():
            expected.append((float(scores[r, c]), r, c))
    expected.sort(key=lambda d: -d[0])
    assert list(zip(idx.tolist(), classes.tolist())) == [(r, c) for _, r, c in expected]


def test_nms_with_no_candidates_returns_empty():
    boxes, scores = _random_dets(10, 3, 0)
    for cls in (FastNMS, CrossClassFastNMS, StandardNMS):
        idx, classes, det_scores = cls(**_kwargs(score_thresh=2.0))(boxes, scores)
        assert idx.shape == classes.shape == det_scores.shape == (0,)


def test_batched_box_iou_matches_pairwise_loop():
    a, _ = _random_dets(6, 1, 1)
    b, _ = _random_dets(5, 1, 2)
    iou = batched_box_iou(a[None].expand(2, -1, -1), b[None].expand(2, -1, -1))
    expected = torch.tensor([[_iou(x, y) for y in b.tolist()] for x in a.tolist()])
    torch.testing.assert_close(iou, expected[None].expand(2, -1, -1))


def test_assembly_and_crop_match_explicit_per_instance_sum():
    g = torch.Generator().manual_seed(0)
    k, h, w = 4, 12, 10
    protos = torch.rand(k, h, w, generator=g)
    coefs = torch.rand(3, k, generator=g) * 2 - 1
    boxes = torch.tensor([[2.2, 3.0, 6.5, 8.9], [0.0, 0.0, 10.0, 12.0], [7.0, 9.5, 7.5, 10.0]])
    masks = assemble_mask_logits(protos, coefs).sigmoid() * box_crop_masks(boxes, (h, w))
    for d in range(3):
        x1, y1, x2, y2 = boxes[d].tolist()
        for r in range(h):
            for c in range(w):
                logit = sum(coefs[d, i] * protos[i, r, c] for i in range(k))
                inside = max(x1 - 1, 0) <= c < min(x2 + 1, w) and max(y1 - 1, 0) <= r < min(y2 + 1, h)
                expected = torch.sigmoid(logit) if inside else torch.tensor(0.0)
                torch.testing.assert_close(masks[d, r, c], expected)


def test_masks_to_image_maps_the_region_onto_the_output():
    masks = torch.zeros(1, 8, 8)
    masks[0, :4, :4] = 1.0  # top-left quarter of the input
    full = masks_to_image(masks, (8, 8), (8, 8), (20, 40), 0.5)
    assert full.shape == (1, 20, 40) and full.dtype == torch.bool
    # the quarter maps onto rows < 10, columns < 20 (bilinear blurs the one-pixel border)
    assert full[0, :9, :19].all() and not full[0, 11:].any() and not full[0, :, 21:].any()
    assert 9 * 19 <= full.sum() <= 11 * 21
    # the image occupies only the top half of the (padded) input: that half maps onto the whole output
    half = masks_to_image(masks, (4, 8), (8, 8), (20, 40), 0.5)
    assert half[0, :19, :19].all() and not half[0, :, 21:].any() and half.shape == (1, 20, 40)
    assert masks_to_image(torch.zeros(0, 8, 8), (8, 8), (8, 8), (5, 6), 0.5).shape == (0, 5, 6)


def _interpolate_then_threshold(masks, region, input_size, output_size, threshold):
    """The plain computation masks_to_image stands for: resize the whole input, keep the image's part."""
    full = (round(output_size[0] * input_size[0] / region[0]), round(output_size[1] * input_size[1] / region[1]))
    resized = F.interpolate(masks[None], size=full, mode="bilinear", align_corners=False)[0]
    resized = resized[:, : output_size[0], : output_size[1]]
    return resized, resized > threshold


@pytest.mark.parametrize(
    "region,output_size",
    [((48, 48), (48, 48)), ((48, 40), (90, 70)), ((30, 48), (19, 31)), ((48, 48), (200, 200)), ((33, 48), (33, 48))],
)
def test_masks_to_image_equals_full_resize_then_threshold(region, output_size):
    g = torch.Generator().manual_seed(sum(output_size))
    xy = torch.rand(40, 2, generator=g) * 10
    wh = torch.rand(40, 2, generator=g) * torch.tensor([[10.0], [2.0], [4.0], [12.0]]).repeat(10, 1)
    boxes = torch.cat([xy, xy + wh], 1)  # from sub-pixel to the whole 12 x 12 grid, some past the edge
    masks = torch.rand(40, 12, 12, generator=g) * box_crop_masks(boxes, (12, 12), padding=0.0)
    masks[3] = 0.0  # an empty mask
    masks[4] = torch.rand(12, 12, generator=g)  # non-zero everywhere
    masks[5, 11, 11] = 0.9  # an isolated pixel at the corner
    resized, expected = _interpolate_then_threshold(masks, region, (48, 48), output_size, 0.5)
    result = masks_to_image(masks, region, (48, 48), output_size, 0.5, chunk_size=7)
    assert result.shape == expected.shape and result.dtype == torch.bool
    differ = result != expected
    # the only differences a float rounding can make: values within a rounding error of the threshold
    assert ((resized[differ] - 0.5).abs() < 1e-5).all()
    assert differ.sum() <= 2 and expected.flatten(1).any(dim=1).sum() >= 20
    assert not result[3].any()


@pytest.mark.parametrize("region_h", [49, 61, 73])
def test_masks_to_image_equals_full_resize_for_every_row_range(region_h):
    """Masks on every range of prototype rows (24 x 24 prototypes of a 96-pixel input), images of 236-245
    rows: each window's input block must hold all its bilinear taps whatever the float rounding of the scale
    (rows 8-9 of a 49-row region of a 241-row image once needed a block one row larger than a bound computed
    from the scale alone)."""
    ranges = [(a, b) for a in range(24) for b in range(a, 24)]
    masks = torch.zeros(len(ranges), 24, 24)
    for i, (a, b) in enumerate(ranges):
        masks[i, a : b + 1, 5:9] = torch.linspace(0.45, 0.95, b + 1 - a)[:, None]
    for out_h in range(236, 246):
        region, output_size = (region_h, 96), (out_h, 30)
        resized, expected = _interpolate_then_threshold(masks, region, (96, 96), output_size, 0.5)
        result = masks_to_image(masks, region, (96, 96), output_size, 0.5, chunk_size=1)
        differ = result != expected
        assert ((resized[differ] - 0.5).abs() < 1e-5).all(), out_h
        assert expected.flatten(1).any(dim=1).sum() >= 150  # the ranges that reach the image are not empty


def test_masks_to_image_threshold_zero_and_negative():
    masks = torch.zeros(2, 8, 8)
    masks[0, 2:4, 2:4] = 0.3
    _, expected = _interpolate_then_threshold(masks, (8, 8), (8, 8), (16, 16), 0.0)
    assert torch.equal(masks_to_image(masks, (8, 8), (8, 8), (16, 16), 0.0), expected)
    with pytest.raises(ValueError, match="threshold"):
        masks_to_image(masks, (8, 8), (8, 8), (16, 16), -0.1)


@pytest.mark.parametrize("nms_thresh", [0.0, 0.3, 0.5, 0.9])
def test_suppression_rule_matches_iou_loop(nms_thresh):
    boxes, _ = _random_dets(3 * 25, 1, int(nms_thresh * 10))
    boxes = boxes.reshape(3, 25, 4)
    boxes[1, 4] = boxes[1, 4, [2, 3, 0, 1]]  # degenerate (inverted) box: overlaps nothing
    boxes[2, 5] = boxes[2, 0]  # duplicates its better box exactly
    suppressed = _suppressed(boxes, nms_thresh, chunk_size=2)
    expected = torch.tensor([
        [any(_iou_or_zero(cls[i], cls[j]) > nms_thresh for i in range(j)) for j in range(25)]
        for cls in boxes.tolist()
    ])
    assert torch.equal(suppressed, expected) and expected[2, 5]
    assert _suppressed(boxes[:, :0], nms_thresh).shape == (3, 0)
    assert _suppressed(boxes[0], nms_thresh).shape == (25,)


def _iou_or_zero(a, b):
    """IoU, 0 for degenerate boxes."""
    if a[2] <= a[0] or a[3] <= a[1] or b[2] <= b[0] or b[3] <= b[1]:
        return 0.0
    return _iou(a, b)
