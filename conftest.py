"""Fixtures for the whole test suite (tiny models come from the
``accdiffusion_testing`` pytest plugin)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run fastest on one thread; it also keeps timings stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
