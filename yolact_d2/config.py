"""Config keys of yolact_d2, added to a detectron2 config by :func:`add_yolact_config`."""
import argparse
import contextlib
import difflib
from typing import Iterable, Iterator, List

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_yolact_config", "load_yolact_config", "add_config_arguments", "config_overrides", "close_keys_hint"]


def load_yolact_config(config_file: str, opts: List[str]) -> CN:
    """
    detectron2's default config + :func:`add_yolact_config`, merged with ``config_file`` and the ``KEY VALUE``
    list ``opts`` (a leading "--", which argparse leaves in a REMAINDER list, is dropped). Not frozen.

    Raises:
        KeyError: for a key that is not in the config, naming it and the closest existing keys.
    """
    cfg = get_cfg()
    add_yolact_config(cfg)
    with _unknown_keys_named(cfg, config_file):
        cfg.merge_from_file(config_file)
    with _unknown_keys_named(cfg, "the command-line options"):
        cfg.merge_from_list(opts[1:] if opts[:1] == ["--"] else opts)
    return cfg


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """
    Add detectron2's config flags to a tool's parser: ``--config-file FILE`` (required) and the overrides as
    ``--opts KEY VALUE ...`` (detectron2's demo: everything after the flag), or as ``KEY VALUE`` pairs at the
    very end without it (detectron2's train_net). :func:`config_overrides` reads both back. Returns the parser.
    """
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides as space-separated 'PATH.KEY VALUE' pairs; everything after --opts",
    )
    parser.add_argument("trailing_opts", default=[], nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def config_overrides(args: argparse.Namespace) -> List[str]:
    """The ``KEY VALUE`` list of a parser built with :func:`add_config_arguments`: ``--opts``, then trailing pairs."""
    trailing = args.trailing_opts[1:] if args.trailing_opts[:1] == ["--"] else args.trailing_opts
    return list(args.opts) + list(trailing)


@contextlib.contextmanager
def _unknown_keys_named(cfg: CN, source: str):
    """Re-raise yacs' error for a key that is not in ``cfg`` with its ``source`` and the closest existing keys."""
    try:
        yield
    except (KeyError, AssertionError) as e:  # yacs: KeyError from a file, AssertionError from a list
        message = str(e.args[0]) if e.args else ""
        if not message.startswith("Non-existent"):
            raise
        hint = close_keys_hint(message.rsplit(" ", 1)[-1], _full_keys(cfg), "detectron2 or add_yolact_config")
        raise KeyError(f"{message} (in {source}): {hint}") from e


def close_keys_hint(key: str, keys: Iterable[str], owner: str) -> str:
    """"did you mean A or B?" (the keys among ``keys`` closest to ``key``), else that none of ``owner``'s is close."""
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.8)
    return f"did you mean {' or '.join(close)}?" if close else f"no key of {owner} is close"


def _full_keys(node: CN, prefix: str = "") -> Iterator[str]:
    """Every key of a config, dotted: the nodes (``MODEL.YOLACT``) and the leaves (``MODEL.YOLACT.NUM_CLASSES``)."""
    for name, value in node.items():
        yield prefix + name
        if isinstance(value, CN):
            yield from _full_keys(value, f"{prefix}{name}.")


def add_yolact_config(cfg: CN) -> None:
    """
    Add the keys of YOLACT / YOLACT++ to a detectron2 config, in place, with the paper's defaults: one function
    per component below, each adding that component's keys.

    Everything specific to YOLACT lives under ``cfg.MODEL.YOLACT``. Outside it, this adds ``SOLVER.OPTIMIZER``,
    ``SOLVER.CHECKPOINT_MAX_TO_KEEP`` and ``DATALOADER.SKIP_CORRUPT_IMAGES``, and sets detectron2's ``TEST.DETECTIONS_PER_IMAGE`` to the paper's
    100. detectron2's other keys (``MODEL.RESNETS``, ``MODEL.FPN``, ``MODEL.PIXEL_MEAN``, ``INPUT.FORMAT``,
    ``INPUT.RANDOM_FLIP``, ``SOLVER``...) keep their meaning. Pixel statistics go with the weights:

    * detectron2's MSRA ImageNet weights (``detectron2://ImageNetPretrained/MSRA/R-50.pkl``): ``INPUT.FORMAT
      "BGR"``, ``PIXEL_MEAN [103.53, 116.28, 123.675]``, ``PIXEL_STD [1, 1, 1]``, ``STRIDE_IN_1X1 True``
      (the defaults of ``configs/Base-YOLACT.yaml``);
    * the original YOLACT / torchvision weights: ``INPUT.FORMAT "RGB"``, ``PIXEL_MEAN [123.68, 116.78,
      103.94]``, ``PIXEL_STD [58.40, 57.12, 57.38]``, ``STRIDE_IN_1X1 False`` (``configs/original/``).
    """
    cfg.MODEL.YOLACT = CN()
    for add_component_config in (
        _add_network_config,
        _add_precision_config,
        _add_backbone_config,
        _add_protonet_config,
        _add_head_config,
        _add_anchor_config,
        _add_matcher_config,
        _add_loss_config,
        _add_mask_rescoring_config,
        _add_postprocess_config,
        _add_solver_config,
        _add_data_config,
        _add_augmentation_config,
    ):
        add_component_config(cfg)


def _add_network_config(cfg: CN) -> None:
    """Classes, prototypes, head levels and input size of the network (modeling/meta_arch.py)."""
    y = cfg.MODEL.YOLACT
    # Foreground classes (background is extra: the class branch predicts NUM_CLASSES + 1 logits, background last).
    y.NUM_CLASSES = 80
    # k, the number of prototypes and of coefficients per anchor.
    y.NUM_PROTOTYPES = 32
    # Backbone feature maps the prediction head runs on (shared weights across them).
    y.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Network input: images are resized to INPUT_SIZE x INPUT_SIZE. With PRESERVE_ASPECT_RATIO the longer side
    # is resized to INPUT_SIZE and the rest padded (with the pixel mean); the paper does not preserve it.
    y.INPUT_SIZE = 550
    y.PRESERVE_ASPECT_RATIO = False


def _add_precision_config(cfg: CN) -> None:
    """Memory layout and precision of inference (layers/precision.py, layers/norm.py)."""
    y = cfg.MODEL.YOLACT
    # Run the convolutions on channels-last (NHWC) tensors: oneDNN's fastest CPU path (and tensor cores' on GPUs).
    # Only the memory layout changes, not the values: the conv weights are stored channels-last too and the
    # GroupNorms become ChannelsLastGroupNorm (the same layer, fast on channels-last bfloat16 CPU tensors).
    y.CHANNELS_LAST = True
    # Precision of inference: "float32", "bfloat16" or "float16". The network (backbone, FPN, protonet, head,
    # mask re-scoring net) runs under torch.autocast to that dtype, the weights staying float32; its outputs
    # return to float32 before box decoding, NMS and mask assembly. "bfloat16" for faster CPU inference on CPUs
    # with native bfloat16 (AVX512-BF16 or AMX; others fall back to float32 with a warning) or on recent GPUs;
    # "float16" on CUDA only. Training ignores it (SOLVER.AMP.ENABLED sets its precision); export needs float32.
    y.PRECISION = "float32"


def _add_backbone_config(cfg: CN) -> None:
    """YOLACT's changes to detectron2's ResNet-FPN (modeling/backbone.py)."""
    y = cfg.MODEL.YOLACT
    # YOLACT++: in the ResNet stages chosen by detectron2's MODEL.RESNETS.DEFORM_ON_PER_STAGE, blocks 0, n, 2n...
    # (n = DEFORM_INTERVAL) get a deformable 3x3 conv (MODEL.RESNETS.DEFORM_MODULATED: DCNv2, DEFORM_NUM_GROUPS).
    y.DEFORM_INTERVAL = 1
    # FPN as modified by YOLACT: P3-P5 from res3-res5 (detectron2's MODEL.FPN.*), then P6 and P7 by stride-2
    # 3x3 convs starting from P5.
    y.FPN = CN()
    # Upsampling of the coarser level in the top-down path ("bilinear" in the original, "nearest" in detectron2).
    y.FPN.INTERPOLATION = "bilinear"
    # ReLU on P3-P5 after their 3x3 output convs (the original does this).
    y.FPN.RELU_OUTPUTS = True
    # ReLU between the P6 and P7 convs (the original has none).
    y.FPN.RELU_BEFORE_P7 = False


def _add_protonet_config(cfg: CN) -> None:
    """Protonet (modeling/protonet.py): an FCN on IN_FEATURE giving k prototypes at 1/4 of the input resolution."""
    p = cfg.MODEL.YOLACT.PROTONET = CN()
    p.NAME = "ProtoNet"
    p.IN_FEATURE = "p3"
    # 3x3 conv + ReLU layers before the upsampling...
    p.CONV_DIMS = [256, 256, 256]
    # ...the bilinear upsampling factor...
    p.UPSAMPLE_FACTOR = 2
    # ...and 3x3 conv + ReLU layers after it, then a 1x1 conv to k prototypes and a ReLU.
    p.POST_UPSAMPLE_CONV_DIMS = [256]
    # Norm after each of those 3x3 convs (detectron2's get_norm names: "GN", "BN", ...); "" in the paper.
    p.NORM = ""


def _add_head_config(cfg: CN) -> None:
    """Prediction head, shared across MODEL.YOLACT.IN_FEATURES (modeling/head.py)."""
    h = cfg.MODEL.YOLACT.HEAD = CN()
    h.NAME = "YolactHead"
    # 3x3 conv + ReLU layers shared by the class, box and coefficient branches ("YolactDecoupledHead": one such
    # tower per branch).
    h.SHARED_CONV_DIMS = [256]
    # Norm after each shared conv, as MODEL.YOLACT.PROTONET.NORM.
    h.NORM = ""
    # When > 0, the class conv starts with every foreground class at this softmax probability and the background
    # at the rest, at every anchor (RetinaNet's prior initialisation, for the focal loss); 0: zero biases.
    h.PRIOR_PROB = 0.0


def _add_anchor_config(cfg: CN) -> None:
    """Anchors, in pixels of the network input, and their box coding (modeling/anchors.py)."""
    y = cfg.MODEL.YOLACT
    # Scale the sizes with INPUT_SIZE: the paper's are for 550.
    y.ANCHOR = CN()
    # One list of sizes per level (YOLACT++: three per level, size * 2 ** (j / 3)).
    y.ANCHOR.SIZES = [[24], [48], [96], [192], [384]]
    # One list of aspect ratios (w / h) for all levels: width = size * sqrt(ar), height = size / sqrt(ar).
    y.ANCHOR.ASPECT_RATIOS = [[1.0, 0.5, 2.0]]
    # The original v1 code made every anchor square (h = w), a bug its released v1 checkpoints depend on.
    # True only for those (configs/original/yolact_*); YOLACT++ and new training use real aspect ratios.
    y.ANCHOR.SQUARE = False
    # SSD box coding with variances (0.1, 0.2), i.e. Box2BoxTransform weights (10, 10, 5, 5).
    y.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _add_matcher_config(cfg: CN) -> None:
    """Anchor matching in training (modeling/loss.py)."""
    m = cfg.MODEL.YOLACT.MATCHER = CN()
    m.POSITIVE_IOU = 0.5
    m.NEGATIVE_IOU = 0.4
    # Anchors overlapping a crowd box by more than this are neither positive nor negative.
    m.CROWD_IOU = 0.7


def _add_loss_config(cfg: CN) -> None:
    """Weights and kinds of the training losses (modeling/loss.py, modeling/semantic_seg.py)."""
    loss = cfg.MODEL.YOLACT.LOSS = CN()
    loss.CLS_WEIGHT = 1.0
    loss.BOX_WEIGHT = 1.5
    # "smooth_l1" on the SSD-encoded deltas (the original's) or "giou" (1 - GIoU of the decoded boxes).
    loss.BOX_REG_LOSS_TYPE = "smooth_l1"
    loss.MASK_WEIGHT = 6.125
    loss.SEM_SEG_WEIGHT = 1.0
    # "ohem": softmax cross-entropy over the positives and the hardest negatives (the original's default);
    # "softmax_focal": the focal loss on the softmax over every positive and negative anchor (an option of the
    # original code; pair it with MODEL.YOLACT.HEAD.PRIOR_PROB 0.01).
    loss.CLS_LOSS_TYPE = "ohem"
    # Online hard example mining ("ohem"): negatives kept per positive.
    loss.OHEM_NEG_POS_RATIO = 3
    # "softmax_focal": weight of the foreground anchors (the background's is 1 - alpha) and focusing exponent.
    loss.FOCAL_LOSS_ALPHA = 0.25
    loss.FOCAL_LOSS_GAMMA = 2.0
    # Positives per image whose masks are assembled and trained. An image with more trains a random subset of
    # this size, its mask loss scaled by positives / sampled so that it keeps its expected magnitude (as the
    # original).
    loss.MASKS_TO_TRAIN = 100
    # Semantic segmentation auxiliary branch (training only): the model's sem_seg_head, one 1x1 conv shared by the
    # features it reads, whose logits the loss trains against per-class unions of the GT masks.
    # The original reads P3 only; with more levels their losses (each normalised by its area) are summed.
    loss.SEM_SEG = True
    loss.SEM_SEG_IN_FEATURES = ["p3"]


def _add_mask_rescoring_config(cfg: CN) -> None:
    """
    YOLACT++ fast mask re-scoring (modeling/mask_rescoring.py): a small FCN on each predicted (cropped,
    prototype-resolution) mask predicts its IoU with the ground truth for every class; at inference the score
    becomes score * predicted IoU.
    """
    r = cfg.MODEL.YOLACT.MASK_RESCORING = CN()
    r.ENABLED = False
    # Stride-2 3x3 conv + ReLU layers, then a 1x1 conv to NUM_CLASSES + ReLU and a global max pool.
    r.CONV_DIMS = [8, 16, 32, 64, 128]
    r.LOSS_WEIGHT = 25.0
    # Masks whose GT covers at most this many prototype pixels are not trained on (the original: 5 x 5).
    r.MIN_GT_AREA = 25
    # Detach the masks fed to the mask IoU net in training, so that its loss trains that net only. False (the
    # original): the loss also sends gradient into the mask coefficients and prototypes.
    r.DETACH_MASKS = False
    # The score of the boxes: "class" (the original), the class score, while the masks carry score * predicted
    # IoU in Instances.mask_scores, each evaluated with its own (YolactCOCOEvaluator); "rescored": boxes and
    # masks both scored, and ordered, by score * predicted IoU.
    r.BOX_SCORES = "class"


def _add_postprocess_config(cfg: CN) -> None:
    """Post-processing at inference (modeling/postprocessing.py), and detectron2's detections per image."""
    p = cfg.MODEL.YOLACT.POSTPROCESS = CN()
    # "FastNMS", "CrossClassFastNMS" or "StandardNMS" (POSTPROCESSOR_REGISTRY).
    p.NAME = "FastNMS"
    p.NMS_THRESH = 0.5
    # Candidates per class entering NMS.
    p.TOP_K = 200
    # Anchors whose best foreground score is below this are dropped before NMS.
    p.SCORE_THRESH = 0.05
    # Also drop, after NMS, (anchor, class) pairs below SCORE_THRESH (the original's "second threshold").
    p.SECOND_SCORE_THRESH = False
    # Assembled masks are binarised at this probability.
    p.MASK_THRESH = 0.5
    # The number of detections kept per image: detectron2's key, at the paper's value.
    cfg.TEST.DETECTIONS_PER_IMAGE = 100


def _add_solver_config(cfg: CN) -> None:
    """The trainer's optimizer and how many checkpoints it keeps (engine/trainer.py)."""
    # "SGD" (detectron2's, the paper's) or "ADAMW" (for training from scratch, as the embedded-dataset configs
    # do), both with SOLVER.BASE_LR / WEIGHT_DECAY / CLIP_GRADIENTS.
    cfg.SOLVER.OPTIMIZER = "SGD"
    # How many periodic checkpoints (model_<iter>.pth) the trainer keeps, deleting the oldest; 0 keeps them all
    # (detectron2's behaviour). model_final.pth is always kept.
    cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP = 0


def _add_data_config(cfg: CN) -> None:
    """Unreadable images in the training loader (data/dataset_mapper.py)."""
    # Training only: an image file that cannot be read (corrupt, truncated, deleted after the dataset was loaded)
    # is skipped with a warning naming it, another image taking its place (True), or stops training with an error
    # naming it (False). Evaluation always stops: it must see every image. Missing files and invalid annotations
    # are errors when the loader is built, before the first iteration (yolact_d2/data/validation.py).
    cfg.DATALOADER.SKIP_CORRUPT_IMAGES = False


def _add_augmentation_config(cfg: CN) -> None:
    """
    Training-time data augmentation of the YOLACT dataset mapper (data/transforms.py), SSD-style as the
    original. Horizontal flipping follows detectron2's INPUT.RANDOM_FLIP ("horizontal" or "none"); evaluation
    uses none of these.
    """
    a = cfg.MODEL.YOLACT.AUGMENTATION = CN()
    # Random brightness, contrast, saturation and hue distortion, in random order.
    a.PHOTOMETRIC = True
    # Zoom out: place the image on a canvas of the mean colour up to MAX_EXPAND times as large (per side).
    a.EXPAND = True
    a.MAX_EXPAND = 4.0
    # Random sample crop with a minimum IoU constraint; keeps instances whose box centres stay inside.
    a.SAMPLE_CROP = True
    # Not in the original: random vertical flip and transpose (x and y swapped), each with probability 0.5; with
    # the horizontal flip, the 8 rotations by multiples of 90 degrees and reflections, equally likely. Only for
    # data without an "up" (aerial or microscope images, the embedded shapes), so off by default.
    a.DIHEDRAL = False
