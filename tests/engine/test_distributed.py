"""
Two CPU processes (gloo, detectron2's ``launch``): data-parallel training with the project's ``wrap_ddp`` keeps
the replicas identical and equal to one process that sees both images per step, naiveSyncBN's statistics are
those of the whole batch, and the evaluator gives the AP of one process. One launch runs all three.
"""
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import launch
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm

from yolact_d2.data import YolactDatasetMapper
from yolact_d2.engine import YolactTrainer, wrap_ddp

STEPS = 3
# (norm of the R-18, SGD steps) of the two runs each rank makes
RUNS = {"frozen_bn": ("FrozenBN", STEPS), "sync_bn": ("naiveSyncBN", 1)}


def _ddp_cfg(cfg, norm):
    cfg.MODEL.YOLACT.INPUT_SIZE = 64
    cfg.MODEL.RESNETS.NORM = norm
    for key in ("PHOTOMETRIC", "EXPAND", "SAMPLE_CROP"):
        cfg.MODEL.YOLACT.AUGMENTATION[key] = False
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def _seeded_model_and_sgd(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    return model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)


class _ImperfectOracle(torch.nn.Module):
    """
    Predicts each image's GT (from its dataset dict): the k-th shape with score 1 - k / 20, every third one
    shifted right by half its width and scored above the others, so that the AP is neither 0 nor 100.
    ``num_images`` counts the images it saw.
    """

    def __init__(self, dataset_dicts):
        super().__init__()
        self.dicts = {d["image_id"]: d for d in dataset_dicts}
        self.num_images = 0

    def forward(self, inputs):
        return [{"instances": self._predict(self.dicts[x["image_id"]])} for x in inputs]

    def _predict(self, d):
        self.num_images += 1
        annos = d["annotations"]
        masks = mask_util.decode([a["segmentation"] for a in annos]).transpose(2, 0, 1).astype(bool)
        scores = [1 - k / 20 for k in range(len(annos))]
        for k in range(0, len(annos), 3):
            masks[k] = np.roll(masks[k], int(annos[k]["bbox"][2] / 2), axis=1)
            scores[k] = 1.0
        ys, xs = [np.nonzero(m.any(axis=1))[0] for m in masks], [np.nonzero(m.any(axis=0))[0] for m in masks]
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor([[x[0], y[0], x[-1] + 1, y[-1] + 1] for x, y in zip(xs, ys)],
                                             dtype=torch.float32))
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
        inst.pred_masks = torch.from_numpy(masks)
        return inst


def _evaluate(cfg, dataset, output_dir):
    """The project's test loader and evaluator on ``dataset`` with :class:`_ImperfectOracle`: (results, images
    seen by this process)."""
    oracle = _ImperfectOracle(DatasetCatalog.get(dataset))
    results = inference_on_dataset(oracle, YolactTrainer.build_test_loader(cfg, dataset),
                                   YolactTrainer.build_evaluator(cfg, dataset, output_dir))
    return results, oracle.num_images


def _on_each_rank(cfgs, inputs, dataset, dataset_files, out_dir):
    """
    One rank: for each run of :data:`RUNS`, a seeded model wrapped in DDP trains its steps on image ``rank`` of
    ``inputs``, its state (parameters and buffers) saved as ``<run>_rank<r>.pth``; then the evaluation of
    ``dataset`` (registered again: this is a new process), saved as ``eval_rank<r>.json``.
    """
    torch.set_num_threads(1)
    rank = comm.get_rank()
    for name, (norm, steps) in RUNS.items():
        model, optimizer = _seeded_model_and_sgd(cfgs[name])
        ddp = wrap_ddp(model)
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        for _ in range(steps):
            loss = sum(ddp([inputs[rank]]).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.save(model.state_dict(), f"{out_dir}/{name}_rank{rank}.pth")
    if dataset not in DatasetCatalog.list():
        register_coco_instances(dataset, {}, *dataset_files)
    results, num_images = _evaluate(cfgs["frozen_bn"], dataset, f"{out_dir}/eval")
    with open(f"{out_dir}/eval_rank{rank}.json", "w") as f:
        json.dump({"results": results, "num_images": num_images}, f)


@pytest.fixture(scope="module")
def setup(tiny_dataset, make_small_cfg, tmp_path_factory):
    """Images 0 and 1 of ``tiny_shapes`` mapped at 64 x 64, the configs of :data:`RUNS`, each run's two replicas
    as trained on two ranks, and each rank's evaluation."""
    cfgs = {name: _ddp_cfg(make_small_cfg(), norm) for name, (norm, _) in RUNS.items()}
    mapper = YolactDatasetMapper(cfgs["frozen_bn"], is_train=True)
    inputs = [mapper(d) for d in DatasetCatalog.get(tiny_dataset)[:2]]
    out_dir = tmp_path_factory.mktemp("distributed")
    meta = MetadataCatalog.get(tiny_dataset)
    launch(_on_each_rank, num_gpus_per_machine=2, dist_url="auto",
           args=(cfgs, inputs, tiny_dataset, (meta.json_file, meta.image_root), str(out_dir)))
    replicas = {name: [torch.load(out_dir / f"{name}_rank{r}.pth") for r in range(2)] for name in RUNS}
    evaluations = [json.loads((out_dir / f"eval_rank{r}.json").read_text()) for r in range(2)]
    return cfgs, inputs, replicas, evaluations


def test_replicas_stay_identical_and_equal_one_process_seeing_both_images(setup):
    """DDP averages the two ranks' gradients, so one process that averages the losses of the two images (each
    normalised by its own positives, as each rank does) takes the same steps."""
    cfgs, inputs, replicas, _ = setup
    replicas = replicas["frozen_bn"]
    model, optimizer = _seeded_model_and_sgd(cfgs["frozen_bn"])
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(STEPS):
        loss = sum(sum(model([x]).values()) for x in inputs) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = model.state_dict()
    for key, value in state.items():
        assert torch.equal(replicas[0][key], replicas[1][key]), key
        torch.testing.assert_close(replicas[0][key], value, rtol=1e-4, atol=1e-5, msg=key)
    trained = [k for k, p in model.named_parameters() if p.requires_grad]
    moved = [k for k in trained if not torch.allclose(state[k], initial[k], rtol=0, atol=1e-4)]
    assert len(trained) > 40 and len(moved) > 0.9 * len(trained)  # the weights compared did train


def test_naive_sync_batch_norm_keeps_the_replicas_statistics_identical(setup):
    """Each rank saw another image, yet after the step both hold the same running statistics (plain BN would not:
    the two images' own statistics differ) and the same weights."""
    cfgs, inputs, replicas, _ = setup
    replicas = replicas["sync_bn"]
    stats = [k for k in replicas[0] if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 20  # the R-18's norms: stem, 2 per block, 3 shortcuts (FREEZE_AT 2 froze 5 of them)
    for key in replicas[0]:
        assert torch.equal(replicas[0][key], replicas[1][key]), key
    own = [_batch_norm_inputs(cfgs["sync_bn"], [x]) for x in inputs]
    assert all(not torch.allclose(own[0][n].mean(dim=(0, 2, 3)), own[1][n].mean(dim=(0, 2, 3))) for n in own[0])


def _batch_norm_inputs(cfg, inputs):
    """What each batch norm of the seeded model sees in one training forward pass of ``inputs`` in this process."""
    model, _ = _seeded_model_and_sgd(cfg)  # in one process naiveSyncBN is BatchNorm2d
    seen = {}

    def record(name):
        def hook(module, args, out):  # returns None: the output stays the module's
            seen[name] = args[0].detach().double()
        return hook

    for name, norm in model.named_modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.register_forward_hook(record(name))
    model(inputs)
    return seen


def test_naive_sync_batch_norm_statistics_are_the_whole_batchs(setup):
    """
    After one step both replicas hold the running statistics of the two images as one batch: from the initial
    (0, 1), mean 0.1 * m and variance 0.9 + 0.1 * v, where m and v (biased) are computed here from the inputs
    that each batch norm of the same model in one process sees for the two-image batch.
    """
    cfgs, inputs, replicas, _ = setup
    seen = _batch_norm_inputs(cfgs["sync_bn"], inputs)
    for name, x in seen.items():
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        for rank in range(2):
            got_mean, got_var = replicas["sync_bn"][rank][name + ".running_mean"], replicas["sync_bn"][rank][name + ".running_var"]
            torch.testing.assert_close(got_mean.double(), 0.1 * mean, rtol=1e-4, atol=1e-6, msg=name)
            torch.testing.assert_close(got_var.double(), 0.9 + 0.1 * var, rtol=1e-4, atol=1e-6, msg=name)


def test_distributed_evaluation_gives_the_ap_of_one_process(setup, tiny_dataset, tmp_path):
    """Each rank evaluates half of the 6 images; the first gathers them and reports every metric as one process."""
    cfgs, _, _, evaluations = setup
    expected, num_images = _evaluate(cfgs["frozen_bn"], tiny_dataset, str(tmp_path))
    assert num_images == 6 and [e["num_images"] for e in evaluations] == [3, 3]
    assert 20 < expected["segm"]["AP"] < 90 and 20 < expected["bbox"]["AP"] < 90
    for task in ("bbox", "segm"):
        assert evaluations[0]["results"][task] == pytest.approx(expected[task], rel=1e-9, nan_ok=True), task
    assert evaluations[1]["results"] == {}  # only the main process evaluates
