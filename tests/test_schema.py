"""The config schema holds: no subclass loosens a field, every type parses from --set, every
field has help, ranges are checked when a run is planned, sweeps expand."""

import dataclasses
import typing

import pytest

from bench.config import (
    PRESETS,
    build_method_configs,
    describe_fields,
    field_meta,
    field_types,
    load_preset,
    parse_overrides,
    supported_type,
)
from bench.errors import BenchError
from bench.registry import METHODS

CONFIGS = sorted({METHODS.load_object(m).Config for m in METHODS}, key=lambda c: c.__name__)


def _narrower_or_equal(child, parent) -> bool:
    if child == parent:
        return True
    if typing.get_origin(child) is typing.Literal and typing.get_origin(parent) is typing.Literal:
        return set(typing.get_args(child)) <= set(typing.get_args(parent))
    return False


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_no_field_is_loosened_and_every_type_parses(config_cls):
    mine = field_types(config_cls)
    for base in config_cls.__mro__[1:]:
        if not dataclasses.is_dataclass(base):
            continue
        for name, tp in field_types(base).items():
            assert _narrower_or_equal(mine[name], tp), (
                f"{config_cls.__name__}.{name}: {mine[name]} loosens {base.__name__}'s {tp}")
    for name, tp in mine.items():
        assert supported_type(tp), f"{config_cls.__name__}.{name}: --set cannot parse {tp}"
        assert field_meta(config_cls, name).get("help"), f"{config_cls.__name__}.{name}: no help"


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "auto"])
def test_every_preset_builds_every_method(preset):
    for method in METHODS:
        [variant] = build_method_configs(method, METHODS.load_object(method).Config,
                                         load_preset(preset), [])
        assert variant.label == ""


def test_paper_preset_is_the_defaults():
    from bench.methods.mcl import MCLConfig

    [variant] = build_method_configs("mcl", MCLConfig, load_preset("paper"), [])
    assert variant.config == MCLConfig()
    assert (MCLConfig().backbone, MCLConfig().epochs, MCLConfig().sei_fit_fraction) == (
        "resnet34", 400, "code")


@pytest.mark.parametrize("text,message", [
    ("epochs=-3", "epochs=-3 is out of range (must be >= 1)"),
    ("epochs=0", "must be >= 1"),
    ("batch_size=-5", "must be >= 1"),
    ("batch_size=0", "must be >= 1"),
    ("lr=-1", "must be > 0"),
    ("mcl.temperature=0", "must be > 0"),
    ("mcl.optimizer=lamb", "expected one of 'sgd', 'lars', 'adam'"),
    ("mcl.sei_fit_fraction=1.5", "must be > 0, <= 1"),
    ("mcl.alpha=nan", "expected float"),
])
def test_out_of_range_values_are_refused(text, message):
    from bench.methods.mcl import MCLConfig

    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_method_configs("mcl", MCLConfig, load_preset("quick"), parse_overrides([text]))


def test_sweeps_expand_to_the_cross_product():
    from bench.methods.mcl import MCLConfig

    variants = build_method_configs("mcl", MCLConfig, load_preset("quick"),
                                    parse_overrides(["mcl.alpha=0.01,0.05", "beta=1,2",
                                                     "epochs=3"]))
    # epochs=3 applies to every method alike: not part of the label
    assert [v.label for v in variants] == ["alpha=0.01,beta=1", "alpha=0.01,beta=2",
                                           "alpha=0.05,beta=1", "alpha=0.05,beta=2"]
    assert {v.config.epochs for v in variants} == {3}
    [named] = build_method_configs("mcl", MCLConfig, {}, parse_overrides(["mcl.beta=3"]))
    assert named.label == "beta=3"
    assert {(v.config.alpha, v.config.beta) for v in variants} == {
        (0.01, 1.0), (0.01, 2.0), (0.05, 1.0), (0.05, 2.0)}


def test_tuple_fields_take_commas_as_elements():
    from bench.methods.classical import DeepSVDDConfig

    [variant] = build_method_configs("deepsvdd", DeepSVDDConfig, {},
                                     parse_overrides(["deepsvdd.hidden_neurons=128,64,32"]))
    assert variant.config.hidden_neurons == (128, 64, 32)
    with pytest.raises(BenchError, match="expected comma-separated ints"):
        build_method_configs("deepsvdd", DeepSVDDConfig, {},
                             parse_overrides(["deepsvdd.hidden_neurons=x"]))


def test_union_field_takes_a_word_or_a_number():
    from bench.methods.classical import OCSVMConfig

    for text, want in (("scale", "scale"), ("0.5", 0.5)):
        [v] = build_method_configs("ocsvm", OCSVMConfig, {}, parse_overrides([f"gamma={text}"]))
        assert v.config.gamma == want
    with pytest.raises(BenchError, match="out of range"):
        build_method_configs("ocsvm", OCSVMConfig, {}, parse_overrides(["gamma=-1"]))


def test_describe_fields_lists_defaults_per_preset():
    from bench.methods.mcl import MCLConfig

    rows = {r["field"]: r for r in describe_fields(MCLConfig, "mcl")}
    for name in ("alpha", "beta", "temperature", "pseudo_class", "sei_views"):
        assert rows[name]["help"]
    assert rows["epochs"]["paper"] == "400" and rows["epochs"]["quick"] == "50"
    assert rows["sei_ridge_kind"]["paper"] == "absolute"
    assert rows["sei_ridge_kind"]["quick"] == "relative"
    assert rows["sei_views"]["scoring only"] == "yes"
    assert rows["temperature"]["range"] == "> 0"


def test_standard_preset_trains_on_whole_classes_and_scores_as_the_paper():
    """The whole training split, and the paper's scoring (CSI's ensemble, SEI's views and ridge;
    SEI fits on the first 40% of the images, as the committed standard numbers were measured)."""
    import dataclasses

    from bench.config import is_score_field

    for method in ("mcl", "csi", "simclr", "rotnet"):
        cls = METHODS.load_object(method).Config
        [standard] = build_method_configs(method, cls, load_preset("standard"), [])
        [paper] = build_method_configs(method, cls, load_preset("paper"), [])
        c = standard.config
        assert c.max_train_samples == 0 and c.backbone == "resnet-small"
        for f in dataclasses.fields(cls):
            if is_score_field(cls, f.name) and f.name not in ("score_batch_size",
                                                               "sei_fit_fraction"):
                assert getattr(c, f.name) == getattr(paper.config, f.name), (method, f.name)
    [mcl] = build_method_configs("mcl", METHODS.load_object("mcl").Config,
                                 load_preset("standard"), [])
    assert (mcl.config.sei_fit_fraction, mcl.config.sei_ridge_kind, mcl.config.sei_views) == (
        0.4, "absolute", 8)


def test_an_older_rows_file_without_features_reads(tmp_path):
    """Rows written before the features column: classical methods saw pixels, the rest their
    own network; an unknown method name is no error."""
    import pandas as pd

    from bench.schema import ROW_COLUMNS, read_rows

    row = {c: "" for c in ROW_COLUMNS if c != "features"}
    row.update(job_id="j", score="pixel", protocol="one-class", dataset="digits",
               normal_class="0", ood_dataset="rest", seed=0, metric="auroc", value=0.9,
               preset="quick", protocol_version="2")
    frame = pd.DataFrame([{**row, "method": m} for m in ("knn", "mcl", "gone-method")])
    frame.to_csv(tmp_path / "old.csv", index=False)
    rows = read_rows(tmp_path / "old.csv")
    assert list(rows["features"]) == ["pixel", "", ""]
