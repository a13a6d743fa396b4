import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.report.stats import (
    bootstrap_auroc,
    friedman,
    holm,
    seed_summary,
    wilcoxon_holm,
    wilcoxon_paired,
)


def test_seed_summary_matches_scipy():
    v = [0.9, 0.92, 0.95, 0.91]
    s = seed_summary(v)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(v), scale=stats.sem(v))
    assert s.mean == pytest.approx(np.mean(v)) and s.std == pytest.approx(np.std(v, ddof=1))
    assert (s.low, s.high) == pytest.approx((low, high))
    one = seed_summary([0.8])
    assert one.n == 1 and np.isnan(one.std) and np.isnan(one.low)


def test_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200), np.ones(200)]
    s = np.r_[rng.normal(0, 1, 200), rng.normal(1, 1, 200)]
    est, low, high = bootstrap_auroc(y, s, n_boot=300)
    assert low < est < high and 0.05 < high - low < 0.2
    assert bootstrap_auroc(y, s, n_boot=300) == (est, low, high)  # seeded


def test_wilcoxon_and_friedman_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.8, 0.9, 10)
    b = a + rng.uniform(0.0, 0.05, 10)
    c = a - rng.uniform(0.0, 0.05, 10)
    assert wilcoxon_paired(a, b) == pytest.approx(tuple(stats.wilcoxon(a, b)))
    table = pd.DataFrame({"a": a, "b": b, "c": c})
    stat, p, ranks = friedman(table)
    ref = stats.friedmanchisquare(a, b, c)
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert list(ranks.index) == ["b", "a", "c"] and ranks["b"] == 1.0


def test_holm_and_wilcoxon_holm():
    assert holm({"x": 0.01, "y": 0.04, "z": 0.03}) == {"x": True, "z": False, "y": False}
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 0.9, 12)
    table = pd.DataFrame({"best": base + 0.1, "near": base + 0.1 + rng.normal(0, 1e-3, 12),
                          "worst": base})
    ranks, same = wilcoxon_holm(table)
    assert ("best", "near") in same or ("near", "best") in same
    assert not any("worst" in pair for pair in same)


def test_blocks_table_prefers_the_entries_run_on_every_block():
    from bench.report.stats import blocks_table

    def rows(dataset, classes, methods):
        return [dict(method=m, score="s", protocol="one-class", dataset=dataset, normal_class=c,
                     ood_dataset="rest", seed=seed, metric="auroc", config_hash="h",
                     value=0.5 + 0.01 * c + 0.1 * i)
                for i, m in enumerate(methods) for c in classes for seed in (0, 1)]

    shared = ["a", "b", "c"]
    frame = pd.DataFrame(rows("d1", range(4), shared + ["only-d1"]) + rows("d2", range(4), shared))
    table = blocks_table(frame)
    assert table.shape == (8, 3) and list(table.columns) == ["a/s", "b/s", "c/s"]
    assert table.loc["one-class/d1/0", "b/s"] == pytest.approx(0.6)  # seeds averaged
    # fewer than 3 entries everywhere: fall back to entries run on at least half of the blocks
    frame = pd.DataFrame(rows("d1", range(4), ["a", "b", "x", "y"]) + rows("d2", range(2), ["a"]))
    table = blocks_table(frame)
    assert list(table.columns) == ["a/s", "b/s", "x/s", "y/s"] and table.shape[0] == 4


def test_blocks_table_labels_config_variants_within_a_protocol():
    """A method whose labeled jobs carry another config keeps one plain one-class entry."""
    from bench.report.stats import blocks_table

    def row(protocol, c, config_hash, method="m"):
        return dict(method=method, score="s", protocol=protocol, dataset="d", normal_class=c,
                    ood_dataset="rest", seed=0, metric="auroc", config_hash=config_hash,
                    value=0.5 + 0.01 * c)

    one_class = [row("one-class", c, h, m) for c in range(5)
                 for m, h in (("m", "h1"), ("k", "hk"), ("j", "hj"))]
    frame = pd.DataFrame(one_class + [row("ood-labeled", c, "h2") for c in range(5)])
    assert list(blocks_table(frame).columns) == ["j/s", "k/s", "m/s"]
    frame = pd.DataFrame(one_class + [row("one-class", c, "h3") for c in range(5)])
    assert {"m/s@h1", "m/s@h3"} <= set(blocks_table(frame).columns)
