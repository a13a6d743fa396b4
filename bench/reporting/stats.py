"""Statistics for comparing detectors: seed summaries (the intervals of `bench compare`) and
Demsar's (2006) procedure over blocks: Friedman, Nemenyi's critical difference for all pairs,
Holm's step-down against a control."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


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


def friedman(table: pd.DataFrame) -> tuple[float, float, pd.Series]:
    """Friedman test over a blocks x methods table: (statistic, p, average rank per method;
    rank 1 = best = highest value, ties share the mean rank)."""
    res = stats.friedmanchisquare(*[table[c].to_numpy(float) for c in table.columns])
    ranks = table.rank(axis=1, ascending=False).mean(axis=0).sort_values(kind="stable")
    return float(res.statistic), float(res.pvalue), ranks


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of average ranks for k entries over N blocks (Demsar 2006,
    eq. 7): q_alpha sqrt(k (k + 1) / 6N), q_alpha the studentized range quantile / sqrt(2)."""
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / np.sqrt(2)
    return q * float(np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def holm_adjusted(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjusted p-values (reject where <= alpha), in the input order."""
    order = p_values.sort_values(kind="stable")
    m = len(order)
    adjusted = np.maximum.accumulate([(m - i) * p for i, p in enumerate(order.to_numpy())])
    return pd.Series(np.minimum(adjusted, 1.0), index=order.index).reindex(p_values.index)


@dataclass(frozen=True)
class Significance:
    """Demsar's procedure over one blocks x entries table: Friedman, then Nemenyi for every
    pair and Holm's step-down for each entry against the control (rank z tests)."""

    ranks: pd.Series  # average rank per entry, best (1) first
    n_blocks: int
    alpha: float
    friedman_statistic: float
    friedman_p: float
    cd: float  # Nemenyi's critical difference of average ranks
    nemenyi: pd.DataFrame  # entries x entries p-values
    control: str
    versus_control: pd.DataFrame  # per rival: rank, z, p, p_holm, significant

    @property
    def friedman_rejects(self) -> bool:
        return self.friedman_p < self.alpha

    def pairs(self) -> pd.DataFrame:
        """Every pair of entries with Nemenyi's p and whether it is significant (only where
        Friedman rejects: Demsar's post-hoc tests follow a rejected Friedman test)."""
        entries = np.asarray(self.ranks.index, dtype=object)
        ranks = self.ranks.to_numpy(float)
        first, second = np.triu_indices(len(entries), k=1)  # every pair once, vectorised
        p = self.nemenyi.loc[self.ranks.index, self.ranks.index].to_numpy(float)
        frame = pd.DataFrame({"entry_a": entries[first], "entry_b": entries[second],
                              "rank_a": ranks[first], "rank_b": ranks[second],
                              "p": p[first, second]})
        frame["significant"] = self.friedman_rejects & (frame["p"] < self.alpha)
        return frame


def significance(table: pd.DataFrame, control: str, alpha: float = 0.05) -> Significance:
    """Friedman over the blocks (rows) of `table`, Nemenyi for all pairs of entries (columns,
    scikit-posthocs), and the k - 1 comparisons with `control` by Holm (Demsar 2006, 3.2)."""
    import scikit_posthocs as sp

    if control not in table.columns:
        from bench.errors import unknown_name

        raise unknown_name("control entry (--control)", control, table.columns)
    stat, friedman_p, ranks = friedman(table)
    n, k = table.shape
    nemenyi = sp.posthoc_nemenyi_friedman(table.to_numpy(float))
    nemenyi.index = nemenyi.columns = list(table.columns)
    se = np.sqrt(k * (k + 1) / (6.0 * n))
    rivals = [e for e in ranks.index if e != control]
    z = (ranks[rivals] - ranks[control]) / se  # > 0: the control ranks better
    p_control = pd.Series(2 * stats.norm.sf(np.abs(z.to_numpy())), index=rivals)
    versus = pd.DataFrame({"rank": ranks[rivals], "z": z, "p": p_control,
                           "p_holm": holm_adjusted(p_control)})
    # p < alpha, as the diagram's bars (scikit-posthocs' sign_array): bars and lists agree
    versus["significant"] = (friedman_p < alpha) & (versus["p_holm"] < alpha)
    return Significance(ranks, n, alpha, stat, friedman_p, critical_difference(k, n, alpha),
                        nemenyi.loc[ranks.index, ranks.index], control, versus)


def default_control(entries) -> str | None:
    """The featured method's entry (MCL's first score, its SEI), else None."""
    from bench.registry import FEATURED_METHOD, METHODS

    own = [e for e in entries if e.startswith(FEATURED_METHOD + "/") and " [" not in e
           and "@" not in e]
    if not own:
        return None
    scores = list(METHODS.load_object(FEATURED_METHOD).scores)
    order = {f"{FEATURED_METHOD}/{s}": i for i, s in enumerate(scores)}
    return min(own, key=lambda e: (order.get(e, len(order)), e))


def blocks_table(rows: pd.DataFrame, metric: str = "auroc", with_dropped: bool = False):
    """Blocks (dataset, class or OOD set; seeds averaged) x method/score entries; with
    `with_dropped`, also the entries left out because they did not run on every block kept."""
    from bench.reporting.leaderboard import column_key, entry_label

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


class NotDrawn(Exception):
    """A table or figure these rows cannot make; the message says why."""


def _default_configs(frame: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The rows of each method's default config where the method has one (sweeps and other
    `--set` variants have the leaderboards and ablation figures; a method run only as variants
    keeps them), and whether variants were left out."""
    variant = frame["variant"].fillna("").astype(str)
    has_default = frame["method"].map(frame.loc[variant == "", "method"].value_counts()).notna()
    keep = (variant == "") | ~has_default
    return frame[keep], bool((~keep).any())


MAX_DRAWN_ENTRIES = 100  # a critical-difference diagram or report table of more is unreadable


def significance_of(rows: pd.DataFrame, alpha: float = 0.05, control: str | None = None):
    """Demsar's tests over the blocks of `rows` (one preset), the entries run on every block:
    (Significance, blocks table, entries left out, control note); NotDrawn when too few."""
    table, dropped = blocks_table(rows, with_dropped=True)
    if table.shape[1] < 3:
        raise NotDrawn(f"needs 3 entries run on the same blocks ({table.shape[1]} here)")
    if table.shape[0] < 5:
        raise NotDrawn(f"needs 5 blocks (classes or OOD sets) or more ({table.shape[0]} here)")
    chosen, note = control, ""
    if chosen is None:
        chosen = default_control(table.columns)
        if chosen is None:  # no MCL entry: the best-ranked one, said so
            chosen = table.rank(axis=1, ascending=False).mean().idxmin()
            note = " (no MCL entry: the best-ranked entry is the control)"
    elif chosen not in table.columns:
        raise NotDrawn(f"the control {chosen} did not run on every block of these rows "
                       f"(entries that did: {', '.join(table.columns)})")
    return significance(table, chosen, alpha), table, dropped, note


def significance_frame(result) -> pd.DataFrame:
    """One row per test: Nemenyi for every pair, then Holm for each rival against the control."""
    pairs = result.pairs().assign(test="nemenyi", statistic=np.nan, p_holm=np.nan)
    versus = result.versus_control.reset_index(names="entry_b").assign(
        test="holm-vs-control", entry_a=result.control, rank_a=result.ranks[result.control],
        statistic=lambda d: d["z"]).rename(columns={"rank": "rank_b"})
    columns = ["test", "entry_a", "entry_b", "rank_a", "rank_b", "statistic", "p", "p_holm",
               "significant"]
    frame = pd.concat([pairs[columns], versus[columns]], ignore_index=True)
    return frame.round({"rank_a": 4, "rank_b": 4, "statistic": 4, "p": 6, "p_holm": 6})


def significance_note(result, where: str, fewer_seeds: list[str] = ()) -> str:
    """What the tests found, in sentences: Friedman, the significant pairs and their p-values;
    the blocks where an entry has fewer seeds than elsewhere."""
    k = len(result.ranks)
    head = (f"{where}: Friedman chi2({k - 1}) = {result.friedman_statistic:.1f}, "
            f"p = {result.friedman_p:.2g} over {result.n_blocks} blocks, {k} entries")
    if fewer_seeds:
        head += f" (fewer seeds: {'; '.join(fewer_seeds)})"
    if not result.friedman_rejects:
        return head + f"; not significant at alpha = {result.alpha}, so no post-hoc test.\n"
    pairs = result.pairs().query("significant")
    lines = [head + f"; Nemenyi CD = {result.cd:.2f} ranks at alpha = {result.alpha}.", "",
             f"Significant pairs (Nemenyi), {len(pairs)} of {k * (k - 1) // 2}:"]
    lines += [f"- {r.entry_a} ({r.rank_a:.2f}) vs {r.entry_b} ({r.rank_b:.2f}): p = {r.p:.3g}"
              for r in pairs.itertuples()] or ["- none"]
    versus = result.versus_control
    better = versus[versus["significant"] & (versus["z"] > 0)]
    worse = versus[versus["significant"] & (versus["z"] < 0)]
    lines += ["", f"Against the control {result.control} (rank "
              f"{result.ranks[result.control]:.2f}; Holm over {k - 1}): better than "
              + (", ".join(f"{e} (p = {r.p_holm:.3g})" for e, r in better.iterrows()) or "none")
              + "; worse than "
              + (", ".join(f"{e} (p = {r.p_holm:.3g})" for e, r in worse.iterrows()) or "none")
              + "; every other difference is not significant."]
    return "\n".join(lines) + "\n"


SIGNIFICANCE_KEYS = ["protocol", "dataset", "preset", "ood_table"]  # one test per table


def significance_tables(rows: pd.DataFrame, metric: str = "auroc"):
    """(protocol, data set, preset, OOD table) and its rows of `metric`, each method's default
    config: the tests rank entries within one table, never across protocols or data sets."""
    picked = rows[rows["metric"] == metric].assign(ood_table=rows["ood_table"].fillna(""))
    for key, part in picked.groupby(SIGNIFICANCE_KEYS, sort=True):
        part, _ = _default_configs(part)  # near-identical variants would crowd ranks
        yield key, part


def missing_seeds(rows: pd.DataFrame, metric: str = "auroc") -> list[str]:
    """Blocks (class or OOD set) where an entry has fewer seeds than elsewhere: its value there
    is a mean over fewer seeds, said rather than hidden."""
    from bench.reporting.leaderboard import column_key, entry_label

    picked = rows[rows["metric"] == metric]
    if picked.empty:
        return []
    picked = picked.assign(entry=entry_label(picked), block=column_key(picked).astype(str))
    counts = picked.groupby(["entry", "block"])["seed"].nunique()
    seeds = picked.groupby("entry")["seed"].unique()
    notes = []
    for (entry, block), n in counts.items():
        full = len(seeds[entry])
        if n < full:
            have = set(picked[(picked["entry"] == entry) & (picked["block"] == block)]["seed"])
            lost = sorted(set(seeds[entry]) - have)
            notes.append(f"{entry} in {block}: {n} of {full} seeds (missing "
                         f"{', '.join(map(str, lost))})")
    return notes
