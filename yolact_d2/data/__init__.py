"""Data of yolact_d2. Importing this package registers the embedded ``yolact_shapes`` dataset."""
from .synthetic import *  # noqa: F401,F403  (registers yolact_shapes_train / yolact_shapes_val)
from .dataset_mapper import *  # noqa: F401,F403  (YolactDatasetMapper, build_yolact_augmentation)
from .datasets import *  # noqa: F401,F403  (register_coco_dataset, add_dataset_argument)
from .images import *  # noqa: F401,F403  (read_image, to_three_channels, UnusableImageError)
