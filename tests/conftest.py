"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small models run faster on one thread, and leave the other core to the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
