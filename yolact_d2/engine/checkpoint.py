"""detectron2's checkpointer, writing its files atomically and refusing weights whose shapes do not fit YOLACT."""
import logging
import os
import tempfile
from typing import IO, Callable, Dict, List, Tuple

import torch

from ..utils.detectron2_adapter import ExtensibleCheckpointer

__all__ = ["YolactCheckpointer", "write_atomically"]

logger = logging.getLogger(__name__)


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """
    Call ``write`` on a temporary file in the folder of ``path``, flush it to disk, then rename it to ``path``
    (``os.replace``, atomic on a local file system): ``path`` holds either its previous content or all of the
    new one, never part of it, even if the process is killed while writing. On an error the temporary file is
    removed and ``path`` is left as it was. The file gets the permissions a plain ``open(path, "wb")`` would give
    it (0666 less the umask), not the owner-only ones of a temporary file.
    """
    folder, name = os.path.split(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", suffix=".tmp", delete=False) as f:
        try:
            os.chmod(f.name, 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            os.remove(f.name)
            raise
    os.replace(f.name, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _shape(value) -> Tuple[int, ...]:
    return tuple(value.shape)


class YolactCheckpointer(ExtensibleCheckpointer):
    """
    A :class:`DetectionCheckpointer` that

    * writes each checkpoint (``<name>.pth``) and the ``last_checkpoint`` tag with :func:`write_atomically`, so a
      run killed while saving leaves the previous checkpoint and a tag naming a complete file;
    * for a model that names its class-dependent layers (``class_dependent_layers()``, e.g. :class:`YOLACT`),
      loads only weights whose shapes fit: a checkpoint trained for another class count loads everything but
      those layers when ``reinit_class_layers`` (fine-tuning: they keep their initialisation, said in one log
      line), and is refused otherwise (inference would score classes with random weights); any other tensor of
      another shape (e.g. another ``NUM_PROTOTYPES`` or FPN width) is refused with the list of them. detectron2's
      checkpointer skips all such tensors with a warning each and leaves them random. Models without
      ``class_dependent_layers`` load as with detectron2's checkpointer.
    """

    def __init__(self, model, save_dir: str = "", *, reinit_class_layers: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.reinit_class_layers = reinit_class_layers

    def save(self, name: str, **kwargs) -> None:
        """fvcore's ``Checkpointer.save`` (model, checkpointables and ``kwargs`` in ``<name>.pth``), atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        write_atomically(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Write ``last_checkpoint`` (the name of the newest checkpoint), atomically."""
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_atomically(path, lambda f: f.write(last_filename_basename.encode("utf-8")))

    def load_model_weights(self, checkpoint):
        find_layers = getattr(self.model, "class_dependent_layers", None)
        if find_layers is None or checkpoint.get("matching_heuristics", False):
            return super().load_model_weights(checkpoint)
        reinitialised = self._drop_class_layers(checkpoint["model"], find_layers())
        incompatible = super().load_model_weights(checkpoint)
        dropped = {k for k, _, _ in reinitialised}
        return incompatible._replace(missing_keys=[k for k in incompatible.missing_keys if k not in dropped])

    def _drop_class_layers(self, state_dict: Dict, class_layers: List[str]) -> List[Tuple[str, tuple, tuple]]:
        """
        Check the shapes of ``state_dict`` (a checkpoint's "model") against the model's; remove the tensors of
        ``class_layers`` that differ (when re-initialising them is allowed) and return them as
        (key, checkpoint shape, model shape).

        Raises:
            ValueError: naming every tensor whose shape differs and may not be re-initialised.
        """
        _strip_module_prefix(state_dict)
        self.model.rename_legacy_keys(state_dict)
        model_state = self.model.state_dict()
        mismatched = [
            (key, _shape(value), _shape(model_state[key]))
            for key, value in state_dict.items()
            if key in model_state and _shape(value) != _shape(model_state[key])
        ]
        classes = [m for m in mismatched if _layer_of(m[0], class_layers)]
        others = [m for m in mismatched if not _layer_of(m[0], class_layers)]
        if others:
            raise ValueError(
                f"The checkpoint's tensors {_describe(others)} do not fit the model: it was trained with another "
                f"architecture (e.g. MODEL.YOLACT.NUM_PROTOTYPES, MODEL.FPN.OUT_CHANNELS, the anchors per "
                f"position); load it with the config it was trained with"
            )
        if classes and not self.reinit_class_layers:
            raise ValueError(
                f"The checkpoint's class-dependent tensors {_describe(classes)} do not fit the model: it was "
                f"trained for another class count than the config's. Set the class count it was trained with, or "
                f"train from it (tools/train_net.py) to fine-tune these layers on your classes"
            )
        if classes:
            layers = sorted({_layer_of(key, class_layers) for key, _, _ in classes})
            logger.info(
                f"Re-initialised the class-dependent layers {', '.join(layers)}: the checkpoint was trained for "
                f"another class count ({_describe(classes)}); all other weights are loaded"
            )
        for key, _, _ in classes:
            del state_dict[key]
        return classes


def _strip_module_prefix(state_dict: Dict) -> None:
    """Remove the ``module.`` of a (Distributed)DataParallel model from every key, in place."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        for key in list(state_dict):
            state_dict[key[len("module."):]] = state_dict.pop(key)


def _layer_of(key: str, layers: List[str]) -> str:
    """The layer of ``layers`` that the tensor ``key`` belongs to, else ''."""
    return next((layer for layer in layers if key.startswith(layer + ".")), "")


def _describe(mismatched: List[Tuple[str, tuple, tuple]]) -> str:
    return ", ".join(f"{key} {list(got)} (model {list(want)})" for key, got, want in mismatched)
