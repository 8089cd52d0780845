"""The LazyConfigs of configs/lazy build the models, loaders, optimizers and schedules of their yacs twins."""
import os

import pytest
import torch

import detectron2.data.transforms as T
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.structures import BitMasks, Boxes, Instances

from yolact_d2.config import load_yolact_config
from yolact_d2.data import YolactDatasetMapper
from yolact_d2.engine import YolactTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = {  # LazyConfig -> yacs config
    "embedded/yolact_R_18_shapes.py": "embedded/yolact_R_18_shapes.yaml",
    "yolact_R_50_FPN_550.py": "yolact_R_50_FPN_550.yaml",
    "yolact_R_101_FPN_550.py": "yolact_R_101_FPN_550.yaml",
}


def _configs(lazy_name):
    lazy = LazyConfig.load(os.path.join(ROOT, "configs", "lazy", lazy_name))
    yacs = load_yolact_config(os.path.join(ROOT, "configs", PAIRS[lazy_name]), ["MODEL.DEVICE", "cpu"])
    return lazy, yacs


def _is_plain(value) -> bool:
    """Numbers, strings, None, and lists, tuples and dicts of them."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(v) for v in value.values())
    return isinstance(value, (bool, int, float, str, type(None)))


def _settings(module):
    """A module's own settings: its public attributes that are plain values, or of another type (e.g. a
    config container where the yacs model has a list), named by that type."""
    return {
        k: v if _is_plain(v) else type(v)
        for k, v in vars(module).items()
        if not k.startswith("_") and k != "training" and not isinstance(v, torch.nn.Module)
        and not (isinstance(v, (list, tuple)) and any(isinstance(x, torch.nn.Module) for x in v))
    }


def _models(lazy_name):
    lazy, yacs = _configs(lazy_name)
    torch.manual_seed(0)
    from_yacs = build_model(yacs)
    torch.manual_seed(0)
    return instantiate(lazy.model), from_yacs


@pytest.mark.parametrize("lazy_name", list(PAIRS))
def test_the_lazy_model_is_the_yacs_model(lazy_name):
    lazy_model, yacs_model = _models(lazy_name)
    lazy_state, yacs_state = lazy_model.state_dict(), yacs_model.state_dict()
    assert list(lazy_state) == list(yacs_state)
    assert {k: v.shape for k, v in lazy_state.items()} == {k: v.shape for k, v in yacs_state.items()}
    lazy_modules, yacs_modules = dict(lazy_model.named_modules()), dict(yacs_model.named_modules())
    assert list(lazy_modules) == list(yacs_modules)
    for name, module in yacs_modules.items():
        assert type(lazy_modules[name]) is type(module), name
        assert _settings(lazy_modules[name]) == _settings(module), name


def _gt(size):
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 120.0, 140.0], [100.0, 30.0, 200.0, 90.0]]))
    inst.gt_classes = torch.tensor([1, 3])
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, 20:140, 10:120] = True
    masks[1, 30:90, 100:200] = True
    inst.gt_masks = BitMasks(masks)
    return inst


@pytest.mark.parametrize("lazy_name", ["embedded/yolact_R_18_shapes.py", "yolact_R_50_FPN_550.py"])
def test_same_state_dict_gives_the_same_outputs_and_losses(lazy_name):
    lazy_model, yacs_model = _models(lazy_name)
    lazy_model.load_state_dict(yacs_model.state_dict())
    size = yacs_model.input_size
    image = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = yacs_model.eval()([{"image": image}])[0]["instances"]
        got = lazy_model.eval()([{"image": image}])[0]["instances"]
    assert len(expected) > 0
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=0)
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=0)
    assert torch.equal(got.pred_masks, expected.pred_masks) and torch.equal(got.pred_classes, expected.pred_classes)
    if size > 300:
        return  # the losses' settings are compared above; one training forward at 550 costs seconds
    inputs = [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8), "instances": _gt(size)}]
    expected_losses = yacs_model.train()(inputs)
    got_losses = lazy_model.train()(inputs)
    assert set(got_losses) == set(expected_losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg"}
    for name, value in expected_losses.items():
        torch.testing.assert_close(got_losses[name], value, rtol=0, atol=0, msg=name)


def _describe(obj):
    """An augmentation or transform as its type and settings, containers as tuples, for comparison."""
    if isinstance(obj, (T.Augmentation, T.Transform)):
        return type(obj), {k: _describe(v) for k, v in vars(obj).items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return tuple(_describe(v) for v in obj)
    return obj


def test_the_embedded_loaders_optimizer_and_schedule_are_the_yacs_ones():
    lazy, yacs = _configs("embedded/yolact_R_18_shapes.py")
    for is_train, mapper in ((True, lazy.dataloader.train.mapper), (False, lazy.dataloader.test.mapper)):
        lazy_augs = instantiate(mapper).augmentations.augs
        yacs_augs = YolactDatasetMapper(yacs, is_train).augmentations.augs
        assert [_describe(a) for a in lazy_augs] == [_describe(a) for a in yacs_augs]
    assert lazy.dataloader.train.dataset.names == yacs.DATASETS.TRAIN[0]
    assert lazy.dataloader.test.dataset.names == yacs.DATASETS.TEST[0]
    assert lazy.dataloader.train.total_batch_size == yacs.SOLVER.IMS_PER_BATCH
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.GroupNorm(2, 4))
    lazy.optimizer.params.model = model
    lazy_optimizer, yacs_optimizer = instantiate(lazy.optimizer), YolactTrainer.build_optimizer(yacs, model)
    # AdamW with gradient clipping (a class that detectron2 makes anew each time)
    assert isinstance(lazy_optimizer, torch.optim.AdamW) and type(lazy_optimizer).__name__ == "AdamWWithGradientClip"
    assert type(yacs_optimizer).__name__ == type(lazy_optimizer).__name__
    drop = lambda group: {k: v for k, v in group.items() if k != "params"}  # noqa: E731
    assert [drop(g) for g in lazy_optimizer.param_groups] == [drop(g) for g in yacs_optimizer.param_groups]
    multiplier = instantiate(lazy.lr_multiplier)
    yacs_scheduler = build_lr_scheduler(yacs, yacs_optimizer)
    for it in range(yacs.SOLVER.MAX_ITER):
        lr = yacs_optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(yacs.SOLVER.BASE_LR * multiplier(it / yacs.SOLVER.MAX_ITER), rel=1e-9), it
        yacs_scheduler.step()
    assert lazy.train.max_iter == yacs.SOLVER.MAX_ITER and lazy.train.amp.enabled == yacs.SOLVER.AMP.ENABLED
