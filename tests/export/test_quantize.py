"""int8 post-training quantization of an exported tiny YOLACT: detections close to float32, only convs quantized."""
import os
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, pairwise_iou

from yolact_d2.export import (
    ONNX_FILE_NAMES,
    ExportedYolact,
    calibration_files,
    config_calibration_images,
    export_onnx_models,
    onnx_precision,
    preprocess_image,
    quantize_onnx,
    read_calibration_images,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = [
    pytest.mark.filterwarnings("ignore:`create_unbacked_symint` is deprecated:FutureWarning"),
]

SIZE = 128
QDQ = {"QuantizeLinear", "DequantizeLinear"}
# Post-processing operators of the exported graph: box decoding (Exp), Fast NMS (TopK, Trilu), score filtering
# (NonZero), mask assembly (MatMul), class scores (Softmax).
POSTPROCESSING_OPS = {"Exp", "TopK", "Trilu", "NonZero", "MatMul", "Softmax"}



def _random_images(count, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, make_small_cfg):
    """The tiny R-18 YOLACT at input 128, its config and its model.onnx / model_int8.onnx (3 calibration images)."""
    cfg = make_small_cfg(input_size=SIZE)
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.5
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    calibration = [preprocess_image(image, SIZE) for image in _random_images(3, seed=0)]
    folder = str(tmp_path_factory.mktemp("quantize"))
    paths = export_onnx_models(model, calibration[0], folder, calibration)
    return model, cfg, paths


def _graph(path):
    return onnx.load(path).graph


def test_both_files_are_written_and_labelled(quantized):
    _, _, paths = quantized
    assert {k: os.path.basename(v) for k, v in paths.items()} == ONNX_FILE_NAMES
    assert sorted(os.listdir(os.path.dirname(paths["int8"]))) == ["model.onnx", "model_int8.onnx"]
    assert onnx_precision(paths["float32"]) == "float32" and onnx_precision(paths["int8"]) == "int8"


def test_int8_detections_are_close_to_eager_float32(quantized):
    model, cfg, paths = quantized
    int8 = ExportedYolact(paths["int8"], cfg)
    # images outside the calibration set: a gradient and random pixels
    images = [torch.linspace(0, 255, SIZE).expand(3, SIZE, SIZE).to(torch.uint8)] + _random_images(1, seed=1)
    for image in images:
        with torch.no_grad():
            normalized = model.normalize(preprocess_image(image, SIZE)[0])
            boxes, scores, classes, masks = model.inference(normalized[None], [(SIZE, SIZE)])[0][:4]
        got_boxes, got_scores, got_classes, got_masks = int8.run(preprocess_image(image, SIZE))
        assert len(scores) > 10 and len(got_scores) > 10
        # each of eager's 10 best detections is found by the int8 model: same class, nearly the same box and score
        iou = pairwise_iou(Boxes(boxes[:10]), Boxes(got_boxes)) * (classes[:10, None] == got_classes[None])
        best_iou, match = iou.max(dim=1)
        assert (best_iou > 0.9).all(), best_iou
        torch.testing.assert_close(got_scores[match], scores[:10], rtol=0, atol=0.05)
        assert (got_masks[match] - masks[:10]).abs().mean() < 0.05


def test_only_convs_are_quantized(quantized):
    _, _, paths = quantized
    fp32, int8 = _graph(paths["float32"]), _graph(paths["int8"])
    ops, fp32_ops = Counter(n.op_type for n in int8.node), Counter(n.op_type for n in fp32.node)
    # Q/DQ pairs were added, no node was replaced by a quantized operator (the pre-processing's graph optimization
    # may change the count of other nodes, e.g. Expand / Gather)
    assert set(ops) - QDQ == set(fp32_ops)
    kept = POSTPROCESSING_OPS | {"Conv"}
    assert {op: ops[op] for op in kept} == {op: fp32_ops[op] for op in kept}
    conv_tensors = {t for n in fp32.node if n.op_type == "Conv" for t in list(n.input) + list(n.output)}
    quantized_tensors = {n.input[0] for n in int8.node if n.op_type == "QuantizeLinear"}
    assert quantized_tensors and quantized_tensors <= conv_tensors
    producers = {out: n.op_type for n in int8.node for out in n.output}
    for node in int8.node:
        if node.op_type == "Conv":  # activations and weights (int8 initializers) dequantized into every conv
            assert producers.get(node.input[0]) == producers.get(node.input[1]) == "DequantizeLinear"
        if node.op_type in POSTPROCESSING_OPS:
            assert not {producers.get(t) for t in node.input} & QDQ, node.name
    assert POSTPROCESSING_OPS <= set(ops)


def test_bad_calibration_input_fails_clearly(quantized, tmp_path):
    _, _, paths = quantized
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_onnx(paths["float32"], str(tmp_path / "q.onnx"), [])
    with pytest.raises(ValueError, match=r"\(1, 3, S, S\) float32.*image 0 is \(3, 128, 128\)"):
        quantize_onnx(paths["float32"], str(tmp_path / "q.onnx"), [torch.zeros(3, SIZE, SIZE)])
    with pytest.raises(ValueError, match="at least one calibration image"):
        read_calibration_images([], SIZE, "BGR")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match=f"Cannot read image {broken}"):
        read_calibration_images([str(broken)], SIZE, "BGR")
    assert not os.path.exists(tmp_path / "q.onnx")


def test_missing_onnxruntime_is_named(quantized, tmp_path, monkeypatch):
    _, _, paths = quantized
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"needs the package onnxruntime \(pip install onnxruntime\)"):
        quantize_onnx(paths["float32"], str(tmp_path / "q.onnx"), [torch.zeros(1, 3, SIZE, SIZE)])


@pytest.fixture
def dataset(tmp_path):
    """A registered dataset of 5 images (BGR files of constant colours 0, 10, ..., 40)."""
    files = []
    for i in range(5):
        files.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(files[-1], np.full((40, 60, 3), (10 * i, 0, 255), dtype=np.uint8))
    DatasetCatalog.register("quantize_calibration", lambda: [{"file_name": f} for f in files])
    yield "quantize_calibration", files
    DatasetCatalog.remove("quantize_calibration")


def test_calibration_images_of_a_dataset(dataset):
    name, files = dataset
    assert calibration_files(name, 2) == [files[0], files[2]]  # spread over the dataset
    assert calibration_files(name, 9) == files
    images = read_calibration_images(calibration_files(name, 2), 32, "RGB")
    assert [tuple(i.shape) for i in images] == [(1, 3, 32, 32)] * 2 and images[0].dtype == torch.float32
    # RGB of BGR (20, 0, 255), resized as the exported model's input
    torch.testing.assert_close(images[1][0, :, 5, 5], torch.tensor([255.0, 0.0, 20.0]))
    with pytest.raises(ValueError, match="'unknown_set' is not registered"):
        calibration_files("unknown_set")
    with pytest.raises(ValueError, match="count must be >= 1; got 0"):
        calibration_files(name, 0)


def test_yolact_plus_deformable_convs_stay_float(tmp_path, make_small_cfg):
    cfg = make_small_cfg(input_size=96)
    r, y = cfg.MODEL.RESNETS, cfg.MODEL.YOLACT
    r.DEPTH, r.STEM_OUT_CHANNELS, r.WIDTH_PER_GROUP, r.RES2_OUT_CHANNELS = 50, 16, 8, 32
    r.DEFORM_ON_PER_STAGE, r.DEFORM_MODULATED = [False, True, True, True], True
    y.MASK_RESCORING.ENABLED = True
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    calibration = [preprocess_image(image, 96) for image in _random_images(2, seed=2)]
    paths = export_onnx_models(model, calibration[0], str(tmp_path), calibration)
    int8 = _graph(paths["int8"])
    deform = [n for n in int8.node if n.op_type == "DeformConv"]
    assert len(deform) == sum(n.op_type == "DeformConv" for n in _graph(paths["float32"]).node) > 0
    weights = {i.name: i.data_type for i in int8.initializer}
    assert all(weights.get(n.input[1]) == onnx.TensorProto.FLOAT for n in deform)  # float weights, not dequantized
    outputs = ExportedYolact(paths["int8"], cfg).run(calibration[1])
    assert len(outputs) == 5 and outputs[0].dtype == torch.float32  # boxes, scores, classes, masks, mask_scores


def test_a_configs_calibration_images_are_its_training_images_or_the_given_files(dataset, make_small_cfg):
    name, files = dataset
    cfg = make_small_cfg(input_size=32)
    cfg.INPUT.FORMAT, cfg.DATASETS.TRAIN = "RGB", (name,)
    images = config_calibration_images(cfg, count=2)  # files 0 and 2: blue 0 and 20
    assert [image[0, :, 5, 5].tolist() for image in images] == [[255.0, 0.0, 0.0], [255.0, 0.0, 20.0]]
    (image,) = config_calibration_images(cfg, files=[files[4]])
    assert image[0, :, 5, 5].tolist() == [255.0, 0.0, 40.0]
    cfg.DATASETS.TRAIN = ()
    with pytest.raises(ValueError, match="needs calibration images or a dataset in DATASETS.TRAIN"):
        config_calibration_images(cfg)
