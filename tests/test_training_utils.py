"""Seeding, logging set-up and the single-process behaviour of gather_with_grad (the
two-process behaviour is tested in test_training_distributed.py)."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from training_toys import reset_accelerate_state

from hf_reid.training import create_accelerator, gather_with_grad, set_seed, setup_logging


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def test_set_seed_makes_python_numpy_and_torch_repeat():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    set_seed(11)
    first = draws()
    set_seed(11)
    assert draws() == first
    set_seed(12)
    assert draws() != first


def test_gather_with_grad_is_the_identity_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    y = gather_with_grad(x)
    assert y is x


def test_setup_logging_writes_the_file_once_per_message(tmp_path):
    package_logger = logging.getLogger("hf_reid")
    before = list(package_logger.handlers)
    try:
        accelerator = create_accelerator(tmp_path, seed=0)
        setup_logging(accelerator, log_file=tmp_path / "train.log")
        setup_logging(accelerator)  # a second call adds no second console handler
        console = [h for h in package_logger.handlers if getattr(h, "_hf_reid", False)]
        assert len(console) == 1
        logging.getLogger("hf_reid.training.test").info("hello from the main process")
        for handler in package_logger.handlers:
            handler.flush()
        assert (tmp_path / "train.log").read_text().count("hello from the main process") == 1
        assert logging.getLogger("transformers").level == logging.WARNING
    finally:
        for handler in package_logger.handlers[:]:
            if handler not in before:
                package_logger.removeHandler(handler)
                handler.close()
        package_logger.setLevel(logging.NOTSET)


def test_create_accelerator_shuffles_by_seed_and_epoch(tmp_path):
    def epoch_orders(seed: int, global_seed: int = 0) -> list[list[int]]:
        reset_accelerate_state()
        accelerator = create_accelerator(tmp_path, seed=seed)
        torch.manual_seed(global_seed)  # the global random stream must not matter
        loader = accelerator.prepare(DataLoader(list(range(10)), batch_size=10, shuffle=True))
        orders = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            orders.append(next(iter(loader)).tolist())
        return orders

    first = epoch_orders(0)
    assert epoch_orders(0, global_seed=99) == first
    assert first[0] != first[1]
    assert epoch_orders(1) != first
