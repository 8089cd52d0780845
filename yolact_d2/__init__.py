"""YOLACT / YOLACT++ for detectron2. Importing this package registers every component."""
from . import data  # noqa: F401  (registers the embedded dataset)
from .config import add_yolact_config
from .modeling import (
    POSTPROCESSOR_REGISTRY,
    PROTONET_REGISTRY,
    YOLACT,
    YOLACT_HEAD_REGISTRY,
    build_yolact_resnet_fpn_backbone,
)

__version__ = "0.1.0"
