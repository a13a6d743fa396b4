"""Every number a reviewer reads is the right one: like-for-like tables, nothing overwritten in
silence, one rounding, true captions and messages. Each test failed before its fix."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return (info.value.code, *capsys.readouterr())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "runs"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--methods", "knn,ocsvm",
                           "--classes", "0,1", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_command_never_replaces_a_result_made_from_other_rows(tmp_path, digits_run, capsys,
                                                                 monkeypatch):
    """Run from inside a checkout, `bench leaderboard --runs runs` wrote results/leaderboard
    over the committed tables; now its output goes beside the run, and replacing a file made
    from other rows needs --force."""
    checkout = tmp_path / "checkout"
    committed = checkout / "results" / "leaderboard" / "one-class_digits_quick.md"
    committed.parent.mkdir(parents=True)
    committed.write_text("the committed 21-entry table\n")
    monkeypatch.chdir(checkout)
    code, _, err = run_cli(["leaderboard", "--runs", digits_run], capsys)
    assert code == 0, err
    assert committed.read_text() == "the committed 21-entry table\n"
    assert (digits_run / "leaderboard" / "one-class_digits_quick.md").is_file()
    code, _, err = run_cli(["leaderboard", "--runs", digits_run, "--out",
                            "results/leaderboard"], capsys)
    assert code == 2 and "made from other rows" in err and "--force" in err
    assert committed.read_text() == "the committed 21-entry table\n"
    code, _, err = run_cli(["leaderboard", "--runs", digits_run, "--out",
                            "results/leaderboard", "--force"], capsys)
    assert code == 0 and committed.read_text() != "the committed 21-entry table\n"
    # the same sources again: no --force needed (they made it)
    code, _, err = run_cli(["leaderboard", "--runs", digits_run, "--out",
                            "results/leaderboard"], capsys)
    assert code == 0, err
    for command in ("rows", "figures", "report"):
        target = checkout / "results" / command
        target.mkdir(parents=True, exist_ok=True)
        name = {"rows": "one-class_digits_quick.csv", "report": "index.html",
                "figures": "auroc_per_class_digits_quick.png"}[command]
        (target / name).write_text("committed")
        code, _, err = run_cli([command, "--runs", digits_run, "--out", target,
                                *(["--no-tsne"] if command == "figures" else [])], capsys)
        assert code == 2 and "made from other rows" in err, (command, err)
        assert (target / name).read_text() == "committed"


def test_the_python_report_never_replaces_a_page_made_from_other_rows(tmp_path, digits_run):
    """`bench.report` from Python wrote over any index.html; it now guards as the CLI does."""
    import bench
    from bench.errors import BenchError

    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_text("committed")
    with pytest.raises(BenchError, match="made from other rows"):
        bench.report(digits_run, out)
    assert (out / "index.html").read_text() == "committed"
    rows = bench.read_rows(digits_run)
    page = bench.report(rows, out, force=True)
    assert page == out / "index.html" and page.read_text() != "committed"
    bench.report(rows, out)  # the same rows again: no force needed
    with pytest.raises(BenchError, match="made from other rows"):
        bench.report(rows[rows.method == "knn"], out)


def test_the_python_writers_write_what_their_commands_write_and_guard_alike(tmp_path,
                                                                            digits_run, capsys):
    """`bench.write_rows`, `write_leaderboard` and `figures` are the functions `bench rows`,
    `leaderboard` and `figures` call: the same bytes, and the same refusal to replace files
    made from other rows."""
    import bench
    from bench.errors import BenchError

    cli_out, py_out = tmp_path / "cli", tmp_path / "py"
    for command in ("rows", "leaderboard"):
        code, _, err = run_cli([command, "--runs", digits_run, "--out", cli_out / command],
                               capsys)
        assert code == 0, err
    rows_paths = bench.write_rows([digits_run], py_out / "rows")
    board_paths = bench.write_leaderboard(bench.read_rows(digits_run), py_out / "leaderboard")
    for command, paths in (("rows", rows_paths), ("leaderboard", board_paths)):
        made = sorted(p.name for p in (cli_out / command).iterdir() if p.name[0] != ".")
        assert sorted(p.name for p in paths) == made and made
        for path in paths:
            assert path.read_bytes() == (cli_out / command / path.name).read_bytes(), path
    drawn = bench.figures(digits_run, py_out / "figures", runs=[digits_run], tsne=False,
                          only=["per-class"])
    assert drawn and {p.suffix for p in drawn} == {".png", ".pdf"}
    knn = bench.read_rows(digits_run).query("method == 'knn'")
    for write, out in ((bench.write_rows, "rows"), (bench.write_leaderboard, "leaderboard")):
        with pytest.raises(BenchError, match="made from other rows"):
            write(knn, py_out / out)
        assert write(knn, py_out / out, force=True)
    with pytest.raises(BenchError, match="unknown figure 'per-clas'; did you mean 'per-class'"):
        bench.figures(digits_run, py_out / "figures", only=["per-clas"])



def test_a_rows_file_that_is_a_fifo_is_named_as_one(tmp_path, capsys):
    """A FIFO given as a rows file, or inside a folder of them, is refused without waiting on
    it, and the line says what it is (it said "no such rows file")."""
    import os

    import bench
    from bench.errors import BenchError

    folder = tmp_path / "rows"
    folder.mkdir()
    os.mkfifo(folder / "one-class_digits_quick.csv")
    for given in (folder / "one-class_digits_quick.csv", folder):
        with pytest.raises(BenchError, match="not a regular file") as info:
            bench.read_rows(given)
        assert "no such" not in str(info.value)
        code, _, err = run_cli(["leaderboard", "--rows", given, "--out", tmp_path / "lb"],
                               capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "not a regular file (a FIFO" in err and not (tmp_path / "lb").exists()


def test_leaderboard_formats_are_declared_once_and_checked_alike(tmp_path, digits_run, capsys):
    """The command and `bench.write_leaderboard` take the formats the writer declares, with the
    same did-you-mean (the command's own list gave none), and `bench --help` still does not
    import the writer."""
    import bench
    from bench.errors import BenchError
    from bench.reporting.leaderboard import LEADERBOARD_FORMATS

    code, _, err = run_cli(["leaderboard", "--runs", digits_run, "--out", tmp_path / "lb",
                            "--format", "markdwn"], capsys)
    assert code == 2 and "unknown leaderboard format 'markdwn'; did you mean 'markdown'" in err
    assert not (tmp_path / "lb").exists()
    with pytest.raises(BenchError, match="unknown leaderboard format 'markdwn'; did you mean"):
        bench.write_leaderboard(digits_run, tmp_path / "lb", formats=["markdwn"])
    code, out, _ = run_cli(["leaderboard", "--help"], capsys)
    assert code == 0 and "[" + "|".join(LEADERBOARD_FORMATS) + "]" in out
    probe = ("import sys\nfrom bench.cli import main\ntry:\n    main(['--help'])\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('bench.reporting')))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("[]"), proc.stdout + proc.stderr


TINY = ["--set", "backbone=resnet-tiny", "--set", "epochs=1", "--set", "max_train_samples=64",
        "--set", "batch_size=32"]


def test_a_field_fixed_by_a_checkpoint_is_not_relabelled(tmp_path, capsys):
    """--set ce.backbone=resnet18 with a resnet-tiny checkpoint labelled the rows resnet18."""
    src = tmp_path / "src"
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "synthetic",
                            "--methods", "ce", "--out", src, *TINY], capsys)
    assert code == 0, err
    model = next((src / "models").glob("ce-*/model.pt"))
    out = tmp_path / "run"
    args = ["run", "--protocol", "ood-labeled", "--datasets", "synthetic", "--methods", "ce",
            "--checkpoint", f"ce={model}", "--out", out]
    code, _, err = run_cli([*args, "--set", "ce.backbone=resnet18"], capsys)
    assert code == 2 and "fixes backbone=resnet-tiny" in err and not out.exists(), err
    code, _, err = run_cli([*args, "--set", "ce.backbone=resnet-tiny"], capsys)  # the same
    assert code == 0, err


@pytest.mark.parametrize("method", ["panda", "msc"])
def test_a_checkpoint_for_panda_or_msc_is_refused_truthfully(tmp_path, capsys, method):
    import torch

    path = tmp_path / "m.pt"
    torch.save({"model": {}, "history": []}, path)
    code, _, err = run_cli(["run", "--methods", method, "--checkpoint", f"{method}={path}",
                            "--set", "weights=none", "--out", tmp_path / "run"], capsys)
    assert code == 2 and f"--set {method}.weights=PATH" in err and "formats" not in err, err
    assert not (tmp_path / "run").exists()


def test_data_info_says_what_is_missing_and_the_command_that_fetches_it(tmp_path, capsys):
    code, out, _ = run_cli(["data", "info", "--data-dir", tmp_path], capsys)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "--no-download" not in out and "downloads are off" not in out  # no flag was given
    assert "`bench data download cifar10` fetches it" in lines["cifar10"]
    assert "bench data info" not in lines["lsun_resize"]  # not the command just run
    assert "extract the ODIN release" in lines["lsun_resize"]


def test_data_download_uses_the_checksummed_code_and_refuses_folder_sets(tmp_path, capsys):
    from bench.datasets.torchvision_sets import DEBIAN_FASHION_MNIST

    code, _, err = run_cli(["data", "download", "lsun_resize", "--data-dir", tmp_path], capsys)
    assert code == 2 and "nothing to download" in err
    if DEBIAN_FASHION_MNIST.is_dir():  # found where bench looks: present, nothing fetched
        code, out, err = run_cli(["data", "download", "fashion-mnist", "--data-dir", tmp_path],
                                 capsys)
        assert code == 0 and "present" in out, err


def test_the_job_line_and_the_leaderboard_print_the_same_digit():
    """0.62851: the record rounded it to 0.6285 first, so the job line said 62.8 and the
    leaderboard 62.9."""
    import pandas as pd

    from bench.console import record_line
    from bench.jobs import record_aurocs
    from bench.reporting.leaderboard import as_text, numeric_table, summarise

    value = 0.62851
    aurocs = record_aurocs([{"ood_dataset": "rest", "score": "s", "metric": "auroc",
                             "value": value}])
    line = record_line({"status": "done", "seconds": 1.0, "auroc": aurocs})
    rows = pd.DataFrame([{"protocol": "one-class", "dataset": "d", "preset": "quick",
                          "ood_table": "", "method": "m", "score": "s", "features": "",
                          "variant": "", "normal_class": "0", "ood_dataset": "rest",
                          "seed": 0, "metric": "auroc", "value": value, "config_hash": "h",
                          "protocol_version": "2"}])
    summary = summarise(rows)
    shown = as_text(numeric_table(summary, next(iter(summary.tables))))
    assert f"s {shown.loc['m/s', '0']})" in line, (line, shown)
    assert shown.loc["m/s", "0"] == "62.9"


def test_compare_clips_intervals_and_explains_every_mark(capsys):
    import numpy as np

    from bench.reporting.reference import _row, format_comparison

    row = _row({"protocol": "one-class", "dataset": "d", "preset": "p", "ood_table": "",
                "published_method": "m", "ours": "o", "paper": "x", "metric": "auroc"},
               "0", 0.5, False, np.array([0.99, 1.0]))
    assert 0 <= row["ours_low"] <= row["ours_high"] <= 1.0  # a t interval of 2 seeds passes 1
    import pandas as pd

    text = format_comparison(pd.DataFrame([row]))
    assert "(unconfirmed)" in text and "(unconfirmed): the published number's source" in text
    assert "clipped to [0, 100]" in text and "100.0]" in text
    code, out, _ = run_cli(["compare", "--list"], capsys)
    assert code == 0 and "ood-labeled_cifar10_openood-v1.5" in out


def test_a_latex_caption_gives_the_true_number_of_seeds():
    """Two seeds that each ran one of the two classes: every cell is one seed's value, so the
    caption says 1, not 2."""
    import pandas as pd

    from bench.reporting.leaderboard import summarise, to_latex

    base = {"protocol": "one-class", "dataset": "d", "preset": "quick", "ood_table": "",
            "method": "m", "score": "s", "features": "", "variant": "", "ood_dataset": "rest",
            "metric": "auroc", "config_hash": "h", "protocol_version": "2"}
    rows = pd.DataFrame([{**base, "normal_class": "0", "seed": 0, "value": 0.8},
                         {**base, "normal_class": "1", "seed": 1, "value": 0.7}])
    summary = summarise(rows)
    text = to_latex(summary, next(iter(summary.tables)))
    assert "over seeds (1)" in text, text


def test_labeled_tables_show_the_accuracy_beside_each_network(tmp_path, capsys):
    """OpenOOD's ACC column: the in-distribution accuracy of each entry's network, in the
    leaderboard (terminal, CSV, Markdown, LaTeX)."""
    import pandas as pd

    from bench.reporting.leaderboard import numeric_table, summarise, to_latex

    base = {"protocol": "ood-labeled", "dataset": "d", "preset": "quick", "ood_table": "bench",
            "method": "ce", "features": "", "variant": "", "normal_class": "all",
            "config_hash": "h", "protocol_version": "2"}
    rows = []
    for seed, acc in ((0, 0.90), (1, 0.80)):
        for score in ("msp", "energy"):
            for ood in ("a", "b", "c", "e", "f"):
                rows.append({**base, "score": score, "ood_dataset": ood, "seed": seed,
                             "metric": "auroc", "value": 0.7})
                rows.append({**base, "score": score, "ood_dataset": ood, "seed": seed,
                             "metric": "accuracy", "value": acc})
    summary = summarise(pd.DataFrame(rows))
    key = next(iter(summary.tables))
    table = numeric_table(summary, key)
    assert table.loc["ce/msp", "accuracy"] == pytest.approx(85.0)
    assert "accuracy" in to_latex(summary, key)


def test_one_colour_for_normal_and_one_for_anomalous_and_class_names(tmp_path, capsys):
    from bench.reporting import figures

    for order in (["anomalous", "normal"], ["normal", "anomalous"]):
        colours = figures.group_colours(order)
        assert colours["normal"] == figures.NORMAL_COLOUR  # the histograms' normal colour
        assert colours["anomalous"] == figures.ANOMALOUS_COLOUR
    ood = figures.group_colours(["svhn", "in-distribution", "interp"])
    assert ood["in-distribution"] == figures.NORMAL_COLOUR
    assert figures.NORMAL_COLOUR not in (ood["svhn"], ood["interp"])
    rows = ROOT / "results" / "rows" / "one-class_fashion-mnist_standard.csv"
    code, out, err = run_cli(["leaderboard", "--rows", rows, "--class-names", "--out",
                              tmp_path / "lb"], capsys)
    assert code == 0 and "T-shirt/top" in out and "Ankle boot" in out, err
