from __future__ import annotations

import pytest
import torch

from napari_seglab.device import autocast, autocast_dtype, resolve_device


def test_auto_picks_best_available(monkeypatch):
    monkeypatch.delenv("SEGLAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


def test_environment_overrides_auto(monkeypatch):
    monkeypatch.setenv("SEGLAB_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_explicit_device_wins_over_environment(monkeypatch):
    monkeypatch.setenv("SEGLAB_DEVICE", "cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_device_names_the_choices():
    with pytest.raises(ValueError, match=r"'tpu'.*'auto', 'cpu', 'cuda'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_cpu_runs_in_fp32():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None
    with autocast(cpu):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32
