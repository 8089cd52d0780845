"""
detectron2's checkpointer, writing its files atomically, refusing weights whose shapes do not fit YOLACT, and
saying what to do when the weights to load are missing, cannot be downloaded or are not a checkpoint.
"""
import logging
import os
import re
import socket
import tempfile
import time
from typing import IO, Callable, Dict, List, Tuple
from urllib.parse import urlparse

import torch
from iopath.common.file_io import get_cache_dir
from torch.nn.parallel import DistributedDataParallel

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import Detectron2Handler
from ..utils.detectron2_adapter import ExtensibleCheckpointer

__all__ = [
    "YolactCheckpointer",
    "write_atomically",
    "remove_orphan_temporary_files",
    "local_weights_file",
    "check_checkpoint_file",
]

logger = logging.getLogger(__name__)

# write_atomically's temporary files: ".<name>.<host>.<pid>.<tempfile's 8 random characters>.tmp"; files named
# before the host and pid were recorded lack those two fields.
_TEMPORARY_FILE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
_TEMPORARY_WRITER = re.compile(r"\..+\.(?P<host>[A-Za-z0-9-]*)\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp")
# Any temporary file is an orphan once unmodified this long (seconds): a writer modifies its file continuously
# until it renames it.
ORPHAN_AGE = 24 * 3600


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """
    Call ``write`` on a temporary file in the folder of ``path``, flush it to disk, then rename it to ``path``
    (``os.replace``, atomic on a local file system): ``path`` holds either its previous content or all of the
    new one, never part of it, even if the process is killed while writing. On an error the temporary file is
    removed and ``path`` is left as it was. The file gets the permissions a plain ``open(path, "wb")`` would give
    it (0666 less the umask), not the owner-only ones of a temporary file.
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.{_host()}.{os.getpid()}."  # the writer, for remove_orphan_temporary_files
    with tempfile.NamedTemporaryFile(dir=folder, prefix=prefix, suffix=".tmp", delete=False) as f:
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


def _host() -> str:
    """This machine's name, as it goes in temporary file names (letters, digits and '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _process_running(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (signal 0 checks, sends nothing; POSIX only)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_orphan(path: str, now: float) -> bool:
    """Whether the temporary file ``path`` of :func:`write_atomically` is left by a writer that is gone."""
    writer = _TEMPORARY_WRITER.fullmatch(os.path.basename(path))
    if writer and writer["host"] == _host() and os.name == "posix":
        pid = int(writer["pid"])
        if pid != os.getpid() and not _process_running(pid):
            return True
    return now - os.path.getmtime(path) > ORPHAN_AGE


def remove_orphan_temporary_files(folder: str) -> List[str]:
    """
    Remove from ``folder`` the temporary files that :func:`write_atomically` leaves when its process is killed
    mid-write (up to a checkpoint's size each): those written on this machine by a process that has ended, and
    any other once unmodified for :data:`ORPHAN_AGE` (another machine's, one named without its writer, or one
    whose writer's pid a new process has taken). A file that a live process may still be writing is never
    removed.

    Returns:
        the removed paths.
    """
    now = time.time()
    removed = []
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, entry)
        if _TEMPORARY_FILE.fullmatch(entry) and os.path.isfile(path) and _is_orphan(path, now):
            try:
                os.remove(path)
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            removed.append(path)
    if removed:
        logger.info(f"Removed {len(removed)} temporary files left by interrupted checkpoint writes: {removed}")
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The original YOLACT's files, which tools/convert_yolact_weights.py converts: a trained model
# ("<model>_<epoch>_<iteration>.pth") and the ImageNet backbones it trains from.
_ORIGINAL_MODEL_FILE = re.compile(r"yolact\w*_\d+_\d+\.pth")
_ORIGINAL_BACKBONE_FILES = ("resnet101_reducedfc.pth", "resnet50-19c8e357.pth")
# How the files that torch.load and pickle read begin: a zip archive (torch.save) or a pickle of protocol 2 or
# later (torch.save's legacy format, detectron2's .pkl).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")
_IMAGE_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image"}
_RANDOM_WEIGHTS = 'or to "" to start from random weights'


def local_weights_file(path: str, path_manager) -> str:
    """
    The local file of the weights ``path`` (``MODEL.WEIGHTS``: a path, or a URL that ``path_manager`` downloads
    to its cache, as detectron2's checkpointer does; a ``?query`` is ignored).

    Raises:
        FileNotFoundError: a missing local file, with the converter's command for the original YOLACT's files.
        OSError: a URL that could not be fetched, with where to put the file by hand.
    """
    path = urlparse(path)._replace(query="").geturl()
    if os.path.isfile(path):
        return path
    if "://" not in path:
        raise FileNotFoundError(_missing_file_message(path))
    try:
        return path_manager.get_local_path(path)
    except OSError as e:  # URLError, HTTPError, timeouts: all OSErrors
        url = path.replace(Detectron2Handler.PREFIX, Detectron2Handler.S3_DETECTRON2_PREFIX, 1)
        cached = os.path.join(get_cache_dir(), os.path.dirname(urlparse(url).path.lstrip("/")), url.split("/")[-1])
        raise OSError(
            f"The weights {path} could not be downloaded ({e}). Fetch {url} on a machine with network access and "
            f"put it at {cached} (where detectron2 looks for it first; FVCORE_CACHE moves that folder), or set "
            f"MODEL.WEIGHTS to the file's local path, {_RANDOM_WEIGHTS} (less accurate than from ImageNet's)"
        ) from e


def _missing_file_message(path: str) -> str:
    name = os.path.basename(path)
    message = f"The weights file {path} (MODEL.WEIGHTS) does not exist. "
    if _ORIGINAL_MODEL_FILE.fullmatch(name) or name in _ORIGINAL_BACKBONE_FILES:
        option = "--backbone " if name in _ORIGINAL_BACKBONE_FILES else ""
        return message + (
            f"It is a converted file of the original YOLACT: download {name} (README, 'Model zoo') and convert it "
            f"with: python tools/convert_yolact_weights.py {option}{name} {path}"
        )
    return message + f"Set MODEL.WEIGHTS to a checkpoint's path or URL, {_RANDOM_WEIGHTS}"


def check_checkpoint_file(path: str) -> None:
    """
    Raise a ValueError naming the local file ``path`` and what it is when it cannot be a checkpoint: neither a
    zip archive (torch.save's format) nor a pickle (torch's legacy format, detectron2's .pkl).
    """
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_CHECKPOINT_MAGIC):
        return
    raise ValueError(
        f"The weights file {path} (MODEL.WEIGHTS) is not a checkpoint: it is {_describe_file(path, head)}. Set "
        f"MODEL.WEIGHTS to a .pth written by tools/train_net.py or tools/convert_yolact_weights.py, a detectron2 "
        f".pkl, {_RANDOM_WEIGHTS}"
    )


def _describe_file(path: str, head: bytes) -> str:
    """What a file that begins with ``head`` is, in a few words."""
    if not head:
        return "empty"
    kind = next((kind for magic, kind in _IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind:
        return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"a text file starting {text.splitlines()[0][:40]!r}"
    return f"{os.path.getsize(path)} bytes of another format"


def _shape(value) -> Tuple[int, ...]:
    return tuple(value.shape)


class YolactCheckpointer(ExtensibleCheckpointer):
    """
    A :class:`DetectionCheckpointer` that

    * writes each checkpoint (``<name>.pth``) and the ``last_checkpoint`` tag with :func:`write_atomically`, so a
      run killed while saving leaves the previous checkpoint and a tag naming a complete file, and removes the
      temporary files such a kill leaves in ``save_dir`` (:func:`remove_orphan_temporary_files`) when built;
    * checks the weights it loads first (:meth:`load`);
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
        if self.save_dir and self.save_to_disk:
            remove_orphan_temporary_files(self.save_dir)

    def load(self, path: str, *args, **kwargs):
        """
        detectron2's ``load``, once ``path`` is known to be a checkpoint: a missing file, a failed download or a
        file that is not a checkpoint is an error saying what to do (:func:`local_weights_file`,
        :func:`check_checkpoint_file`), not a traceback from deep inside fvcore or torch.
        """
        # a DDP model's workers agree on the file in detectron2's load (one of them may lack it): no check may
        # stop one of them alone before that
        if path and not isinstance(self.model, DistributedDataParallel):
            check_checkpoint_file(local_weights_file(path, self.path_manager))
        return super().load(path, *args, **kwargs)

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
