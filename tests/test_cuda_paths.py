"""CUDA code paths reached on the CPU: checkpoint loading, per-device RNG state, worker devices,
cluster presets and determinism (mocked where a GPU would be needed)."""

import pytest
import torch

from bench.errors import BenchError
from bench.nn import state as engine


def test_checkpoints_load_to_the_cpu_whatever_the_device(tmp_path, monkeypatch):
    """Loading with map_location=<cuda device> moved the saved RNG byte tensors to the GPU and
    torch.set_rng_state refused them: files are read to the CPU, load_state_dict places them."""
    seen = []
    real_load = torch.load

    def spy(path, map_location=None, **kwargs):
        seen.append(map_location)
        return real_load(path, map_location=map_location, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    state = {"model": {}, "optimizer": {}, "epoch": 1, "rng": engine.rng_state(torch.device("cpu"))}
    engine.save_checkpoint(tmp_path, state)
    loaded = engine.load_checkpoint(tmp_path, print)
    assert seen == ["cpu"] and loaded["epoch"] == 1
    engine.set_rng_state(loaded["rng"], torch.device("cpu"))


def test_cuda_rng_state_is_the_jobs_device_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device=None: calls.append(("get", str(device))) or torch.zeros(8, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device=None: calls.append(("set", str(device))))
    state = engine.rng_state(torch.device("cuda:1"))
    assert calls == [("get", "cuda:1")] and state["cuda"].shape == (8,)
    engine.set_rng_state(state, torch.device("cuda:0"))  # resumed on another GPU
    assert calls[-1] == ("set", "cuda:0")
    assert "cuda" not in engine.rng_state(torch.device("cpu"))


def test_devices_are_checked_against_what_this_process_sees(monkeypatch):
    from bench.executors import parse_devices

    assert parse_devices("0,1", device_count=2) == ["cuda:0", "cuda:1"]
    assert parse_devices("all", device_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(BenchError, match=r"GPU 2 does not exist; this process sees 2 GPU\(s\) "
                                         r"\(CUDA_VISIBLE_DEVICES=4,5\)"):
        parse_devices("0,2", device_count=2)
    with pytest.raises(BenchError, match="no CUDA device"):
        parse_devices("all", device_count=0)


def test_workers_without_devices_spread_over_the_gpus(monkeypatch):
    from bench.executors import LocalExecutor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    ex = LocalExecutor(workers=4)
    assert [ex._device_of(w, "auto") for w in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert ex._device_of(3, "cpu") == "cpu"
    assert LocalExecutor(devices=["cuda:1"])._device_of(0, "auto") == "cuda:1"


def test_preset_auto_is_refused_for_cluster_executors(tmp_path, capsys):
    from bench.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--methods", "knn", "--datasets", "synthetic", "--executor", "slurm",
              "--out", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "name the preset" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_deterministic_flag_reaches_the_job(tmp_path, capsys):
    from bench.cli import main

    before = torch.are_deterministic_algorithms_enabled()
    try:
        with pytest.raises(SystemExit) as info:
            main(["run", "--methods", "knn", "--datasets", "synthetic", "--classes", "0",
                  "--deterministic", "--out", str(tmp_path / "r")])
        assert info.value.code == 0
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic = False


def test_global_pool_is_a_mean_over_height_and_width():
    from bench.nn.backbones import build_backbone

    net = build_backbone("resnet-tiny", 1).eval()
    x = torch.rand(2, 1, 12, 12)
    feats = net.layers(net.stem(x))
    assert torch.allclose(net(x), torch.nn.functional.adaptive_avg_pool2d(feats, 1).flatten(1),
                          atol=1e-6)


def test_mahalanobis_in_chunks_equals_the_one_shot_form(monkeypatch):
    from bench.nn import posthoc

    torch.manual_seed(0)
    feats, labels = torch.randn(300, 6), torch.randint(0, 3, (300,))
    g = posthoc.fit_tied_gaussians(feats, labels, 3)
    diff = feats.double()[:, None, :] - g.means[None]
    one_shot = torch.einsum("ncd,de,nce->nc", diff, g.precision, diff).min(1).values
    monkeypatch.setattr(posthoc, "CHUNK", 64)
    assert torch.allclose(posthoc.mahalanobis(feats, g), one_shot)


def test_cudnn_autotuner_on_cuda_off_under_deterministic_and_on_the_cpu():
    import torch

    from bench.jobs import use_cudnn_autotuner

    before = torch.backends.cudnn.benchmark
    try:
        assert use_cudnn_autotuner(torch.device("cuda"), deterministic=False)
        assert torch.backends.cudnn.benchmark
        assert not use_cudnn_autotuner(torch.device("cuda"), deterministic=True)
        assert not torch.backends.cudnn.benchmark
        assert not use_cudnn_autotuner(torch.device("cpu"), deterministic=False)
    finally:
        torch.backends.cudnn.benchmark = before
