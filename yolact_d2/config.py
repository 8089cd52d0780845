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


def add_yolact_config(cfg):
    """
    Add the keys of YOLACT / YOLACT++ to a detectron2 config, in place, with the paper's defaults.

    Everything specific to YOLACT lives under ``cfg.MODEL.YOLACT``; detectron2's own keys
    (``MODEL.RESNETS``, ``MODEL.FPN``, ``MODEL.PIXEL_MEAN``, ``INPUT.FORMAT``, ``TEST.DETECTIONS_PER_IMAGE``,
    ``SOLVER``...) keep their meaning. Pixel statistics go with the weights:

    * detectron2's MSRA ImageNet weights (``detectron2://ImageNetPretrained/MSRA/R-50.pkl``): ``INPUT.FORMAT
      "BGR"``, ``PIXEL_MEAN [103.53, 116.28, 123.675]``, ``PIXEL_STD [1, 1, 1]``, ``STRIDE_IN_1X1 True``
      (the defaults of ``configs/Base-YOLACT.yaml``);
    * the original YOLACT / torchvision weights: ``INPUT.FORMAT "RGB"``, ``PIXEL_MEAN [123.68, 116.78,
      103.94]``, ``PIXEL_STD [58.40, 57.12, 57.38]``, ``STRIDE_IN_1X1 False`` (``configs/original/``).
    """
    _C = cfg
    _C.MODEL.YOLACT = CN()
    # Foreground classes (background is extra: the class branch predicts NUM_CLASSES + 1 logits, background last).
    _C.MODEL.YOLACT.NUM_CLASSES = 80
    # k, the number of prototypes and of coefficients per anchor.
    _C.MODEL.YOLACT.NUM_PROTOTYPES = 32
    # Backbone feature maps the prediction head runs on (shared weights across them).
    _C.MODEL.YOLACT.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Network input: images are resized to INPUT_SIZE x INPUT_SIZE. With PRESERVE_ASPECT_RATIO the longer side
    # is resized to INPUT_SIZE and the rest padded (with the pixel mean); the paper does not preserve it.
    _C.MODEL.YOLACT.INPUT_SIZE = 550
    _C.MODEL.YOLACT.PRESERVE_ASPECT_RATIO = False
    # Run the convolutions on channels-last (NHWC) tensors: oneDNN's fastest CPU path (and tensor cores' on GPUs).
    # Only the memory layout changes, not the values: the conv weights are stored channels-last too and the
    # GroupNorms become ChannelsLastGroupNorm (the same layer, fast on channels-last bfloat16 CPU tensors).
    _C.MODEL.YOLACT.CHANNELS_LAST = True
    # Precision of inference: "float32", "bfloat16" or "float16". The network (backbone, FPN, protonet, head,
    # mask re-scoring net) runs under torch.autocast to that dtype, the weights staying float32; its outputs
    # return to float32 before box decoding, NMS and mask assembly. "bfloat16" for faster CPU inference on CPUs
    # with native bfloat16 (AVX512-BF16 or AMX; others fall back to float32 with a warning) or on recent GPUs;
    # "float16" on CUDA only. Training ignores it (SOLVER.AMP.ENABLED sets its precision); export needs float32.
    _C.MODEL.YOLACT.PRECISION = "float32"

    # YOLACT++: in the ResNet stages chosen by detectron2's MODEL.RESNETS.DEFORM_ON_PER_STAGE, blocks 0, n, 2n...
    # (n = DEFORM_INTERVAL) get a deformable 3x3 conv (MODEL.RESNETS.DEFORM_MODULATED: DCNv2, DEFORM_NUM_GROUPS).
    _C.MODEL.YOLACT.DEFORM_INTERVAL = 1

    # FPN as modified by YOLACT: P3-P5 from res3-res5 (detectron2's MODEL.FPN.*), then P6 and P7 by stride-2
    # 3x3 convs starting from P5.
    _C.MODEL.YOLACT.FPN = CN()
    # Upsampling of the coarser level in the top-down path ("bilinear" in the original, "nearest" in detectron2).
    _C.MODEL.YOLACT.FPN.INTERPOLATION = "bilinear"
    # ReLU on P3-P5 after their 3x3 output convs (the original does this).
    _C.MODEL.YOLACT.FPN.RELU_OUTPUTS = True
    # ReLU between the P6 and P7 convs (the original has none).
    _C.MODEL.YOLACT.FPN.RELU_BEFORE_P7 = False

    # Protonet: an FCN on PROTONET.IN_FEATURE giving k prototypes at 1/4 of the input resolution.
    _C.MODEL.YOLACT.PROTONET = CN()
    _C.MODEL.YOLACT.PROTONET.NAME = "ProtoNet"
    _C.MODEL.YOLACT.PROTONET.IN_FEATURE = "p3"
    # 3x3 conv + ReLU layers before the upsampling...
    _C.MODEL.YOLACT.PROTONET.CONV_DIMS = [256, 256, 256]
    # ...the bilinear upsampling factor...
    _C.MODEL.YOLACT.PROTONET.UPSAMPLE_FACTOR = 2
    # ...and 3x3 conv + ReLU layers after it, then a 1x1 conv to k prototypes and a ReLU.
    _C.MODEL.YOLACT.PROTONET.POST_UPSAMPLE_CONV_DIMS = [256]
    # Norm after each of those 3x3 convs (detectron2's get_norm names: "GN", "BN", ...); "" in the paper.
    _C.MODEL.YOLACT.PROTONET.NORM = ""

    # Prediction head, shared across IN_FEATURES.
    _C.MODEL.YOLACT.HEAD = CN()
    _C.MODEL.YOLACT.HEAD.NAME = "YolactHead"
    # 3x3 conv + ReLU layers shared by the class, box and coefficient branches ("YolactDecoupledHead": one such
    # tower per branch).
    _C.MODEL.YOLACT.HEAD.SHARED_CONV_DIMS = [256]
    # Norm after each shared conv, as MODEL.YOLACT.PROTONET.NORM.
    _C.MODEL.YOLACT.HEAD.NORM = ""
    # When > 0, the class conv starts with every foreground class at this softmax probability and the background
    # at the rest, at every anchor (RetinaNet's prior initialisation, for the focal loss); 0: zero biases.
    _C.MODEL.YOLACT.HEAD.PRIOR_PROB = 0.0

    # Anchors, in pixels of the network input (scale them with INPUT_SIZE: the paper's are for 550).
    _C.MODEL.YOLACT.ANCHOR = CN()
    # One list of sizes per level (YOLACT++: three per level, size * 2 ** (j / 3)).
    _C.MODEL.YOLACT.ANCHOR.SIZES = [[24], [48], [96], [192], [384]]
    # One list of aspect ratios (w / h) for all levels: width = size * sqrt(ar), height = size / sqrt(ar).
    _C.MODEL.YOLACT.ANCHOR.ASPECT_RATIOS = [[1.0, 0.5, 2.0]]
    # The original v1 code made every anchor square (h = w), a bug its released v1 checkpoints depend on.
    # True only for those (configs/original/yolact_*); YOLACT++ and new training use real aspect ratios.
    _C.MODEL.YOLACT.ANCHOR.SQUARE = False
    # SSD box coding with variances (0.1, 0.2), i.e. Box2BoxTransform weights (10, 10, 5, 5).
    _C.MODEL.YOLACT.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)

    # Anchor matching (training).
    _C.MODEL.YOLACT.MATCHER = CN()
    _C.MODEL.YOLACT.MATCHER.POSITIVE_IOU = 0.5
    _C.MODEL.YOLACT.MATCHER.NEGATIVE_IOU = 0.4
    # Anchors overlapping a crowd box by more than this are neither positive nor negative.
    _C.MODEL.YOLACT.MATCHER.CROWD_IOU = 0.7

    # Losses (training).
    _C.MODEL.YOLACT.LOSS = CN()
    _C.MODEL.YOLACT.LOSS.CLS_WEIGHT = 1.0
    _C.MODEL.YOLACT.LOSS.BOX_WEIGHT = 1.5
    # "smooth_l1" on the SSD-encoded deltas (the original's) or "giou" (1 - GIoU of the decoded boxes).
    _C.MODEL.YOLACT.LOSS.BOX_REG_LOSS_TYPE = "smooth_l1"
    _C.MODEL.YOLACT.LOSS.MASK_WEIGHT = 6.125
    _C.MODEL.YOLACT.LOSS.SEM_SEG_WEIGHT = 1.0
    # "ohem": softmax cross-entropy over the positives and the hardest negatives (the original's default);
    # "softmax_focal": the focal loss on the softmax over every positive and negative anchor (an option of the
    # original code; pair it with MODEL.YOLACT.HEAD.PRIOR_PROB 0.01).
    _C.MODEL.YOLACT.LOSS.CLS_LOSS_TYPE = "ohem"
    # Online hard example mining ("ohem"): negatives kept per positive.
    _C.MODEL.YOLACT.LOSS.OHEM_NEG_POS_RATIO = 3
    # "softmax_focal": weight of the foreground anchors (the background's is 1 - alpha) and focusing exponent.
    _C.MODEL.YOLACT.LOSS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.YOLACT.LOSS.FOCAL_LOSS_GAMMA = 2.0
    # Positives per image whose masks are assembled and trained. An image with more trains a random subset of
    # this size, its mask loss scaled by positives / sampled so that it keeps its expected magnitude (as the
    # original).
    _C.MODEL.YOLACT.LOSS.MASKS_TO_TRAIN = 100
    # Semantic segmentation auxiliary branch (training only): the model's sem_seg_head, one 1x1 conv shared by the
    # features it reads, whose logits the loss trains against per-class unions of the GT masks.
    # The original reads P3 only; with more levels their losses (each normalised by its area) are summed.
    _C.MODEL.YOLACT.LOSS.SEM_SEG = True
    _C.MODEL.YOLACT.LOSS.SEM_SEG_IN_FEATURES = ["p3"]

    # YOLACT++ fast mask re-scoring: a small FCN on each predicted (cropped, prototype-resolution) mask predicts
    # its IoU with the ground truth for every class; at inference the score becomes score * predicted IoU.
    _C.MODEL.YOLACT.MASK_RESCORING = CN()
    _C.MODEL.YOLACT.MASK_RESCORING.ENABLED = False
    # Stride-2 3x3 conv + ReLU layers, then a 1x1 conv to NUM_CLASSES + ReLU and a global max pool.
    _C.MODEL.YOLACT.MASK_RESCORING.CONV_DIMS = [8, 16, 32, 64, 128]
    _C.MODEL.YOLACT.MASK_RESCORING.LOSS_WEIGHT = 25.0
    # Masks whose GT covers at most this many prototype pixels are not trained on (the original: 5 x 5).
    _C.MODEL.YOLACT.MASK_RESCORING.MIN_GT_AREA = 25
    # Detach the masks fed to the mask IoU net in training, so that its loss trains that net only. False (the
    # original): the loss also sends gradient into the mask coefficients and prototypes.
    _C.MODEL.YOLACT.MASK_RESCORING.DETACH_MASKS = False
    # The score of the boxes: "class" (the original), the class score, while the masks carry score * predicted
    # IoU in Instances.mask_scores, each evaluated with its own (YolactCOCOEvaluator); "rescored": boxes and
    # masks both scored, and ordered, by score * predicted IoU.
    _C.MODEL.YOLACT.MASK_RESCORING.BOX_SCORES = "class"

    # Post-processing (inference).
    _C.MODEL.YOLACT.POSTPROCESS = CN()
    # "FastNMS", "CrossClassFastNMS" or "StandardNMS" (POSTPROCESSOR_REGISTRY).
    _C.MODEL.YOLACT.POSTPROCESS.NAME = "FastNMS"
    _C.MODEL.YOLACT.POSTPROCESS.NMS_THRESH = 0.5
    # Candidates per class entering NMS.
    _C.MODEL.YOLACT.POSTPROCESS.TOP_K = 200
    # Anchors whose best foreground score is below this are dropped before NMS.
    _C.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.05
    # Also drop, after NMS, (anchor, class) pairs below SCORE_THRESH (the original's "second threshold").
    _C.MODEL.YOLACT.POSTPROCESS.SECOND_SCORE_THRESH = False
    # Assembled masks are binarised at this probability. The number of detections kept per image is
    # detectron2's TEST.DETECTIONS_PER_IMAGE.
    _C.MODEL.YOLACT.POSTPROCESS.MASK_THRESH = 0.5

    # Paper defaults of detectron2 keys that YOLACT reads.
    _C.TEST.DETECTIONS_PER_IMAGE = 100
    # The trainer's optimizer: "SGD" (detectron2's, the paper's) or "ADAMW" (for training from scratch, as the
    # embedded-dataset configs do), both with SOLVER.BASE_LR / WEIGHT_DECAY / CLIP_GRADIENTS.
    _C.SOLVER.OPTIMIZER = "SGD"
    # How many periodic checkpoints (model_<iter>.pth) the trainer keeps, deleting the oldest; 0 keeps them all
    # (detectron2's behaviour). model_final.pth is always kept.
    _C.SOLVER.CHECKPOINT_MAX_TO_KEEP = 0

    # Training only: an image file that cannot be read (corrupt, truncated, deleted after the dataset was loaded)
    # is skipped with a warning naming it, another image taking its place (True), or stops training with an error
    # naming it (False). Evaluation always stops: it must see every image. Missing files and invalid annotations
    # are errors when the loader is built, before the first iteration (yolact_d2/data/validation.py).
    _C.DATALOADER.SKIP_CORRUPT_IMAGES = False

    # Training-time data augmentation of the YOLACT dataset mapper (SSD-style, as the original). Horizontal
    # flipping follows detectron2's INPUT.RANDOM_FLIP ("horizontal" or "none"); evaluation uses none of these.
    _C.MODEL.YOLACT.AUGMENTATION = CN()
    # Random brightness, contrast, saturation and hue distortion, in random order.
    _C.MODEL.YOLACT.AUGMENTATION.PHOTOMETRIC = True
    # Zoom out: place the image on a canvas of the mean colour up to MAX_EXPAND times as large (per side).
    _C.MODEL.YOLACT.AUGMENTATION.EXPAND = True
    _C.MODEL.YOLACT.AUGMENTATION.MAX_EXPAND = 4.0
    # Random sample crop with a minimum IoU constraint; keeps instances whose box centres stay inside.
    _C.MODEL.YOLACT.AUGMENTATION.SAMPLE_CROP = True
    # Not in the original: random vertical flip and transpose (x and y swapped), each with probability 0.5; with
    # the horizontal flip, the 8 rotations by multiples of 90 degrees and reflections, equally likely. Only for
    # data without an "up" (aerial or microscope images, the embedded shapes), so off by default.
    _C.MODEL.YOLACT.AUGMENTATION.DIHEDRAL = False
