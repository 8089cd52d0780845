"""The NMS comparison: workload, agreement measure, and Fast NMS keeping a subset of standard NMS."""
import pytest

from yolact_d2.benchmark.nms import NMS_VARIANTS, agreement, build_nms, compare_nms, kept_pairs, nms_workload

SMALL = {"num_anchors": 3000, "num_classes": 8, "num_objects": 10}
UNLIMITED = 10**9  # no max_detections cut: it would break the subset relation at the margin


def test_paper_workload_makes_top_k_bind():
    boxes, scores = nms_workload()
    assert boxes.shape == (19248, 4) and scores.shape == (19248, 80)
    assert ((boxes[:, 2:] >= boxes[:, :2]).all())
    assert (scores >= 0.05).sum(dim=0).min() > 200


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_force_standard_nms(boxes, scores, *, nms_thresh, top_k, score_thresh, max_detections):
    """Per class: its top_k anchors scoring >= score_thresh, greedily kept unless a kept one overlaps by more
    than nms_thresh; then the max_detections best of all classes. Returns the kept (anchor, class) pairs."""
    boxes, scores = boxes.double().tolist(), scores.double()
    detections = []
    for c in range(scores.shape[1]):
        ranked = sorted(range(len(boxes)), key=lambda i: -scores[i, c].item())[:top_k]
        kept = []
        for i in (i for i in ranked if scores[i, c] >= score_thresh):
            if all(_iou(boxes[i], boxes[j]) <= nms_thresh for j in kept):
                kept.append(i)
        detections += [(scores[i, c].item(), i, c) for i in kept]
    return {(i, c) for _, i, c in sorted(detections, reverse=True)[:max_detections]}


@pytest.mark.parametrize("settings", [
    {"nms_thresh": 0.5, "top_k": 30, "score_thresh": 0.05, "max_detections": 10**9},
    {"nms_thresh": 0.3, "top_k": 20, "score_thresh": 0.1, "max_detections": 25},
])
def test_standard_nms_equals_a_brute_force_greedy_nms(settings):
    boxes, scores = nms_workload(num_anchors=600, num_classes=4, num_objects=6, image_size=100)
    kept = kept_pairs(build_nms("StandardNMS", **settings), boxes, scores)
    assert len(kept) > 8
    assert kept == _brute_force_standard_nms(boxes, scores, **settings)


def test_agreement_counts_the_common_pairs():
    kept, reference = {(1, 0), (2, 0), (3, 1)}, {(1, 0), (4, 1)}
    assert agreement(kept, reference) == {"kept": 3, "reference_kept": 2, "common": 1, "precision": pytest.approx(1 / 3),
                                          "recall": 0.5}
    assert agreement(set(), set()) == {"kept": 0, "reference_kept": 0, "common": 0, "precision": 1.0, "recall": 1.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_nms_keeps_a_subset_of_standard_nms(seed):
    """Fast NMS also lets suppressed boxes suppress, so on the same candidates it suppresses at least as much."""
    boxes, scores = nms_workload(seed=seed, **SMALL)
    settings = {"top_k": 100, "second_score_thresh": True, "max_detections": UNLIMITED}
    fast = kept_pairs(build_nms("FastNMS", **settings), boxes, scores)
    standard = kept_pairs(build_nms("StandardNMS", **settings), boxes, scores)
    assert fast <= standard
    assert len(fast) < len(standard)  # the workload's clusters make the relaxed rule bite


def test_compare_nms_rows():
    result = compare_nms(warmup=0, iters=1, device="cpu", workload=SMALL, top_k=50)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == list(NMS_VARIANTS)
    assert rows["StandardNMS"]["precision"] == rows["StandardNMS"]["recall"] == 1.0
    assert all(r["median_ms"] > 0 and 0 <= r["common"] <= r["kept"] <= 100 for r in rows.values())
    w = result["workload"]
    assert (w["anchors"], w["classes"], w["top_k"]) == (3000, 8, 50) and w["min_candidates_per_class"] > 50
