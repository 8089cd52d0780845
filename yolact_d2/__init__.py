"""YOLACT / YOLACT++ for detectron2. Importing this package registers every component."""
from .quiet_imports import quiet_third_party_imports

with quiet_third_party_imports():  # detectron2's own imports trigger deprecation warnings of its dependencies
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
