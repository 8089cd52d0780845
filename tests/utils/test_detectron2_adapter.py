"""
The adapter's public names work, and no file of yolact_d2/ or tools/ but the adapter reads, writes or overrides
a private attribute of detectron2 or fvcore: found with ``ast``, ``self._x`` and ``super()._x`` resolved on the
imported classes. Private names reached through a module of another library (``torch.ops.mkldnn.
_is_mkldnn_bf16_supported`` in layers/precision.py, torch's only query of native CPU bfloat16) are not counted.
"""
import ast
import importlib
import inspect
import os
import re

import torch
from torch import nn

from detectron2.engine import DefaultTrainer

from yolact_d2.utils import detectron2_adapter
from yolact_d2.utils.detectron2_adapter import ExtensibleCheckpointer, set_step_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADAPTER = os.path.relpath(detectron2_adapter.__file__, ROOT)
PRIVATE_OWNERS = ("detectron2", "fvcore")
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public API of named tuples, despite the "_"


def test_a_default_trainer_runs_its_steps_with_the_step_trainer_it_is_given():
    class Steps:
        def __init__(self):
            self.iterations = []

        def run_step(self):
            self.iterations.append(self.iter)

    trainer, steps = DefaultTrainer.__new__(DefaultTrainer), Steps()
    set_step_trainer(trainer, steps)
    for trainer.iter in (3, 4):
        trainer.run_step()
    assert steps.iterations == [3, 4]


def test_load_model_weights_is_what_load_calls(tmp_path):
    class Recording(ExtensibleCheckpointer):
        def load_model_weights(self, checkpoint):
            self.loaded = sorted(checkpoint["model"])
            return super().load_model_weights(checkpoint)

    source, target = nn.Linear(2, 3), nn.Linear(2, 3)
    torch.save({"model": source.state_dict()}, tmp_path / "weights.pth")
    checkpointer = Recording(target)
    checkpointer.load(str(tmp_path / "weights.pth"))
    assert checkpointer.loaded == ["bias", "weight"]
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_library(module: str) -> bool:
    return module.split(".")[0] in PRIVATE_OWNERS


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _defines(base, name: str) -> bool:
    """Whether the class ``base`` defines ``name``: in its body, or as ``self.<name> =`` in its source."""
    if name in vars(base):
        return True
    try:
        source = inspect.getsource(base)
    except (OSError, TypeError):
        return False
    return re.search(rf"self\.{re.escape(name)}\s*(:|=[^=])", source) is not None


def _library_owner(cls, name: str) -> str:
    """The detectron2 / fvcore module of a base of ``cls`` (``cls`` excluded) that defines ``name``; '' if none."""
    owners = [base.__module__ for base in cls.__mro__[1:] if _is_library(base.__module__) and _defines(base, name)]
    return owners[0] if owners else ""


def _module_roots(tree: ast.Module):
    """``{local name: module or module.name}`` of the file's absolute imports."""
    roots = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update({a.asname or a.name.split(".")[0]: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return roots


def _root_name(node: ast.AST) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _class_offenders(cls, class_node: ast.ClassDef, rel: str):
    """Private names of detectron2 / fvcore bases that the class overrides, or reaches by ``self`` / ``super()``."""
    for node in ast.walk(class_node):
        if isinstance(node, ast.FunctionDef) and _private(node.name):
            owner, what = _library_owner(cls, node.name), f"def {node.name}"
        elif isinstance(node, ast.Attribute) and _private(node.attr) and (
            _is_super_call(node.value) or _is_self(node.value)
        ):
            owner, what = _library_owner(cls, node.attr), ast.unparse(node)
        else:
            continue
        if owner:
            yield rel, node.lineno, what, owner


def _offenders_in(path: str):
    """(file, line, expression, owner) for each private detectron2 / fvcore attribute the file touches, by line."""
    rel = os.path.relpath(path, ROOT)
    tree = ast.parse(open(path).read(), path)
    roots = _module_roots(tree)
    module = None
    if not rel.startswith("tools"):
        module = importlib.import_module(rel[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and inspect.isclass(getattr(module, node.name, None)):
            found.extend(_class_offenders(getattr(module, node.name), node, rel))
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if _is_super_call(node.value) or _is_self(node.value):
                if module is None:  # tools/: no class to resolve them on
                    found.append((rel, node.lineno, ast.unparse(node), "?"))
                continue  # resolved by _class_offenders
            root = roots.get(_root_name(node.value), "")
            if node.attr in NAMEDTUPLE_API or (root and not _is_library(root)):
                continue
            found.append((rel, node.lineno, ast.unparse(node), root or "?"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
            "getattr", "setattr", "hasattr", "delattr"
        ):
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
                found.append((rel, node.lineno, ast.unparse(node), "?"))
    return sorted(found, key=lambda o: o[1])


def _files():
    for top in ("yolact_d2", "tools"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in sorted(names):
                if name.endswith(".py") and os.path.relpath(os.path.join(folder, name), ROOT) != ADAPTER:
                    yield os.path.join(folder, name)


def test_no_private_detectron2_or_fvcore_attribute_outside_the_adapter():
    found = [o for path in _files() for o in _offenders_in(path)]
    offenders = [f"{rel}:{line}: {what} ({owner})" for rel, line, what, owner in found]
    assert not offenders, (
        f"Private attributes touched outside {ADAPTER}; use a public API, or give the name a public one there:\n"
        + "\n".join(offenders)
    )


def test_the_scan_finds_each_kind_of_reach_in(tmp_path, monkeypatch):
    """The scan of a file with one reach-in of each kind into detectron2's classes, and names that are fine."""
    package = tmp_path / "scan_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(
        "from detectron2.checkpoint import DetectionCheckpointer\n"
        "from detectron2.evaluation import COCOEvaluator\n"
        "import detectron2.utils.comm as comm\n"
        "import torch\n"
        "class Checkpointer(DetectionCheckpointer):\n"
        "    def _load_model(self, checkpoint):\n"  # 6: overrides fvcore's private method
        "        return super()._load_model(checkpoint)\n"  # 7: calls it
        "class Evaluator(COCOEvaluator):\n"
        "    def reset(self):\n"
        "        self._predictions = []\n"  # 10: COCOEvaluator's instance attribute
        "        self._mine = self._cpu_device\n"  # 11: ours is fine, COCOEvaluator's is not
        "def f(evaluator, model):\n"
        "    evaluator._tasks = ('bbox',)\n"  # 13: another object's private attribute
        "    getattr(model, '_output_size')\n"  # 14: the same by name
        "    comm._LOCAL_PROCESS_GROUP\n"  # 15: a detectron2 module's private name
        "    return torch._C, model._replace(a=1)\n"  # another library's module, the named tuple API: fine
        "class Module(torch.nn.Module):\n"
        "    def _load_from_state_dict(self, *args):\n"  # torch's hook: fine
        "        super()._load_from_state_dict(*args)\n"
    )
    monkeypatch.setitem(globals(), "ROOT", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = _offenders_in(str(package / "probe.py"))
    assert [line for _, line, _, _ in found] == [6, 7, 10, 11, 13, 14, 15], found
