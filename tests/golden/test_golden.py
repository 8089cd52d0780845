"""
yolact_d2 against the golden outputs of the original YOLACT (README.md here): the original's weights converted
by tools/convert_yolact_weights.py into the models of configs/original/, on the raw synthetic images, give the
original's head outputs, detections and masks, and on a fixed batch its losses and gradients.
"""
import copy
import importlib.util
import math
import os

import pytest
import torch

from detectron2.structures import Instances

from yolact_d2.modeling.meta_arch import resize_to_input

_spec = importlib.util.spec_from_file_location(
    "golden_reference", os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

# The original's loss names -> yolact_d2's.
LOSS_NAMES = {"B": "loss_box_reg", "C": "loss_cls", "M": "loss_mask", "S": "loss_sem_seg", "I": "loss_mask_iou"}
CASES = [(model, image) for model in golden.MODELS for image in golden.IMAGES]


@pytest.fixture(scope="module")
def models():
    """model name -> the converted model, built once per module and on first use."""
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = golden.converted_model(model)
        return cache[model]

    return get


@pytest.fixture(scope="module")
def results(models):
    """
    (model, image) -> the model's forward on the golden image as read: its ``Instances`` and the network's raw
    outputs (``YOLACT.predict``) of that same call.
    """
    cache = {}

    def get(model, image):
        if (model, image) not in cache:
            net = models(model)
            seen = {}

            def predict(images):
                seen.update(type(net).predict(net, images))
                return seen

            net.predict = predict
            try:
                with torch.no_grad():
                    instances = net([golden.image_input(image)])[0]["instances"]
            finally:
                del net.predict
            cache[model, image] = instances, seen
        return cache[model, image]

    return get


def _head_slices(outputs, head, input_size):
    """The recorded slices of yolact_d2's head outputs, in the original's layout (background first...)."""
    rows = head["rows"]
    probs = outputs["cls_logits"][0, rows].double().softmax(dim=-1)
    probs = torch.cat([probs[:, -1:], probs[:, :-1]], dim=1)[:, head["conf_columns"]]
    anchors = outputs["anchors"][rows].double() / input_size  # XYXY -> the original's centre-size, relative
    priors = torch.cat([(anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]], dim=1)
    prototypes = outputs["prototypes"][0]
    return {
        "loc": outputs["box_deltas"][0, rows],
        "conf": probs,
        "mask": outputs["coefs"][0, rows],
        "priors": priors,
        "proto": torch.stack([prototypes[:, y, x] for y, x in head["proto_pixels"]]),
    }


@pytest.mark.parametrize("model,image", CASES)
def test_head_outputs_equal_the_originals(results, model, image):
    head = golden.load_golden(model, image)["head"]
    _, outputs = results(model, image)
    assert outputs["cls_logits"].shape[1] == head["num_anchors"]
    assert list(outputs["prototypes"].shape[2:]) + [outputs["prototypes"].shape[1]] == head["proto_shape"]
    for name, actual in _head_slices(outputs, head, golden.golden_cfg(model).MODEL.YOLACT.INPUT_SIZE).items():
        expected = torch.tensor(head[name], dtype=torch.float64)
        torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("model,image", CASES)
def test_detections_equal_the_originals(results, model, image):
    instances, _ = results(model, image)
    assert isinstance(instances, Instances)
    golden.assert_matches_golden(instances, golden.load_golden(model, image))


def test_golden_comparison_detects_a_wrong_detection(results):
    """assert_matches_golden fails on a changed score, box, mask or class order."""
    instances, _ = results("yolact_resnet50", "small_200x300")
    expected = golden.load_golden("yolact_resnet50", "small_200x300")
    changes = {
        "scores": lambda x: x.scores.add_(torch.arange(len(x)) == 3, alpha=1e-3),
        "boxes": lambda x: x.pred_boxes.tensor.__setitem__((5, 2), x.pred_boxes.tensor[5, 2] + 0.5),
        "masks": lambda x: x.pred_masks.__setitem__(int(x.pred_masks.flatten(1).sum(1).argmax()), False),
        "order": lambda x: x.pred_classes.copy_(x.pred_classes.roll(1)),
    }
    for name, change in changes.items():
        changed = copy.deepcopy(instances)
        change(changed)
        with pytest.raises(AssertionError):
            golden.assert_matches_golden(changed, expected)


@pytest.mark.parametrize("model", golden.MODELS)
def test_float64_head_outputs_equal_the_originals(model):
    """
    In float64 the converted model is the original's to ~1e-10 (both compute in double precision throughout,
    the conversion too: YOLACT++'s DCN biases folded into the norms in float32 would differ by ~1e-7).
    """
    image = "small_200x300"
    head = golden.load_fixture(model)["inference_float64"][image]["head"]
    net = golden.converted_model(model, dtype=torch.float64)
    pixels = golden.image_input(image)["image"].double()
    normalized = (pixels - net.pixel_mean.double()) / net.pixel_std.double()
    image, _ = resize_to_input(normalized, net.input_size, net.preserve_aspect_ratio)
    with torch.no_grad():
        outputs = net.predict(image[None])
    for name, actual in _head_slices(outputs, head, net.input_size).items():
        expected = torch.tensor(head[name], dtype=torch.float64)
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-11, msg=lambda m: f"{name}: {m}")


def _feature_sizes(input_size, num_levels=5):
    """(h, w) of P3..P7 for a square input: every stride-2 step of the ResNet-FPN maps n to ceil(n / 2)."""
    size, sizes = input_size, []
    for level in range(1, 8):
        size = math.ceil(size / 2)
        if level >= 3:
            sizes.append((size, size))
    return sizes[:num_levels]


def _positives(net, training):
    """Per image of the training batch, per GT: the anchors yolact_d2's matching makes positive for it."""
    size = training["input_size"]
    anchors = net.anchor_generator.relative(_feature_sizes(size), (size, size), torch.device("cpu"))
    batch = golden.training_batch(size)
    matched, state = net.loss.match(anchors, [x["instances"] for x in batch], [x["crowd_boxes"] for x in batch])
    return [[((matched[i] == j) & (state[i] == 1)).nonzero().flatten().tolist() for j in range(len(gts))]
            for i, gts in enumerate(training["matching"])]


@pytest.mark.parametrize("model", golden.MODELS)
def test_matching_equals_the_originals(models, model):
    """
    Each GT's positive anchors as the original's: their number, and the forced one (best IoU < 0.5) by index,
    also where several anchors tie for that best IoU.
    """
    training = golden.load_fixture(model)["training"]
    for i, (gts, actual) in enumerate(zip(training["matching"], _positives(models(model), training))):
        for j, (expected, positives) in enumerate(zip(gts, actual)):
            if isinstance(expected["positives"], list):
                assert positives == expected["positives"], (
                    f"image {i} GT {j}: forced {positives}, the original {expected['positives']} (among the tied "
                    f"{expected.get('tied_anchors')})")
            else:
                assert len(positives) == expected["positives"], f"image {i} GT {j}"


@pytest.mark.parametrize("model", golden.MODELS)
def test_the_batch_holds_a_forced_positive_tie_and_one_without(model):
    """The fixed batch tests the matching's tie-break: a forced positive among tied anchors, and an untied one."""
    forced = [g for image in golden.load_fixture(model)["training"]["matching"] for g in image
              if isinstance(g["positives"], list)]
    assert any(g["num_tied"] > 1 for g in forced) and any(g["num_tied"] == 1 for g in forced), forced


@pytest.mark.parametrize("model", golden.MODELS)
def test_losses_and_gradients_equal_the_originals(model):
    """
    YolactLoss on the fixed batch against the original's MultiBoxLoss, and the gradients of their sum. In
    training mode float32 rounding grows (batch statistics of large activations, OHEM choosing among nearly
    equal negatives): the losses agree to ~1e-4, the gradients' norms to ~1e-3 and their single values, sums
    of many cancelling terms in the first layers, to a few % of the largest.
    """
    training = golden.load_fixture(model)["training"]
    net = golden.converted_model(model).train()  # a model of its own: training updates the norms' statistics
    losses = net(golden.training_batch(training["input_size"]))
    assert sorted(losses) == sorted(LOSS_NAMES[k] for k in training["losses"])
    for name, expected in training["losses"].items():
        assert losses[LOSS_NAMES[name]].item() == pytest.approx(expected, rel=5e-4), name
    sum(losses.values()).backward()
    parameters = dict(net.named_parameters())
    num_anchors = net.anchor_generator.num_anchors
    for name, expected in training["grads"].items():
        grad = parameters[golden.converted_parameter(name)].grad.flatten()
        if name.startswith("prediction_layers.0.conf_layer"):  # per anchor, background back first
            grad = grad.reshape(num_anchors, -1).roll(1, dims=1).flatten()
        assert grad.double().norm().item() == pytest.approx(expected["norm"], rel=3e-2), name
        values = torch.tensor(expected["values"], dtype=torch.float64)
        torch.testing.assert_close(grad[: len(values)].double(), values, rtol=0, atol=0.1 * values.abs().max(),
                                   msg=lambda m: f"{name}: {m}")
