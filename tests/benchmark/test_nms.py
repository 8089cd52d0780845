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


def test_standard_nms_agrees_fully_with_itself():
    boxes, scores = nms_workload(**SMALL)
    kept = kept_pairs(build_nms("StandardNMS", max_detections=UNLIMITED), boxes, scores)
    again = kept_pairs(build_nms("StandardNMS", max_detections=UNLIMITED), boxes, scores)
    assert len(kept) > 0
    assert agreement(again, kept) == {"kept": len(kept), "reference_kept": len(kept), "common": len(kept),
                                      "precision": 1.0, "recall": 1.0}


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
