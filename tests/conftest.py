import os

import pytest
import torch

os.environ.setdefault("BENCH_DATA", "/nonexistent-bench-data")  # tests never download
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY = ["--set", "backbone=resnet-tiny", "--set", "epochs=2", "--set", "batch_size=32",
        "--set", "proj_hidden=16", "--set", "proj_dim=8", "--set", "max_train_samples=64"]


@pytest.fixture
def tiny_args():
    return list(TINY)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
