"""The precision policy: what `auto` chooses, what stays in fp32, and bf16 jobs that resume."""

import pytest
import torch

from bench.datasets import load_dataset
from bench.nn.augment import crop_and_flip
from bench.nn.context import FitContext
from bench.nn.losses import masked_contrastive_loss, nt_xent, stochastic_positive_attraction_loss
from bench.nn.precision import Precision, cpu_has_bf16, resolve
from bench.nn.state import seed_everything
from helpers import tiny

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_chooses_by_hardware():
    assert resolve("auto", CPU, cpu_bf16=False).name == "fp32"
    assert not resolve("auto", CPU, cpu_bf16=False).channels_last
    bf16 = resolve("auto", CPU, cpu_bf16=True)
    assert (bf16.name, bf16.channels_last) == ("bf16", True)
    assert resolve("auto", CUDA, cuda_bf16=True).name == "bf16"
    old_gpu = resolve("auto", CUDA, cuda_bf16=False)
    assert old_gpu.name == "fp16" and old_gpu.needs_grad_scaler()
    assert resolve("fp32", CUDA, cuda_bf16=True).name == "fp32"
    assert "no native bf16" in resolve("bf16", CPU, cpu_bf16=False).reason


def test_cpu_flags_decide_bf16():
    assert cpu_has_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert cpu_has_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert not cpu_has_bf16(frozenset({"avx2", "avx512f"}))


W = dict(temperature=0.2, alpha=0.05, beta=2.0, clamp_negative=True)


def test_losses_are_fp32_inside_autocast():
    """A `.float()` alone does not stop autocast: the cosines must be computed with it off."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    cls, shift = torch.zeros(16, dtype=torch.long), torch.arange(16) % 4
    partners = (torch.randperm(16), torch.ones(16, dtype=torch.bool))
    plain = [nt_xent(z1, z2, temperature=0.2),
             masked_contrastive_loss(z1, z2, cls, shift, **W),
             stochastic_positive_attraction_loss(z1, z2, cls, shift, **W,
                                                 partners=partners)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = [nt_xent(z1, z2, temperature=0.2),
                 masked_contrastive_loss(z1, z2, cls, shift, **W),
                 stochastic_positive_attraction_loss(z1, z2, cls, shift, **W,
                                                     partners=partners)]
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32 and abs(float(a) - float(b)) < 1e-5


def test_crop_grid_is_fp32_inside_autocast():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    box = torch.tensor([[0.1, 0.2, 0.7, 0.7]]).repeat(6, 1)
    flip = torch.tensor([True, False] * 3)
    torch.manual_seed(1)
    plain = crop_and_flip(x, box, flip)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = crop_and_flip(x, box, flip)
    assert mixed.dtype == torch.float32 and torch.equal(plain, mixed)


class Interrupt(Exception):
    pass


def test_bf16_job_scores_are_finite_and_its_checkpoint_resumes(tmp_path):
    data = load_dataset("synthetic", "train")
    data = data.subset(data.labels == 1)
    test = load_dataset("synthetic", "test")
    bf16 = Precision("bf16", channels_last=True)

    seed_everything(3)
    straight = tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "a", progress=False,
                                                          precision=bf16))
    scores = straight.score(test.images)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in scores.values())

    def stop_after_two(epoch):
        if epoch == 2:
            raise Interrupt

    seed_everything(3)
    with pytest.raises(Interrupt):
        tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "b", progress=False,
                                                   precision=bf16, on_epoch_end=stop_after_two))
    resumed = tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "b", progress=False,
                                                          precision=bf16))
    for key, value in straight.model_.state_dict().items():
        assert torch.equal(value, resumed.model_.state_dict()[key]), key
