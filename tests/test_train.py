import pytest
import torch

from bench.datasets import load_dataset
from bench.nn.context import FitContext
from bench.nn.state import seed_everything
from bench.nn.train import TrainingDiverged, train
from bench.registry import METHODS
from helpers import tiny

SSL_METHODS = METHODS.names("self-supervised") + METHODS.names("labeled")
LABELED = set(METHODS.names("labeled"))


@pytest.mark.parametrize("method", SSL_METHODS)
def test_loss_goes_down(method):
    train_set = load_dataset("synthetic", "train")
    if method not in LABELED:
        train_set = train_set.subset(train_set.labels == 0)
    seed_everything(0)
    det = tiny(method, epochs=24, lr=0.03)
    det.fit(train_set, FitContext(labeled=method in LABELED, progress=False))
    losses = [h["loss"] for h in det.history]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first * 0.97, losses


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


class Interrupt(Exception):
    pass


def test_resume_from_checkpoint_gives_the_same_weights(tmp_path):
    data = load_dataset("synthetic", "train")
    data = data.subset(data.labels == 1)

    seed_everything(3)
    straight = tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "a", progress=False))

    def stop_after_two(epoch):
        if epoch == 2:
            raise Interrupt

    seed_everything(3)
    with pytest.raises(Interrupt):
        tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "b", progress=False,
                                                   on_epoch_end=stop_after_two))
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    assert not (tmp_path / "b" / "model.pt").exists()
    messages = []
    seed_everything(99)  # a different seed: the checkpoint's RNG states must take over
    resumed = tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "b", progress=False,
                                                          log=messages.append))
    assert any("resuming MCL from epoch 2 of 4" in m for m in messages)
    a, b = _state(straight.model_), _state(resumed.model_)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_trained_model_is_reused_without_training(tmp_path):
    data = load_dataset("synthetic", "train")
    data = data.subset(data.labels == 2)
    first = tiny("simclr").fit(data, FitContext(model_dir=tmp_path, progress=False))
    messages = []
    again = tiny("simclr").fit(data, FitContext(model_dir=tmp_path, progress=False,
                                                log=messages.append))
    assert any("using the trained model" in m for m in messages)
    assert torch.equal(first.bank_, again.bank_)


def test_nan_guard():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(TrainingDiverged, match="nan"):
        train(model, lambda idx: model(torch.ones(len(idx), 2)).sum() * float("nan"), 8,
              epochs=1, batch_size=4, optimizer=opt, scheduler=sched,
              ctx=FitContext(progress=False), desc="test")


@pytest.mark.parametrize("nesterov,exclude_1d", [(False, False), (True, True)])
def test_foreach_lars_is_bit_identical_to_the_loop(nesterov, exclude_1d):
    """Several steps of the multi-tensor LARS leave exactly the weights of the per-tensor loop
    (torchlars' rule), zero gradients and a parameter without a gradient included."""
    import copy

    from bench.nn.backbones import Network
    from bench.nn.optim import LARS

    torch.manual_seed(0)
    base = Network("resnet-tiny", 3, proj_hidden=16, proj_dim=8, n_shifts=4)
    nets = [base, copy.deepcopy(base)]
    opts = [LARS(n.parameters(), lr=0.5, weight_decay=1e-4, nesterov=nesterov,
                 exclude_1d=exclude_1d, foreach=f) for n, f in zip(nets, (True, False))]
    x = torch.rand(8, 3, 16, 16)
    for step in range(4):
        for net, opt in zip(nets, opts):
            opt.zero_grad(set_to_none=True)
            out = net(x)
            loss = out["z"].square().mean() + (0 if step == 2 else out["shift_logits"].mean())
            loss.backward()
            opt.step()
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_engines_sgd_and_adam_are_foreach_and_equal_to_the_loop(optimizer):
    """make_optimizer's SGD / Adam issue multi-tensor operations; several steps leave the
    weights of torch's per-tensor loop exactly."""
    import copy
    from dataclasses import dataclass

    from bench.nn.backbones import Network
    from bench.nn.optim import make_optimizer

    @dataclass(frozen=True)
    class C:
        optimizer: str
        lr: float = 0.1
        momentum: float = 0.9
        weight_decay: float = 5e-4
        nesterov: bool = True

    torch.manual_seed(0)
    base = Network("resnet-tiny", 3, n_classes=4)
    nets = [base, copy.deepcopy(base)]
    ours = make_optimizer(nets[0].parameters(), C(optimizer))
    assert ours.defaults["foreach"] is True
    loop = (torch.optim.SGD(nets[1].parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                            nesterov=True, foreach=False) if optimizer == "sgd" else
            torch.optim.Adam(nets[1].parameters(), lr=0.1, weight_decay=5e-4, foreach=False))
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    for _ in range(4):
        for net, opt in zip(nets, (ours, loop)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x)["class_logits"], y).backward()
            opt.step()
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)


def test_a_checkpoint_written_behind_holds_the_state_when_it_was_submitted(tmp_path):
    """The writer copies the state on the training thread: training that goes on while the
    file is written cannot change what the checkpoint holds. A failed write is raised by
    wait()."""
    from bench.nn.state import CHECKPOINT, CheckpointWriter, load_checkpoint

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    history = [{"epoch": 1}]
    writer = CheckpointWriter(tmp_path)
    want = net.weight.detach().clone()
    writer.submit({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 1,
                   "history": history})
    with torch.no_grad():
        net.weight.add_(1.0)  # training goes on
    opt.state[net.weight]["momentum_buffer"].zero_()
    history.append({"epoch": 2})
    writer.wait()
    state = load_checkpoint(tmp_path, print)
    assert torch.equal(state["model"]["weight"], want) and state["history"] == [{"epoch": 1}]
    assert state["optimizer"]["state"][0]["momentum_buffer"].abs().sum() > 0
    import bench.nn.state as state_module

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    state_module.atomic_torch_save, real = disk_full, state_module.atomic_torch_save
    try:
        writer.submit({"model": net.state_dict(), "optimizer": {}, "epoch": 2, "history": []})
        with pytest.raises(OSError, match="No space left"):
            writer.wait()
    finally:
        state_module.atomic_torch_save = real
    assert (tmp_path / CHECKPOINT).exists() or (tmp_path / "checkpoint.prev.pt").exists()
