"""Tests for vlmlib.memory: freeing collects objects kept alive only by reference cycles."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from vlmlib import memory


class _Holder:
    """Stands for a trainer: it holds a tensor and, through a callback-like object, itself."""

    def __init__(self) -> None:
        self.weights = torch.zeros(1000)
        self.callback = {"trainer": self}  # a reference cycle, as trainer <-> callback handler


def test_free_memory_frees_an_object_kept_alive_by_a_reference_cycle():
    gc.disable()  # so that only free_memory can collect the cycle
    try:
        holder = _Holder()
        weights = weakref.ref(holder.weights)
        del holder
        assert weights() is not None  # reference counting alone cannot free a cycle
        memory.free_memory()
        assert weights() is None
    finally:
        gc.enable()


def test_free_memory_returns_zero_bytes_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert memory.free_memory() == 0


def test_free_memory_empties_the_cuda_cache_when_cuda_is_there(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda: 123)
    assert memory.free_memory() == 123
    assert calls == ["empty_cache"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_free_memory_hands_a_freed_tensor_back_to_the_driver():
    tensor = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # 256 MiB
    reserved_before = torch.cuda.memory_reserved()
    del tensor
    memory.free_memory()
    assert torch.cuda.memory_reserved() <= reserved_before - 256 * 2**20
