import pytest

from bench.config import (
    build_method_config,
    check_overrides,
    coerce,
    load_preset,
    parse_overrides,
    resolve_preset,
    training_dict,
)
from bench.errors import BenchError
from bench.methods.classical import KNNConfig
from bench.methods.mcl import MCLConfig


def test_overrides_apply_after_the_preset():
    preset = {"all": {"epochs": 7, "backbone": "resnet-small"}, "mcl": {"alpha": 0.1}}
    ov = parse_overrides(["mcl.beta=3", "epochs=9"])
    cfg = build_method_config("mcl", MCLConfig, preset, ov)
    assert (cfg.alpha, cfg.beta, cfg.epochs, cfg.backbone) == (0.1, 3.0, 9, "resnet-small")
    # [all] skips methods without the field
    assert build_method_config("knn", KNNConfig, preset, ov) == KNNConfig()


@pytest.mark.parametrize("text,message", [
    ("mcl.alpha", "expected key=value"),
    ("=3", "expected key=value"),
])
def test_malformed_set(text, message):
    with pytest.raises(BenchError, match=message):
        parse_overrides([text])


def test_wrong_type_and_unknown_field():
    with pytest.raises(BenchError, match="mcl.alpha=abc: expected float"):
        build_method_config("mcl", MCLConfig, {}, parse_overrides(["mcl.alpha=abc"]))
    with pytest.raises(BenchError, match="did you mean 'alpha'"):
        build_method_config("mcl", MCLConfig, {}, parse_overrides(["mcl.alpah=1"]))
    with pytest.raises(BenchError, match="one of 'wa', 'mean', 'min'"):
        build_method_config("mcl", MCLConfig, {}, parse_overrides(["mcl.sei_combine=max"]))
    with pytest.raises(BenchError, match="not among the selected"):
        check_overrides(parse_overrides(["csi.ens_samples=2"]), ["mcl"], {"mcl": MCLConfig})
    with pytest.raises(BenchError, match="unknown --set field 'epoch'"):
        check_overrides(parse_overrides(["epoch=2"]), ["mcl"], {"mcl": MCLConfig})


def test_coerce():
    assert coerce("true", bool, "x") is True and coerce("0", bool, "x") is False
    assert coerce("3", int, "x") == 3 and coerce(2, float, "x") == 2.0
    with pytest.raises(BenchError):
        coerce("3.5", int, "x")
    with pytest.raises(BenchError):
        coerce("maybe", bool, "x")


def test_presets_build_every_method_config():
    from bench.registry import METHODS

    for name in ("quick", "paper"):
        preset = load_preset(name)
        for method in METHODS:
            build_method_config(method, METHODS.load_object(method).Config, preset, [])
    assert resolve_preset("auto", "cpu") == "quick" and resolve_preset("auto", "cuda") == "paper"
    with pytest.raises(BenchError, match="did you mean 'quick'"):
        resolve_preset("quik", "cpu")


def test_score_fields_do_not_change_the_training_key():
    a, b = MCLConfig(), MCLConfig(sei_views=4, sei_combine="min")
    assert training_dict(a) == training_dict(b) and a != b
    assert training_dict(MCLConfig(alpha=0.2)) != training_dict(a)
