#!/usr/bin/env python
"""
Convert weights of the original YOLACT (github.com/dbolya/yolact) into detectron2 checkpoints for yolact_d2.

* A trained model (``yolact_base_54_800000.pth``...) becomes a checkpoint that the model of
  ``configs/original/<model>.yaml`` loads with no missing and no unexpected keys::

      python tools/convert_yolact_weights.py yolact_base_54_800000.pth output/original/yolact_base_54_800000.pth
      python tools/train_net.py --config-file configs/original/yolact_base.yaml --eval-only

  The model is the one given by ``--model``, else the one named by the file name (the original saves
  ``<model>_<epoch>_<iteration>.pth`` and its eval.py picks the config the same way), else the default one of
  the ResNet depth found in the weights. The result is checked against the model built from that config.

* An ImageNet backbone the original trains from (``resnet101_reducedfc.pth``, ``resnet50-19c8e357.pth``:
  torchvision ResNets) becomes a ``backbone.bottom_up.*`` checkpoint (``fc`` dropped) to train from::

      python tools/convert_yolact_weights.py --backbone resnet101_reducedfc.pth output/original/resnet101_reducedfc.pth

YOLACT++ checkpoints (``yolact_plus_base``, ``yolact_plus_resnet50``: deformable convs, mask re-scoring) are
converted the same way, the biases of the original's DCNv2 convs folded into the norms that follow them. The
DarkNet-53 model (``yolact_darknet53``) is not supported: there is no DarkNet backbone here.

BatchNorm's ``num_batches_tracked`` counters are kept where the model's norms train (BN, SyncBN: the
configs/original/ models, as the original) and dropped where they are frozen (FrozenBN has none).
"""
import argparse
import os
import pickle
import re
import sys
from typing import Callable, Dict, Optional

import torch

ORIGINAL_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "original")

# Supported models of the original (its config names) and their ResNet depth.
ORIGINAL_MODELS = {
    "yolact_base": 101,
    "yolact_im400": 101,
    "yolact_im700": 101,
    "yolact_resnet50": 50,
    "yolact_plus_base": 101,
    "yolact_plus_resnet50": 50,
}
# The model assumed for a depth when neither --model nor the file name tells.
DEFAULT_MODEL_OF_DEPTH = {101: "yolact_base", 50: "yolact_resnet50"}
DEFAULT_PLUS_MODEL_OF_DEPTH = {101: "yolact_plus_base", 50: "yolact_plus_resnet50"}
# Number of bottleneck blocks of the third stage (conv4_x) -> ResNet depth.
DEPTH_OF_STAGE3_BLOCKS = {6: 50, 23: 101}

# Parameters and buffers that are converted.
PARAMETERS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
BATCH_NORM_COUNTER = "num_batches_tracked"

# ResNet modules, named as in the original's backbone.py (torchvision's, with ``layers.i`` for ``layer{i+1}``),
# and as in detectron2's ResNet (the torchvision layout is detectron2's with MODEL.RESNETS.STRIDE_IN_1X1 False).
_STEM_MODULES = {"conv1": "stem.conv1", "bn1": "stem.conv1.norm"}
_BLOCK_MODULES = {
    "conv1": "conv1",
    "bn1": "conv1.norm",
    "conv2": "conv2",
    "bn2": "conv2.norm",
    "conv3": "conv3",
    "bn3": "conv3.norm",
    "downsample.0": "shortcut",
    "downsample.1": "shortcut.norm",
    # YOLACT++'s DCNv2 (external/DCNv2): offsets and mask from one conv, in detectron2's layout already.
    "conv2.conv_offset_mask": "conv2_offset",
}
_BLOCK_PATTERN = re.compile(r"layers\.(\d+)\.(\d+)\.(.+)")

# The other modules of a YOLACT v1 model (yolact.py of the original) -> yolact_d2's.
_YOLACT_MODULES = {
    # FPN: the original keeps its lateral and output convs coarsest level first (index 0 is C5 / P5).
    "fpn.lat_layers.0": "backbone.fpn_lateral5",
    "fpn.lat_layers.1": "backbone.fpn_lateral4",
    "fpn.lat_layers.2": "backbone.fpn_lateral3",
    "fpn.pred_layers.0": "backbone.fpn_output5",
    "fpn.pred_layers.1": "backbone.fpn_output4",
    "fpn.pred_layers.2": "backbone.fpn_output3",
    "fpn.downsample_layers.0": "backbone.top_block.p6",
    "fpn.downsample_layers.1": "backbone.top_block.p7",
    # Protonet, an nn.Sequential: 3 x (conv, ReLU), bilinear upsampling, ReLU, conv, ReLU, 1x1 conv.
    "proto_net.0": "protonet.pre.0",
    "proto_net.2": "protonet.pre.2",
    "proto_net.4": "protonet.pre.4",
    "proto_net.8": "protonet.post.0",
    "proto_net.10": "protonet.predictor",
    # Prediction head: one module shared by every level (the others only point to it).
    "prediction_layers.0.upfeature.0": "head.shared.0",
    "prediction_layers.0.bbox_layer": "head.bbox_pred",
    "prediction_layers.0.conf_layer": "head.cls_score",
    "prediction_layers.0.mask_layer": "head.coef_pred",
    # Semantic segmentation branch (training only): one output per foreground class, in the same order.
    "semantic_seg_conv": "sem_seg_head.conv",
}

# Keys of YOLACT++ checkpoints: mask re-scoring net and the offsets of deformable convs (DCNv2).
_YOLACT_PLUS_PATTERN = re.compile(r"maskiou_net\..*|.*\.conv_offset_mask\..*")
# YOLACT++'s mask re-scoring net: make_net's Sequential of (conv, ReLU) pairs, the same layout as ours.
_MASKIOU_PATTERN = re.compile(r"maskiou_net\.maskiou_net\.(\d+)")


def resnet_module(name: str) -> Optional[str]:
    """
    detectron2 name (under ``bottom_up``) of a module of the original's ResNet (``conv1``, ``bn1``,
    ``layers.2.0.downsample.1``...), or None if ``name`` is not one.
    """
    if name in _STEM_MODULES:
        return _STEM_MODULES[name]
    match = _BLOCK_PATTERN.fullmatch(name)
    if match is None or match.group(3) not in _BLOCK_MODULES:
        return None
    stage, block, layer = match.groups()
    return f"res{int(stage) + 2}.{block}.{_BLOCK_MODULES[layer]}"


def yolact_module(name: str) -> Optional[str]:
    """yolact_d2 name of a module of the original's YOLACT model, or None if ``name`` is not one."""
    if name.startswith("backbone."):
        inner = resnet_module(name[len("backbone.") :])
        return None if inner is None else "backbone.bottom_up." + inner
    match = _MASKIOU_PATTERN.fullmatch(name)
    if match is not None:
        return f"mask_rescoring.layers.{match.group(1)}"
    return _YOLACT_MODULES.get(name)


def torchvision_resnet_module(name: str) -> Optional[str]:
    """detectron2 name (under ``bottom_up``) of a module of a torchvision ResNet (``layer3.0.bn1``...)."""
    match = re.fullmatch(r"layer(\d)\.(.+)", name)
    if match is not None:
        name = f"layers.{int(match.group(1)) - 1}.{match.group(2)}"
    return resnet_module(name)


def is_yolact_leftover(key: str) -> bool:
    """
    Keys that the original's own ``Yolact.load_weights`` deletes before loading (yolact.py): FPN downsample
    convs beyond the two used (the released v1.0 weights have a third one, trained and then found useless,
    dbolya/yolact#250), and the ``backbone.layer1..4`` duplicates of ``backbone.layers.*`` in weights saved by
    older versions of the original, whose ResNet subclassed torchvision's.
    """
    match = re.match(r"fpn\.downsample_layers\.(\d+)\.", key)
    if match is not None:
        return int(match.group(1)) >= 2
    return re.match(r"backbone\.layer\d", key) is not None


def resnet_depth(state_dict: Dict[str, torch.Tensor], stage3_prefix: str) -> int:
    """Depth (50 or 101) of the ResNet whose third stage's blocks are the keys ``<stage3_prefix><block>.*``."""
    blocks = {key[len(stage3_prefix) :].split(".")[0] for key in state_dict if key.startswith(stage3_prefix)}
    if len(blocks) not in DEPTH_OF_STAGE3_BLOCKS:
        raise ValueError(
            f"Cannot tell the ResNet depth: {len(blocks)} blocks under '{stage3_prefix}*' (expected 6 for "
            f"ResNet-50, 23 for ResNet-101). Only ResNet checkpoints of the original YOLACT are supported."
        )
    return DEPTH_OF_STAGE3_BLOCKS[len(blocks)]


def model_from_filename(path: str) -> Optional[str]:
    """The model named by an original checkpoint's file name ``<model>_<epoch>_<iteration>[_interrupt].pth``."""
    parts = os.path.splitext(os.path.basename(path))[0].split("_")
    if parts[-1] == "interrupt":
        parts = parts[:-1]
    if len(parts) < 3 or not (parts[-1].isdigit() and parts[-2].isdigit()):
        return None
    name = "_".join(parts[:-2])
    return name if name in ORIGINAL_MODELS else None


def choose_model(state_dict: Dict[str, torch.Tensor], path: str, model: Optional[str] = None) -> str:
    """
    The original model a checkpoint is of: ``model`` if given, else the one of the file name, else the default
    one of the ResNet depth found in the weights. Raises if the chosen model's depth is not the weights'.
    """
    depth = resnet_depth(state_dict, "backbone.layers.2.")
    source = "--model"
    if model is None:
        model, source = model_from_filename(path), "the file name"
    if model is None:
        defaults = DEFAULT_PLUS_MODEL_OF_DEPTH if is_yolact_plus(state_dict) else DEFAULT_MODEL_OF_DEPTH
        model, source = defaults[depth], f"the ResNet-{depth} weights"
    if model not in ORIGINAL_MODELS:
        raise ValueError(f"Unknown model '{model}'; supported: {sorted(ORIGINAL_MODELS)}")
    if ORIGINAL_MODELS[model] != depth:
        raise ValueError(
            f"{source} says {model} (ResNet-{ORIGINAL_MODELS[model]}) but the weights are a ResNet-{depth}"
        )
    if model.startswith("yolact_plus") != is_yolact_plus(state_dict):
        raise ValueError(f"{source} says {model} but the weights are {'' if is_yolact_plus(state_dict) else 'not '}"
                         f"YOLACT++ (deformable convs / mask re-scoring net)")
    return model


def original_config_file(model: str) -> str:
    """Path of the yolact_d2 config that reproduces an original model."""
    return os.path.join(ORIGINAL_CONFIG_DIR, f"{model}.yaml")


def is_yolact_plus(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether a checkpoint has YOLACT++'s mask re-scoring net or deformable convs."""
    return any(_YOLACT_PLUS_PATTERN.fullmatch(key) for key in state_dict)


def fold_deform_conv_bias(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    The original's DCNv2 convs have a bias; detectron2's deformable blocks have none but a (frozen) norm
    right after the conv, so the bias moves into that norm: norm(conv(x) + b) = norm'(conv(x)) with
    running_mean' = running_mean - b.
    """
    folded = dict(state_dict)
    for key in [k for k in state_dict if k.startswith("backbone.bottom_up.") and k.endswith(".conv2.bias")]:
        mean_key = key[: -len("bias")] + "norm.running_mean"
        folded[mean_key] = state_dict[mean_key] - folded.pop(key)
    return folded


def rename_state_dict(
    state_dict: Dict[str, torch.Tensor],
    rename_module: Callable[[str], Optional[str]],
    skip: Callable[[str], bool],
) -> Dict[str, torch.Tensor]:
    """
    Rename every ``<module>.<parameter>`` key by ``rename_module(module)``, dropping the keys for which
    ``skip(key)``. Any other key whose module is unknown (``rename_module`` gives None) or whose parameter is
    not in :data:`PARAMETERS` is an error naming it.
    """
    renamed, unknown = {}, []
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        if skip(key):
            continue
        new_module = rename_module(module)
        if new_module is None or param not in PARAMETERS:
            unknown.append(key)
        else:
            renamed[f"{new_module}.{param}"] = value
    if unknown:
        raise ValueError(f"{len(unknown)} unknown keys in the checkpoint: {', '.join(sorted(unknown))}")
    return renamed


def background_last(x: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """
    Reorder the class outputs (dim 0 of a conv's weight or bias) of every anchor from the original's
    (background, class 1, ..., class C) to yolact_d2's (class 1, ..., class C, background).
    """
    if x.shape[0] % num_anchors:
        raise ValueError(f"{x.shape[0]} class outputs do not divide among {num_anchors} anchors")
    return x.reshape(num_anchors, -1, *x.shape[1:]).roll(-1, dims=1).reshape(x.shape)


def convert_yolact(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """State dict of the original's YOLACT model -> yolact_d2's (background moved last in the class logits)."""
    converted = fold_deform_conv_bias(rename_state_dict(state_dict, yolact_module, is_yolact_leftover))
    head_keys = ("head.bbox_pred.bias", "head.cls_score.weight", "head.cls_score.bias")
    missing = [key for key in head_keys if key not in converted]
    if missing:
        raise ValueError(f"Not a YOLACT checkpoint: no prediction head ({', '.join(missing)} after renaming)")
    num_anchors = converted["head.bbox_pred.bias"].shape[0] // 4
    for key in head_keys[1:]:
        converted[key] = background_last(converted[key], num_anchors)
    return converted


def convert_backbone(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision ResNet state dict (ImageNet weights of the original) -> ``backbone.bottom_up.*``, fc dropped."""
    renamed = rename_state_dict(state_dict, torchvision_resnet_module, lambda key: key.startswith("fc."))
    return {"backbone.bottom_up." + key: value for key, value in renamed.items()}


def build_original_model(model: str):
    """yolact_d2's model of ``configs/original/<model>.yaml`` on the CPU, randomly initialised."""
    from yolact_d2 import add_yolact_config  # first: it imports detectron2 without avoidable warnings

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(original_config_file(model))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return build_model(cfg)


def fit_batch_norm_counters(state_dict: Dict[str, torch.Tensor], model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """
    ``state_dict`` without the BatchNorm ``num_batches_tracked`` counters that ``model`` has no place for: its
    frozen norms (FrozenBN) have none, its trained ones (BN, SyncBN) keep the checkpoint's.
    """
    own = model.state_dict()
    return {key: value for key, value in state_dict.items() if not key.endswith(BATCH_NORM_COUNTER) or key in own}


def check_matches_model(state_dict: Dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise unless ``state_dict`` has exactly the keys of ``model.state_dict()``, with the same shapes."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = [f"missing {key}" for key in sorted(expected.keys() - state_dict.keys())]
    problems += [f"unexpected {key}" for key in sorted(state_dict.keys() - expected.keys())]
    problems += [
        f"{key} has shape {tuple(state_dict[key].shape)}, the model {expected[key]}"
        for key in sorted(expected.keys() & state_dict.keys())
        if tuple(state_dict[key].shape) != expected[key]
    ]
    if problems:
        raise ValueError(f"The converted weights do not fit the model: {'; '.join(problems)}")


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """
    A plain state dict saved with ``torch.save`` (as the original saves its weights), loaded as tensors only.

    Raises:
        ValueError: saying what the file is instead (not a torch.save file, text, other objects than tensors,
            not a state dict, a detectron2 or an already converted yolact_d2 checkpoint) and what to give.
    """
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(_TORCH_SAVE_MAGICS):
        raise ValueError(f"{path} is {_describe_non_torch_file(head)}. {_WHAT_TO_GIVE}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message would suggest weights_only=False: unsafe, not needed
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" (e.g. {found.group(1)})" if found else ""
        raise ValueError(
            f"{path} holds objects other than tensors{what}, which this tool does not load: the weights of the "
            f"original are tensors only. {_WHAT_TO_GIVE}"
        ) from None
    except (RuntimeError, EOFError) as e:  # truncated or corrupt zip / pickle
        raise ValueError(f"{path} is a damaged torch.save file ({e}). {_WHAT_TO_GIVE}") from None
    _check_state_dict(path, state_dict)
    return state_dict


# torch.save files: a zip archive (torch >= 1.6), or a pickle (older torch, ``_use_new_zipfile_serialization=False``).
_TORCH_SAVE_MAGICS = (b"PK\x03\x04", b"\x80")
_WHAT_TO_GIVE = (
    "Give the .pth weights of the original YOLACT (e.g. yolact_base_54_800000.pth, github.com/dbolya/yolact), or "
    "with --backbone a torchvision ResNet (resnet101_reducedfc.pth, resnet50-19c8e357.pth)."
)


def _describe_non_torch_file(head: bytes) -> str:
    """What a file that ``torch.save`` did not write is, from its first bytes."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a character cut at the end of ``head`` still leaves text
        text = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        return f"a text file (it starts with {text.strip().splitlines()[0][:40]!r}), not a file written by torch.save"
    return "not a file written by torch.save (neither a zip archive nor a pickle)"


def _check_state_dict(path: str, content) -> None:
    """Raise a ValueError unless ``content`` (a loaded file) is a state dict of tensors yet to be converted."""
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        if any(key.startswith("backbone.bottom_up.") for key in content["model"]):
            raise ValueError(_ALREADY_CONVERTED.format(path=path))
        raise ValueError(
            f"{path} is a detectron2 checkpoint (a 'model' entry), not weights of the original YOLACT. {_WHAT_TO_GIVE}"
        )
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise ValueError(f"{path} holds a {type(content).__name__}, not a state dict of tensors. {_WHAT_TO_GIVE}")
    if any(key.startswith("backbone.bottom_up.") for key in content):
        raise ValueError(_ALREADY_CONVERTED.format(path=path))


_ALREADY_CONVERTED = (
    "{path} is already a yolact_d2 checkpoint (its keys are yolact_d2's, backbone.bottom_up.*): it needs no "
    "conversion; use it as it is, with MODEL.WEIGHTS {path}"
)


def save_checkpoint(state_dict: Dict[str, torch.Tensor], path: str, source: str) -> None:
    """Save a detectron2 checkpoint that ``DetectionCheckpointer`` loads by exact key names."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"model": state_dict, "__author__": source, "matching_heuristics": False}, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="weights of the original YOLACT (.pth)")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pth)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--model", choices=sorted(ORIGINAL_MODELS), help="the original model (default: detected)")
    kind.add_argument("--backbone", action="store_true", help="the input is an ImageNet torchvision ResNet")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        state_dict = load_state_dict(args.input)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if args.backbone:
        depth = resnet_depth(state_dict, "layer3.")
        save_checkpoint(convert_backbone(state_dict), args.output, "torchvision ResNet (ImageNet)")
        print(
            f"Wrote the ResNet-{depth} backbone to {args.output}. Train from it with a configs/original/ config of "
            f"that depth and MODEL.WEIGHTS {args.output}."
        )
        return
    converted = convert_yolact(state_dict)
    model = choose_model(state_dict, args.input, args.model)
    net = build_original_model(model)
    converted = fit_batch_norm_counters(converted, net)
    check_matches_model(converted, net)
    save_checkpoint(converted, args.output, f"dbolya/yolact {model}")
    print(
        f"Wrote {model} (ResNet-{ORIGINAL_MODELS[model]}) to {args.output}. Use it with\n"
        f"  --config-file {os.path.relpath(original_config_file(model))} MODEL.WEIGHTS {args.output}"
    )


if __name__ == "__main__":
    main()
