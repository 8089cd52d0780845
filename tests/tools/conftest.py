"""Fixtures of the tools' tests: load a script of tools/ (not a package) as a module."""
import importlib.util
import os

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")


@pytest.fixture(scope="module")
def load_tool():
    """``load_tool("demo.py")``: the module of ``tools/demo.py``."""

    def load(filename):
        name = "yolact_tool_" + os.path.splitext(filename)[0]
        spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, filename))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
