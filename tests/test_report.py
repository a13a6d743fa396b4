import json

import numpy as np
import pandas as pd
import pytest

from bench.report import figures
from bench.report.leaderboard import console_table, incomplete_seeds, pivot, write_leaderboards
from bench.report.reference import compare, load_reference
from bench.store import ROW_COLUMNS, RunStore


def _rows(values: dict) -> pd.DataFrame:
    """values: {(method, score, class or ood set, seed): auroc} -> tidy rows."""
    out = []
    for (method, score, column, seed), v in values.items():
        one_class = str(column).isdigit()
        row = dict.fromkeys(ROW_COLUMNS, "")
        row.update(method=method, score=score, protocol="one-class" if one_class else "ood",
                   dataset="fashion-mnist" if one_class else "cifar10",
                   normal_class=str(column) if one_class else "all",
                   ood_dataset="rest" if one_class else column, seed=seed, metric="auroc",
                   value=v, config_hash="h" + method, job_id=f"{method}-{column}-{seed}")
        out.append(row)
    return pd.DataFrame(out)


HAND = _rows({
    ("mcl", "sei", 0, 0): 0.90, ("mcl", "sei", 1, 0): 0.80,
    ("mcl", "sei", 0, 1): 0.94, ("mcl", "sei", 1, 1): 0.86,
    ("knn", "pixel", 0, 0): 0.70, ("knn", "pixel", 1, 0): 0.60,
})


def test_leaderboard_pivot_hand_made():
    table = pivot(HAND)[("one-class", "fashion-mnist")]
    assert list(table.index) == ["mcl/sei", "knn/pixel"]  # best mean first
    mcl = table.loc["mcl/sei"]
    assert mcl["0"] == pytest.approx(0.92) and mcl["1"] == pytest.approx(0.83)
    # per-seed means 0.85 and 0.90 -> mean 0.875, sample std 0.035355
    assert mcl["mean"] == pytest.approx(0.875)
    assert mcl["std"] == pytest.approx(np.std([0.85, 0.90], ddof=1))
    assert mcl["seeds"] == 2
    knn = table.loc["knn/pixel"]
    assert knn["mean"] == pytest.approx(0.65) and np.isnan(knn["std"]) and knn["seeds"] == 1


def test_leaderboard_leaves_out_a_seed_that_misses_columns(tmp_path):
    """A killed run's seed 2 has class 0 only: cells, mean and std stay over seeds 0 and 1."""
    partial = pd.concat([HAND, _rows({("mcl", "sei", 0, 2): 0.10})], ignore_index=True)
    table = pivot(partial)[("one-class", "fashion-mnist")]
    mcl = table.loc["mcl/sei"]
    assert mcl["0"] == pytest.approx(0.92) and mcl["mean"] == pytest.approx(0.875)
    assert mcl["seeds"] == 2
    assert incomplete_seeds(partial) == [
        "one-class / fashion-mnist: mcl/sei seed 2 left out (1 of 2 columns)"]
    assert "note: one-class / fashion-mnist: mcl/sei seed 2 left out" in console_table(partial)
    assert incomplete_seeds(HAND) == []
    readme = write_leaderboards(partial, tmp_path)[-1].read_text()
    assert "- one-class / fashion-mnist: mcl/sei seed 2 left out (1 of 2 columns)" in readme
    # seeds run on disjoint classes: none is complete, so all are kept
    split = _rows({("rotnet", "rot", 0, 0): 0.8, ("rotnet", "rot", 1, 1): 0.6})
    assert pivot(split)[("one-class", "fashion-mnist")].loc["rotnet/rot", "seeds"] == 2


def test_leaderboard_files_are_percent_and_byte_identical(tmp_path):
    write_leaderboards(HAND, tmp_path / "a")
    write_leaderboards(HAND.sample(frac=1, random_state=3), tmp_path / "b")  # order must not matter
    for name in ("one-class_fashion-mnist.csv", "one-class_fashion-mnist.md", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    csv = pd.read_csv(tmp_path / "a" / "one-class_fashion-mnist.csv", dtype=str,
                      keep_default_na=False)
    assert csv.iloc[0].tolist() == ["mcl/sei", "92.0", "83.0", "87.5", "3.5", "2"]
    assert csv.iloc[1].tolist() == ["knn/pixel", "70.0", "60.0", "65.0", "", "1"]


def test_compare_flags_published_values_outside_our_interval():
    rows = _rows({("rotnet", "rot", 0, s): v for s, v in enumerate([0.90, 0.91, 0.92])})
    ref = load_reference(["one-class_fashion-mnist"])
    table = compare(rows, ref)
    geom = table[(table["published_method"] == "GEOM") & (table["cell"] == "0")].iloc[0]
    assert geom["published"] == pytest.approx(0.994)
    assert geom["ours_mean"] == pytest.approx(0.91) and geom["seeds"] == 3
    assert geom["difference"] == pytest.approx(0.91 - 0.994)
    assert bool(geom["outside_interval"])


def _fake_run(tmp_path):
    store = RunStore(tmp_path / "run")
    rng = np.random.default_rng(0)
    for method in ("mcl", "knn", "csi"):
        for c in range(6):
            rows = _rows({(method, "s", c, 0): float(rng.uniform(0.6, 0.99))})
            y = np.r_[np.zeros(30), np.ones(30)].astype(np.int8)
            record = {"job_id": f"{method}-{c}", "method": method, "dataset": "fashion-mnist",
                      "protocol": "one-class", "normal_class": c, "seed": 0, "status": "done",
                      "history": [{"epoch": e, "loss": 5 - 0.1 * e} for e in range(1, 6)]}
            rows["job_id"] = record["job_id"]
            store.write_job(record["job_id"], record, rows,
                            {"rest/is_anomaly": y, "rest/s": rng.normal(y, 1.0).astype(np.float32)})
    ood = _rows({("mcl", "sei", o, 0): 0.8 for o in ("svhn", "interp")})
    store.write_job("ood", {"job_id": "ood", "status": "done"}, ood, None)
    return store


def test_every_figure_function_writes_non_empty_images(tmp_path):
    store = _fake_run(tmp_path)
    rows = store.rows()
    out = tmp_path / "figs"
    paths = figures.auroc_dots(rows, out) + figures.ood_heatmaps(rows, out)
    paths += figures.training_curves(store.records(), out) + figures.cd_diagram(rows, out)
    paths += figures.roc_and_histograms(store.job_dir("mcl-0"), out)
    names = {p.name for p in paths}
    for stem in ("auroc_bars_fashion-mnist", "ood_heatmap_ood_cifar10",
                 "training_loss_fashion-mnist", "critical_difference", "roc_mcl-0",
                 "score_hist_mcl-0"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
    for p in paths:
        assert p.stat().st_size > 1000
    assert figures.pick_job(store.records()) == "mcl-0"
    json.dumps([str(p) for p in paths])


@pytest.mark.slow
def test_tsne_of_a_trained_encoder(tmp_path, tiny_args):
    from bench.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        main(["run", "--methods", "mcl", "--datasets", "synthetic", "--classes", "0",
              "--out", str(out), *tiny_args])
    job = figures.pick_job(RunStore(out).records())
    for model in out.glob("models/*/model.pt"):
        model.unlink()  # the figure reads the embeddings the job kept, never the network
    paths = figures.tsne(RunStore(out).job_dir(job), tmp_path / "figs")
    assert paths and all(p.stat().st_size > 1000 for p in paths)
    assert not list(out.glob("models/*/model.pt"))


def test_leaderboard_names_scores_below_chance(tmp_path):
    """An inverted score is flagged under the table, in the terminal and in README.md."""
    rows = pd.concat([HAND, _rows({("simclr", "knn", 0, 0): 0.30, ("simclr", "knn", 1, 0): 0.40})],
                     ignore_index=True)
    line = "one-class / fashion-mnist: simclr/knn is below chance (mean AUROC 35.0%)"
    assert f"note: {line}" in console_table(rows)
    readme = write_leaderboards(rows, tmp_path)[-1].read_text()
    assert f"\n- {line}\n" in readme
    assert "below chance" not in console_table(HAND)
    fpr = rows.assign(metric="fpr95")  # low is good there: no chance line to fall under
    assert "simclr/knn" in console_table(fpr, metric="fpr95")
    assert "below chance" not in console_table(fpr, metric="fpr95")
