import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import hooks
from detectron2.evaluation import inference_on_dataset
from detectron2.solver.build import get_default_optimizer_params
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage, get_event_storage

from yolact_d2.data import YolactDatasetMapper, register_coco_dataset
from yolact_d2.engine import AutocastTrainer, YolactTrainer
from yolact_d2.engine import trainer as trainer_module
from yolact_d2.engine.trainer import AutocastModel, check_finite_losses, drop_metrics_from
from yolact_d2.evaluation import YolactCOCOEvaluator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train_cfg(cfg, dataset, output_dir, max_iter):
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATASETS.TEST = (dataset,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.002
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.MODEL.YOLACT.INPUT_SIZE = 128
    return cfg


def test_a_few_iterations_reduce_the_loss_on_a_fixed_batch(cfg, tiny_dataset):
    for key in ("PHOTOMETRIC", "EXPAND", "SAMPLE_CROP"):
        cfg.MODEL.YOLACT.AUGMENTATION[key] = False
    cfg.INPUT.RANDOM_FLIP = "none"
    mapper = YolactDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get(tiny_dataset)[:2]]
    model = YolactTrainer.build_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for _ in range(12):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.6 * history[0], history


def test_train_then_resume_restores_the_iteration(cfg, tiny_dataset, tmp_path):
    trainer = YolactTrainer(_train_cfg(cfg, tiny_dataset, tmp_path, 3))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert os.path.isfile(tmp_path / "model_final.pth")
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"
    resumed = YolactTrainer(_train_cfg(cfg.clone(), tiny_dataset, tmp_path, 5))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3  # model_final.pth was written after iteration 2
    w_saved = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]["head.cls_score.weight"]
    torch.testing.assert_close(resumed.model.head.cls_score.weight.detach(), w_saved)
    resumed.train()
    assert resumed.iter == 5


def _amp_trainer(cfg, tiny_dataset, tmp_path):
    """A trainer of 2 iterations with SOLVER.AMP.ENABLED, and the list its backbone appends P3's dtype to."""
    cfg = _train_cfg(cfg, tiny_dataset, tmp_path, 2)
    cfg.SOLVER.AMP.ENABLED = True
    trainer = YolactTrainer(cfg)
    feature_dtypes = []
    backbone = trainer.checkpointer.model.backbone  # the model trained, whatever wraps it
    backbone.register_forward_hook(lambda module, args, out: feature_dtypes.append(out["p3"].dtype))
    trainer.resume_or_load(resume=False)
    return trainer, feature_dtypes


def test_amp_on_a_cpu_with_native_bfloat16_trains_in_bfloat16(cfg, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "cpu_has_native_bfloat16", lambda: True)
    trainer, feature_dtypes = _amp_trainer(cfg, tiny_dataset, tmp_path)
    model = trainer.checkpointer.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert isinstance(trainer.model, AutocastModel) and trainer.model.module is model
    # two training steps in bfloat16, then the final evaluation of the 6 images in float32
    assert feature_dtypes == [torch.bfloat16] * 2 + [torch.float32] * 6
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype for k, v in before.items())  # the parameters stay float32
    assert not torch.equal(after["head.cls_score.weight"], before["head.cls_score.weight"])
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_amp_on_a_cpu_without_native_bfloat16_trains_in_float32_and_warns(cfg, tiny_dataset, tmp_path, monkeypatch,
                                                                          caplog):
    monkeypatch.setattr(trainer_module, "cpu_has_native_bfloat16", lambda: False)
    with caplog.at_level("WARNING", logger=trainer_module.__name__):
        trainer, feature_dtypes = _amp_trainer(cfg, tiny_dataset, tmp_path)
    trainer.train()
    assert trainer.model is trainer.checkpointer.model  # not wrapped in autocast
    assert feature_dtypes == [torch.float32] * 8
    assert "no native bfloat16" in caplog.text and "trains in float32" in caplog.text


def test_adamw_is_fused_and_steps_like_pytorchs_adamw_after_per_parameter_clipping(cfg):
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.WEIGHT_DECAY = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model = YolactTrainer.build_model(cfg)
    reference = copy.deepcopy(model)
    optimizer = YolactTrainer.build_optimizer(cfg, model)
    assert optimizer.defaults["fused"] is True
    groups = get_default_optimizer_params(reference, base_lr=0.01, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM)
    expected = torch.optim.AdamW(groups, lr=0.01, weight_decay=0.1, fused=False)
    before = model.head.cls_score.weight.detach().clone()
    torch.manual_seed(1)
    for scale in (10.0, 0.01):  # Adam undoes one uniform scaling, not two different ones in a row
        for p, q in zip(model.parameters(), reference.parameters()):
            p.grad = torch.randn_like(p) * scale
            q.grad = p.grad.clone()
            torch.nn.utils.clip_grad_norm_(q, 0.5)  # "norm" clipping: each parameter on its own
        optimizer.step()
        expected.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert (model.head.cls_score.weight - before).abs().max() > 1e-3  # the step moved the weights


def test_unknown_optimizer_is_a_clear_error(cfg):
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER.*LAMB"):
        YolactTrainer.build_optimizer(cfg, YolactTrainer.build_model(cfg))


def test_class_count_mismatch_is_a_clear_error(cfg, tiny_dataset, tmp_path):
    cfg = _train_cfg(cfg, tiny_dataset, tmp_path, 1)
    cfg.MODEL.YOLACT.NUM_CLASSES = 7
    with pytest.raises(ValueError, match="'tiny_shapes' has 5 classes .* predicts 7"):
        YolactTrainer(cfg)


def _perfect_outputs(dataset_dicts):
    from pycocotools import mask as mask_util

    outputs = {}
    for d in dataset_dicts:
        inst = Instances((d["height"], d["width"]))
        annos = d["annotations"]
        inst.pred_boxes = Boxes(torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                               a["bbox"][1] + a["bbox"][3]] for a in annos]))
        inst.scores = torch.ones(len(annos))
        inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
        inst.pred_masks = BitMasks(torch.from_numpy(mask_util.decode([a["segmentation"] for a in annos]))
                                   .permute(2, 0, 1).bool()).tensor
        outputs[d["image_id"]] = inst
    return outputs


def test_evaluation_of_perfect_predictions_gives_ap_100(cfg, tiny_dataset, tmp_path):
    dicts = DatasetCatalog.get(tiny_dataset)
    perfect = _perfect_outputs(dicts)
    for inst in perfect.values():  # YOLACT++'s masks carry scores of their own
        inst.mask_scores = torch.full((len(inst),), 0.5)

    class Oracle(torch.nn.Module):
        def forward(self, inputs):
            return [{"instances": perfect[x["image_id"]]} for x in inputs]

    cfg = _train_cfg(cfg, tiny_dataset, tmp_path, 1)
    loader = YolactTrainer.build_test_loader(cfg, tiny_dataset)
    evaluator = YolactTrainer.build_evaluator(cfg, tiny_dataset)
    assert isinstance(evaluator, YolactCOCOEvaluator)
    results = inference_on_dataset(Oracle(), loader, evaluator)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)


def _write_non_contiguous_dataset(root):
    """Two 40 x 60 images, one rectangle (RLE) of each of the categories with ids 42, 3, 7; returns the json."""
    import cv2
    import numpy as np
    from pycocotools import mask as mask_util

    images, annotations = [], []
    for image_id in (1, 2):
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "height": 40, "width": 60})
        cv2.imwrite(str(root / f"im{image_id}.png"), np.full((40, 60, 3), 50 * image_id, np.uint8))
        for k, category_id in enumerate((42, 3, 7)):
            x, y = 4 + 18 * k, 4 + 10 * (image_id - 1)
            mask = np.zeros((40, 60), np.uint8, order="F")
            mask[y:y + 12, x:x + 14] = 1
            rle = mask_util.encode(mask)
            rle["counts"] = rle["counts"].decode()
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "bbox": [x, y, 14, 12], "area": 168, "iscrowd": 0, "segmentation": rle})
    categories = [{"id": c, "name": f"c{c}"} for c in (42, 3, 7)]
    (root / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return str(root / "instances.json")


def test_non_contiguous_category_ids_train_as_0_to_c_minus_1_and_evaluate_as_the_dataset_ids(cfg, tmp_path):
    name = "test_non_contiguous_ids"
    register_coco_dataset(name, _write_non_contiguous_dataset(tmp_path), str(tmp_path))
    try:
        cfg = _train_cfg(cfg, name, tmp_path / "output", 1)
        cfg.MODEL.YOLACT.NUM_CLASSES = 3
        dicts = DatasetCatalog.get(name)
        # Sorted ids 3, 7, 42 -> classes 0, 1, 2: the annotations (42, 3, 7) of each image become (2, 0, 1).
        assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[2, 0, 1], [2, 0, 1]]
        perfect = _perfect_outputs(dicts)

        class Oracle(torch.nn.Module):
            def forward(self, inputs):
                return [{"instances": perfect[x["image_id"]]} for x in inputs]

        results = inference_on_dataset(
            Oracle(), YolactTrainer.build_test_loader(cfg, name), YolactTrainer.build_evaluator(cfg, name)
        )
        assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(100.0)
        assert results["segm"]["AP-c42"] == pytest.approx(100.0)
        written = json.loads((tmp_path / "output" / "inference" / name / "coco_instances_results.json").read_text())
        assert sorted((r["image_id"], r["category_id"]) for r in written) == [
            (i, c) for i in (1, 2) for c in (3, 7, 42)
        ]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_two_process_gloo_training_with_train_net(tmp_path):
    """tools/train_net.py --num-gpus 2 on CPUs: detectron2's launch with gloo and a CPU-wrapped DDP model."""
    cmd = [
        sys.executable, os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file", os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml"),
        "--num-gpus", "2",
        "MODEL.DEVICE", "cpu", "MODEL.YOLACT.INPUT_SIZE", "96", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100",
        "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(tmp_path),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    assert os.path.isfile(tmp_path / "model_final.pth")


def test_a_non_finite_loss_term_stops_training_naming_the_term_and_iteration(cfg, tiny_dataset, tmp_path):
    trainer = YolactTrainer(_train_cfg(cfg, tiny_dataset, tmp_path, 4))
    trainer.resume_or_load(resume=False)

    def mask_loss_explodes_at_iteration_2(module, inputs, losses):
        if get_event_storage().iter == 2:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")

    trainer.model.loss.register_forward_hook(mask_loss_explodes_at_iteration_2)
    with pytest.raises(FloatingPointError, match=r"non-finite at iteration 2: loss_mask = nan \(all terms") as e:
        trainer.train()
    assert "loss_cls =" not in str(e.value).split("(all terms")[0]  # only the bad term is named
    # the step of iteration 2 was not taken: the weights are those after iteration 1, saved by the checkpointer
    saved = torch.load(tmp_path / "model_0000001.pth", weights_only=False)["model"]["head.cls_score.weight"]
    torch.testing.assert_close(trainer.model.head.cls_score.weight.detach(), saved)


def _metrics_line(iteration):
    return json.dumps({"iteration": iteration, "total_loss": 1.0 / (iteration + 1)}) + "\n"


def test_drop_metrics_from_keeps_the_records_before_the_resumed_iteration(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("".join(_metrics_line(i) for i in range(8)) + '{"iteration": 8, "tot')  # killed mid-line
    with open(path, "a") as writer:  # the JSONWriter of the resumed run, opened before the truncation
        drop_metrics_from(str(path), 5)
        writer.write(_metrics_line(5))
    assert path.read_text() == "".join(_metrics_line(i) for i in range(6))
    drop_metrics_from(str(path), 100)  # a later iteration: nothing to drop
    assert path.read_text() == "".join(_metrics_line(i) for i in range(6))
    drop_metrics_from(str(tmp_path / "missing.json"), 3)  # no file: nothing to do


class _LinearLoss(torch.nn.Module):
    """y = W x; in training a single-tensor loss sum(y)^2, recording the dtype y was computed in."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.dtypes = []

    def forward(self, x):
        y = self.linear(x)
        self.dtypes.append(y.dtype)
        return y.float().sum() ** 2 if self.training else y


def test_autocast_trainer_runs_simple_trainers_loop_with_the_forward_in_bfloat16():
    torch.manual_seed(0)
    model, x = _LinearLoss(), torch.randn(2, 4)
    w0, b0 = model.linear.weight.detach().clone(), model.linear.bias.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad = lambda *args, **kwargs: calls.append("zero_grad")  # SimpleTrainer's order of calls
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append("forward"))
    trainer = AutocastTrainer(model, [x], optimizer, zero_grad_before_forward=True)
    with EventStorage() as storage:
        trainer.iter = 0
        trainer.run_step()
    assert calls == ["zero_grad", "forward"] and model.dtypes == [torch.bfloat16]
    # a single-tensor loss, recorded as total_loss; the step in float32: w - lr * 2 s * d(s)/dw, s = sum(y)
    s = (x.bfloat16() @ w0.bfloat16().t() + b0.bfloat16()).float().sum()
    assert storage.history("total_loss").latest() == pytest.approx(float(s) ** 2, rel=1e-2)
    assert model.linear.weight.dtype == torch.float32
    expected = w0 - 0.1 * 2 * s * x.bfloat16().float().sum(0).expand(3, 4)
    torch.testing.assert_close(model.linear.weight.detach(), expected, rtol=1e-2, atol=1e-2)
    trainer.model.eval()
    trainer.model(x)  # in eval mode the model's own forward, outside autocast
    assert model.dtypes[-1] == torch.float32


def test_check_finite_losses_synchronises_once_for_all_terms(monkeypatch):
    syncs = []
    for name in ("item", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _f=original, _n=name: syncs.append(_n) or _f(self))
    module = torch.nn.Module().train()
    with EventStorage():
        check_finite_losses(module, (), {f"loss_{k}": torch.tensor(float(k)) for k in range(4)})
        assert len(syncs) == 1
        with pytest.raises(FloatingPointError, match=r"iteration 0: loss_2 = inf \(all terms"):
            check_finite_losses(module, (), {"loss_1": torch.tensor(1.0), "loss_2": torch.tensor(float("inf"))})


def test_a_step_leaving_non_finite_weights_stops_training_before_its_checkpoint_and_evaluation(cfg, tiny_dataset,
                                                                                               tmp_path):
    cfg = _train_cfg(cfg, tiny_dataset, tmp_path, 3)
    cfg.MODEL.YOLACT.INPUT_SIZE = 64
    cfg.TEST.EVAL_PERIOD = 2  # evaluation and a checkpoint after iteration 1
    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=False)
    weight = trainer.model.head.cls_score.weight

    def poison_after_iteration_1(optimizer, args, kwargs):  # finite losses, then a non-finite weight
        if get_event_storage().iter == 1:
            weight.data[0, 0] = float("nan")

    trainer.optimizer.register_step_post_hook(poison_after_iteration_1)
    with pytest.raises(FloatingPointError, match=r"Non-finite weights after iteration 1: head.cls_score.weight\."):
        trainer.train()
    assert not os.path.exists(tmp_path / "model_0000001.pth")  # no checkpoint of the poisoned weights
    assert not os.path.exists(tmp_path / "inference")  # no evaluation ran
    with pytest.raises(FloatingPointError, match="Non-finite weights before evaluation: head.cls_score.weight"):
        YolactTrainer.test(cfg, trainer.model)  # nor does it from a tool (e.g. --eval-only)


def test_checkpoint_max_to_keep_keeps_the_last_periodic_checkpoints(cfg, tiny_dataset, tmp_path):
    cfg = _train_cfg(cfg, tiny_dataset, tmp_path, 3)
    cfg.MODEL.YOLACT.INPUT_SIZE = 64
    cfg.DATASETS.TEST = ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP = 1
    trainer = YolactTrainer(cfg)  # kept alive: its checkpointer holds only a weak reference to it
    (checkpointer,) = [h for h in trainer.build_hooks() if isinstance(h, hooks.PeriodicCheckpointer)]
    checkpointer.max_iter = 3
    for iteration in range(3):  # as the hook's after_step calls it
        checkpointer.step(iteration)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == ["model_0000002.pth", "model_final.pth"]


def test_a_batch_size_the_processes_cannot_share_names_the_key(cfg, tiny_dataset, tmp_path):
    cfg = _train_cfg(cfg, tiny_dataset, tmp_path, 1)
    cfg.SOLVER.IMS_PER_BATCH = 0
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH=0: the total batch size, shared by the 1 training "
                                         r"process\(es\), must be a positive multiple of 1; set SOLVER.IMS_PER_BATCH"):
        YolactTrainer.build_train_loader(cfg)
