"""Score a network of your own with every post-hoc score its outputs allow (labeled OOD).

A small CNN is trained with cross-entropy on Fashion-MNIST (or any in-distribution set of the
suite), then handed to `bench.evaluate`, which scores it with MSP, energy, MaxLogit, GEN, ReAct,
ASH, ViM, SHE, deep k-NN, Mahalanobis and RMDS against the set's OOD table, and k-NN (PyOD) on
its features. Nothing here is bench-specific but the last call: any `torch.nn.Module` with a
`features(x)` method and logits from `forward(x)` will do.

    python examples/own_network.py                       # Fashion-MNIST, offline (Debian's files)
    python examples/own_network.py --dataset digits --train-images 500 --epochs 1
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import bench
from bench.datasets import load_dataset


class SmallCNN(nn.Module):
    """Two convolutions, a global pool (the penultimate features) and a linear head."""

    def __init__(self, channels: int, classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def train(dataset: str, n_images: int, epochs: int, seed: int = 0) -> SmallCNN:
    """Cross-entropy on a seeded subset of the training split (uint8 images -> [0, 1])."""
    torch.manual_seed(seed)
    data = load_dataset(dataset, "train", download=False)
    pick = torch.randperm(len(data))[:n_images]
    x, y = data.images[pick].float() / 255, data.labels[pick]
    model = SmallCNN(data.shape[0], len(data.classes))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="runs/own-network")
    args = parser.parse_args()
    model = train(args.dataset, args.train_images, args.epochs)
    rows = bench.evaluate(model, args.dataset, protocol="ood-labeled", name="small-cnn",
                          features="knn", out=args.out, download=False, preset="quick")
    table = next(iter(bench.leaderboard(rows).values()))
    print(table[["near", "far", "mean"]].round(1).to_string())


if __name__ == "__main__":
    main()
