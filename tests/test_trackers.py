"""--log tensorboard / mlflow: each finished job logged once in the tracker's own layout, read
back with the tracker's own reader; a missing library is one line naming the pip install."""

import json

import pandas as pd
import pytest

from helpers import run_cli


@pytest.mark.slow
def test_jobs_are_logged_to_tensorboard_and_mlflow_and_read_back(tmp_path, capsys,
                                                                 tiny_network_args):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["run", "--methods", "rotnet,knn", "--classes", "0", "--out", str(out),
            *tiny_network_args, "--log", "tensorboard", "--log", "mlflow"]
    code, _, err = run_cli(args, capsys)
    assert code == 0 and "not logged" not in err, err
    rotnet = next((out / "jobs").glob("rotnet-*"))
    record = json.loads((rotnet / "record.json").read_text())
    rows = pd.read_csv(rotnet / "rows.csv", keep_default_na=False)
    losses = [h["loss"] for h in record["history"]]
    assert len(losses) == 2

    events = EventAccumulator(str(out / "tensorboard" / rotnet.name))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    assert [e.step for e in events.Scalars("train/images_per_second")] == [1, 2]
    auroc = float(rows[(rows.metric == "auroc") & (rows.score == "rot")]["value"].iloc[0])
    assert events.Scalars("auroc/rest/rot")[0].value == pytest.approx(auroc, rel=1e-6)

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("run")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(p.name for p in (out / "jobs").iterdir())
    run = next(r for r in runs if r.info.run_name == rotnet.name)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.value for m in history] == pytest.approx(losses) and [m.step for m in history] == [1, 2]
    assert run.data.metrics["auroc/rest/rot"] == pytest.approx(auroc)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "rows.csv", "record.json", "loss_curve.png"}
    # a run again skips its finished jobs: nothing is logged twice
    code, _, _ = run_cli(args, capsys)
    assert code == 0 and len(client.search_runs([experiment.experiment_id])) == len(runs)


def test_a_missing_tracker_library_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code, _, err = run_cli(["run", "--methods", "knn", "--classes", "0", "--out",
                            str(tmp_path / "run"), "--log", "tensorboard"], capsys)
    assert code == 2 and "pip install 'mcl-bench[tensorboard]'" in err
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(["run", "--methods", "knn", "--out", str(tmp_path / "run"), "--log",
                            "wandb"], capsys)
    assert code == 2 and "unknown --log tracker 'wandb'" in err


def test_a_tracker_never_writes_through_a_link_planted_in_the_run_directory(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.db").write_bytes(b"")
    plants = {"tensorboard": ("tensorboard", outside), "mlflow": ("mlflow.db", outside / "x.db")}
    for tracker, (name, target) in plants.items():
        out = tmp_path / tracker
        out.mkdir()
        (out / name).symlink_to(target)
        code, _, err = run_cli(["run", "--methods", "knn", "--classes", "0", "--out", str(out),
                                "--log", tracker], capsys)
        assert code == 0 and f"not logged to {tracker}" in err and "symbolic link" in err
        assert (out / "results.csv").is_file()  # the job is done; only its log is refused
    assert sorted(p.name for p in outside.iterdir()) == ["x.db"]
    assert (outside / "x.db").read_bytes() == b""
