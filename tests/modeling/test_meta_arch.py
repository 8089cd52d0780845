import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import BitMasks, Boxes, Instances, pairwise_iou
from detectron2.utils.visualizer import Visualizer

from yolact_d2.layers import ChannelsLastGroupNorm, inference_autocast
from yolact_d2.layers import precision as precision_module

FIELDS = {"pred_boxes", "scores", "pred_classes", "pred_masks"}


def _model(cfg, score_thresh=0.0):
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = score_thresh
    return build_model(cfg).eval()


def _image(h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def _check_instances(inst, h, w, max_dets=100):
    assert set(inst.get_fields()) == FIELDS
    n = len(inst)
    assert inst.image_size == (h, w)
    assert inst.pred_boxes.tensor.shape == (n, 4) and inst.scores.shape == (n,) and inst.pred_classes.shape == (n,)
    assert inst.pred_masks.shape == (n, h, w) and inst.pred_masks.dtype == torch.bool
    assert n <= max_dets
    b = inst.pred_boxes.tensor
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all()


@pytest.mark.parametrize("input_size,image_hw,out_hw", [(160, (120, 200), (240, 400)), (96, (96, 96), None)])
def test_output_shapes(cfg, input_size, image_hw, out_hw):
    cfg.MODEL.YOLACT.INPUT_SIZE = input_size
    model = _model(cfg)
    x = {"image": _image(*image_hw)}
    if out_hw:
        x["height"], x["width"] = out_hw
    with torch.no_grad():
        inst = model([x])[0]["instances"]
    _check_instances(inst, *(out_hw or image_hw))
    assert len(inst) == 100  # score threshold 0: the post-processor fills max detections


def test_batched_inference_equals_one_by_one(cfg):
    model = _model(cfg)
    inputs = [{"image": _image(100, 140, 1)}, {"image": _image(160, 160, 2), "height": 80, "width": 80}]
    with torch.no_grad():
        batched = model(inputs)
        single = [model([x])[0] for x in inputs]
    for b, s in zip(batched, single):
        b, s = b["instances"], s["instances"]
        torch.testing.assert_close(b.scores, s.scores, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.pred_boxes.tensor, s.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
        assert (b.pred_masks != s.pred_masks).float().mean() < 1e-3


def test_channels_last_changes_the_layout_not_the_results(cfg):
    model = _model(cfg)
    assert model.channels_last  # the default
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert len(weights) > 20 and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    cfg.MODEL.YOLACT.CHANNELS_LAST = False
    plain_model = _model(cfg)
    plain_model.load_state_dict(model.state_dict())
    assert all(p.is_contiguous() for p in plain_model.parameters())
    images, _ = model.preprocess_image([{"image": _image(96, 128, 3)}])
    with torch.no_grad():
        fast = model.predict(images)
        plain = plain_model.predict(images)
    assert fast["features"]["p3"].is_contiguous(memory_format=torch.channels_last)
    assert plain["features"]["p3"].is_contiguous()
    for key in ("prototypes", "cls_logits", "box_deltas", "coefs"):
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_models_use_the_channels_last_group_norm(cfg, channels_last):
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.YOLACT.HEAD.NORM = "GN"
    cfg.MODEL.YOLACT.CHANNELS_LAST = channels_last
    norms = [type(m) for m in _model(cfg).modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) > 10  # the ResNet's and the head's
    assert set(norms) == {ChannelsLastGroupNorm if channels_last else torch.nn.GroupNorm}


def test_preserved_aspect_ratio_maps_boxes_back(cfg):
    cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO = True
    model = _model(cfg)
    with torch.no_grad():
        images, regions = model.preprocess_image([{"image": _image(80, 160)}])
        inst = model([{"image": _image(80, 160)}])[0]["instances"]
    assert regions == [(80, 160)]
    assert images[0, :, 80:].abs().max() == 0  # padding is the mean colour
    _check_instances(inst, 80, 160)


def test_zero_detections_give_empty_instances_with_all_fields(cfg):
    model = _model(cfg, score_thresh=1.0)  # no softmax foreground probability of random weights reaches 1
    with torch.no_grad():
        inst = model([{"image": _image(64, 48)}])[0]["instances"]
    assert len(inst) == 0
    _check_instances(inst, 64, 48)


def test_default_predictor_and_visualizer(cfg, tmp_path):
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    cfg.INPUT.MIN_SIZE_TEST = 160
    cfg.DATASETS.TEST = ()
    predictor = DefaultPredictor(cfg)
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    inst = predictor(image)["instances"].to("cpu")
    _check_instances(inst, 90, 120, max_dets=5)
    assert len(inst) == 5
    meta = MetadataCatalog.get("__yolact_test").set(thing_classes=[f"c{i}" for i in range(5)])
    out = Visualizer(image[:, :, ::-1], meta).draw_instance_predictions(inst).get_image()
    assert out.shape == (90, 120, 3) and not np.array_equal(out, image[:, :, ::-1])
    # a 1-channel image is replicated; a 4-channel one is refused with a clear message
    assert len(predictor(image[:, :, :1])["instances"]) == 5
    with pytest.raises(ValueError, match="4-channel"):
        predictor(np.dstack([image, image[:, :, :1]]))


def test_bad_inputs_raise_clear_errors(cfg):
    model = _model(cfg)
    with pytest.raises(ValueError, match="empty list"):
        model([])
    model.train()
    with pytest.raises(ValueError, match="needs 'instances'"):
        model([{"image": _image(160, 160)}])


def _gt(size, boxes, classes):
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    masks = torch.zeros(len(classes), size, size, dtype=torch.bool)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[int(y1):int(y2), int(x1):int(x2)] = True
    inst.gt_masks = BitMasks(masks)
    return inst


def test_training_losses_of_a_zeroed_head_by_hand(cfg):
    """
    With the class, box, coefficient and semantic convs zeroed: every softmax is uniform, so each anchor OHEM
    selects costs log(C + 1), and OHEM takes 3 negatives per positive: loss_cls = 4 log(C + 1); box deltas are 0,
    so loss_box_reg = 1.5 * the smooth-L1 of the GT's SSD encoding on each positive anchor (IoU >= 0.5 or the
    GT's best, found here by brute force), over the positives; masks are sigmoid(0) = 0.5 inside the GT box's
    crop (1 px padding at prototype resolution), so loss_mask = 6.125 * log 2 * crop pixels / box area;
    semantic logits are 0: loss_sem_seg = C log 2 per image. The image without annotations adds nothing but
    its semantic loss, so the averages over the batch stay the same.
    """
    model = build_model(cfg).train()
    with torch.no_grad():
        for conv in (model.head.cls_score, model.head.bbox_pred, model.head.coef_pred, model.sem_seg_head.conv):
            conv.weight.zero_()
            conv.bias.zero_()
    # near a square anchor of P5 (52.1, 52.1, 107.9, 107.9), whose 1:2 and 2:1 siblings overlap it by IoU 0.54;
    # (13, 13, 27, 27) on the 40 x 40 prototypes of the 160 x 160 input
    gt_box = [52.0, 52.0, 108.0, 108.0]
    inputs = [
        {"image": _image(160, 160, 3), "instances": _gt(160, [gt_box], [1])},
        {"image": _image(160, 160, 4), "instances": _gt(160, [], [])},
    ]
    losses = model(inputs)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg"}
    num_classes = cfg.MODEL.YOLACT.NUM_CLASSES
    with torch.no_grad():
        raw = model.predict(model.preprocess_image(inputs)[0])
    assert tuple(raw["prototypes"].shape[-2:]) == (40, 40)
    anchors = raw["anchors"]
    ious = pairwise_iou(Boxes(torch.tensor([gt_box])), Boxes(anchors))[0]
    positive = ious >= 0.5
    positive[ious.argmax()] = True
    deltas = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)).get_deltas(
        anchors[positive], torch.tensor([gt_box]).expand(int(positive.sum()), 4))
    smooth_l1 = torch.where(deltas.abs() < 1, 0.5 * deltas ** 2, deltas.abs() - 0.5).sum()
    expected = {
        "loss_cls": 4 * math.log(num_classes + 1),
        "loss_box_reg": 1.5 * smooth_l1.item() / int(positive.sum()),
        "loss_mask": 6.125 * math.log(2) * 16 * 16 / (14 * 14),  # crop: columns and rows 12..27
        "loss_sem_seg": num_classes * math.log(2),
    }
    assert int(positive.sum()) == 3 and 0.1 < expected["loss_box_reg"]
    for name, value in expected.items():
        torch.testing.assert_close(losses[name].item(), value, rtol=1e-5, atol=0, msg=name)
    sum(losses.values()).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0 and model.head.coef_pred.weight.grad.abs().sum() > 0
    empty = model([inputs[1]])
    assert {k: v.item() for k, v in empty.items()} == pytest.approx(
        {"loss_cls": 0.0, "loss_box_reg": 0.0, "loss_mask": 0.0, "loss_sem_seg": num_classes * math.log(2)})


def test_class_ids_beyond_num_classes_are_refused(cfg):
    model = build_model(cfg).train()
    with pytest.raises(ValueError, match="NUM_CLASSES=5"):
        model([{"image": _image(160, 160), "instances": _gt(160, [[10, 10, 50, 50]], [7])}])


def test_losses_under_bfloat16_autocast_are_float32_and_near_the_float32_ones(cfg):
    """Mixed precision runs the network in bfloat16 and the losses in float32 on its outputs, within 2% of float32."""
    model = build_model(cfg).train()
    inputs = [{"image": _image(160, 160, 3), "instances": _gt(160, [[10, 20, 90, 100], [60, 60, 150, 140]], [1, 4])}]
    full = model(inputs)
    head_dtypes, loss_inputs = [], []
    hook = model.head.register_forward_hook(lambda module, args, out: head_dtypes.append(out[0].dtype))

    def record_loss_inputs(module, args):
        flat = {**args[0], **args[0].get("sem_seg_logits", {})}
        loss_inputs.append(({v.dtype for v in flat.values() if torch.is_tensor(v)}, torch.is_autocast_enabled("cpu")))

    loss_hook = model.loss.register_forward_pre_hook(record_loss_inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(inputs)
    hook.remove()
    loss_hook.remove()
    assert head_dtypes == [torch.bfloat16]
    assert loss_inputs == [({torch.float32}, False)]  # the losses see float32 outputs, outside autocast
    assert set(mixed) == set(full)
    for name, value in mixed.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, full[name], rtol=0.02, atol=0.0, msg=name)


def test_a_checkpoint_with_the_semantic_conv_in_the_loss_loads_to_the_same_outputs(cfg, tmp_path, caplog):
    """Checkpoints written while the semantic-segmentation conv was ``loss.semantic_seg_conv`` still load."""
    model = _model(cfg)
    old_layout = {k.replace("sem_seg_head.conv.", "loss.semantic_seg_conv."): v for k, v in model.state_dict().items()}
    assert "loss.semantic_seg_conv.weight" in old_layout and "sem_seg_head.conv.weight" not in old_layout
    torch.save({"model": old_layout}, tmp_path / "old.pth")
    torch.manual_seed(1)
    loaded = _model(cfg)
    assert not torch.equal(loaded.sem_seg_head.conv.weight, model.sem_seg_head.conv.weight)
    with caplog.at_level("INFO", logger="yolact_d2.modeling.meta_arch"):
        DetectionCheckpointer(loaded).load(str(tmp_path / "old.pth"))
    assert "'loss.semantic_seg_conv.*' parameters as 'sem_seg_head.conv.*'" in caplog.text
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    image = {"image": _image(120, 160, 5)}
    with torch.no_grad():
        expected, got = model([image])[0]["instances"], loaded([image])[0]["instances"]
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=0)
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=0)
    features = {"p3": torch.randn(1, cfg.MODEL.FPN.OUT_CHANNELS, 20, 20)}
    torch.testing.assert_close(loaded.sem_seg_head(features)["p3"], model.sem_seg_head(features)["p3"], rtol=0, atol=0)


def test_the_top_detection_is_the_composition_of_the_networks_outputs(cfg):
    """
    Composed here from the raw outputs, for a 100 x 140 image (stretched to the 160 x 160 input): the best
    (anchor, class) score survives NMS and comes first; its box is its anchor's SSD decoding, clipped to the
    input and scaled to the image; its mask is sigmoid(P c) cropped by the box (1 px padding on the 40 x 40
    prototypes), resized bilinearly to the image and thresholded at 0.5. The normalised input is
    (image - mean) / std resized bilinearly.
    """
    model = _model(cfg)
    with torch.no_grad():  # decisive masks: coefficients near +-1
        model.head.coef_pred.bias.view(-1, 8).copy_(torch.tensor([2.0, -2.0] * 4))
    image = _image(100, 140, 6)
    with torch.no_grad():
        inst = model([{"image": image}])[0]["instances"]
        images, regions = model.preprocess_image([{"image": image}])
        raw = model.predict(images)
    mean, std = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    normalised = F.interpolate(((image.float() - mean) / std)[None], size=(160, 160), mode="bilinear",
                               align_corners=False)
    torch.testing.assert_close(images, normalised)
    assert regions == [(160, 160)] and len(inst) == 100
    scores = raw["cls_logits"][0].softmax(dim=-1)[:, :-1]
    anchor, cls = divmod(int(scores.argmax()), cfg.MODEL.YOLACT.NUM_CLASSES)
    box = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)).apply_deltas(
        raw["box_deltas"][0, anchor][None], raw["anchors"][anchor][None])[0].clamp(0, 160)
    assert inst.pred_classes[0] == cls
    torch.testing.assert_close(inst.scores[0], scores[anchor, cls])
    torch.testing.assert_close(inst.pred_boxes.tensor[0], box * torch.tensor([140, 100, 140, 100]) / 160)
    logits = torch.einsum("k,khw->hw", raw["coefs"][0, anchor], raw["prototypes"][0])
    x1, y1, x2, y2 = (box / 4).tolist()
    rows, cols = torch.arange(40.0)[:, None], torch.arange(40.0)[None, :]
    crop = (cols >= x1 - 1) & (cols < x2 + 1) & (rows >= y1 - 1) & (rows < y2 + 1)
    mask = F.interpolate((logits.sigmoid() * crop)[None, None], size=(100, 140), mode="bilinear",
                         align_corners=False)[0, 0] > 0.5
    assert mask.sum() > 100
    assert (mask != inst.pred_masks[0]).sum() <= 2  # pixels where the probability is 0.5 to float precision


@pytest.fixture
def native_bfloat16(monkeypatch):
    """bfloat16 inference runs whatever this CPU (emulated where it has no native bfloat16: slower, same values)."""
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)


def _confident_model(cfg, precision):
    """
    The small model with seeded random weights, its head set so that a few dozen anchors of an image of shapes
    score clearly (class weights x3, background bias 13) with decisive masks (coefficients near +-1), in
    ``precision``.
    """
    cfg.MODEL.YOLACT.PRECISION = precision
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.3
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    head = model.head
    with torch.no_grad():
        head.cls_score.weight.mul_(3.0)
        biases = head.cls_score.bias.view(-1, head.num_classes + 1)
        biases.zero_()
        biases[:, -1] = 13.0
        head.coef_pred.bias.view(-1, head.num_prototypes).copy_(torch.tensor([2.0, -2.0] * (head.num_prototypes // 2)))
    return model


def _shapes_image():
    """A (3, 120, 140) uint8 image: a rectangle, a disc and a bar on a gray background."""
    image = np.full((120, 140, 3), 90, np.uint8)
    image[15:71, 10:61] = (230, 40, 40)
    yy, xx = np.mgrid[:120, :140]
    image[(yy - 80) ** 2 + (xx - 100) ** 2 <= 25 ** 2] = (30, 200, 60)
    image[5:36, 80:131] = (20, 20, 220)
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def test_bfloat16_inference_finds_the_float32_detections(cfg, native_bfloat16):
    full, low = _confident_model(cfg.clone(), "float32"), _confident_model(cfg.clone(), "bfloat16")
    assert (full.precision, low.precision) == ("float32", "bfloat16")
    x = [{"image": _shapes_image()}]
    images, _ = full.preprocess_image(x)
    with torch.no_grad():
        expected_raw = full.predict(images)
        with inference_autocast("bfloat16", "cpu"):
            raw = low.predict(images)
        expected, got = full(x)[0]["instances"], low(x)[0]["instances"]
    for name in ("cls_logits", "box_deltas", "coefs", "prototypes"):  # the network's outputs: rounded, not wrong
        assert raw[name].dtype == torch.bfloat16, name
        scale = expected_raw[name].abs().max()
        error = (raw[name].float() - expected_raw[name]).abs()
        assert 0 < error.mean() < 0.01 * scale and error.max() < 0.05 * scale, name
    clear = torch.nonzero(expected.scores > 0.5).flatten()
    assert len(clear) >= 10
    box_ious = pairwise_iou(expected.pred_boxes[clear], got.pred_boxes)
    for i, match in zip(clear.tolist(), box_ious.argmax(dim=1).tolist()):
        assert got.pred_classes[match] == expected.pred_classes[i]
        torch.testing.assert_close(got.pred_boxes.tensor[match], expected.pred_boxes.tensor[i], rtol=0, atol=2.0)
        torch.testing.assert_close(got.scores[match], expected.scores[i], rtol=0, atol=0.05)
        mask, expected_mask = got.pred_masks[match], expected.pred_masks[i]
        assert expected_mask.sum() > 50
        assert (mask & expected_mask).sum() / (mask | expected_mask).sum() >= 0.9


def test_under_bfloat16_the_network_runs_in_bfloat16_and_the_post_processing_in_float32(cfg, native_bfloat16):
    cfg.MODEL.YOLACT.PRECISION = "bfloat16"
    cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED = True
    model = _model(cfg, score_thresh=0.0)
    dtypes = {}

    def record(name):
        return lambda module, args, out: dtypes.setdefault(name, []).append((out[0] if name == "head" else out).dtype)

    model.head.register_forward_hook(record("head"))
    model.mask_rescoring.register_forward_hook(record("mask_rescoring"))
    model.postprocessor.register_forward_pre_hook(
        lambda module, args: dtypes.setdefault("postprocessor", []).extend(a.dtype for a in args))
    assemble_masks = model.assemble_masks
    model.assemble_masks = lambda *args: dtypes.setdefault("masks", []).extend(a.dtype for a in args) or (
        assemble_masks(*args))
    with torch.no_grad():
        (detections,) = model.inference(*model.preprocess_image([{"image": _image(100, 120)}]))
    assert dtypes["head"] == [torch.bfloat16] and dtypes["mask_rescoring"] == [torch.bfloat16]
    assert dtypes["postprocessor"] == [torch.float32] * 2  # boxes, scores
    assert dtypes["masks"] == [torch.float32] * 3  # prototypes, coefficients, boxes
    assert len(detections.boxes) == 100
    assert all(t.dtype == torch.float32 for t in (detections.boxes, detections.scores, detections.masks,
                                                  detections.mask_scores))


def test_precision_leaves_training_to_the_trainer(cfg, native_bfloat16):
    """A bfloat16 model trains as a float32 one: the trainer's SOLVER.AMP sets the precision of training."""
    torch.manual_seed(0)
    full = build_model(cfg).train()
    cfg.MODEL.YOLACT.PRECISION = "bfloat16"
    low = build_model(cfg).train()
    low.load_state_dict(full.state_dict())
    head_dtypes = []
    low.head.register_forward_hook(lambda module, args, out: head_dtypes.append(out[0].dtype))
    inputs = [{"image": _image(160, 160, 3), "instances": _gt(160, [[10, 20, 90, 100]], [1])}]
    torch.manual_seed(1)
    expected = full(inputs)
    torch.manual_seed(1)
    got = low(inputs)
    assert head_dtypes == [torch.float32]
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)


def test_the_configs_precision_is_resolved_for_its_device(cfg, monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: False)
    cfg.MODEL.YOLACT.PRECISION = "bfloat16"
    with caplog.at_level("WARNING", logger=precision_module.__name__):
        assert build_model(cfg).precision == "float32"
    assert "no native bfloat16" in caplog.text
    cfg.MODEL.YOLACT.PRECISION = "float16"
    with pytest.raises(ValueError, match="MODEL.YOLACT.PRECISION='float16' with MODEL.DEVICE 'cpu': .* for CUDA"):
        build_model(cfg)


def _yolact_plus(cfg):
    """The small config as YOLACT++: modulated deformable convs in every block of res3-res5, 3 anchor scales per
    level, mask re-scoring."""
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = True
    cfg.MODEL.YOLACT.DEFORM_INTERVAL = 1
    cfg.MODEL.YOLACT.ANCHOR.SQUARE = False
    cfg.MODEL.YOLACT.ANCHOR.SIZES = [[s * 2 ** (i / 3) * 160 / 550 for i in range(3)] for s in (24, 48, 96, 192, 384)]
    cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED = True
    return cfg


def _confident_yolact_plus(cfg, precision):
    """
    :func:`_confident_model` as YOLACT++, whose offset convs (zero at initialisation, which would make the
    deformable convs plain ones) get seeded weights (offsets of about a pixel), and whose background bias is set
    so that about 40 anchors of :func:`_shapes_image` score a class clearly (by 1 logit over the background).
    """
    model = _confident_model(_yolact_plus(cfg), precision)
    offsets = [m for name, m in model.named_modules() if name.endswith("conv2_offset")]
    assert len(offsets) == 6
    generator = torch.Generator().manual_seed(2)
    head = model.head
    background = head.cls_score.bias.view(-1, head.num_classes + 1)[:, -1]
    with torch.no_grad():
        for conv in offsets:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.02)
        background.zero_()
        logits = model.predict(model.preprocess_image([{"image": _shapes_image()}])[0])["cls_logits"][0]
        background.fill_(float(logits[:, :-1].max(dim=1).values.topk(40).values[-1]) - 1.0)
    return model


@pytest.mark.skipif(not precision_module.cpu_has_native_bfloat16(),
                    reason="this CPU has no native bfloat16 (oneDNN reports no AVX512-BF16 or AMX)")
def test_yolact_plus_end_to_end_in_bfloat16_finds_the_float32_detections(cfg):
    """
    The whole YOLACT++ (deformable backbone, FPN, protonet, head, re-scoring net) in bfloat16 against float32:
    the clear detections (score > 0.5) are found with the same class, boxes within 2 px, scores and mask scores
    within 0.05, masks (of over 50 pixels) of IoU >= 0.9; the deformable convs and the re-scoring net did run in
    bfloat16.
    """
    full, low = _confident_yolact_plus(cfg.clone(), "float32"), _confident_yolact_plus(cfg.clone(), "bfloat16")
    assert low.precision == "bfloat16" and low.mask_rescoring is not None
    dtypes = []
    deformable = next(m for name, m in low.named_modules() if name.endswith("res4.0.conv2"))
    deformable.register_forward_hook(lambda module, args, out: dtypes.append(("deform", out.dtype)))
    low.mask_rescoring.register_forward_hook(lambda module, args, out: dtypes.append(("rescoring", out.dtype)))
    x = [{"image": _shapes_image()}]
    with torch.no_grad():
        expected, got = full(x)[0]["instances"], low(x)[0]["instances"]
    assert dtypes == [("deform", torch.bfloat16), ("rescoring", torch.bfloat16)]
    offsets = dict(full.named_modules())["backbone.bottom_up.res4.0.conv2_offset"]
    clear = torch.nonzero(expected.scores > 0.5).flatten()
    assert len(clear) >= 10 and offsets.weight.abs().max() > 0
    masks_compared = 0
    box_ious = pairwise_iou(expected.pred_boxes[clear], got.pred_boxes)
    for i, match in zip(clear.tolist(), box_ious.argmax(dim=1).tolist()):
        assert got.pred_classes[match] == expected.pred_classes[i]
        torch.testing.assert_close(got.pred_boxes.tensor[match], expected.pred_boxes.tensor[i], rtol=0, atol=2.0)
        torch.testing.assert_close(got.scores[match], expected.scores[i], rtol=0, atol=0.05)
        torch.testing.assert_close(got.mask_scores[match], expected.mask_scores[i], rtol=0, atol=0.05)
        mask, expected_mask = got.pred_masks[match], expected.pred_masks[i]
        if expected_mask.sum() > 50:  # IoUs of masks of a few pixels say little
            masks_compared += 1
            assert (mask & expected_mask).sum() / (mask | expected_mask).sum() >= 0.9
    assert masks_compared >= 5
