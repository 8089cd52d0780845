"""
The one place where yolact_d2 touches a private name of detectron2 or fvcore (tests/utils/test_detectron2_adapter.py
checks that nothing else does), each given a public name here.

* fvcore's ``Checkpointer.load`` loads the model's weights through its ``_load_model(checkpoint)``, the method that
  detectron2's own :class:`DetectionCheckpointer` overrides to convert Caffe2 and pycls weights; fvcore offers no
  public hook for it. :class:`ExtensibleCheckpointer` names it :meth:`~ExtensibleCheckpointer.load_model_weights`.
* ``DefaultTrainer`` runs its iterations, and saves / restores their state, through the step trainer (a
  ``SimpleTrainer``) that its ``__init__`` builds inline and keeps as ``_trainer``. A trainer that builds its
  parts itself (:class:`yolact_d2.engine.YolactTrainer`: CPU DDP, CPU bfloat16) hands it over with
  :func:`set_step_trainer`.
"""
from typing import Dict

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, SimpleTrainer

__all__ = ["ExtensibleCheckpointer", "set_step_trainer"]


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


def set_step_trainer(trainer: DefaultTrainer, step_trainer: SimpleTrainer) -> None:
    """Make ``step_trainer`` the one that ``trainer`` (a DefaultTrainer) runs its steps and their state with."""
    trainer._trainer = step_trainer  # pylint: disable=protected-access
