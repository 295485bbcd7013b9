"""Fixtures shared by the separator tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One torch thread, restored after: results do not depend on it, and on a shared 2-core
    box two threads contend with other work (measured 5-7x slower wall time than one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
