"""Scoring a trained network instead of training one: the four checkpoint formats, each built in
the test with the official key names and shapes, give our forward pass to 1e-6; files that do
not fit are refused with one line; the file's SHA-256 is part of the job."""

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from bench.cli import main
from bench.errors import BenchError
from bench.nn import imports
from bench.nn.backbones import Network, input_stats


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return (info.value.code, *capsys.readouterr())


def _randomise_batchnorm(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


# --- transcriptions of the official networks (their key names and forward passes) ------------

class Block(nn.Module):
    """CSI's and OpenOOD's BasicBlock: conv1, bn1, conv2, bn2, shortcut.{0,1}."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18_32(nn.Module):
    """CSI's models/resnet.py ResNet18 (with `csi=True`: NormalizeLayer, simclr_layer,
    shift_cls_layer, joint_distribution_layer, avg_pool2d(4)) or OpenOOD's ResNet18_32x32."""

    def __init__(self, num_classes=10, csi=False):
        super().__init__()
        self.csi = csi
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, layers = 64, []
        for stage, width in enumerate((64, 128, 256, 512)):
            blocks = [Block(cin, width, 1 if stage == 0 else 2), Block(width, width, 1)]
            cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        if csi:
            self.linear = nn.Linear(512, num_classes)
            self.simclr_layer = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
            self.shift_cls_layer = nn.Linear(512, 4)
            self.joint_distribution_layer = nn.Linear(512, 4 * num_classes)
        else:
            self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        if self.csi:
            x = (x - 0.5) / 0.5  # NormalizeLayer
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        feat = (F.avg_pool2d(out, 4) if self.csi else F.adaptive_avg_pool2d(out, 1)).flatten(1)
        if self.csi:
            return feat, self.simclr_layer(feat), self.shift_cls_layer(feat)
        return feat, self.fc(feat)


class MCLNet(nn.Module):
    """MCL's models/models.py SimCLR: torchvision's ResNet-34 with a 3x3 stem, no max-pool, no fc,
    and a 512-2048-128 projector."""

    def __init__(self):
        super().__init__()
        self.enc = torchvision.models.resnet34(weights=None)
        self.enc.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.enc.maxpool = nn.Identity()
        self.enc.fc = nn.Identity()
        self.projector = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 128))

    def forward(self, x):
        feature = self.enc(x)
        return feature, self.projector(feature)


def _close(a, b):
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-6), (a - b).abs().max()


X = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_the_official_mcl_checkpoint_gives_our_forward(tmp_path):
    torch.manual_seed(0)
    official = _randomise_batchnorm(MCLNet())
    path = tmp_path / "epoch_800.pt"
    torch.save({"epoch": 800, "net": official.state_dict(), "optim": {"state": {}},
                "scheduler": {"last_epoch": 3}}, path)
    imported = imports.read(path)
    assert imported.format == "mcl"
    assert imported.architecture == {"backbone": "resnet34", "proj_hidden": 2048,
                                     "proj_dim": 128, "input_norm": "none"}
    ours = Network("resnet34", 3, proj_hidden=2048, proj_dim=128).eval()
    imports.check_fits(imported, ours, path)
    imports.load_into(imported, ours)
    with torch.no_grad():
        feature, z = official(X)
        out = ours(X)
    _close(out["features"], feature)
    _close(out["z"], z)


def test_the_official_csi_checkpoint_gives_our_forward(tmp_path):
    torch.manual_seed(0)
    official = _randomise_batchnorm(ResNet18_32(csi=True))
    path = tmp_path / "last.model"
    torch.save({f"module.{k}": v for k, v in official.state_dict().items()}, path)  # DataParallel
    imported = imports.read(path)
    assert imported.format == "csi" and imported.architecture["input_norm"] == "csi"
    mean, std = input_stats("csi", "cifar10", 3)
    ours = Network("resnet18", 3, proj_hidden=512, proj_dim=128, n_shifts=4, input_mean=mean,
                   input_std=std).eval()
    imports.check_fits(imported, ours, path)
    imports.load_into(imported, ours)
    with torch.no_grad():
        feature, z, shift = official(X)
        out = ours(X)
    _close(out["features"], feature)
    _close(out["z"], z)
    _close(out["shift_logits"], shift)


def test_an_openood_classifier_gives_our_forward_with_its_normalisation(tmp_path):
    torch.manual_seed(0)
    official = _randomise_batchnorm(ResNet18_32(num_classes=10))
    path = tmp_path / "best.ckpt"
    torch.save(official.state_dict(), path)
    imported = imports.read(path)
    assert imported.format == "openood" and imported.architecture["input_norm"] == "openood"
    mean, std = input_stats("openood", "cifar10", 3)
    ours = Network("resnet18", 3, n_classes=10, input_mean=mean, input_std=std).eval()
    imports.check_fits(imported, ours, path)
    imports.load_into(imported, ours)
    normalised = (X - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        feature, logits = official(normalised)  # OpenOOD normalises in its preprocessor
        out = ours(X)
    _close(out["features"], feature)
    _close(out["class_logits"], logits)


def test_files_that_do_not_fit_name_the_first_key_or_shape(tmp_path):
    official = ResNet18_32(num_classes=10)
    state = official.state_dict()
    ours = Network("resnet18", 3, n_classes=100)
    path = tmp_path / "c100.ckpt"
    torch.save(state, path)
    with pytest.raises(BenchError, match=r"'class_head.weight' has shape \[10, 512\] in the file, "
                                         r"\[100, 512\] here"):
        imports.check_fits(imports.read(path), ours, path)
    del state["layer4.1.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(BenchError, match="it has no 'backbone.layers.7.conv2.weight'"):
        imports.check_fits(imports.read(path), Network("resnet18", 3, n_classes=10), path)
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(BenchError, match="not a checkpoint bench reads"):
        imports.read(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(BenchError, match="weights_only=True"):
        imports.read(path)


@pytest.mark.slow
def test_score_a_model_of_another_run_directory(tmp_path, capsys, tiny_args):
    """bench's own format: the network another run trained, scored without training; the
    file's SHA-256 makes it another job, and a file of the wrong method is refused."""
    base = ["--methods", "mcl", "--datasets", "synthetic", "--classes", "0", *tiny_args]
    code, _, err = run_cli(["run", *base, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    [model] = (tmp_path / "a" / "models").glob("mcl-*/model.pt")
    code, _, err = run_cli(["run", *base, "--out", tmp_path / "b", "--checkpoint", model],
                           capsys)
    assert code == 0, err
    assert "using the network of" in err and "resuming" not in err
    a = pd.read_csv(tmp_path / "a" / "results.csv")
    b = pd.read_csv(tmp_path / "b" / "results.csv")
    pd.testing.assert_series_equal(a.sort_values(["score", "metric"])["value"].reset_index(
        drop=True), b.sort_values(["score", "metric"])["value"].reset_index(drop=True))
    assert set(a["job_id"]) != set(b["job_id"])  # the checkpoint's hash is in the id
    code, _, err = run_cli(["run", *base, "--out", tmp_path / "c", "--set",
                            "mcl.proj_dim=4", "--checkpoint", model], capsys)
    assert code == 2 and "fixes proj_dim=8" in err  # the file's architecture, never relabelled
    csi_file = tmp_path / "last.model"
    torch.save(ResNet18_32(csi=True).state_dict(), csi_file)
    code, _, err = run_cli(["run", *base, "--out", tmp_path / "d", "--checkpoint", csi_file],
                           capsys)
    assert code == 2 and "is a network of csi, not of mcl" in err
    code, _, err = run_cli(["run", "--methods", "csi", "--datasets", "digits", "--classes",
                            "0", *tiny_args, "--out", tmp_path / "e", "--checkpoint", csi_file],
                           capsys)  # digits have 1 channel, CSI's network 3
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("bench: error:") and "does not fit" in lines[-1]
    assert "backbone.stem.0.weight" in lines[-1] and not (tmp_path / "e").exists()
