"""
int8 accuracy: a tiny YOLACT trained on two embedded images, exported to ONNX and quantized (calibrated on those
images), keeps the AP of its float32 export on them, as the project's evaluator computes it.
"""
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from yolact_d2.data import YolactDatasetMapper
from yolact_d2.engine import YolactTrainer
from yolact_d2.export import ExportedYolact, export_onnx_models, preprocess_image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = 64
IMAGES = [2, 3]  # of tiny_shapes: three shapes each
# mask and box AP of the int8 model may differ from the float32 export's by at most this many points (of 100)
AP_TOLERANCE = 5.0
STEPS = 50


def _trained(cfg, dicts):
    """A tiny YOLACT (R-18 frozen at its random weights) trained STEPS steps on ``dicts`` at 64 x 64."""
    cfg.MODEL.YOLACT.INPUT_SIZE = SIZE
    cfg.MODEL.BACKBONE.FREEZE_AT = 5
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.05
    cfg.DATALOADER.NUM_WORKERS = 0
    for key in ("PHOTOMETRIC", "EXPAND", "SAMPLE_CROP"):
        cfg.MODEL.YOLACT.AUGMENTATION[key] = False
    cfg.INPUT.RANDOM_FLIP = "none"
    mapper = YolactDatasetMapper(cfg, is_train=True)
    batch = [mapper(dict(d)) for d in dicts]
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0)
    for _ in range(STEPS):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _ap(model, cfg, dataset, dicts, output_dir):
    """bbox and segm AP of ``model`` on ``dicts`` (images of ``dataset``) with the project's evaluator."""
    evaluator = YolactTrainer.build_evaluator(cfg, dataset, output_dir)
    evaluator.reset()
    mapper = YolactDatasetMapper(cfg, is_train=False)
    with torch.no_grad():
        for d in dicts:
            x = mapper(dict(d))
            evaluator.process([x], model([x]))
    results = evaluator.evaluate(img_ids=[d["image_id"] for d in dicts])
    return {task: results[task]["AP"] for task in ("bbox", "segm")}


def test_int8_keeps_the_float32_ap_on_embedded_images(tiny_dataset, make_small_cfg, tmp_path):
    dicts = [DatasetCatalog.get(tiny_dataset)[i] for i in IMAGES]
    cfg = make_small_cfg()
    model = _trained(cfg, dicts)
    calibration = [preprocess_image(YolactDatasetMapper(cfg, is_train=False)(dict(d))["image"], SIZE) for d in dicts]
    paths = export_onnx_models(model, calibration[0], str(tmp_path / "onnx"), calibration)
    aps = {name: _ap(ExportedYolact(path, cfg), cfg, tiny_dataset, dicts, str(tmp_path / name))
           for name, path in paths.items()}
    eager = _ap(model, cfg, tiny_dataset, dicts, str(tmp_path / "eager"))
    assert aps["float32"] == pytest.approx(eager, abs=0.5)  # the export itself loses nothing
    assert aps["float32"]["bbox"] > 50 and aps["float32"]["segm"] > 10, aps  # a model that found the shapes
    for task in ("bbox", "segm"):
        assert abs(aps["int8"][task] - aps["float32"][task]) <= AP_TOLERANCE, aps
