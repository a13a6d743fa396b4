"""ImageNet-pretrained backbones offline: weights from a local state-dict file (made here, random
init), their transform, the k-NN score of DN2 / PANDA / MSC, PANDA's and MSC's losses against
hand values and the official code, and the CLI end to end (offline: missing weights exit 2
before anything is written)."""

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision

from bench.datasets.torchvision_sets import DEBIAN_FASHION_MNIST
from bench.files import sha256_of
from bench.methods.pretrained import PretrainedConfig
from bench.nn.losses import compactness_loss, mean_shifted_contrastive_loss
from bench.nn.pretrained import PretrainedNet, build_backbone, resolve_weights
from bench.nn.scoring import knn_sum_of_squares
from helpers import run_cli

FAST = ["--classes", "0", "--no-download", "--set", "image_size=32"]
FASHION = ["--datasets", "fashion-mnist"]
needs_fashion = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(),
                                   reason="dataset-fashion-mnist not installed")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A ResNet-18 state dict (seeded random init) in torchvision's key layout."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def test_torchvision_weights_and_their_transform():
    w = resolve_weights(PretrainedConfig(arch="resnet18"))
    assert w.name == "resnet18-f37072fd.pth" and w.sha256 == "f37072fd"
    assert (w.resize, w.crop) == (256, 224)
    assert w.mean == pytest.approx((0.485, 0.456, 0.406))
    small = resolve_weights(PretrainedConfig(arch="resnet18", image_size=64))
    assert (small.resize, small.crop) == (73, 64)  # the weights' resize / crop ratio kept


def test_local_weights_load_into_the_backbone(weights_file):
    c = PretrainedConfig(arch="resnet18", weights=str(weights_file))
    w = resolve_weights(c)
    assert w.sha256 == sha256_of(weights_file) and w.name == weights_file.name
    net = build_backbone(c, w).eval()
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(weights_file, weights_only=True))
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), reference.eval()(x), atol=1e-6)


def test_prepare_resizes_crops_and_keeps_batchnorm_frozen(weights_file):
    c = PretrainedConfig(arch="resnet18", weights=str(weights_file), image_size=32)
    w = resolve_weights(c)
    net = PretrainedNet(build_backbone(c, w), w)
    grey = torch.rand(3, 1, 28, 40)
    out = net.prepare(grey)
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out[:, 0], out[:, 2])  # grey repeated to 3 channels
    assert net.prepare(grey, centre_crop=False).shape == (3, 3, 32, 32)
    flat = torch.full((1, 3, 8, 8), 0.25)  # not an 8-bit level: 63.75 / 255 rounds to 64
    assert torch.allclose(net.prepare(flat), torch.full((1, 3, 32, 32), 64 / 255))
    net.train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert net.backbone.layer1.training  # only BatchNorm is held in eval mode


@pytest.mark.parametrize("shape", [(32, 32), (28, 28), (300, 400)])
def test_the_resize_is_pils_on_8_bit_images(shape):
    """PANDA, MSC and DN2 resize PIL images (torchvision's Resize(256), CenterCrop(224)): the
    output is 8-bit after the resize."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms

    from bench.nn.pretrained import Weights

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    want = np.asarray(transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(
        Image.fromarray(img))).astype(np.int64)
    net = PretrainedNet(torch.nn.Identity(), Weights("w", "", "none", 256, 224, (0, 0, 0),
                                                     (1, 1, 1)))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    got = (net.prepare(x)[0].permute(1, 2, 0) * 255).round().long().numpy()
    assert np.allclose(net.prepare(x) * 255, np.round(net.prepare(x) * 255), atol=1e-4)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.99


def test_knn_sum_of_squares_by_hand():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    test = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # (0,1): squared distances 1, 2, 4 -> 1 + 2; (1,0): 0, 1, 10 -> 0 + 1
    assert knn_sum_of_squares(test, bank, 2).tolist() == pytest.approx([3.0, 1.0])
    assert knn_sum_of_squares(test, bank, 1).tolist() == pytest.approx([1.0, 0.0])


def test_compactness_loss_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # ||f - c||^2 / d with c = (1, 1): (0 + 1) / 2 = 0.5 and (4 + 9) / 2 = 6.5; mean 3.5
    assert compactness_loss(f, torch.tensor([1.0, 1.0])).item() == pytest.approx(3.5)


def _official_msc_contrastive(out_1, out_2):
    """main.py's contrastive_loss of github.com/talreiss/Mean-Shifted-Anomaly-Detection."""
    out_1, out_2 = F.normalize(out_1, dim=-1), F.normalize(out_2, dim=-1)
    bs, temp = out_1.size(0), 0.25
    out = torch.cat([out_1, out_2], dim=0)
    sim_matrix = torch.exp(torch.mm(out, out.t().contiguous()) / temp)
    mask = (torch.ones_like(sim_matrix) - torch.eye(2 * bs)).bool()
    sim_matrix = sim_matrix.masked_select(mask).view(2 * bs, -1)
    pos_sim = torch.exp(torch.sum(out_1 * out_2, dim=-1) / temp)
    pos_sim = torch.cat([pos_sim, pos_sim], dim=0)
    return (-torch.log(pos_sim / sim_matrix.sum(dim=-1))).mean()


def test_mean_shifted_loss_equals_the_official_code():
    g = torch.Generator().manual_seed(0)
    f1 = F.normalize(torch.randn(6, 5, generator=g), dim=1)
    f2 = F.normalize(torch.randn(6, 5, generator=g), dim=1)
    center = F.normalize(torch.randn(5, generator=g), dim=0)
    o1, o2 = f1 - center, f2 - center
    official = _official_msc_contrastive(o1, o2)
    ours = mean_shifted_contrastive_loss(f1, f2, center, temperature=0.25, angular=False)
    assert ours.item() == pytest.approx(official.item(), rel=1e-5)
    angular = official + (o1 ** 2).sum(1).mean() + (o2 ** 2).sum(1).mean()
    assert mean_shifted_contrastive_loss(f1, f2, center, temperature=0.25,
                                         angular=True).item() == pytest.approx(angular.item(),
                                                                               rel=1e-5)


def _rows(out):
    return pd.read_csv(out / "results.csv")


def _job(out, method):
    [path] = [p for p in (out / "jobs").glob("*/record.json")
              if json.loads(p.read_text())["method"] == method]
    return json.loads(path.read_text())


@needs_fashion
def test_knn_on_pretrained_features_end_to_end(tmp_path, weights_file, empty_hub, capsys):
    out = tmp_path / "run"
    assert run_cli(["run", "--methods", "knn", "--features", "resnet18-in1k", *FAST, *FASHION, "--set",
                    f"resnet18-in1k.weights={weights_file}", "--out", out], capsys)[0] == 0
    rows = _rows(out)
    assert set(rows["features"]) == {"resnet18-in1k:penultimate"}
    auroc = rows.query("metric == 'auroc'")["value"]
    assert len(auroc) == 1 and 0.0 <= auroc.iloc[0] <= 1.0
    record = _job(out, "knn")
    assert record["encoder_weights_sha256"] == sha256_of(weights_file)
    assert record["encoder_weights"] == weights_file.name


@needs_fashion
def test_panda_and_msc_end_to_end_and_the_weights_in_their_ids(tmp_path, weights_file,
                                                                empty_hub, capsys):
    out = tmp_path / "run"
    args: list = ["run", "--methods", "panda,msc", *FAST, *FASHION, "--set", "epochs=1",
                  "--set", "max_train_samples=64"]
    for m in ("panda", "msc"):
        args += ["--set", f"{m}.weights={weights_file}"]
    assert run_cli([*args, "--out", out], capsys)[0] == 0
    rows = _rows(out).query("metric == 'auroc'")
    assert set(zip(rows["method"], rows["score"])) == {  # its own, then the feature scores
        (m, s) for m in ("panda", "msc") for s in ("knn", "deep-knn", "mahalanobis")}
    assert rows["value"].between(0, 1).all()
    panda = _job(out, "panda")
    assert panda["weights_sha256"] == sha256_of(weights_file)
    assert panda["config"]["arch"] == "resnet18"  # the quick preset's
    # a scoring option reuses the trained network (its centre and weights load back)
    code, _, err = run_cli([*args, "--set", "panda.n_neighbors=3", "--out", out], capsys)
    assert code == 0 and "using the trained model" in err, err
    # other weights, other models: a second file trains anew instead of reusing the first
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), other)
    again = tmp_path / "again"
    assert run_cli(["run", "--methods", "panda", *FAST, "--set", "epochs=1", "--set",
                    "max_train_samples=64", "--set", f"panda.weights={other}",
                    "--out", again], capsys)[0] == 0
    assert _job(again, "panda")["train_id"] != panda["train_id"]


def test_panda_training_lowers_its_loss(weights_file):
    from bench.methods.panda import PANDA, PANDAConfig
    from bench.nn.context import FitContext
    from bench.registry import DATASETS

    train = DATASETS.load_object("digits")("train", None)  # embedded: no data source
    normal = train.subset(torch.nonzero(train.labels == 0).flatten()[:64])
    config = PANDAConfig(arch="resnet18", weights=str(weights_file), image_size=32, epochs=4,
                         batch_size=16, lr=0.1)
    detector = PANDA(config).fit(normal, FitContext(seed=0, device=torch.device("cpu")))
    losses = [h["loss"] for h in detector.history]
    # the code's gradient clipping (norm 1e-3) makes small steps: the loss falls every epoch
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.99 * losses[0], \
        losses


def test_missing_weights_offline_exit_2_and_nothing_written(tmp_path, empty_hub, capsys):
    out = tmp_path / "run"
    for args in (["--methods", "panda"], ["--methods", "knn", "--features", "resnet18-in1k"]):
        code, _, err = run_cli(["run", *args, *FAST, "--out", out], capsys)
        assert code == 2
        err = err.strip().splitlines()
        assert len(err) == 1 and "resnet18-f37072fd.pth" in err[0]
        assert str(empty_hub) in err[0] and "--no-download" in err[0]
    assert not out.exists()


def test_unknown_pretrained_model_suggests(tmp_path, capsys):
    code, _, err = run_cli(["run", "--methods", "knn", "--features", "resnet81-in1k", *FAST,
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and "did you mean 'resnet18'," in err  # the closest first, not the list


def test_pretrained_methods_not_in_the_default_run():
    from bench.api import plan_spec
    from bench.registry import METHODS

    spec, _ = plan_spec(preset="quick", device="cpu", precision="fp32")
    assert "mcl" in spec.methods and not {"panda", "msc"} & set(spec.methods)
    assert [METHODS.kind(m) for m in ("panda", "msc")] == ["pretrained", "pretrained"]


def test_weights_of_another_network_exit_2_before_anything_is_written(tmp_path, capsys):
    other = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), other)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", "--methods", "panda", *FAST, "--set",
                            f"panda.weights={other}", "--out", out], capsys)
    assert code == 2 and "not a state dict of ResNet" in err and "unexpected" in err
    assert not out.exists()


def test_a_headless_state_dict_loads(tmp_path):
    """A file without the classifier (a fine-tuned backbone) is a whole penultimate network."""
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    path = tmp_path / "headless.pth"
    torch.save(model.state_dict(), path)
    c = PretrainedConfig(arch="resnet18", weights=str(path))
    net = build_backbone(c, resolve_weights(c)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), model.eval()(x), atol=1e-6)


def test_vit_refuses_another_input_size(tmp_path, capsys):
    code, _, err = run_cli(["run", "--methods", "knn", "--features", "vit_b_16-in1k", *FAST,
                            "--set", "vit_b_16-in1k.weights=none", "--out", tmp_path / "r"],
                           capsys)
    assert code == 2 and "does not take 32-pixel inputs" in err
    assert "--set vit_b_16-in1k.image_size=0" in err


def test_timm_model_from_a_local_file_and_offline_without_one(tmp_path, empty_hub, capsys,
                                                              monkeypatch):
    timm = pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    out = tmp_path / "run"
    code, _, err = run_cli(["run", "--methods", "knn", "--features", "timm-resnet18", *FAST,
                            "--out", out], capsys)
    assert code == 2 and "timm weights timm/resnet18" in err and not out.exists()
    path = tmp_path / "timm-resnet18.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18").state_dict(), path)
    code, _, err = run_cli(["run", "--methods", "knn", "--features", "timm-resnet18", *FAST,
                            "--set", f"timm-resnet18.weights={path}", "--out", out], capsys)
    assert code == 0, err
    assert _job(out, "knn")["encoder_weights_sha256"] == sha256_of(path)


def test_frozen_stages_are_the_official_codes_per_network(weights_file):
    from bench.errors import BenchError
    from bench.methods.msc import MSC, MSCConfig
    from bench.methods.panda import PANDA, PANDAConfig

    official = ("conv1", "bn1", "layer1", "layer2")
    assert MSC(MSCConfig(arch="resnet152")).frozen_stages() == official  # freeze_parameters(, 152)
    assert MSC(MSCConfig(arch="resnet18")).frozen_stages() == ()  # nothing of a ResNet-18
    assert PANDA(PANDAConfig(arch="resnet18")).frozen_stages() == official  # PANDA: any network
    assert MSC(MSCConfig(arch="resnet18", freeze=("layer1",))).frozen_stages() == ("layer1",)
    net = MSC(MSCConfig(arch="resnet18", weights=str(weights_file))).build_model()
    assert all(p.requires_grad for p in net.backbone.parameters())
    net = PANDA(PANDAConfig(arch="resnet18", weights=str(weights_file))).build_model()
    assert not any(p.requires_grad for p in net.backbone.layer2.parameters())
    assert all(p.requires_grad for p in net.backbone.layer3.parameters())
    with pytest.raises(BenchError, match="resnet18 has no stage 'layer9'"):
        PANDA(PANDAConfig(arch="resnet18", weights=str(weights_file),
                          freeze=("layer9",))).build_model()


def test_each_published_msc_number_is_compared_with_the_setting_that_made_it():
    """arXiv v1's 97.5 had the angular centre loss; AAAI 2023's 98.6 is the official command
    without --angular."""
    from bench.reporting.reference import compare, load_reference
    from bench.store import ROW_COLUMNS

    rows = []
    for variant, value in (("", 0.97), ("angular=False", 0.98)):
        for c in range(10):
            row = dict.fromkeys(ROW_COLUMNS, "")
            row.update(method="msc", score="knn", variant=variant, protocol="one-class",
                       dataset="cifar10", normal_class=str(c), ood_dataset="rest", seed=0,
                       metric="auroc", value=value, preset="paper", job_id=f"j{c}{variant}")
            rows.append(row)
    table = compare(pd.DataFrame(rows), load_reference(["one-class_cifar10"]))
    got = table[table["published_method"].str.startswith("MSC")].set_index("ours")
    assert got.loc["msc/knn", "published"] == pytest.approx(0.975)
    assert got.loc["msc/knn [angular=False]", "published"] == pytest.approx(0.986)
    assert got.loc["msc/knn [angular=False]", "ours_mean"] == pytest.approx(0.98)
