"""Export of a tiny random YOLACT / YOLACT++ to TorchScript and ONNX: the exported files must reproduce eager mode."""
import importlib.util
import os
import warnings

import onnx
import pytest
import torch
from torch.jit import TracerWarning

from detectron2.modeling import build_model

from yolact_d2.export import (
    OUTPUT_NAMES,
    ExportedYolact,
    YolactExportable,
    check_exportable,
    export_onnx,
    export_torchscript,
    output_names,
    preprocess_image,
)
from yolact_d2.modeling import FastNMS
from yolact_d2.modeling.meta_arch import Detections

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`create_unbacked_symint` is deprecated:FutureWarning"),  # torchvision's
]

SIZE = 96
EXPORTERS = {"ts": export_torchscript, "onnx": export_onnx}


def _small_cfg(**kwargs):
    """tests/conftest.py's ``small_cfg``, imported by path: ``import conftest`` may find another folder's."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "conftest.py")
    spec = importlib.util.spec_from_file_location("_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.small_cfg(**kwargs)


def _cfg(postprocessor="FastNMS", plus=False):
    """The tiny R-18 model at input 96, or YOLACT++ on a tiny deformable R-50 (1/8 of the widths)."""
    cfg = _small_cfg(input_size=SIZE)
    y = cfg.MODEL.YOLACT
    y.POSTPROCESS.NAME = postprocessor
    # with these random weights, the images of IMAGES give many, few and no detections
    y.POSTPROCESS.SCORE_THRESH = 0.75 if plus else 0.5
    if plus:
        r = cfg.MODEL.RESNETS
        r.DEPTH, r.STEM_OUT_CHANNELS, r.WIDTH_PER_GROUP, r.RES2_OUT_CHANNELS = 50, 16, 8, 32
        r.DEFORM_ON_PER_STAGE, r.DEFORM_MODULATED = [False, True, True, True], True
        y.ANCHOR.SIZES = [[s * SIZE / 550 * 2 ** (j / 3) for j in range(3)] for s in (24, 48, 96, 192, 384)]
        y.MASK_RESCORING.ENABLED = True
    return cfg


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if model.mask_rescoring is not None:
        # predicted IoUs above 0: no ties between re-scored detections, whose order would then be arbitrary
        torch.nn.init.constant_(model.mask_rescoring.layers[-2].bias, 0.5)
    return model


def _images():
    g = torch.Generator().manual_seed(0)
    return {
        "many": torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "few": torch.linspace(0, 255, SIZE).expand(3, SIZE, SIZE).to(torch.uint8),
        "none": torch.full((3, SIZE, SIZE), 128, dtype=torch.uint8),
    }


IMAGES = _images()


def _export(model, fmt, folder, image=IMAGES["few"]):
    """
    Export ``model`` recorded on ``image`` (default: the one with few detections); returns the file's path.
    Fails on any TracerWarning other than the exporter's checked ones.
    """
    path = str(folder / f"model.{fmt}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EXPORTERS[fmt](model, preprocess_image(image, model.input_size), path)
    unchecked = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if issubclass(w.category, TracerWarning)]
    assert not unchecked, "TracerWarnings not in CHECKED_TRACER_WARNINGS:\n" + "\n".join(unchecked)
    return path


def _eager_detections(model, image):
    """What the exported graph computes, run eagerly: (boxes, scores, classes, masks[, mask_scores])."""
    with torch.no_grad():
        images, regions = model.preprocess_image([{"image": image}])
        return tuple(d for d in model.inference(images, regions)[0] if d is not None)


def _check_same_detections(model, exported):
    """The exported graph gives eager mode's detections on every image; returns the detection counts."""
    counts = []
    for image in IMAGES.values():
        expected = _eager_detections(model, image)
        got = exported.run(preprocess_image(image, SIZE))
        assert len(got) == len(output_names(model)) == len(expected)
        assert [o.shape[0] for o in got] == [len(expected[0])] * len(got)
        boxes, scores, classes, masks = got[:4]
        torch.testing.assert_close(boxes, expected[0], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(scores, expected[1], rtol=1e-4, atol=1e-5)
        assert classes.dtype == torch.int64 and torch.equal(classes, expected[2])
        torch.testing.assert_close(masks, expected[3], rtol=1e-4, atol=1e-4)
        if len(got) == 5:  # YOLACT++'s mask scores
            torch.testing.assert_close(got[4], expected[4], rtol=1e-4, atol=1e-5)
        counts.append(len(scores))
    return counts


@pytest.fixture(scope="module")
def fast_nms(tmp_path_factory):
    """The tiny FastNMS model, its config and its exported files by format."""
    cfg = _cfg()
    model = _model(cfg)
    folder = tmp_path_factory.mktemp("export")
    return model, cfg, {fmt: _export(model, fmt, folder) for fmt in EXPORTERS}


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_exported_graph_equals_eager_for_any_number_of_detections(fast_nms, fmt):
    model, cfg, paths = fast_nms
    counts = _check_same_detections(model, ExportedYolact(paths[fmt], cfg))
    # recorded on the "few" image: one with max detections (cut at TEST.DETECTIONS_PER_IMAGE) and one with none
    assert counts[0] == cfg.TEST.DETECTIONS_PER_IMAGE and 0 < counts[1] < counts[0] and counts[2] == 0


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_exported_model_gives_eager_instances(fast_nms, fmt):
    model, cfg, paths = fast_nms
    exported = ExportedYolact(paths[fmt], cfg)
    g = torch.Generator().manual_seed(1)
    inputs = [
        {"image": torch.randint(0, 256, (3, 70, 130), generator=g, dtype=torch.uint8), "height": 140, "width": 100},
        {"image": IMAGES["many"][:1]},
        {"image": IMAGES["none"], "height": 50, "width": 60},
    ]
    with torch.no_grad():
        expected = model(inputs)
    for e, o in zip(expected, exported(inputs)):
        e, o = e["instances"], o["instances"]
        assert o.image_size == e.image_size and set(o.get_fields()) == set(e.get_fields())
        torch.testing.assert_close(o.pred_boxes.tensor, e.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(o.scores, e.scores, rtol=1e-4, atol=1e-5)
        assert torch.equal(o.pred_classes, e.pred_classes)
        assert o.pred_masks.shape == e.pred_masks.shape and o.pred_masks.dtype == torch.bool
        assert (o.pred_masks != e.pred_masks).sum() <= 1e-3 * o.pred_masks.numel()
    assert len(o) == 0


def test_onnx_file_is_valid_and_self_contained(fast_nms):
    _, _, paths = fast_nms
    proto = onnx.load(paths["onnx"])
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}  # standard operators only
    assert sorted(os.listdir(os.path.dirname(paths["onnx"]))) == ["model.onnx", "model.ts"]  # weights inside


def test_traced_graph_refuses_a_batch(fast_nms):
    _, _, paths = fast_nms
    module = torch.jit.load(paths["ts"])
    with pytest.raises(RuntimeError, match="invalid for input"):
        module(torch.zeros(2, 3, SIZE, SIZE))


@pytest.mark.parametrize(
    "postprocessor,fmt", [("CrossClassFastNMS", "ts"), ("StandardNMS", "ts"), ("StandardNMS", "onnx")]
)
def test_other_postprocessors_export(tmp_path, postprocessor, fmt):
    cfg = _cfg(postprocessor)
    model = _model(cfg)
    path = _export(model, fmt, tmp_path)
    counts = _check_same_detections(model, ExportedYolact(path, cfg))
    assert counts[0] > counts[1] > 0 and counts[2] == 0
    if fmt == "onnx":
        assert "NonMaxSuppression" in {node.op_type for node in onnx.load(path).graph.node}


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_yolact_plus_exports_deformable_convs_and_rescoring(tmp_path, fmt):
    cfg = _cfg(plus=True)
    model = _model(cfg)
    path = _export(model, fmt, tmp_path)  # before any eager run: the anchor cache must not keep traced tensors
    counts = _check_same_detections(model, ExportedYolact(path, cfg))
    assert counts[0] > counts[1] > 0 and counts[2] == 0
    assert output_names(model) == OUTPUT_NAMES + ("mask_scores",)
    if fmt == "onnx":
        proto = onnx.load(path)
        assert "DeformConv" in {node.op_type for node in proto.graph.node}
        assert [o.name for o in proto.graph.output] == list(output_names(model))
    inputs = [{"image": IMAGES["many"], "height": 50, "width": 60}]
    with torch.no_grad():
        expected = model(inputs)[0]["instances"]
    got = ExportedYolact(path, cfg)(inputs)[0]["instances"]
    assert set(got.get_fields()) == set(expected.get_fields()) >= {"scores", "mask_scores"}
    torch.testing.assert_close(got.mask_scores, expected.mask_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.scores, expected.scores, rtol=1e-4, atol=1e-5)


class _CustomNMS(FastNMS):
    """A user's post-processor: whether it traces correctly is unknown."""


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: setattr(m, "postprocessor", _CustomNMS(_cfg())), "NAME='_CustomNMS' cannot be exported"),
        (lambda m: (setattr(m, "preserve_aspect_ratio", True), setattr(m, "mask_rescoring", torch.nn.Identity())),
         "PRESERVE_ASPECT_RATIO=True with YOLACT\\+\\+'s mask re-scoring cannot be exported"),
        (lambda m: m.train(), "eval mode"),
        (lambda m: setattr(m, "precision", "bfloat16"), "PRECISION='bfloat16' cannot be exported: .* float32 graph"),
    ],
    ids=["custom post-processor", "preserved aspect ratio with re-scoring", "training mode", "bfloat16"],
)
def test_unexportable_models_fail_clearly(tmp_path, change, message):
    model = _model(_cfg())
    change(model)
    for fmt in EXPORTERS:
        with pytest.raises(ValueError, match=message):
            _export(model, fmt, tmp_path)
    assert not os.listdir(tmp_path)


class _CustomTraceableNMS(FastNMS):
    """A user's post-processor that states that it traces correctly."""

    exportable = True


def test_a_postprocessor_class_states_its_exportability():
    model = _model(_cfg())
    model.postprocessor = _CustomTraceableNMS(_cfg())
    check_exportable(model)  # no error
    assert FastNMS.is_exportable() and _CustomTraceableNMS.is_exportable() and not _CustomNMS.is_exportable()


def test_exportable_checks_its_input_and_the_file_type(fast_nms, tmp_path):
    model, cfg, _ = fast_nms
    with pytest.raises(ValueError, match=r"shape \(1, 3, 96, 96\); got \(2, 3, 96, 96\)"):
        YolactExportable(model)(torch.zeros(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="Only YOLACT"):
        YolactExportable(torch.nn.Conv2d(3, 3, 1).eval())
    with pytest.raises(ValueError, match="Unknown exported model"):
        ExportedYolact(str(tmp_path / "model.pkl"), cfg)


def test_a_trace_wrong_for_other_images_is_refused(tmp_path):
    """A Python int taken from the scores becomes a constant of the trace: the check on other images sees it."""
    model = _model(_cfg())
    detect = model.detect

    def truncated(predictions, i, region):
        d = detect(predictions, i, region)
        kept = int((d.scores > 0.5).sum()) // 2  # value-dependent: the trace records this image's count
        return Detections(*(None if t is None else t[:kept] for t in d))

    model.detect = truncated
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Converting a tensor to a Python integer", TracerWarning)
        with pytest.raises(RuntimeError, match="not correct for every image, so .*model.ts is not written"):
            export_torchscript(model, preprocess_image(IMAGES["few"], SIZE), str(tmp_path / "model.ts"))
    assert not os.listdir(tmp_path)


PAPER_SIZE = 550


def _squares(count):
    """A 550 x 550 image of the pixel mean with ``count`` white and black squares, the objects of the test."""
    image = torch.tensor([104, 116, 124], dtype=torch.uint8)[:, None, None].repeat(1, PAPER_SIZE, PAPER_SIZE)
    for j in range(count):
        x, y, side = 40 + 160 * j, 100 + 50 * j, 60 + 30 * j
        image[:, y:y + side, x:x + side] = 255 if j % 2 == 0 else 0
    return image


def test_export_at_the_paper_size_equals_eager_on_confident_detections(tmp_path):
    """
    Input 550 on a narrow R-50 (1/8 of the widths, 32 channels), its class logits scaled so that the squares
    give confident detections (score > SCORE_THRESH 0.8) and the plain background none.
    """
    cfg = _small_cfg(input_size=PAPER_SIZE)
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.STEM_OUT_CHANNELS, r.WIDTH_PER_GROUP, r.RES2_OUT_CHANNELS = 50, 16, 8, 32
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    y = cfg.MODEL.YOLACT
    y.PROTONET.CONV_DIMS, y.PROTONET.POST_UPSAMPLE_CONV_DIMS, y.HEAD.SHARED_CONV_DIMS = [32, 32], [32], [32]
    y.POSTPROCESS.SCORE_THRESH = 0.8
    model = _model(cfg)
    with torch.no_grad():
        model.head.cls_score.weight.mul_(0.04)
    path = _export(model, "ts", tmp_path, image=_squares(2))
    inputs = [{"image": _squares(count)} for count in (2, 3, 0)]
    with torch.no_grad():
        expected = [o["instances"] for o in model(inputs)]
    got = [o["instances"] for o in ExportedYolact(path, cfg)(inputs)]
    confident = [int((e.scores > 0.8).sum()) for e in expected]
    assert 5 <= confident[0] < confident[1] and confident[2] == len(expected[2]) == 0
    assert all(e.pred_masks[e.scores > 0.8].flatten(1).any(1).all() for e in expected[:2])  # non-empty masks
    for e, o in zip(expected, got):
        assert len(o) == len(e) and o.image_size == e.image_size == (PAPER_SIZE, PAPER_SIZE)
        torch.testing.assert_close(o.pred_boxes.tensor, e.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(o.scores, e.scores, rtol=1e-4, atol=1e-5)
        assert torch.equal(o.pred_classes, e.pred_classes)
        assert (o.pred_masks != e.pred_masks).sum() <= 1e-4 * o.pred_masks.numel()
