"""CIFAR-style ResNets (3x3 stride-1 stem, no max-pool) and the heads the methods put on them."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import unknown_name


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for small images: any input size (global average pool), 1- or 3-channel input."""

    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...], in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers, in_planes = [], widths[0]
        for stage, (n, width) in enumerate(zip(blocks, widths)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers.append(BasicBlock(in_planes, width, stride))
                in_planes = width
        self.layers = nn.Sequential(*layers)
        self.out_dim = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the mean over H and W: the same global average pool as adaptive_avg_pool2d, with a
        # deterministic backward on CUDA (adaptive_avg_pool2d's uses atomic adds)
        return self.layers(self.stem(x)).mean(dim=(2, 3))


BACKBONES = {
    # name: (blocks per stage, widths per stage)
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ((3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet-small": ((1, 1, 1), (16, 32, 64)),  # the quick preset: ~4k views/s on 2 CPU cores
    "resnet-tiny": ((1, 1), (8, 16)),  # tests
}


BackboneName = Literal["resnet18", "resnet34", "resnet-small", "resnet-tiny"]
InputNorm = Literal["none", "csi", "openood"]
# OpenOOD v1.5's normalization_dict (openood/preprocessors/transform.py); ImageNet's elsewhere
OPENOOD_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                 "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def input_stats(norm: str, dataset: str, channels: int) -> tuple[tuple, tuple]:
    """(mean, std) per channel that the network subtracts and divides by: none, CSI's
    NormalizeLayer ([0, 1] -> [-1, 1]), or OpenOOD's preprocessing of the data set."""
    if norm == "none":
        return (), ()
    if norm == "csi":
        return (0.5,) * channels, (0.5,) * channels
    if norm == "openood":
        mean, std = OPENOOD_STATS.get(dataset, IMAGENET_STATS)
        return (tuple(mean[:channels]) if channels == 3 else (sum(mean) / 3,),
                tuple(std[:channels]) if channels == 3 else (sum(std) / 3,))
    raise unknown_name("input_norm", norm, ("none", "csi", "openood"))
INITS = ("torch", "mcl")


def build_backbone(name: str, in_channels: int, init: str = "torch") -> ResNet:
    """A backbone by name; ``init="mcl"`` initialises it as MCL's code does (`mcl_init`)."""
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES)
    blocks, widths = BACKBONES[name]
    net = ResNet(blocks, widths, in_channels)
    if init == "mcl":
        mcl_init(net)
    elif init != "torch":
        raise unknown_name("init", init, INITS)
    return net


def mcl_init(net: ResNet) -> None:
    """MCL's initialisation (torchvision's ResNet, which its code builds on): every convolution
    kaiming-normal (fan_out, relu), BatchNorm weight 1 and bias 0. The stem convolution keeps
    PyTorch's default init: MCL's code replaces torchvision's 7x7 stem with a fresh 3x3
    `nn.Conv2d` *after* the ResNet initialised itself."""
    stem = net.stem[0]
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m is not stem:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's projection head: Linear, ReLU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class Network(nn.Module):
    """A backbone with the heads a method puts on it: a projection head (contrastive methods),
    linear shift and class heads (rotation prediction, CSI, classifiers).

    ``forward`` returns a dict: ``features`` (backbone output) and, when present, ``z``
    (unnormalised projection), ``shift_logits`` and ``class_logits``.
    """

    def __init__(self, backbone: str, in_channels: int, *, proj_hidden: int = 0,
                 proj_dim: int = 0, n_shifts: int = 0, n_classes: int = 0, init: str = "torch",
                 input_mean: tuple[float, ...] = (), input_std: tuple[float, ...] = ()):
        super().__init__()
        # inputs in [0, 1] normalised inside the network (CSI's NormalizeLayer, OpenOOD's
        # preprocessing): buffers outside the state dict, so checkpoints keep their keys
        self.normalize = bool(input_mean)
        if self.normalize:
            shape = (1, -1, 1, 1)
            self.register_buffer("input_mean", torch.tensor(input_mean).view(shape),
                                 persistent=False)
            self.register_buffer("input_std", torch.tensor(input_std).view(shape),
                                 persistent=False)
        self.backbone = build_backbone(backbone, in_channels, init)
        d = self.backbone.out_dim
        self.projector = mlp_head(d, proj_hidden, proj_dim) if proj_dim > 0 else None
        self.shift_head = nn.Linear(d, n_shifts) if n_shifts else None
        self.class_head = nn.Linear(d, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.normalize:
            x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        features = self.backbone(x)
        out = {"features": features}
        if self.projector is not None:
            out["z"] = self.projector(features)
        if self.shift_head is not None:
            out["shift_logits"] = self.shift_head(features)
        if self.class_head is not None:
            out["class_logits"] = self.class_head(features)
        return out
