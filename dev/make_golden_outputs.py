#!/usr/bin/env python
"""
Record the golden outputs of the original YOLACT (github.com/dbolya/yolact) that tests/golden/ checks yolact_d2
against: run the original on the CPU on the fixed inputs of tests/golden/inputs.py (weights that are a function
of each tensor's name and shape, two synthetic images, a training batch) and write what it produces as small
JSON fixtures under tests/golden/ (see tests/golden/README.md).

    python dev/make_golden_outputs.py --yolact-root /tmp/yolact_orig

``--yolact-root`` is a checkout (or ``git archive``) of the original; it is imported from there and run as its
eval.py and train.py run it, with these stand-ins for what needs CUDA or compiled code:

* ``dcn_v2.DCN`` (YOLACT++'s compiled DCNv2) is a module with DCNv2's parameters (``weight``, ``bias``,
  ``conv_offset_mask``) whose forward is DCNv2's: one conv gives (offset x, offset y, mask logits) chunks,
  ``offset = cat(o1, o2)``, ``mask = sigmoid(...)``, computed by ``torchvision.ops.deform_conv2d``.
* ``torch.cuda.current_device`` (called when yolact.py is imported) returns 0, ``torch.cuda.device_count``
  reports two devices while yolact.py is imported (which turns its TorchScript wrappers off: plain modules,
  the same maths) and ``Tensor.cuda`` (FastBaseTransform's mean / std) leaves tensors on the CPU.
"""
import argparse
import contextlib
import copy
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden")
# The models recorded: the original's config names (configs/original/<name>.yaml here).
MODELS = ("yolact_resnet50", "yolact_plus_resnet50")
# In MODELS_FILE: the config facts of every model the converter supports, and the state-dict keys and shapes
# of MODELS and of these (the R-101 models; yolact_im400 / im700 have yolact_base's).
KEY_ONLY_MODELS = ("yolact_base", "yolact_plus_base")
CONFIG_ONLY_MODELS = ("yolact_im400", "yolact_im700")
MODELS_FILE = "original_models.json.gz"
# Prototype pixels (y, x) whose values are recorded (the head's rows: head_rows).
# Columns of the class probabilities recorded: the original's background (0) and classes 1-9, 75-80.
CONF_COLUMNS = tuple(range(10)) + tuple(range(75, 81))
PROTO_PIXELS = ((0, 0), (10, 20), (40, 70), (69, 69), (100, 30), (137, 137))
# Parameters (the original's names) whose gradients under the training loss are recorded.
GRAD_PARAMS = (
    "backbone.conv1.weight",
    "backbone.layers.1.0.conv2.weight",
    "backbone.layers.3.2.bn3.weight",
    "fpn.lat_layers.0.weight",
    "fpn.downsample_layers.1.bias",
    "proto_net.10.weight",
    "prediction_layers.0.upfeature.0.weight",
    "prediction_layers.0.bbox_layer.bias",
    "prediction_layers.0.conf_layer.bias",
    "prediction_layers.0.mask_layer.weight",
    "semantic_seg_conv.bias",
)
GRAD_PARAMS_PLUS = (
    "backbone.layers.1.0.conv2.conv_offset_mask.weight",
    "backbone.layers.2.3.conv2.weight",
    "maskiou_net.maskiou_net.0.weight",
    "maskiou_net.maskiou_net.10.bias",
)
# Anchors whose IoU with a GT is within this relative tolerance of its best are tied (equal up to rounding).
TIE_RTOL = 1e-6
GRAD_SLICE = 12  # the first values of each flattened gradient, or all of them up to FULL_GRAD_MAX values
FULL_GRAD_MAX = 256


def load_inputs():
    path = os.path.join(GOLDEN_DIR, "inputs.py")
    spec = importlib.util.spec_from_file_location("golden_inputs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DCNStandIn(nn.Module):
    """DCNv2's ``DCN`` (modulated deformable conv, offsets and mask from ``conv_offset_mask``) by torchvision."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1, deformable_groups=1):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset_mask = nn.Conv2d(
            in_channels, deformable_groups * 3 * kernel_size * kernel_size, kernel_size, stride, padding, bias=True
        )
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x):
        o1, o2, mask = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        return torchvision.ops.deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, torch.sigmoid(mask)
        )


@contextlib.contextmanager
def cpu_only_patches():
    """The CUDA calls of the original answered on the CPU (see the module docstring)."""
    saved = torch.cuda.current_device, torch.cuda.device_count, torch.Tensor.cuda
    torch.cuda.current_device = lambda: 0
    torch.cuda.device_count = lambda: 2
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.cuda.current_device, torch.cuda.device_count, torch.Tensor.cuda = saved


def import_original(root):
    """The original's modules, imported from ``root`` with the stand-ins."""
    sys.path.insert(0, os.path.abspath(root))
    sys.modules["dcn_v2"] = types.SimpleNamespace(DCN=DCNStandIn)
    modules = {}
    for name in ("data.config", "yolact", "utils.augmentations", "layers.output_utils", "layers.box_utils",
                 "layers.modules.multibox_loss"):
        modules[name.rpartition(".")[2]] = __import__(name, fromlist=["_"])
    return types.SimpleNamespace(**modules)


def original_commit(root):
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def rounded(x, digits=7):
    """A tensor as nested lists of floats with ``digits`` significant digits (JSON)."""
    array = np.asarray(x.detach().double().cpu().numpy())
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(array).tolist() if array.size else []


def build_net(orig, inputs, model, dtype):
    orig.config.set_cfg(model + "_config")
    net = orig.yolact.Yolact()
    keys_and_shapes = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    net.load_state_dict(inputs.original_state_dict(keys_and_shapes))
    net.detect.use_fast_nms = True  # eval.py's defaults: --fast_nms True, --cross_class_nms False
    net.detect.use_cross_class_nms = False
    orig.config.cfg.mask_proto_debug = False  # as eval.py sets it
    net.to(dtype)
    net.eval()  # (the original's train() returns None)
    return net, keys_and_shapes


def network_input(orig, image, dtype):
    """eval.py's: the BGR float image (1, H, W, 3) through FastBaseTransform (in ``dtype`` from the start)."""
    frame = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).to(dtype)
    return orig.augmentations.FastBaseTransform()(frame[None]).to(dtype)


def head_outputs(net, batch):
    """The network's outputs that Detect receives (conf as softmax probabilities), with its detections."""
    seen = {}
    detect = net.detect

    def capture(predictions, net):
        seen.update({k: v.clone() for k, v in predictions.items()})
        return detect(predictions, net)

    net.detect = capture
    try:
        with torch.no_grad():
            dets = net(batch)
    finally:
        net.detect = detect
    return seen, dets


def head_rows(net):
    """The anchor rows of the head outputs recorded: the first, a middle and the last anchor of each level."""
    rows, start = [], 0
    for layer in net.prediction_layers:
        width, height = layer.last_conv_size
        count = width * height * layer.num_priors
        rows += [start, start + count // 2 + 1, start + count - 1]
        start += count
    return rows


def record_inference(orig, net, image, dtype, digits=7):
    height, width = image.shape[:2]
    preds, dets = head_outputs(net, network_input(orig, image, dtype))
    rows = head_rows(net)
    detection = dets[0]["detection"]
    # Boxes before postprocess casts them to integers: relative XYXY scaled to the image and ordered / clipped
    # as its sanitize_coordinates does.
    rel = detection["box"].clone()
    boxes = torch.stack([
        torch.minimum(rel[:, 0] * width, rel[:, 2] * width).clamp(min=0),
        torch.minimum(rel[:, 1] * height, rel[:, 3] * height).clamp(min=0),
        torch.maximum(rel[:, 0] * width, rel[:, 2] * width).clamp(max=width),
        torch.maximum(rel[:, 1] * height, rel[:, 3] * height).clamp(max=height),
    ], dim=1)
    with torch.no_grad():
        classes, scores, _, masks = orig.output_utils.postprocess(dets, width, height, crop_masks=True,
                                                                          score_threshold=0)
    box_scores, mask_scores = scores if isinstance(scores, list) else (scores, None)
    masks = masks.bool()
    record = {
        "image": {"height": height, "width": width},
        "head": {
            "rows": rows,
            "loc": rounded(preds["loc"][0, rows], digits),
            "conf_columns": list(CONF_COLUMNS),
            "conf": rounded(preds["conf"][0, rows][:, CONF_COLUMNS], digits),
            "mask": rounded(preds["mask"][0, rows], digits),
            "priors": rounded(preds["priors"][rows], digits),
            "proto_pixels": [list(p) for p in PROTO_PIXELS],
            "proto": rounded(torch.stack([preds["proto"][0, y, x] for y, x in PROTO_PIXELS]), digits),
            "proto_shape": list(preds["proto"].shape[1:]),
            "num_anchors": preds["loc"].shape[1],
        },
        "detections": {
            "classes": classes.tolist(),
            "scores": rounded(box_scores),
            "boxes": rounded(boxes),
            "mask_areas": masks.flatten(1).sum(1).tolist(),
            "masks_rle": [encode_mask(m) for m in masks],
        },
    }
    if mask_scores is not None:
        record["detections"]["mask_scores"] = rounded(mask_scores)
    return record


def encode_mask(mask):
    """A binary (H, W) mask as run lengths of the row-major flattened mask, starting with a run of zeros."""
    flat = mask.flatten().to(torch.int8)
    change = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1
    bounds = torch.cat([torch.tensor([0]), change, torch.tensor([flat.numel()])])
    runs = (bounds[1:] - bounds[:-1]).tolist()
    return runs if flat[0] == 0 else [0] + runs


def record_losses(orig, net, inputs, images, dtype, grad_params):
    """MultiBoxLoss (train.py's criterion) on the fixed batch, its sum's gradients, and the forced matches."""
    cfg = orig.config.cfg
    size = cfg.max_size
    targets, masks, num_crowds = [], [], []
    training_targets = inputs.training_targets(size)
    batch = torch.cat([network_input(orig, image, dtype) for image in images[: len(training_targets)]])
    for t in training_targets:
        boxes = torch.cat([t["boxes"], t["crowd_boxes"]]) / size
        labels = torch.cat([t["classes"], torch.zeros(len(t["crowd_boxes"]), dtype=torch.int64)])
        targets.append(torch.cat([boxes, labels[:, None].float()], dim=1).to(dtype))
        crowd_masks = torch.zeros(len(t["crowd_boxes"]), size, size)
        masks.append(torch.cat([t["masks"], crowd_masks]).to(dtype))
        num_crowds.append(len(t["crowd_boxes"]))
    criterion = orig.multibox_loss.MultiBoxLoss(
        num_classes=cfg.num_classes, pos_threshold=cfg.positive_iou_threshold,
        neg_threshold=cfg.negative_iou_threshold, negpos_ratio=cfg.ohem_negpos_ratio,
    )
    net.train()
    net.zero_grad()
    predictions = net(batch)
    losses = criterion(net, predictions, targets, masks, num_crowds)
    matching = forced_matches(orig, predictions["priors"].detach(), targets, num_crowds)
    too_many = [n for image in matching for n in [sum(len(g["positives"]) if isinstance(g["positives"], list)
                                                      else g["positives"] for g in image)] if n > cfg.masks_to_train]
    if too_many:  # the original would train a random subset of the masks
        raise ValueError(f"{too_many} positives in an image, more than masks_to_train {cfg.masks_to_train}")
    sum(losses.values()).backward()
    params = dict(net.named_parameters())
    grads = {}
    for name in grad_params:
        grad = params[name].grad
        flat = grad.flatten()
        grads[name] = {"norm": float(grad.double().norm()),
                       "values": rounded(flat if len(flat) <= FULL_GRAD_MAX else flat[:GRAD_SLICE])}
    net.eval()
    return {
        "input_size": size,
        "losses": {k: v.item() for k, v in losses.items()},
        "grads": grads,
        "matching": matching,
    }


def forced_matches(orig, priors, targets, num_crowds):
    """Per GT (non-crowd): its best anchor IoU, how many anchors tie for it, and the anchor the original forces."""
    cfg = orig.config.cfg
    result = []
    for target, crowds in zip(targets, num_crowds):
        truths = target[: len(target) - crowds, :4]
        overlaps = orig.box_utils.jaccard(truths, orig.box_utils.point_form(priors))
        conf_t, idx_t = torch.zeros(1, len(priors), dtype=torch.long), torch.zeros(1, len(priors), dtype=torch.long)
        loc_t = torch.zeros(1, len(priors), 4, dtype=priors.dtype)
        labels = target[: len(target) - crowds, 4].long()
        orig.box_utils.match(cfg.positive_iou_threshold, cfg.negative_iou_threshold, truths, priors, labels, None,
                             loc_t, conf_t, idx_t, 0, None)
        image = []
        for j in range(len(truths)):
            best = overlaps[j].max()
            tied = overlaps[j] >= best * (1 - TIE_RTOL)
            positives = ((idx_t[0] == j) & (conf_t[0] > 0)).nonzero().flatten().tolist()
            image.append({
                "best_iou": float(best),
                "num_tied": int(tied.sum()),
                "tied_anchors": tied.nonzero().flatten().tolist()[:8],
                "positives": positives if best < cfg.positive_iou_threshold else len(positives),
            })
        result.append(image)
    return result


def detections_agree(a, b):
    return a["detections"]["classes"] == b["detections"]["classes"] and np.allclose(
        a["detections"]["scores"], b["detections"]["scores"], atol=1e-4)


def config_facts(cfg):
    """The original config's settings that configs/original/ must reproduce."""
    backbone = cfg.backbone
    return {
        "max_size": cfg.max_size,
        "num_classes": cfg.num_classes,
        "pred_scales": backbone.pred_scales,
        "pred_aspect_ratios": backbone.pred_aspect_ratios,
        "use_square_anchors": backbone.use_square_anchors,
        "selected_layers": backbone.selected_layers,
        "dcn_layers": list(backbone.args[1]) if len(backbone.args) > 1 else [0, 0, 0, 0],
        "dcn_interval": backbone.args[2] if len(backbone.args) > 2 else 1,
        "means": list(orig_config_module.MEANS),
        "std": list(orig_config_module.STD),
        "nms_conf_thresh": cfg.nms_conf_thresh,
        "nms_top_k": cfg.nms_top_k,
        "nms_thresh": cfg.nms_thresh,
        "max_num_detections": cfg.max_num_detections,
        "positive_iou_threshold": cfg.positive_iou_threshold,
        "negative_iou_threshold": cfg.negative_iou_threshold,
        "crowd_iou_threshold": cfg.crowd_iou_threshold,
        "use_maskiou": cfg.use_maskiou,
        "rescore_bbox": cfg.rescore_bbox,
        "discard_mask_area": cfg.discard_mask_area,
    }


def write_json_gz(data, path):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def record_model(orig, inputs, model):
    """The fixture of one model: its config's facts, inference on each image (float32, float64), training."""
    fixture = {"model": model}
    net, keys_and_shapes = build_net(orig, inputs, model, torch.float32)
    fixture["config"] = config_facts(orig.config.cfg)
    images = {name: inputs.golden_image(name) for name in inputs.IMAGE_SIZES}
    fixture["inference"] = {name: record_inference(orig, net, image, torch.float32) for name, image in images.items()}
    # float64: the same network in double precision, for tight checks of the head, and to show that the float32
    # detections are stable (no detection within rounding of a threshold or of a tie).
    torch.set_default_dtype(torch.float64)
    try:
        net64 = copy.deepcopy(net).double()
        for layer in net64.prediction_layers:  # the anchors (cached in the original) in float64 too
            layer.last_img_size = None
        fixture["inference_float64"] = {}
        for name, image in images.items():
            record = record_inference(orig, net64, image, torch.float64, digits=15)
            if not detections_agree(record, fixture["inference"][name]):
                raise RuntimeError(f"{model} {name}: the float32 and float64 detections differ; change the inputs")
            fixture["inference_float64"][name] = {"head": record["head"]}
    finally:
        torch.set_default_dtype(torch.float32)
    grad_params = GRAD_PARAMS + (GRAD_PARAMS_PLUS if "plus" in model else ())
    fixture["training"] = record_losses(orig, net, inputs, list(images.values()), torch.float32, grad_params)
    return fixture, keys_and_shapes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yolact-root", required=True, help="the original YOLACT's source folder")
    parser.add_argument("--output-dir", default=GOLDEN_DIR)
    parser.add_argument("--commit", help="the original's commit (default: git rev-parse HEAD in --yolact-root)")
    args = parser.parse_args(argv)
    inputs = load_inputs()
    source = {"source": "dbolya/yolact", "commit": args.commit or original_commit(args.yolact_root),
              "produced_by": "dev/make_golden_outputs.py (see tests/golden/README.md)"}
    with cpu_only_patches():
        orig = import_original(args.yolact_root)
        global orig_config_module
        orig_config_module = orig.config
        state_dicts, configs = {}, {}
        for model in KEY_ONLY_MODELS + CONFIG_ONLY_MODELS:
            orig.config.set_cfg(model + "_config")
            configs[model] = config_facts(orig.config.cfg)
            if model in KEY_ONLY_MODELS:
                state_dicts[model] = [(k, list(v.shape)) for k, v in orig.yolact.Yolact().state_dict().items()]
        for model in MODELS:
            fixture, state_dicts[model] = record_model(orig, inputs, model)
            configs[model] = fixture["config"]
            path = os.path.join(args.output_dir, f"{model}.json.gz")
            write_json_gz({**source, **fixture}, path)
            summary = {n: len(r["detections"]["classes"]) for n, r in fixture["inference"].items()}
            print(f"wrote {path}: detections {summary}, losses {fixture['training']['losses']}")
        write_json_gz({**source, "configs": configs, "state_dicts": state_dicts},
                      os.path.join(args.output_dir, MODELS_FILE))


if __name__ == "__main__":
    main()
