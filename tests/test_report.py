import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.reporting import figures
from bench.reporting.leaderboard import console_text, summarise, write_summary
from bench.reporting.reference import compare, load_reference
from bench.store import ROW_COLUMNS, RunStore


def pivot(rows, metric="auroc"):
    """{(protocol, dataset): table} of rows of one preset."""
    return {key[:2]: table for key, table in summarise(rows, metric).tables.items()}


def incomplete_seeds(rows, metric="auroc"):
    return summarise(rows, metric).left_out


def console_table(rows, metric="auroc"):
    return console_text(summarise(rows, metric))


def write_leaderboards(rows, out, metric="auroc"):
    return write_summary(summarise(rows, metric), out)


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
    csv = pd.read_csv(tmp_path / "one-class_fashion-mnist.csv", keep_default_na=False,
                      index_col=0)
    assert str(csv.loc["mcl/sei", "seeds_left_out"]) == "2" and csv.loc["mcl/sei", "seeds"] == 2
    # seeds run on disjoint classes: none is complete, so all are kept
    split = _rows({("rotnet", "rot", 0, 0): 0.8, ("rotnet", "rot", 1, 1): 0.6})
    assert pivot(split)[("one-class", "fashion-mnist")].loc["rotnet/rot", "seeds"] == 2


def test_leaderboard_files_are_percent_and_byte_identical(tmp_path):
    write_leaderboards(HAND, tmp_path / "a")
    write_leaderboards(HAND.sample(frac=1, random_state=3), tmp_path / "b")  # order must not matter
    for name in ("one-class_fashion-mnist.csv", "one-class_fashion-mnist.md", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    csv = pd.read_csv(tmp_path / "a" / "one-class_fashion-mnist.csv")
    assert list(csv.columns) == ["method/score", "0", "1", "mean", "std", "seeds", "mean_partial",
                                 "missing_columns", "below_chance", "seeds_left_out"]
    assert csv.iloc[0, :6].tolist() == ["mcl/sei", 92.0, 83.0, 87.5, 3.5355, 2]  # numbers
    assert csv.iloc[1, :4].tolist() == ["knn/pixel", 70.0, 60.0, 65.0]
    assert np.isnan(csv.iloc[1]["std"]) and csv.iloc[1]["seeds"] == 1
    md = (tmp_path / "a" / "one-class_fashion-mnist.md").read_text()
    assert "| mcl/sei | 92.0 | 83.0 | 87.5 | 3.5 | 2 |" in md  # the same numbers, as text


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
    paths = figures.auroc_per_class(rows, out) + figures.ood_heatmaps(rows, out)
    paths += figures.training_curves(store.records(), out) + figures.cd_diagram(rows, out)
    paths += figures.roc_and_histograms(store.job_dir("mcl-0"), out)
    names = {p.name for p in paths}
    for stem in ("auroc_per_class_fashion-mnist", "ood_heatmap_ood_cifar10",
                 "training_loss_fashion-mnist", "critical_difference_one-class_fashion-mnist",
                 "roc_mcl-0",
                 "score_hist_mcl-0"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
    for p in paths:
        assert p.stat().st_size > (1000 if p.suffix in (".png", ".pdf") else 100)
    assert {"critical_difference_one-class_fashion-mnist.csv",
            "critical_difference_one-class_fashion-mnist.md"} <= names  # one per table
    assert figures.pick_job(store.records()) == "mcl-0"
    json.dumps([str(p) for p in paths])


def test_the_representative_job_has_the_methods_own_settings():
    """Run directories of an ablation listed first: the figures show MCL as configured, not
    its alpha=0.05 variant (a full `bench reproduce` drew the variant's ROC and t-SNE)."""
    records = [{"job_id": "knn-0", "method": "knn", "status": "done", "variant": ""},
               {"job_id": "mcl-alpha", "method": "mcl", "status": "done",
                "variant": "alpha=0.05"},
               {"job_id": "mcl-failed", "method": "mcl", "status": "failed", "variant": ""},
               {"job_id": "mcl-0", "method": "mcl", "status": "done", "variant": ""}]
    assert figures.pick_job(records) == "mcl-0"
    assert figures.pick_job(records[:3]) == "mcl-alpha"  # only variants: one of them
    assert figures.pick_job(records[:1]) == "knn-0"


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
    csv = pd.read_csv(tmp_path / "one-class_fashion-mnist.csv", index_col=0)
    assert csv["below_chance"].to_dict() == {"mcl/sei": False, "knn/pixel": False,
                                             "simclr/knn": True}
    assert "below chance" not in console_table(HAND)
    fpr = rows.assign(metric="fpr95")  # low is good there: no chance line to fall under
    assert "simclr/knn" in console_table(fpr, metric="fpr95")
    assert "below chance" not in console_table(fpr, metric="fpr95")


def test_ood_tables_have_near_and_far_means_and_fpr95_sorts_lowest_first():
    rows = _rows({("mcl", "sei", "cifar100", 0): 0.80, ("mcl", "sei", "svhn", 0): 1.00,
                  ("mcl", "sei", "interp", 0): 0.70,
                  ("rot", "rot", "cifar100", 0): 0.60, ("rot", "rot", "svhn", 0): 0.90,
                  ("rot", "rot", "interp", 0): 0.50})
    table = pivot(rows)[("ood", "cifar10")]
    # near = cifar100, interp; far = svhn (the protocol's table for cifar10)
    assert table.loc["mcl/sei", "near"] == pytest.approx(0.75)
    assert table.loc["mcl/sei", "far"] == pytest.approx(1.00)
    assert list(table.columns[:5]) == ["cifar100", "interp", "svhn", "near", "far"]
    fpr = rows.assign(metric="fpr95")
    assert list(pivot(fpr, "fpr95")[("ood", "cifar10")].index) == ["rot/rot", "mcl/sei"]


def test_an_entry_on_fewer_columns_is_listed_apart_and_marked(tmp_path):
    partial = pd.concat([HAND, _rows({("ocsvm", "pixel", 0, 0): 0.99})], ignore_index=True)
    table = pivot(partial)[("one-class", "fashion-mnist")]
    assert list(table.index) == ["mcl/sei", "knn/pixel", "ocsvm/pixel"]  # not ranked first
    text = console_table(partial)
    assert "ocsvm/pixel ran on 1 of 2 columns (missing 1)" in text
    write_leaderboards(partial, tmp_path)
    md = (tmp_path / "one-class_fashion-mnist.md").read_text()
    assert "| ocsvm/pixel | 99.0 |  | 99.0 * |" in md
    csv = pd.read_csv(tmp_path / "one-class_fashion-mnist.csv", keep_default_na=False,
                      index_col=0)
    assert csv.loc["ocsvm/pixel", "mean"] == 99.0 and csv.loc["ocsvm/pixel", "mean_partial"]
    assert str(csv.loc["ocsvm/pixel", "missing_columns"]) == "1"
    assert not csv.loc["mcl/sei", "mean_partial"] and csv.loc["mcl/sei", "missing_columns"] == ""


def test_rows_of_an_older_protocol_version_are_left_out():
    old = HAND.assign(protocol_version="1", job_id=HAND["job_id"] + "-old", value=0.1)
    rows = pd.concat([HAND.assign(protocol_version="2"), old], ignore_index=True)
    table = pivot(rows)[("one-class", "fashion-mnist")]
    assert table.loc["mcl/sei", "mean"] == pytest.approx(0.875)
    assert "rows of protocol version 1 left out" in console_table(rows)


def test_variants_get_their_own_entries():
    swept = pd.concat([HAND, _rows({("mcl", "sei", 0, 0): 0.5, ("mcl", "sei", 1, 0): 0.5})
                       .assign(variant="alpha=0.2", config_hash="other")], ignore_index=True)
    table = pivot(swept)[("one-class", "fashion-mnist")]
    assert "mcl/sei [alpha=0.2]" in table.index and "mcl/sei" in table.index


def test_compare_means_over_the_same_classes_only():
    rows = _rows({("rotnet", "rot", c, s): 0.9 for c in (0, 1) for s in (0, 1)})
    table = compare(rows, load_reference(["one-class_fashion-mnist"]))
    geom = table[table["published_method"] == "GEOM"]
    mean = geom[geom["cell"].str.startswith("mean")].iloc[0]
    assert mean["cell"] == "mean of 0,1"
    assert mean["published"] == pytest.approx((0.994 + 0.976) / 2)
    assert not (table["published_method"] == "GOAD").any()  # only its 10-class mean is known


def test_ablation_figure_and_table_from_a_sweep(tmp_path):
    values = {}
    for alpha, v in (("0.01", 0.8), ("0.05", 0.9), ("0.2", 0.85)):
        for s in (0, 1, 2):
            for c in (0, 1):
                values[(alpha, s, c)] = v + 0.01 * s
    frames = [_rows({("mcl", "sei", c, s): v}).assign(variant=f"alpha={a}", config_hash=a)
              for (a, s, c), v in values.items()]
    rows = pd.concat(frames, ignore_index=True)
    paths = figures.ablation(rows, tmp_path)
    names = {p.name for p in paths}
    assert "ablation_one-class_fashion-mnist_alpha.png" in names
    table = pd.read_csv(tmp_path / "ablation_one-class_fashion-mnist_alpha.csv")
    assert list(table["alpha"]) == [0.01, 0.05, 0.2]
    assert table["mean"].tolist() == pytest.approx([81.0, 91.0, 86.0])
    assert (table["seeds"] == 3).all() and (table["low"] < table["mean"]).all()


def test_figures_skip_what_cannot_be_drawn_and_draw_the_rest(tmp_path, capsys):
    """Two methods only: no critical-difference diagram (Friedman needs 3), a line says why."""
    from bench.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        main(["run", "--methods", "knn,ecod", "--datasets", "digits", "--seeds", "0,1",
              "--out", str(out)])
    with pytest.raises(SystemExit) as info:
        main(["figures", "--runs", str(out), "--out", str(tmp_path / "figs")])
    _, err = capsys.readouterr()
    assert info.value.code == 0
    assert ("critical-difference diagram: not drawn (one-class / digits, quick preset: needs 3 "
            "entries") in err
    assert (tmp_path / "figs" / "auroc_per_class_digits_quick.png").exists()


def test_figures_never_train_or_load_data(tmp_path, tiny_args, capsys, monkeypatch):
    """Models deleted and data unreachable: `bench figures` still draws every figure from what
    the jobs wrote (rows, scores, histories, embeddings)."""
    import shutil

    from bench.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["run", "--methods", "mcl,csi,knn", "--datasets", "synthetic", "--classes", "0,1",
              "--out", str(out), *tiny_args])
    assert info.value.code == 0
    shutil.rmtree(out / "models")

    def no_data(*args, **kwargs):
        raise AssertionError("figures loaded a data set")

    monkeypatch.setattr("bench.datasets.load_dataset", no_data)
    monkeypatch.setattr("bench.protocols.load_task", no_data)
    with pytest.raises(SystemExit) as info:
        main(["figures", "--runs", str(out), "--out", str(tmp_path / "figs")])
    _, err = capsys.readouterr()
    assert info.value.code == 0, err
    names = {p.name for p in (tmp_path / "figs").iterdir()} - {".made-from.json"}
    job = figures.pick_job(RunStore(out).records())
    for stem in ("auroc_per_class_synthetic_quick", "training_loss_synthetic_quick", f"roc_{job}",
                 f"score_hist_{job}", f"tsne_{job}"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names, stem
    assert not (out / "models").exists()


def test_compare_any_entry_of_ours_side_by_side():
    """--ours names entries to set beside every published method; --side-by-side tabulates."""
    from bench.errors import BenchError
    from bench.reporting.reference import format_side_by_side

    rows = pd.concat([_rows({("mcl", "sei", c, 0): 0.9 for c in range(10)}),
                      _rows({("rotnet", "rot", c, 0): 0.8 for c in range(10)})], ignore_index=True)
    ref = load_reference(["one-class_fashion-mnist"])
    like_with_like = compare(rows, ref)
    assert set(like_with_like["ours"]) == {"rotnet/rot"}
    table = compare(rows, ref, ours=["mcl/sei"])
    assert set(table["ours"]) == {"mcl/sei"}
    assert set(table["published_method"]) == {"GEOM", "ARNet", "GOAD"}
    geom_mean = table[(table["published_method"] == "GEOM") & (table["cell"] == "mean")].iloc[0]
    assert geom_mean["difference"] == pytest.approx(0.9 - 0.935)
    assert set(compare(rows, ref, ours=["all"])["ours"]) == {"mcl/sei", "rotnet/rot"}
    with pytest.raises(BenchError, match="did you mean 'mcl/sei'"):
        compare(rows, ref, ours=["mcl/se"])
    text = format_side_by_side(compare(rows, ref, ours=["all"]))
    lines = text.splitlines()
    assert lines[2] == "| method | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | mean | seeds |"
    assert lines[4].startswith("| GEOM (Golan & El-Yaniv 2018) | 99.4 | 97.6 |")
    assert "| GOAD (Bergman & Hoshen 2020) | " + " | " * 10 + "94.1 ? |  |" in lines
    table_lines = [line for line in lines if line.startswith("|")]  # the legend follows
    assert table_lines[-2] == "| ours: mcl/sei | " + " | ".join(["90.0"] * 11) + " | 1 |"
    assert table_lines[-1].startswith("| ours: rotnet/rot | 80.0 |")
    assert lines[-1].startswith("? after a published method: its source could not be read")


def test_per_class_figure_shows_published_values(tmp_path):
    """The one-class dot plot draws the published per-class AUROC beside ours (GEOM, ARNet)."""
    ref = load_reference()
    published = figures._published_per_class(ref, "fashion-mnist")
    assert set(published) == {"GEOM", "ARNet"}  # GOAD has only a mean
    assert published["GEOM"]["0"] == pytest.approx(99.4)
    assert figures._published_per_class(ref, "digits") == {}
    rows = _rows({("mcl", "sei", c, 0): 0.9 for c in range(10)})
    paths = figures.auroc_per_class(rows, tmp_path, reference=ref)
    assert {p.name for p in paths} == {"auroc_per_class_fashion-mnist.png", "auroc_per_class_fashion-mnist.pdf"}


def test_unreadable_published_tables_are_reported_not_swallowed(tmp_path, monkeypatch):
    """A broken packaged table still leaves the per-class figure drawn, and says why its published
    marks are missing instead of dropping them silently."""
    import bench.reporting.reference as reference

    def broken(*args, **kwargs):
        raise ValueError("one-class_fashion-mnist.csv: no column 'value'")

    monkeypatch.setattr(reference, "load_reference", broken)
    rows = _rows({("mcl", "sei", c, 0): 0.9 for c in range(10)})
    paths, skipped = figures.draw_all(rows, [], [], tmp_path, [], with_tsne=False, only={"per-class"})
    assert {p.name for p in paths} == {"auroc_per_class_fashion-mnist.png", "auroc_per_class_fashion-mnist.pdf"}
    assert skipped == ["published per-class marks: not drawn "
                       "(ValueError: one-class_fashion-mnist.csv: no column 'value')"]


def test_a_job_run_under_two_presets_keeps_its_rows_in_both_tables(tmp_path):
    """A classical job has the same id under every preset (no preset changes its config): rows
    files of a quick and a standard run both keep it, each in its own preset's table."""
    from bench.reporting.leaderboard import load_rows

    base = _rows({("knn", "pixel", c, 0): 0.9 for c in range(2)})
    for preset in ("quick", "standard"):
        base.assign(preset=preset).to_csv(tmp_path / f"{preset}.csv", index=False)
    rows = load_rows([], [tmp_path / "quick.csv", tmp_path / "standard.csv", tmp_path / "quick.csv"])
    assert sorted(rows["preset"]) == ["quick", "quick", "standard", "standard"]
    tables = summarise(rows, "auroc").tables
    assert {key[2] for key in tables} == {"quick", "standard"}


def test_training_curves_per_preset_and_shared_models_once(tmp_path, monkeypatch):
    """One loss figure per (data set, preset); score-only variants share the model's history
    and are drawn once, under the default config's name."""
    history = [{"epoch": e, "loss": 5.0 - e} for e in (1, 2, 3)]
    base = {"status": "done", "method": "mcl", "dataset": "fashion-mnist", "history": history}
    records = [{**base, "job_id": "a", "train_id": "m1", "preset": "standard"},
               {**base, "job_id": "b", "train_id": "m1", "preset": "standard",
                "variant": "sei_views=4"},
               {**base, "job_id": "c", "train_id": "m2", "preset": "quick"}]
    panels = {}
    save = figures.save

    def counting_save(fig, out, stem):
        panels[stem] = [ax.get_title() for ax in fig.axes if ax.axison]
        return save(fig, out, stem)

    monkeypatch.setattr(figures, "save", counting_save)
    names = {p.name for p in figures.training_curves(records, tmp_path)}
    assert names == {f"training_loss_fashion-mnist_{p}.{ext}"
                     for p in ("standard", "quick") for ext in ("png", "pdf")}
    assert panels["training_loss_fashion-mnist_standard"] == ["mcl"]


def test_pretrained_baselines_beside_ours_on_cifar10(tmp_path, capsys):
    """PANDA's and MSC's published CIFAR-10 means sit beside our panda / msc rows, like with
    like, from the CLI."""
    rows = pd.concat([_rows({(m, "knn", c, s): 0.9 + 0.01 * s for c in range(10)
                             for s in (0, 1)}) for m in ("panda", "msc")], ignore_index=True)
    rows["dataset"] = "cifar10"
    path = tmp_path / "one-class_cifar10_quick.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(SystemExit) as info:
        main(["compare", "--rows", str(path), "--side-by-side"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| method | mean | seeds |"
    assert "| PANDA (Reiss et al. 2021) | 96.2 |  |" in lines
    # our msc/knn has the angular loss on: beside arXiv v1's 97.5 (AAAI 2023's 98.6 had it off)
    assert "| MSC, angular centre loss (Reiss & Hoshen 2021, arXiv v1) | 97.5 |  |" in lines
    assert not any("98.6" in line for line in lines)
    assert "| ours: panda/knn | 90.5 | 2 |" in lines and "| ours: msc/knn | 90.5 | 2 |" in lines
    with pytest.raises(SystemExit):
        main(["compare", "--rows", str(path), "--ours", "all", "--side-by-side"])
    every = capsys.readouterr().out
    assert "| PANDA (Reiss et al. 2021) |" in every and "| CSI (Tack et al. 2020) |" in every


def test_cd_figure_tests_against_the_control_named_and_writes_p_values(tmp_path, capsys):
    """bench figures --figure cd --control ENTRY: Holm's rows compare ENTRY with each rival; the
    note names the significant pairs; a control that is not an entry is refused."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.6, 0.85, 10)
    values = {("best", "s", c, 0): base[c] + 0.1 for c in range(10)}
    for m in ("a", "b", "c", "d"):
        values.update({(m, "s", c, 0): base[c] + rng.normal(0, 0.005) for c in range(10)})
    path = tmp_path / "rows.csv"
    _rows(values).assign(preset="quick").to_csv(path, index=False)
    out = tmp_path / "figs"
    with pytest.raises(SystemExit) as info:
        main(["figures", "--rows", str(path), "--figure", "cd", "--control", "best/s",
              "--out", str(out)])
    assert info.value.code == 0
    p = pd.read_csv(out / "critical_difference_one-class_fashion-mnist_quick.csv")
    holm = p[p["test"] == "holm-vs-control"]
    assert set(holm["entry_a"]) == {"best/s"} and len(holm) == 4 and holm["significant"].all()
    assert len(p[p["test"] == "nemenyi"]) == 10
    note = (out / "critical_difference_one-class_fashion-mnist_quick.md").read_text()
    assert "Friedman chi2(4)" in note and "Against the control best/s" in note
    # the control ranks first in every block: better than each rival, worse than none
    assert "a/s (p = " in note.split("better than")[1] and "worse than none" in note
    with pytest.raises(SystemExit) as info:
        main(["figures", "--rows", str(path), "--figure", "cd", "--control", "bset/s",
              "--out", str(out)])
    assert info.value.code == 2 and "did you mean 'best/s'" in capsys.readouterr().err


def test_latex_table_bold_best_underlined_second_and_a_caption(tmp_path, capsys):
    """bench leaderboard --format latex: booktabs, mean ± std over seeds, the best of each column
    in bold and the second underlined (as shown: ties share), names escaped, a caption."""
    rows = pd.concat([HAND, _rows({("ocsvm", "pixel_x", 0, 0): 0.80,
                                   ("ocsvm", "pixel_x", 1, 0): 0.95})], ignore_index=True)
    path = tmp_path / "rows.csv"
    rows.assign(preset="quick").to_csv(path, index=False)
    with pytest.raises(SystemExit) as info:
        main(["leaderboard", "--rows", str(path), "--out", str(tmp_path / "lb"),
              "--format", "latex"])
    assert info.value.code == 0
    assert sorted(p.name for p in (tmp_path / "lb").iterdir() if p.name != ".made-from.json") == [
        "one-class_fashion-mnist_quick.tex"]  # latex only: no csv, md or README
    tex = (tmp_path / "lb" / "one-class_fashion-mnist_quick.tex").read_text()
    lines = tex.splitlines()
    assert lines[0] == "\\begin{table}[t]" and lines[-1] == "\\end{table}"
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\begin{tabular}{lrrrr}" in tex  # entry, 0, 1, mean, seeds
    assert "\\caption{one-class / fashion-mnist, quick preset: AUROC (\\%, higher is better)" in tex
    assert "(1-2 per cell)" in tex and "\\label{tab:one-class_fashion-mnist_quick}" in tex
    body = {line.split(" & ")[0]: line.split(" & ")[1:] for line in lines
            if " & " in line and "\\\\" in line}
    # class 0: mcl 92.0 (seeds 0.90, 0.94) best, ocsvm 80.0 third... knn 70.0
    assert body["mcl/sei"][0] == "\\textbf{92.0 $\\pm$ 2.8}"
    assert body["ocsvm/pixel\\_x"][0] == "\\underline{80.0}"
    assert body["ocsvm/pixel\\_x"][1] == "\\textbf{95.0}"  # class 1: 95 > 83 > 60
    assert body["mcl/sei"][1] == "\\underline{83.0 $\\pm$ 4.2}"
    assert body["knn/pixel"][0] == "70.0" and body["knn/pixel"][-1].startswith("1 ")
    assert body["ocsvm/pixel\\_x"][2] == "\\textbf{87.5}"  # mean: a tie with mcl's 87.5
    assert body["mcl/sei"][2] == "\\textbf{87.5 $\\pm$ 3.5}"
    assert body["knn/pixel"][2] == "65.0"  # after two tied best there is no second


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_tables_compile(tmp_path):
    """The leaderboard and comparison tables compile with pdflatex and booktabs."""
    from bench.reporting.leaderboard import to_latex
    from bench.reporting.reference import side_by_side_latex

    rows = _rows({(m, "sei", c, s): 0.9 - 0.01 * c + 0.01 * s + 0.02 * i for c in range(10)
                  for s in (0, 1) for i, m in enumerate(("mcl", "rot_net&#"))})
    summary = summarise(rows)  # names with _ & # must be escaped to compile
    tables = [to_latex(summary, key) for key in summary.tables]
    tables.append(side_by_side_latex(compare(rows, load_reference(["one-class_fashion-mnist"]),
                                             ours=["all"])))
    doc = ("\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}"
           "\\begin{document}\n" + "\n".join(tables) + "\n\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


def test_cd_bar_label_prints_the_captions_cd_above_the_rank_axis(tmp_path, monkeypatch):
    """The CD bar and its label sit above the rank axis' tick labels, and the label prints the
    CD as the caption does (scikit-posthocs draws them among the tick labels, to 2 digits)."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.6, 0.85, 10)
    values = {(m, "s", c, 0): base[c] + 0.03 * i + rng.normal(0, 0.01)
              for i, m in enumerate("abcdefghijkl") for c in range(10)}
    drawn = []
    keep = figures.save
    monkeypatch.setattr(figures, "save", lambda fig, out, stem: (drawn.append(fig), keep(fig, out, stem))[1])
    figures.cd_diagram(_rows(values).assign(preset="quick"), tmp_path)
    (fig,) = drawn
    ax = fig.axes[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # save() closed the figure: draw it again to measure it
    canvas.draw()
    renderer = canvas.get_renderer()
    caption_cd = ax.get_title().replace("\n", " ").split("(CD = ")[1].split(")")[0]
    (label,) = [t for t in ax.texts if t.get_text().startswith("CD = ")]
    assert label.get_text() == f"CD = {caption_cd}" and len(caption_cd.split(".")[1]) == 2
    ticks_top = max(t.get_window_extent(renderer).y1 for t in ax.get_xticklabels() if t.get_text())
    (bar,) = [line for line in ax.get_lines()
              if len(set(line.get_ydata())) == 1 and line.get_xdata()[0] < line.get_xdata()[-1]
              and abs(line.get_xdata()[-1] - line.get_xdata()[0] - float(caption_cd)) < 0.01]
    bar_y = ax.transData.transform((0, bar.get_ydata()[0]))[1]
    assert bar_y > ticks_top and label.get_window_extent(renderer).y0 > bar_y


def test_cd_figure_is_the_same_bytes_under_any_hash_seed(tmp_path):
    """scikit-posthocs builds each bar from a set; the diagram must not depend on set order."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.6, 0.9, 8)
    values = {(m, "s", c, 0): base[c] + rng.normal(0, 0.02) + 0.01 * i
              for i, m in enumerate(("a", "b", "c", "d", "e", "f")) for c in range(8)}
    path = tmp_path / "rows.csv"
    _rows(values).assign(preset="quick").to_csv(path, index=False)
    outputs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"figs{seed}"
        proc = subprocess.run([sys.executable, "-m", "bench", "figures", "--rows", str(path),
                               "--figure", "cd", "--out", str(out)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append([(out / f"critical_difference_one-class_fashion-mnist_quick.{ext}").read_bytes()
                        for ext in ("png", "pdf", "csv", "md")])
    assert outputs[0] == outputs[1] == outputs[2]
