#!/usr/bin/env python
"""yolact_d2: YOLACT and YOLACT++ real-time instance segmentation as a detectron2 project."""
import os
import re

from setuptools import find_packages, setup


def _version():
    init = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yolact_d2", "__init__.py")
    with open(init) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="yolact_d2",
    version=_version(),
    description="YOLACT / YOLACT++ instance segmentation as a detectron2 plugin",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "configs")),
    python_requires=">=3.10",
    # torch, torchvision and detectron2 are not listed: pip cannot resolve detectron2 by name, and torch
    # must match the detectron2 build. dev/setup_env.sh installs all three (see README).
    install_requires=[
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "pycocotools>=2.0.2",
        "opencv-python-headless>=4.5",
        "numpy",
        "tqdm",
        "tabulate",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-xdist", "onnx", "onnxruntime", "onnxscript"],
    },
)
