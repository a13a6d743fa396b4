"""Experiments as files: `bench run FILE.toml`, `bench reproduce [--dry-run]`, the one-line
refusals of a bad file, and the committed rows against the experiments that declare them."""

import functools
import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]

TINY = '''
description = "a tiny one"
out = "{out}"
rows = "{rows}"

[[run]]
methods = ["knn", "ocsvm"]
datasets = "digits"
classes = [0, 1]
preset = "quick"
{extra}
'''


def _write(tmp_path, extra="", name="exp.toml", **fields):
    text = TINY.format(out=tmp_path / "run", rows=tmp_path / "results" / "rows", extra=extra)
    for key, value in fields.items():
        text = text.replace(f'{key} = ', f'{value} = ', 1)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit,message", [
    ({"extra": 'methdos = "knn"'}, "unknown key of run[0]. 'run[0].methdos'; did you mean "
                                   "'run[0].methods'"),
    ({"extra": "seeds = 1.5"}, "key run[0].seeds is float 1.5; expected an integer or a "
                               "string, or a list of them"),
    ({"extra": 'set = "mcl.alpha=1"'}, "key run[0].set is str"),
    ({"description": "descripton"}, "unknown key of the file 'descripton'; did you mean "
                                    "'description'"),
])
def test_a_bad_experiment_file_is_one_line_naming_file_and_key(tmp_path, capsys, edit, message):
    path = _write(tmp_path, **edit)
    code, _, err = run_cli(["run", str(path)], capsys)
    assert code == 2 and str(path) in err and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_run_that_does_not_plan_names_the_file_and_the_run(tmp_path, capsys):
    path = _write(tmp_path, extra='protocol = "ood-labeled"')  # knn, ocsvm: no labels used
    code, _, err = run_cli(["run", str(path)], capsys)
    assert code == 2 and f"{path}: run[0]:" in err and not (tmp_path / "run").exists()
    (tmp_path / "no-out.toml").write_text('[[run]]\nmethods = "knn"\n')
    code, _, err = run_cli(["run", str(tmp_path / "no-out.toml")], capsys)
    assert code == 2 and "key out is missing" in err
    code, _, err = run_cli(["run", str(_write(tmp_path)), "--methods", "mcl"], capsys)
    assert code == 2 and "--methods cannot be given with it" in err


@pytest.mark.slow
def test_an_experiment_runs_reproduces_and_is_checked_against_its_rows(tmp_path, capsys,
                                                                       monkeypatch):
    path = _write(tmp_path)
    code, _, err = run_cli(["run", str(path)], capsys)
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "run" / "results.csv")["job_id"].unique()) == 4
    results = tmp_path / "results"
    code, _, err = run_cli(["reproduce", str(path), "--results", str(results)], capsys)
    assert code == 0, err
    rows_file = results / "rows" / "one-class_digits_quick.csv"
    assert rows_file.is_file() and (results / "leaderboard" / "README.md").is_file()
    assert (results / "compare" / "published_side_by_side.md").is_file()
    assert (results / "report" / "index.html").is_file()
    import bench  # the function the command calls: the same files

    parts = ("rows/one-class_digits_quick.csv", "leaderboard/README.md",
             "compare/published_side_by_side.md")
    made = {part: (results / part).read_bytes() for part in parts}
    for part in parts:
        (results / part).unlink()
    import bench.api

    reads, read_rows = [], bench.api.read_rows
    monkeypatch.setattr(bench.api, "read_rows", lambda *p: reads.append(p) or read_rows(*p))
    written = bench.reproduce(path, results=results)
    assert reads.count((str(results / "rows"),)) == 1, reads  # each writer's rows, read once
    for part in parts:
        assert (results / part).read_bytes() == made[part] and results / part in written, part
    # a precision comparison's run: its rows folder, but not the figures of the main rows
    fp32 = tmp_path / "fp32.toml"
    fp32.write_text(TINY.format(out=tmp_path / "run-fp32", extra='precision = "fp32"',
                                rows=results / "rows" / "precision" / "fp32"))
    bench.reproduce([path, fp32], results=results)
    assert (results / "rows" / "precision" / "fp32" / "one-class_digits_quick.csv").is_file()
    made_from = json.loads((results / "figures" / ".made-from.json").read_text())
    sources = {s for file_sources in made_from.values() for s in file_sources}
    assert "../../run" in sources and not any("run-fp32" in s for s in sources), sources
    code, out, _ = run_cli(["reproduce", str(path), "--dry-run"], capsys)
    assert code == 0 and f"{rows_file}: 4 planned, 4 committed: the same jobs" in out
    # a changed setting: new job ids, and the committed rows are left as they were
    before = rows_file.read_bytes()
    _write(tmp_path, extra='set = { "knn.n_neighbors" = 3 }')
    code, out, _ = run_cli(["reproduce", str(path), "--dry-run"], capsys)
    assert code == 1 and "2 planned jobs not in it, 2 of its jobs not planned" in out
    assert "not committed: knn-digits-one-class-0-s0-" in out
    assert rows_file.read_bytes() == before


def _committed_rows_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "results" / "rows").rglob("*.csv")}


def _planned(capsys):
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return run_cli(["reproduce", "experiments", "--dry-run"], capsys)
    finally:
        os.chdir(cwd)


def test_every_committed_rows_file_is_declared_with_as_many_jobs(capsys):
    """Each file under results/rows is one the experiment files plan, with as many jobs as it
    holds (their identities: the next test)."""
    _, out, err = _planned(capsys)
    assert "does not plan" not in out, out + err
    lines = [ln for ln in out.splitlines() if ln.startswith("results/rows/")]
    declared = {ln.split(":")[0] for ln in lines}
    assert declared == _committed_rows_files()
    for line in lines:
        planned, committed = line.split(": ")[1].split(", ")[:2]
        assert planned.split()[0] == committed.split()[0], line


@functools.cache
def _differences() -> dict[str, dict]:
    import os

    from bench import experiments

    cwd = os.getcwd()
    os.chdir(ROOT)  # the files name their rows folders relative to the checkout
    try:
        exps = [experiments.load(p) for p in experiments.files(["experiments"])]
        return {d["file"]: d for d in experiments.differences(
            [(exp, experiments.plan(exp)) for exp in exps])}
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("rows_file", sorted(_committed_rows_files()))
def test_a_committed_rows_file_holds_exactly_the_jobs_its_experiments_plan(rows_file):
    d = _differences()[rows_file]
    assert not d["missing"] and not d["extra"], (
        f"{rows_file}: {len(d['missing'])} planned jobs not in it, {len(d['extra'])} of its "
        "jobs not planned")


def test_an_experiment_file_from_someone_else_hangs_nothing(tmp_path, capsys):
    import os

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    code, _, err = run_cli(["run", str(fifo)], capsys)
    assert code == 2 and "not a regular file" in err
    big = tmp_path / "big.toml"
    big.write_text('description = "' + "x" * (17 * 2**20) + '"\n')
    code, _, err = run_cli(["run", str(big)], capsys)
    assert code == 2 and "more than the" in err
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    code, _, err = run_cli(["run", str(binary)], capsys)
    assert code == 2 and "not a TOML file" in err
