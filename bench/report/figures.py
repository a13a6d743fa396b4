"""Paper figures from run directories, as PNG and PDF, readable in print.

Per-class AUROC bars, OOD heat maps, ROC curves and score histograms of one job, training-loss
curves, the critical-difference diagram, and a t-SNE of a trained encoder's test embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.report.leaderboard import column_key, entry_label  # noqa: E402
from bench.report.stats import blocks_table, cliques, wilcoxon_holm  # noqa: E402

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42,
                     "figure.constrained_layout.use": True})


def save(fig, out: Path, stem: str) -> list[Path]:
    """Write `stem`.png (200 dpi) and `stem`.pdf under `out`; deterministic PDF metadata."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=200, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return paths


def _auroc(rows: pd.DataFrame) -> pd.DataFrame:
    part = rows[rows["metric"] == "auroc"]
    return part.assign(entry=entry_label(part), column=column_key(part).astype(str),
                       percent=100 * part["value"])


def auroc_bars(rows: pd.DataFrame, out: Path) -> list[Path]:
    """One-class: AUROC per normal class, one bar per method/score (mean over seeds, sd bars)."""
    paths = []
    part = _auroc(rows[rows["protocol"] == "one-class"])
    for dataset, d in part.groupby("dataset"):
        order = d.groupby("entry")["percent"].mean().sort_values(ascending=False).index
        classes = sorted(d["column"].unique(), key=lambda c: int(c) if c.isdigit() else c)
        fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(classes) + 0.25 * len(order)), 4.2))
        sns.barplot(data=d, x="column", y="percent", hue="entry", hue_order=order, order=classes,
                    errorbar="sd", ax=ax, palette="tab20", err_kws={"linewidth": 0.8})
        lo = max(0.0, d["percent"].min() - 5)
        ax.set(xlabel="normal class", ylabel="AUROC (%)", ylim=(lo, 100.5),
               title=f"One-class {dataset}: AUROC per normal class")
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.legend(title="method/score", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
        paths += save(fig, out, f"auroc_bars_{dataset}")
    return paths


def ood_heatmaps(rows: pd.DataFrame, out: Path) -> list[Path]:
    """OOD protocols: AUROC (%) of each method/score against each OOD set."""
    paths = []
    part = _auroc(rows[rows["protocol"] != "one-class"])
    for (protocol, dataset), d in part.groupby(["protocol", "dataset"]):
        table = d.pivot_table(index="entry", columns="column", values="percent", aggfunc="mean")
        table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
        fig, ax = plt.subplots(figsize=(1.2 * table.shape[1] + 3, 0.45 * table.shape[0] + 1.5))
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", vmin=50, vmax=100, ax=ax,
                    cbar_kws={"label": "AUROC (%)"})
        ax.set(xlabel="OOD set", ylabel="method/score",
               title=f"{protocol}: {dataset} (in-distribution) vs OOD sets")
        ax.tick_params(axis="y", rotation=0)  # seaborn turns short labels vertical
        paths += save(fig, out, f"ood_heatmap_{protocol}_{dataset}")
    return paths


def _job_scores(job_dir: Path) -> tuple[dict, dict]:
    record = json.loads((job_dir / "record.json").read_text())
    with np.load(job_dir / "scores.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return record, arrays


def roc_and_histograms(job_dir: Path, out: Path) -> list[Path]:
    """ROC curves (every score variant and test group) and anomaly-score histograms of one job."""
    from sklearn.metrics import roc_curve

    record, arrays = _job_scores(job_dir)
    groups = sorted({k.split("/")[0] for k in arrays})
    scores = sorted({k.split("/", 1)[1] for k in arrays if not k.endswith("/is_anomaly")})
    title = (f"{record['method']} on {record['dataset']} ({record['protocol']}, "
             f"{'class ' + str(record['normal_class']) if record['normal_class'] is not None else 'all'}"
             f", seed {record['seed']})")
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for g in groups:
        y = arrays[f"{g}/is_anomaly"].astype(bool)
        for s in scores:
            fpr, tpr, _ = roc_curve(y, arrays[f"{g}/{s}"])
            ax.plot(fpr, tpr, lw=1.4, label=f"{s} vs {g}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="false positive rate (normal flagged)", ylabel="true positive rate (anomalies)",
           title="ROC: " + title)
    ax.legend(fontsize=8)
    paths = save(fig, out, f"roc_{job_dir.name}")

    fig, axes = plt.subplots(len(groups), len(scores), figsize=(4.2 * len(scores), 3 * len(groups)),
                             squeeze=False)
    for i, g in enumerate(groups):
        y = arrays[f"{g}/is_anomaly"].astype(bool)
        for j, s in enumerate(scores):
            v = arrays[f"{g}/{s}"]
            ax = axes[i][j]
            heavy_tail = v.min() > 0 and v.max() > 20 * np.median(v)  # e.g. Mahalanobis distances
            bins = (np.geomspace(v.min(), v.max(), 41) if heavy_tail
                    else np.histogram_bin_edges(v, bins=40))
            ax.hist(v[~y], bins=bins, alpha=0.6, density=True, label="normal / in-distribution")
            ax.hist(v[y], bins=bins, alpha=0.6, density=True, label=f"anomalous ({g})")
            if heavy_tail:
                ax.set_xscale("log")
            ax.set(xlabel=f"anomaly score '{s}'" + (" (log scale)" if heavy_tail else ""),
                   ylabel="density")
            ax.legend(fontsize=7)
    fig.suptitle("Score histograms (higher = more anomalous): " + title)
    return paths + save(fig, out, f"score_hist_{job_dir.name}")


def training_curves(records: list[dict], out: Path) -> list[Path]:
    """Training loss per epoch, one panel per method (mean over jobs, band = min..max)."""
    rows = [{"method": r["method"], "dataset": r["dataset"], "epoch": h["epoch"], "loss": h["loss"]}
            for r in records if r.get("status") == "done" for h in r.get("history") or []]
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    paths = []
    for dataset, d in frame.groupby("dataset"):
        methods = sorted(d["method"].unique())
        fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3), squeeze=False)
        for ax, m in zip(axes[0], methods):
            g = d[d["method"] == m].groupby("epoch")["loss"]
            ax.plot(g.mean().index, g.mean().values, lw=1.5)
            ax.fill_between(g.min().index, g.min().values, g.max().values, alpha=0.25)
            ax.set(title=m, xlabel="epoch", ylabel="training loss")
        fig.suptitle(f"Training loss on {dataset} (line: mean over jobs; band: min to max)")
        paths += save(fig, out, f"training_loss_{dataset}")
    return paths


def cd_diagram(rows: pd.DataFrame, out: Path, alpha: float = 0.05) -> list[Path]:
    """Critical-difference diagram: average ranks over blocks (data set x class or OOD set), bars
    joining entries whose pairwise Wilcoxon-Holm tests are not significant."""
    table = blocks_table(rows)
    if table.shape[1] < 2 or table.shape[0] < 5:
        return []
    ranks, same = wilcoxon_holm(table, alpha)
    groups = cliques(ranks, same)
    k = len(ranks)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * k))
    ax.set_xlim(1, k)
    ax.invert_xaxis()
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.hlines(0.9, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0.88, 0.92, color="black", lw=1)
        ax.text(r, 0.95, str(r), ha="center", va="bottom", fontsize=9)
    half = (k + 1) / 2
    step = 0.8 / max(1, int(np.ceil(k / 2)))
    left = [m for m in ranks.index if ranks[m] <= half]
    right = [m for m in ranks.index if ranks[m] > half][::-1]
    for i, m in enumerate(left):
        y = 0.8 - i * step
        ax.plot([ranks[m], ranks[m], 0.95], [0.9, y, y], color="black", lw=0.8)
        ax.text(0.9, y, f"{m} ({ranks[m]:.2f})", ha="left", va="center", fontsize=8)
    for i, m in enumerate(right):
        y = 0.8 - i * step
        ax.plot([ranks[m], ranks[m], k + 0.05], [0.9, y, y], color="black", lw=0.8)
        ax.text(k + 0.1, y, f"({ranks[m]:.2f}) {m}", ha="right", va="center", fontsize=8)
    for i, group in enumerate(groups):
        y = 0.86 - 0.03 * i
        ax.hlines(y, ranks[group[0]] - 0.03, ranks[group[-1]] + 0.03, color="tab:red", lw=3)
    sets = sorted({b.rsplit("/", 1)[0] for b in table.index})
    ax.set_title(f"Average rank over {table.shape[0]} blocks ({', '.join(sets)}; 1 = best "
                 f"AUROC)\nred bars: no significant difference (Wilcoxon-Holm, alpha={alpha})",
                 fontsize=9)
    return save(fig, out, "critical_difference")


def tsne(run_dir: Path, job_id: str, out: Path, max_points: int = 2000) -> list[Path]:
    """t-SNE of the trained encoder's backbone features on the test split (normal vs anomalous)."""
    from sklearn.manifold import TSNE

    from bench.methods.base import FitContext
    from bench.protocols import Task, load_task
    from bench.registry import METHODS
    from bench.store import RunStore

    store = RunStore(run_dir)
    record = store.record(job_id)
    cls = METHODS.load_object(record["method"])
    detector = cls(cls.Config(**record["config"]))
    if not hasattr(detector, "embed"):
        return []
    task = Task(record["protocol"], record["dataset"], record["normal_class"],
                tuple(record.get("ood_sets", ())))
    data = load_task(task, None, False)
    detector.fit(data.train, FitContext(model_dir=store.model_dir(record["train_id"]),
                                        labeled=record["protocol"] == "ood-labeled", progress=False,
                                        log=lambda m: None))
    images = data.test.images
    is_anomaly = data.test_is_anomaly.numpy() if data.test_is_anomaly is not None else \
        np.zeros(len(images), bool)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(images), min(max_points, len(images)), replace=False))
    feats = detector.embed(images[keep])
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(feats)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    labels = np.where(is_anomaly[keep], "anomalous", "normal")
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=labels, hue_order=["normal", "anomalous"], s=9,
                    linewidth=0, alpha=0.7, ax=ax)
    ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2",
           title=f"t-SNE of {record['method']} features: {record['dataset']} test split "
                 f"(normal class {record['normal_class']})")
    ax.legend(title="test sample")
    return save(fig, out, f"tsne_{job_id}")


def pick_job(records: list[dict], method_order=("mcl", "csi", "simclr", "rotnet")) -> str | None:
    """A representative finished job: the first of MCL, CSI, SimCLR, Rot, else any."""
    done = [r for r in records if r.get("status") == "done"]
    for m in method_order:
        for r in done:
            if r["method"] == m:
                return r["job_id"]
    return done[0]["job_id"] if done else None
