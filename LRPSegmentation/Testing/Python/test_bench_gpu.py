"""benchmarks/bench_gpu.py: the part that runs without a GPU (its figures need one; see README.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_cuda_without_gpu_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        _bench().main(["--device", "cuda"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sees no CUDA GPU" in err and "--device cpu" in err


def test_defaults_are_the_issue_sizes():
    args = _bench().parse_args([])
    assert (args.device, args.epochs, args.max_seconds, args.quick) == ("cuda", 80, 300.0, False)
