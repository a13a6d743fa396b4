import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.reporting.stats import (
    critical_difference,
    default_control,
    friedman,
    holm_adjusted,
    seed_summary,
    significance,
)


def test_seed_summary_matches_scipy():
    v = [0.9, 0.92, 0.95, 0.91]
    s = seed_summary(v)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(v), scale=stats.sem(v))
    assert s.mean == pytest.approx(np.mean(v)) and s.std == pytest.approx(np.std(v, ddof=1))
    assert (s.low, s.high) == pytest.approx((low, high))
    one = seed_summary([0.8])
    assert one.n == 1 and np.isnan(one.std) and np.isnan(one.low)


def test_friedman_matches_scipy_and_ranks_best_first():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.8, 0.9, 10)
    b = a + rng.uniform(0.0, 0.05, 10)
    c = a - rng.uniform(0.0, 0.05, 10)
    table = pd.DataFrame({"a": a, "b": b, "c": c})
    stat, p, ranks = friedman(table)
    ref = stats.friedmanchisquare(a, b, c)
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert list(ranks.index) == ["b", "a", "c"] and ranks["b"] == 1.0


def test_critical_difference_matches_demsars_table():
    # Demsar 2006, Table 5(a): q_0.05 = 2.728 for k = 5; CD = 2.728 sqrt(5 x 6 / (6 x 10))
    assert critical_difference(5, 10) == pytest.approx(2.728 * np.sqrt(30 / 60), abs=1e-3)
    assert critical_difference(5, 10) == pytest.approx(1.929, abs=1e-3)
    assert critical_difference(2, 10, alpha=0.10) == pytest.approx(1.645 * np.sqrt(6 / 60),
                                                                    abs=1e-3)  # q_0.10, k = 2


def test_holm_adjusted_by_hand():
    p = pd.Series({"x": 0.01, "y": 0.04, "z": 0.03})
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert holm_adjusted(p).to_dict() == pytest.approx({"x": 0.03, "z": 0.06, "y": 0.06})


def _blocks(seed: int, control_margin: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.6, 0.9, 10)  # 10 blocks of different difficulty
    table = {f"rival{i}": base + rng.normal(0, 0.01, 10) for i in range(4)}
    return pd.DataFrame({"control": base + control_margin + rng.normal(0, 0.01, 10), **table})


def test_a_control_that_wins_every_block_is_significant_against_each_rival():
    table = _blocks(0, control_margin=0.1)
    assert (table["control"] > table.drop(columns="control").max(axis=1)).all()
    result = significance(table, "control")
    assert result.friedman_rejects and result.ranks["control"] == 1.0
    assert result.versus_control["significant"].all(), result.versus_control
    assert list(result.versus_control.index) == [e for e in result.ranks.index if e != "control"]
    # Nemenyi's p is the studentized range of the rank difference (Demsar, eq. 7)
    se = np.sqrt(5 * 6 / (6 * 10))
    for _, pair in result.pairs().iterrows():
        q = abs(pair["rank_a"] - pair["rank_b"]) / se * np.sqrt(2)
        assert pair["p"] == pytest.approx(stats.studentized_range.sf(q, 5, np.inf), abs=1e-6)
    significant = result.pairs().query("significant")
    assert (abs(significant["rank_a"] - significant["rank_b"]) > result.cd).all()


def test_entries_that_differ_by_noise_are_not_significant():
    table = _blocks(0, control_margin=0.0)
    result = significance(table, "control")
    assert not result.friedman_rejects
    assert not result.versus_control["significant"].any()
    assert not result.pairs()["significant"].any()


def test_default_control_is_mcls_first_score():
    assert default_control(["knn/pixel", "mcl/cosnorm", "mcl/sei", "mcl/sei [beta=2]"]) \
        == "mcl/sei"
    assert default_control(["knn/pixel", "csi/csi"]) is None


def test_blocks_table_prefers_the_entries_run_on_every_block():
    from bench.reporting.stats import blocks_table

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
    from bench.reporting.stats import blocks_table

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


def test_significance_is_within_one_table_and_names_fewer_seeds():
    """Two protocols and two data sets: never ranked together (labeled MCL is another entry);
    a block where an entry lost a seed is said; p == alpha is not significant, as the bars."""
    import pandas as pd

    from bench.reporting.stats import missing_seeds, significance_tables

    rows = []
    for protocol in ("one-class", "ood-labeled"):
        for dataset in ("a", "b"):
            for c in range(5):
                for seed in (0, 1):
                    rows.append({"protocol": protocol, "dataset": dataset, "preset": "quick",
                                 "ood_table": "", "method": "mcl", "score": "sei",
                                 "features": "", "variant": "", "normal_class": str(c),
                                 "ood_dataset": "rest", "seed": seed, "metric": "auroc",
                                 "value": 0.5, "config_hash": "h"})
    frame = pd.DataFrame(rows)
    keys = [key for key, _ in significance_tables(frame)]
    assert len(keys) == 4 and {k[0] for k in keys} == {"one-class", "ood-labeled"}
    lost = frame[~((frame["dataset"] == "a") & (frame["normal_class"] == "3")
                   & (frame["seed"] == 1))]
    part = next(p for k, p in significance_tables(lost) if k[:2] == ("one-class", "a"))
    assert missing_seeds(part) == ["mcl/sei in 3: 1 of 2 seeds (missing 1)"]


def test_a_pair_at_exactly_alpha_is_not_significant_in_list_or_bars():
    import numpy as np
    import pandas as pd
    import scikit_posthocs as sp

    from bench.reporting.stats import Significance

    ranks = pd.Series([1.0, 2.0], index=["a", "b"])
    p = pd.DataFrame([[1.0, 0.05], [0.05, 1.0]], index=ranks.index, columns=ranks.index)
    result = Significance(ranks, 10, 0.05, 10.0, 0.001, 1.0, p, "a",
                          pd.DataFrame(columns=["rank", "z", "p", "p_holm", "significant"]))
    assert not result.pairs()["significant"].any()
    assert sp.sign_array(p.to_numpy(), alpha=0.05)[0, 1] != 1  # the bars: not significant
    assert np.isclose(result.pairs()["p"].iloc[0], 0.05)
