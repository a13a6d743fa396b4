"""Fault injection: damage a finished run directory, run again, and get the undamaged numbers.

Each case damages one file, then runs the documented recovery (the same `bench run` again, or
`bench leaderboard` / `bench figures`), and checks that the damage is named and that the
recovered rows equal those of an undamaged run (CPU, same threads: bit for bit).
"""

import json

import pandas as pd
import pytest

from bench.cli import main
from bench.store import RunStore

VALUES = ["method", "variant", "score", "normal_class", "ood_dataset", "seed", "metric", "value"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _args(out, tiny_args, *extra):
    return ["run", "--methods", "mcl,knn", "--datasets", "synthetic", "--classes", "0",
            "--out", str(out), *tiny_args, *extra]


def _values(out) -> pd.DataFrame:
    rows = pd.read_csv(out / "results.csv", dtype={"normal_class": str, "variant": str},
                       keep_default_na=False)
    return rows[VALUES].sort_values(VALUES[:-1]).reset_index(drop=True)


@pytest.fixture
def finished(tmp_path, tiny_args, capsys):
    """An undamaged run directory and its values."""
    out = tmp_path / "run"
    code, _, err = run_cli(_args(out, tiny_args), capsys)
    assert code == 0, err
    return out, _values(out)


def _job(out, method):
    return next(d for d in (out / "jobs").iterdir() if d.name.startswith(f"{method}-"))


def _model_dir(out):
    return next((out / "models").iterdir())


@pytest.mark.parametrize("damage", ["delete", "empty", "garbage"])
def test_damaged_rows_are_named_and_the_job_is_redone(finished, tiny_args, capsys, damage):
    out, expected = finished
    rows = _job(out, "mcl") / "rows.csv"
    {"delete": rows.unlink, "empty": lambda: rows.write_text(""),
     "garbage": lambda: rows.write_bytes(b"\x00\xffnot,a\ncsv")}[damage]()
    code, stdout, err = run_cli(["leaderboard", "--runs", str(out), "--out",
                                 str(out / "lb")], capsys)
    assert code == 0 and "rows.csv" in err and str(_job(out, "mcl")) in err  # named, not silent
    assert "mcl/sei" not in stdout
    code, _, err = run_cli(_args(out, tiny_args), capsys)
    assert code == 0, err
    assert "redoing it: rows.csv" in err
    pd.testing.assert_frame_equal(_values(out), expected)


def test_deleted_scores_skip_their_figure_and_the_job_is_redone(finished, tiny_args, capsys):
    out, expected = finished
    job = _job(out, "mcl")
    (job / "scores.npz").unlink()
    code, stdout, err = run_cli(["figures", "--runs", str(out), "--out", str(out / "figs"),
                                 "--job", job.name, "--no-tsne"], capsys)
    assert code == 0, err
    assert f"ROC and histograms of {job.name}: not drawn" in err and "scores.npz" in err
    assert "auroc_per_class_synthetic_quick.png" in stdout  # the rest is drawn
    code, _, err = run_cli(_args(out, tiny_args), capsys)
    assert code == 0 and "redoing it: scores.npz (missing)" in err
    pd.testing.assert_frame_equal(_values(out), expected)
    assert (job / "scores.npz").exists()


def test_truncated_model_is_retrained_when_reused(finished, tiny_args, capsys):
    out, _ = finished
    model = _model_dir(out) / "model.pt"
    model.write_bytes(model.read_bytes()[:100])
    code, _, err = run_cli(_args(out, tiny_args, "--set", "mcl.sei_views=4"), capsys)
    assert code == 0, err
    assert "model.pt is damaged (unreadable, or not a plain torch file); training it again" in err
    fresh = _values(out)
    again = out.parent / "fresh"
    code, _, err = run_cli(_args(again, tiny_args, "--set", "mcl.sei_views=4"), capsys)
    assert code == 0, err
    four = fresh[fresh["variant"] == "sei_views=4"].reset_index(drop=True)
    assert len(four) == 16  # sei, cosnorm, deep-knn, mahalanobis x 4 metrics, as undamaged
    undamaged = _values(again)
    pd.testing.assert_frame_equal(four, undamaged[undamaged["method"] == "mcl"]
                                  .reset_index(drop=True))


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_checkpoint_trains_from_the_previous_one_or_from_scratch(
        tmp_path, tiny_args, capsys, damage):
    from bench.datasets import load_dataset
    from bench.nn.context import FitContext
    from bench.nn.state import seed_everything
    from helpers import tiny

    data = load_dataset("synthetic", "train")
    data = data.subset(data.labels == 0)
    seed_everything(0)
    straight = tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "a", progress=False))

    class Stop(Exception):
        pass

    def stop(epoch):
        if epoch == 3:
            raise Stop

    seed_everything(0)
    with pytest.raises(Stop):
        tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "b", progress=False,
                                                   on_epoch_end=stop))
    ckpt = tmp_path / "b" / "checkpoint.pt"
    assert (tmp_path / "b" / "checkpoint.prev.pt").exists()
    ckpt.write_bytes(b"" if damage == "empty" else ckpt.read_bytes()[:50])
    messages = []
    resumed = tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "b", progress=False,
                                                          log=messages.append))
    assert any("checkpoint.pt is damaged" in m for m in messages)
    assert any("resuming MCL from epoch 2 of 4" in m for m in messages)
    for key, value in straight.model_.state_dict().items():
        assert (value == resumed.model_.state_dict()[key]).all(), key
    # both damaged: from scratch, the same weights again
    seed_everything(0)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / name).write_bytes(b"junk")
    scratch = tiny("mcl", epochs=4).fit(data, FitContext(model_dir=tmp_path / "c", progress=False,
                                                          log=messages.append))
    for key, value in straight.model_.state_dict().items():
        assert (value == scratch.model_.state_dict()[key]).all(), key


def test_garbage_feature_cache_is_computed_again(finished, tiny_args, capsys):
    out, expected = finished
    cached = list(_model_dir(out).glob("features-*.pt"))
    assert cached
    for path in cached:
        path.write_bytes(b"\x80\x04garbage")
    for job in (out / "jobs").iterdir():
        if job.name.startswith("mcl-"):
            (job / "rows.csv").unlink()  # make the job run again, reading the cache
    code, _, err = run_cli(_args(out, tiny_args), capsys)
    assert code == 0, err
    assert "is damaged; computing the features again" in err
    pd.testing.assert_frame_equal(_values(out), expected)


def test_a_job_failed_for_the_machine_is_retried_without_asking(finished, tiny_args, capsys):
    out, expected = finished
    job = _job(out, "knn")
    record = json.loads((job / "record.json").read_text())
    record.update(status="failed", error="RuntimeError: CUDA error: out of memory",
                  error_kind="environment")
    (job / "record.json").write_text(json.dumps(record))
    code, _, err = run_cli(_args(out, tiny_args), capsys)
    assert code == 0 and "failed for a reason of the machine" in err
    pd.testing.assert_frame_equal(_values(out), expected)
    # a job failed on another device is retried on this one
    record.update(device="cuda:0", error="RuntimeError: boom", error_kind="job")
    (job / "record.json").write_text(json.dumps(record))
    code, _, err = run_cli(_args(out, tiny_args, "--device", "cpu"), capsys)
    assert code == 0 and "retrying it on cpu" in err


def test_files_follow_the_umask(finished):
    out, _ = finished
    import os

    mask = os.umask(0)
    os.umask(mask)
    for path in [out / "results.csv", *_job(out, "mcl").iterdir()]:
        if path.name.startswith("."):
            continue
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_leaderboard_keeps_the_sections_of_other_runs(tmp_path, finished, capsys):
    out, _ = finished
    board = tmp_path / "board"
    board.mkdir()
    (board / "README.md").write_text("# Leaderboards\n\n### one-class / digits, quick preset "
                                     "(AUROC %, mean over seeds; higher is better)\n\n"
                                     "| a | b |\n|---|---|\n")
    code, _, err = run_cli(["leaderboard", "--runs", str(out), "--out", str(board)], capsys)
    assert code == 0, err
    text = (board / "README.md").read_text()
    assert "### one-class / digits" in text and "### one-class / synthetic" in text
    code, _, _ = run_cli(["leaderboard", "--runs", str(out), "--out", str(board), "--force"],
                         capsys)
    assert "### one-class / digits" not in (board / "README.md").read_text()


def test_store_names_damaged_files(finished):
    out, _ = finished
    store = RunStore(out)
    job = _job(out, "mcl")
    (job / "scores.npz").write_bytes(b"changed")
    assert store.damaged_files(job.name) == ["scores.npz (size 7, recorded "
                                             f"{json.loads((job / 'record.json').read_text())['files']['scores.npz']['size']})"]
