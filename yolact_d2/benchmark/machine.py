"""A description of the machine and software a benchmark ran on."""
import os
import platform
from typing import Dict

import torch

import detectron2

__all__ = ["cpu_model", "machine_info"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> Dict:
    """CPU, core and thread counts, versions, and the device the models ran on."""
    device = torch.device(device)
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "detectron2": detectron2.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
