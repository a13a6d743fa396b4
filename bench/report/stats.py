"""Statistics for comparing detectors: seed summaries, bootstrap intervals, Wilcoxon, Friedman and
the Wilcoxon-Holm critical-difference analysis (Demsar 2006; Benavoli et al. 2016)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.metrics import auroc


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    std: float  # ddof=1; NaN for one seed
    n: int
    low: float  # 95% t-interval of the mean; NaN for one seed
    high: float


def seed_summary(values) -> SeedSummary:
    """Mean, std and the 95% t-interval of the mean over seeds."""
    v = np.asarray(values, dtype=float)
    n = v.size
    mean = float(v.mean()) if n else float("nan")
    if n < 2:
        return SeedSummary(mean, float("nan"), n, float("nan"), float("nan"))
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / np.sqrt(n)
    return SeedSummary(mean, std, n, mean - half, mean + half)


def bootstrap_auroc(is_anomaly, scores, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """AUROC and its percentile bootstrap interval over test samples (normal and anomalous
    samples resampled separately, so every replicate has both)."""
    y = np.asarray(is_anomaly).astype(bool)
    s = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    normal, anomalous = np.flatnonzero(~y), np.flatnonzero(y)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(normal, normal.size), rng.choice(anomalous, anomalous.size)])
        reps[b] = auroc(y[idx], s[idx])
    alpha = (1 - level) / 2
    return auroc(y, s), float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha))


def wilcoxon_paired(a, b) -> tuple[float, float]:
    """Paired Wilcoxon signed-rank test of two methods over the same blocks: (statistic, p)."""
    res = stats.wilcoxon(np.asarray(a, float), np.asarray(b, float), zero_method="wilcox")
    return float(res.statistic), float(res.pvalue)


def friedman(table: pd.DataFrame) -> tuple[float, float, pd.Series]:
    """Friedman test over a blocks x methods table: (statistic, p, average rank per method;
    rank 1 = best = highest value)."""
    res = stats.friedmanchisquare(*[table[c].to_numpy(float) for c in table.columns])
    ranks = table.rank(axis=1, ascending=False).mean(axis=0).sort_values()
    return float(res.statistic), float(res.pvalue), ranks


def holm(p_values: dict, alpha: float = 0.05) -> dict:
    """Holm's step-down correction: {key: rejected?}."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m, rejected, still = len(ordered), {}, True
    for i, (key, p) in enumerate(ordered):
        still = still and p <= alpha / (m - i)
        rejected[key] = still
    return rejected


def wilcoxon_holm(table: pd.DataFrame, alpha: float = 0.05) -> tuple[pd.Series, list[tuple]]:
    """Average ranks and the pairs of methods *not* significantly different (Wilcoxon-Holm)."""
    _, _, ranks = friedman(table)
    methods = list(table.columns)
    p = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            diff = table[a] - table[b]
            p[(a, b)] = 1.0 if np.allclose(diff, 0) else wilcoxon_paired(table[a], table[b])[1]
    rejected = holm(p, alpha)
    same = [pair for pair, rej in rejected.items() if not rej]
    return ranks, same


def blocks_table(rows: pd.DataFrame, metric: str = "auroc", with_dropped: bool = False):
    """Blocks (dataset, class or OOD set; seeds averaged) x method/score entries; with
    `with_dropped`, also the entries left out because they did not run on every block kept."""
    from bench.report.leaderboard import column_key, entry_label

    picked = rows[rows["metric"] == metric]
    picked = picked.assign(entry=entry_label(picked), block=picked["protocol"] + "/" +
                           picked["dataset"] + "/" + column_key(picked).astype(str))
    table = picked.pivot_table(index="block", columns="entry", values="value", aggfunc="mean")
    coverage = table.notna().sum()
    full = coverage == len(table)
    if full.sum() >= 3:  # the entries run on every block: the most blocks to rank over
        kept = table.loc[:, full]
    else:  # else entries run on most blocks
        kept = table.loc[:, coverage >= coverage.max() / 2].dropna(axis=0, how="any")
    if with_dropped:
        return kept, sorted(set(table.columns) - set(kept.columns))
    return kept
