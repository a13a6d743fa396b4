import os

import pytest
import torch

os.environ.setdefault("BENCH_DATA", "/nonexistent-bench-data")  # tests never download
torch.set_num_threads(min(2, torch.get_num_threads()))

# tiny networks for every method with a network; the projection head only for the contrastive
# ones (rotation prediction and CE have none: `--set proj_dim` alone with them is refused)
TINY_NETWORK = ["--set", "backbone=resnet-tiny", "--set", "epochs=2", "--set", "batch_size=32",
                "--set", "max_train_samples=64"]
TINY = [*TINY_NETWORK, "--set", "proj_hidden=16", "--set", "proj_dim=8"]


@pytest.fixture
def tiny_args():
    return list(TINY)


@pytest.fixture
def tiny_network_args():
    return list(TINY_NETWORK)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
