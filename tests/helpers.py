"""Shared test helpers: tiny configs that train in a second on CPU."""

import dataclasses

from bench.registry import METHODS


def tiny(method: str, **changes):
    """A detector of `method` with a tiny backbone and few epochs (fields it lacks are ignored)."""
    cls = METHODS.load_object(method)
    base = dict(backbone="resnet-tiny", epochs=2, batch_size=32, proj_hidden=16, proj_dim=8,
                optimizer="sgd", lr=0.05, warmup_epochs=0, checkpoint_every=1, head_epochs=20)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    return cls(cls.Config(**{k: v for k, v in {**base, **changes}.items() if k in names}))


def run_cli(args, capsys):
    """`bench ARGS` in-process: (exit code, stdout, stderr)."""
    import pytest

    from bench.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return (info.value.code, *capsys.readouterr())
