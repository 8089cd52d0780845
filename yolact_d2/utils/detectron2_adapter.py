"""
The one place where yolact_d2 touches a private name of detectron2 or fvcore (tests/utils/test_detectron2_adapter.py
checks that nothing else does), each given a public name here.

* fvcore's ``Checkpointer.load`` loads the model's weights through its ``_load_model(checkpoint)``, the method that
  detectron2's own :class:`DetectionCheckpointer` overrides to convert Caffe2 and pycls weights; fvcore offers no
  public hook for it. :class:`ExtensibleCheckpointer` names it :meth:`~ExtensibleCheckpointer.load_model_weights`.
"""
from typing import Dict

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["ExtensibleCheckpointer"]


class ExtensibleCheckpointer(DetectionCheckpointer):
    """
    detectron2's :class:`DetectionCheckpointer` whose loading of the model's weights a subclass extends by
    overriding :meth:`load_model_weights` (and calling ``super().load_model_weights``).
    """

    def load_model_weights(self, checkpoint: Dict):
        """
        Load ``checkpoint["model"]`` (a state dict) into ``self.model`` as detectron2 does: key heuristics for
        converted weights, shapes that do not fit skipped with a warning. Called by :meth:`load` with the
        checkpoint file's content.

        Returns:
            fvcore's ``_IncompatibleKeys`` (a named tuple of ``missing_keys``, ``unexpected_keys`` and
            ``incorrect_shapes``).
        """
        return super()._load_model(checkpoint)

    def _load_model(self, checkpoint: Dict):
        return self.load_model_weights(checkpoint)
