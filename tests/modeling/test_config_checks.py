"""check_yolact_config: values no YOLACT can have stop the build with an error naming the key and the rule."""
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

from yolact_d2.modeling.config_checks import check_yolact_config


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.YOLACT.NUM_PROTOTYPES", 0, "MODEL.YOLACT.NUM_PROTOTYPES is 0: it must be at least 1"),
        ("MODEL.YOLACT.NUM_PROTOTYPES", -2, "MODEL.YOLACT.NUM_PROTOTYPES is -2: it must be at least 1"),
        ("MODEL.YOLACT.NUM_CLASSES", 0, "MODEL.YOLACT.NUM_CLASSES is 0: it must be at least 1"),
        ("MODEL.YOLACT.INPUT_SIZE", -64, "MODEL.YOLACT.INPUT_SIZE is -64: it must be a positive number of pixels"),
        ("MODEL.YOLACT.ANCHOR.SIZES", [[8], [], [32], [64], [128]], "ANCHOR.SIZES is [[8], [], [32], [64], [128]]"),
        ("MODEL.YOLACT.ANCHOR.SIZES", [[-8], [16], [32], [64], [128]], "one non-empty list of positive sizes"),
        ("MODEL.YOLACT.ANCHOR.ASPECT_RATIOS", [[]], "ASPECT_RATIOS is [[]]: it must be a non-empty list"),
        ("MODEL.YOLACT.ANCHOR.ASPECT_RATIOS", [[1.0, -2.0]], "a non-empty list of positive ratios"),
        ("MODEL.YOLACT.PROTONET.CONV_DIMS", [64, 0], "PROTONET.CONV_DIMS is [64, 0]: it must be positive channel"),
        ("MODEL.YOLACT.HEAD.SHARED_CONV_DIMS", [-1], "HEAD.SHARED_CONV_DIMS is [-1]"),
        ("MODEL.YOLACT.PROTONET.UPSAMPLE_FACTOR", 0, "UPSAMPLE_FACTOR is 0: it must be at least 1"),
        ("MODEL.YOLACT.LOSS.MASKS_TO_TRAIN", 0, "MASKS_TO_TRAIN is 0: it must be at least 1"),
        ("MODEL.YOLACT.POSTPROCESS.TOP_K", 0, "TOP_K is 0: it must be at least 1"),
        ("MODEL.YOLACT.POSTPROCESS.NMS_THRESH", 1.5, "NMS_THRESH is 1.5: it must be in [0, 1]"),
        ("MODEL.YOLACT.POSTPROCESS.SCORE_THRESH", -0.1, "SCORE_THRESH is -0.1: it must be in [0, 1]"),
        ("MODEL.YOLACT.MATCHER.POSITIVE_IOU", 2.0, "POSITIVE_IOU is 2.0: it must be in [0, 1]"),
        ("TEST.DETECTIONS_PER_IMAGE", 0, "TEST.DETECTIONS_PER_IMAGE is 0: it must be at least 1"),
        ("MODEL.YOLACT.PRECISION", "bf16", "PRECISION is bf16: it must be one of float32, bfloat16, float16"),
    ],
)
def test_nonsensical_values_are_named_when_the_model_is_built(cfg, key, value, message):
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError, match="Invalid YOLACT config") as e:
        build_model(cfg)
    assert message in str(e.value)
    assert str(e.value).count("\n") == 1  # only this problem


def test_every_problem_is_listed_at_once(cfg):
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 0
    cfg.MODEL.YOLACT.IN_FEATURES = []
    cfg.MODEL.YOLACT.ANCHOR.SIZES = []
    with pytest.raises(ValueError) as e:
        check_yolact_config(cfg)
    lines = str(e.value).splitlines()[1:]
    assert [line.split(" is ")[0].strip() for line in lines] == [
        "MODEL.YOLACT.NUM_PROTOTYPES", "MODEL.YOLACT.IN_FEATURES", "MODEL.YOLACT.ANCHOR.SIZES"
    ]


@pytest.mark.parametrize(
    "key, registered",
    [
        ("PROTONET", "['ProtoNet']"),
        ("HEAD", "['YolactDecoupledHead', 'YolactHead']"),
        ("POSTPROCESS", "['CrossClassFastNMS', 'FastNMS', 'StandardNMS']"),
    ],
)
def test_unknown_component_names_list_the_registered_ones(cfg, key, registered):
    cfg.MODEL.YOLACT[key].NAME = "Typo"
    with pytest.raises(ValueError, match=rf"MODEL.YOLACT.{key}.NAME 'Typo' is not registered; registered: ") as e:
        build_model(cfg)
    assert str(e.value).endswith(registered)


def test_cuda_device_without_a_gpu_names_the_key_and_the_fix(cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg.MODEL.DEVICE = "cuda"
    with pytest.raises(ValueError, match="MODEL.DEVICE is 'cuda' but torch finds no CUDA GPU .* MODEL.DEVICE cpu"):
        build_model(cfg)
    cfg.MODEL.DEVICE = "gpu"
    with pytest.raises(ValueError, match="MODEL.DEVICE 'gpu' is not a torch device; use 'cpu' or 'cuda'"):
        build_model(cfg)


def test_cuda_index_beyond_the_gpus_is_named(cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg.MODEL.DEVICE = "cuda:1"
    with pytest.raises(ValueError, match="MODEL.DEVICE is 'cuda:1' but this machine has 1 CUDA GPUs"):
        check_yolact_config(cfg)


@pytest.mark.parametrize("size", [100, 129])
def test_input_sizes_that_are_not_multiples_of_the_strides_train_and_run(cfg, size):
    # Levels of stride 8 to 128: ceil(size / stride) cells each; the FPN resizes to the exact finer size.
    cfg.MODEL.YOLACT.INPUT_SIZE = size
    check_yolact_config(cfg)
    model = build_model(cfg)
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, size, size))
    assert [tuple(features[f].shape[-2:]) for f in ("p3", "p4", "p5", "p6", "p7")] == [
        (-(-size // s),) * 2 for s in (8, 16, 32, 64, 128)
    ]
    gt = Instances((size, size), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 60.0, 70.0]])), gt_classes=torch.tensor([2]))
    masks = torch.zeros(1, size, size, dtype=torch.bool)
    masks[0, 20:70, 10:60] = True
    gt.gt_masks = BitMasks(masks)
    losses = model.train()([{"image": torch.zeros(3, size, size, dtype=torch.uint8), "instances": gt}] * 2)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    with torch.no_grad():
        (out,) = model.eval()([{"image": torch.zeros(3, 50, 70, dtype=torch.uint8)}])
    assert out["instances"].image_size == (50, 70)
