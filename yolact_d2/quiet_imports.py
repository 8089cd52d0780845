"""
Deprecation warnings that third-party packages emit when yolact_d2 imports them, silenced narrowly (by exact
category and message) around those imports only. Nothing here imports detectron2, so that a tool can import
``yolact_d2`` first and get detectron2 imported quietly.
"""
import contextlib
import warnings

__all__ = ["AVOIDABLE_WARNINGS", "quiet_third_party_imports"]

# (category, message regex) of each warning silenced, with the import that triggers it.
AVOIDABLE_WARNINGS = (
    # fvcore.nn.focal_loss, imported by detectron2.layers (so by any detectron2 model code), calls
    # torch.jit.script at import time, which torch deprecates.
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    # detectron2.model_zoo imports pkg_resources, which setuptools deprecates.
    (UserWarning, r"pkg_resources is deprecated as an API"),
)


@contextlib.contextmanager
def quiet_third_party_imports():
    """Within the block, the warnings of :data:`AVOIDABLE_WARNINGS` are ignored; every other one shows."""
    with warnings.catch_warnings():
        for category, message in AVOIDABLE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
