"""Choosing the torch device, and running on CPU when the GPU runs out of memory."""

from __future__ import annotations

import warnings
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when available, else CPU; 'cuda' without a GPU is an error that says what to do."""
    if isinstance(name, torch.device):
        return name
    key = str(name).lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("Device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto "
                         "(and check that a CUDA build of PyTorch is installed).")
    if key == "cpu" or key.startswith("cuda"):
        return torch.device(key)
    raise ValueError(f"Unknown device {name!r}: use auto, cpu or cuda.")


def run_with_cpu_fallback(job: Callable[[torch.device], T], device: torch.device,
                          notify: Callable[[str], None] | None = None) -> tuple[T, torch.device]:
    """Run ``job(device)``; on CUDA out-of-memory, free the cache, say so and run it again on the CPU."""
    try:
        return job(device), device
    except torch.OutOfMemoryError:
        if device.type != "cuda":
            raise
        torch.cuda.empty_cache()
        message = "GPU out of memory; running on the CPU instead (slower)."
        (notify or (lambda text: warnings.warn(text, RuntimeWarning, stacklevel=2)))(message)
        cpu = torch.device("cpu")
        return job(cpu), cpu
