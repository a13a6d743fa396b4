"""The GPU check: one command that turns a lent GPU's minutes into measured evidence.

    python benchmarks/gpu_check.py                                  # on the GPU machine
    python benchmarks/gpu_check.py --data-dir data --budget-s 480 --out $OUT
    python benchmarks/gpu_check.py --device cpu --smoke             # CI: tiny sizes, same stages

Stages, each skipped with a line saying so when the time left (`--budget-s`) would not fit it:
  1. environment: device, torch / CUDA versions, a measured bf16 matmul peak (the ceiling);
  2. training steps at the paper preset on CIFAR-shaped synthetic data (uint8 3 x 32 x 32, 5,000
     images, resident on the device) for mcl, csi, simclr, rotnet and ce: images/s, peak memory
     (torch.cuda.max_memory_allocated), FLOPs per step (FlopCounterMode) and model FLOP
     utilisation against the measured peak; then mcl and csi under torch.compile;
  3. end to end through the CLI on the device: one-class Fashion-MNIST (one class, paper preset,
     epochs cut) and the unlabeled OOD protocol on its offline OOD sets; checks that rows,
     scores and leaderboards are written and every AUROC is finite;
  4. benchmarks/train_throughput.py and benchmarks/score_throughput.py on the device (ratios);
  5. the projected wall time of the paper-preset one-class CIFAR-10 (10 classes, training only)
     per method from the measured images/s;
  6. per training step also its aten operators and host time, and what a checkpoint costs the
     step (written in it, or copied in it and written behind it); mcl and csi compiled in each
     of COMPILE_MODES (reduce-overhead: CUDA graphs, on CUDA only);
  7. 4 CSI one-class jobs at once 1, 2 and 4 per device (`--jobs-per-device`); an MCL job
     killed after its first checkpoint and resumed, under --deterministic, against an
     uninterrupted run.
Everything goes to gpu_check.json and gpu_check.md under `--out` (default $OUT, else
results/gpu/<device>), and a summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import checkpoint_cost, top_level_ops  # noqa: E402

from bench.config import build_method_config, load_preset  # noqa: E402
from bench.datasets import ImageSet  # noqa: E402
from bench.nn import train as engine  # noqa: E402
from bench.nn.context import FitContext  # noqa: E402
from bench.nn.devices import select_device  # noqa: E402
from bench.nn.optim import make_optimizer  # noqa: E402
from bench.nn.precision import resolve  # noqa: E402
from bench.registry import METHODS  # noqa: E402

METHODS_TIMED = ("mcl", "csi", "simclr", "rotnet", "ce")
COMPILED = ("mcl", "csi")
# torch.compile modes timed for COMPILED: default, and CUDA graphs of the step (CUDA only)
COMPILE_MODES = ("default", "reduce-overhead")
CIFAR_TRAIN_PER_CLASS = 5000  # one-class CIFAR-10 trains on the 5,000 images of a class


class Budget:
    """Seconds left of --budget-s; a stage runs only if its estimate fits."""

    def __init__(self, seconds: float):
        self.start, self.total = time.monotonic(), seconds

    def left(self) -> float:
        return self.total - (time.monotonic() - self.start)

    def fits(self, name: str, estimate: float, skipped: list[str]) -> bool:
        if estimate <= self.left():
            return True
        line = (f"skipped {name}: needs ~{estimate:.0f} s, {max(0.0, self.left()):.0f} s of the "
                "budget left")
        print(line, flush=True)
        skipped.append(line)
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, smoke: bool) -> float:
    """Measured bf16 matmul TFLOP/s of a large square GEMM (the physical ceiling)."""
    n = 512 if smoke else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 3 if smoke else 50
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def environment(device: torch.device, smoke: bool) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "smoke": smoke}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, cuda=torch.version.cuda, memory_gib=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
    else:
        info["name"] = platform.processor() or platform.machine()
    info["precision_auto"] = resolve("auto", device).describe()
    info["bf16_matmul_tflops"] = matmul_peak(device, smoke)
    return info


def step_flops(det, images, labels, batch: int) -> float:
    """FLOPs of one training step (forward + backward) counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    idx = torch.arange(batch, device=images.device)
    counter = FlopCounterMode(display=False)
    with counter:
        loss = det.training_loss(images[idx], labels[idx])
        loss.backward()
    det.model_.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_training(method: str, device: torch.device, smoke: bool, compile_: str,
                  peak_tflops: float) -> dict:
    """Images/s of the engine's training step at the paper preset (smoke: tiny sizes), its
    operators and host time per step, and (uncompiled) what a checkpoint costs the step.
    `compile_`: '' (eager) or a torch.compile mode."""
    cls = METHODS.load_object(method)
    overrides = []
    if smoke:
        from bench.config import parse_overrides

        overrides = parse_overrides(["backbone=resnet-tiny", "batch_size=8", "proj_hidden=16",
                                     "proj_dim=8"])
    cfg = build_method_config(method, cls.Config, load_preset("paper"), overrides)
    n = 64 if smoke else 5000
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g), tuple("0123456789"), "synthetic")
    precision = resolve("auto", device)
    det = cls(cfg)
    det.ctx_ = FitContext(device=device, precision=precision, labeled=cls.needs_labels)
    det.n_classes_ = 10
    det.model_ = engine.prepare_model(det.build_model(data), device, precision)
    images, labels = engine.device_images(data.images, device), data.labels.to(device)
    batch = min(cfg.batch_size, n)
    flops = step_flops(det, images, labels, batch)
    if compile_:
        from bench.methods.network import compile_options

        det.model_.compile(**compile_options(compile_))
    opt = make_optimizer(det.model_.parameters(), cfg)
    det.model_.train()

    def step(i: int) -> None:
        start = (i * batch) % (n - batch + 1)
        idx = torch.arange(start, start + batch, device=device)
        with precision.autocast(device):
            loss = det.training_loss(images[idx], labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    warmup, timed = (1, 2) if smoke else ((6, 20) if compile_ else (3, 15))
    t_compile = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync(device)
    warm_s = time.perf_counter() - t_compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(timed):
        step(warmup + i)
    sync(device)
    seconds = (time.perf_counter() - t0) / timed
    host = []  # the step's host time: issuing it, the device not waited for
    for i in range(3):
        sync(device)
        t1 = time.perf_counter()
        step(warmup + timed + i)
        host.append(time.perf_counter() - t1)
    sync(device)
    ops = top_level_ops(lambda: step(0)) if not compile_ else None
    out_ckpt = checkpoint_cost(det.model_, opt, device) if not compile_ else {}
    out = {"method": method, "compiled": compile_ or "", "backbone": cfg.backbone, "batch": batch,
           "ops_per_step": ops, "host_ms": 1000 * min(host), **out_ckpt,
           "images_per_s": batch / seconds, "step_ms": 1000 * seconds,
           "gflop_per_step": flops / 1e9, "achieved_tflops": flops / seconds / 1e12,
           "mfu": flops / seconds / 1e12 / peak_tflops if peak_tflops else float("nan"),
           "warmup_s": warm_s, "epochs_paper": cfg.epochs, "precision": precision.describe()}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def project(timing: dict) -> dict:
    """Training wall time of the paper-preset one-class CIFAR-10: 10 classes x epochs x 5,000
    images at the measured rate (scoring not included)."""
    images = 10 * timing["epochs_paper"] * CIFAR_TRAIN_PER_CLASS
    hours = images / timing["images_per_s"] / 3600
    return {"method": timing["method"], "epochs": timing["epochs_paper"], "hours_10_classes":
            hours, "hours_per_class": hours / 10}


def run_cli(args: list[str], timeout: float) -> tuple[int, str]:
    try:
        proc = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                              text=True, timeout=max(1, timeout), cwd=ROOT)
        return proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        return 124, f"timed out after {exc.timeout:.0f} s"


def check_run(out: Path) -> dict:
    """Rows, scores and leaderboard written; every AUROC finite."""
    import numpy as np
    import pandas as pd

    rows = pd.read_csv(out / "results.csv") if (out / "results.csv").exists() else pd.DataFrame()
    auroc = rows[rows["metric"] == "auroc"]["value"] if not rows.empty else pd.Series(dtype=float)
    return {"rows": len(rows), "scores_files": len(list(out.glob("jobs/*/scores.npz"))),
            "leaderboard": (out / "leaderboard" / "README.md").exists(),
            "auroc_finite": bool(len(auroc)) and bool(np.isfinite(auroc).all()),
            "auroc": {f"{r.method}/{r.score}/{r.ood_dataset}": round(100 * r.value, 1)
                      for r in rows[rows["metric"] == "auroc"].itertuples()} if not rows.empty
            else {}}


def end_to_end(device: torch.device, smoke: bool, data_dir: str | None, out: Path,
               budget: Budget, skipped: list[str]) -> list[dict]:
    common = ["--device", str(device), "--no-download", "--preset", "paper"]
    if data_dir:
        common += ["--data-dir", data_dir]
    size = (["--set", "backbone=resnet-tiny", "--set", "max_train_samples=64", "--set",
             "batch_size=16", "--set", "proj_hidden=16", "--set", "proj_dim=8"] if smoke else [])
    cases = [("one-class fashion-mnist class 0, mcl and csi at the paper preset, 2 epochs",
              ["run", "--datasets", "fashion-mnist", "--classes", "0", "--methods", "mcl,csi",
               "--set", "epochs=2", *size, *(["--set", "csi.ens_samples=1"] if smoke else [])],
              90 if smoke else 200, "oneclass"),
             ("ood fashion-mnist vs its offline OOD sets, mcl, 1 epoch",
              ["run", "--protocol", "ood", "--datasets", "fashion-mnist", "--methods", "mcl",
               "--ood", "digits,gaussian,uniform,interp", "--set", "epochs=1", *size],
              60 if smoke else 150, "ood")]
    results = []
    for name, args, estimate, folder in cases:
        if not budget.fits(f"end to end: {name}", estimate, skipped):
            continue
        run_dir = out / f"e2e-{folder}"
        if run_dir.exists():  # a fresh run: the check measures training, not skipped jobs
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        code, text = run_cli([*args, *common, "--out", str(run_dir)], budget.left() - 5)
        result = {"case": name, "exit_code": code, "seconds": time.perf_counter() - t0,
                  **check_run(run_dir)}
        if code != 0:
            result["tail"] = text[-2000:]
        results.append(result)
        print(f"end to end: {name}: exit {code}, {result['rows']} rows, AUROC finite "
              f"{result['auroc_finite']} ({result['seconds']:.0f} s)", flush=True)
    return results


def _data_args(device: torch.device, data_dir: str | None) -> list[str]:
    return ["--device", str(device), "--no-download", "--preset", "paper",
            *(["--data-dir", data_dir] if data_dir else [])]


TINY = ["--set", "backbone=resnet-tiny", "--set", "max_train_samples=64", "--set",
        "batch_size=16", "--set", "proj_hidden=16", "--set", "proj_dim=8"]


def jobs_per_device(device: torch.device, smoke: bool, data_dir: str | None, out: Path,
                    budget: Budget, skipped: list[str]) -> list[dict]:
    """Wall time of 4 CSI one-class jobs (Fashion-MNIST classes 0-3, 1 epoch) run 1, 2 and 4 at
    once on the one device (`--jobs-per-device`)."""
    results = []
    for n in (1, 2, 4):
        name = f"4 csi one-class jobs, --jobs-per-device {n}"
        if not budget.fits(name, 40 if smoke else 120, skipped):
            continue
        run_dir = out / f"jobs-per-device-{n}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        args = ["run", "--datasets", "fashion-mnist", "--classes", "0,1,2,3", "--methods", "csi",
                "--set", "epochs=1", "--set", "ens_samples=1", *(TINY if smoke else []),
                *_data_args(device, data_dir), "--jobs-per-device", str(n), "--out",
                str(run_dir)]
        t0 = time.perf_counter()
        code, text = run_cli(args, budget.left() - 5)
        result = {"jobs_per_device": n, "exit_code": code, "seconds": time.perf_counter() - t0}
        if code != 0:
            result["tail"] = text[-1500:]
        results.append(result)
        print(f"{name}: exit {code}, {result['seconds']:.0f} s", flush=True)
    return results


def resume_after_kill(device: torch.device, smoke: bool, data_dir: str | None, out: Path,
                      budget: Budget, skipped: list[str]) -> dict | None:
    """An MCL job (one-class Fashion-MNIST class 0, 4 epochs, a checkpoint each epoch, under
    --deterministic) killed after its first checkpoint and run again must give the rows of an
    uninterrupted run."""
    import shutil
    import signal

    import pandas as pd

    if not budget.fits("resume after a kill", 60 if smoke else 180, skipped):
        return None
    args = ["run", "--datasets", "fashion-mnist", "--classes", "0", "--methods", "mcl",
            "--set", "epochs=4", "--set", "checkpoint_every=1", "--deterministic",
            *(TINY if smoke else ["--set", "max_train_samples=2000"]),
            *_data_args(device, data_dir)]
    whole, killed = out / "resume-whole", out / "resume-killed"
    for folder in (whole, killed):
        if folder.exists():
            shutil.rmtree(folder)
    code, _ = run_cli([*args, "--out", str(whole)], budget.left() - 5)
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args, "--out", str(killed)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + max(5.0, budget.left() - 30)
    while time.monotonic() < deadline and proc.poll() is None:
        if list(killed.glob("models/*/checkpoint.pt")):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    was_killed = proc.returncode == -signal.SIGKILL
    again, text = run_cli([*args, "--out", str(killed)], budget.left() - 5)
    keys = ["method", "score", "ood_dataset", "seed", "metric"]

    def values(folder):
        rows = pd.read_csv(folder / "results.csv", keep_default_na=False)
        return rows.sort_values(keys)[keys + ["value"]].reset_index(drop=True)

    same = (code == 0 and again == 0 and values(whole).equals(values(killed)))
    result = {"killed_mid_training": was_killed, "resumed": "resuming" in text,
              "same_rows": bool(same), "exit_codes": [code, again]}
    print(f"resume after a kill: killed {was_killed}, resumed {result['resumed']}, rows equal "
          f"to an uninterrupted run: {same}", flush=True)
    return result


def benchmark_scripts(device: torch.device, smoke: bool, budget: Budget, skipped: list[str]
                      ) -> dict:
    out = {}
    train_args = (["--methods", "mcl", "--steps", "2", "--rounds", "1", "--workers", "0",
                   "--size", "16"] if smoke else
                  ["--preset", "paper", "--size", "32", "--channels", "3", "--methods",
                   "csi,mcl", "--rounds", "2"])
    score_args = ["--bank", "300", "--test", "300", "--samples", "2"] if smoke else []
    for name, script, args, estimate in (
            ("train_throughput", "train_throughput.py", train_args, 60 if smoke else 150),
            ("score_throughput", "score_throughput.py", score_args, 40 if smoke else 90)):
        if not budget.fits(f"benchmarks/{script}", estimate, skipped):
            continue
        try:
            proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--device",
                                   str(device), *args], capture_output=True, text=True,
                                  timeout=max(1, budget.left() - 5), cwd=ROOT)
            text, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired:
            text, code = "timed out", 124
        ratios = dict(re.findall(r"^([a-z_0-9]+): ([0-9.]+)$", text, re.MULTILINE))
        out[name] = {"exit_code": code, "ratios": {k: float(v) for k, v in ratios.items()},
                     "lines": [ln for ln in text.splitlines() if ln and "warn" not in ln.lower()][-12:]}
        print(f"{script}: exit {code}, {ratios}", flush=True)
    return out


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check: {env.get('name')} ({env['device']})", "",
             f"torch {env['torch']}, CUDA {env.get('cuda', '-')}, precision auto: "
             f"{env['precision_auto']}; measured bf16 matmul peak "
             f"{env['bf16_matmul_tflops']:.1f} TFLOP/s" + (" (smoke run)" if env["smoke"] else ""),
             "", "## Training steps (paper preset, 3 x 32 x 32, data on the device)", "",
             "| method | compiled | backbone | batch | images/s | step ms | host ms | operators | "
             "GFLOP/step | MFU | peak GiB | checkpoint s (in step / behind) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in report["training"]:
        ckpt = (f"{t['checkpoint_sync_s']:.2f} / {t['checkpoint_behind_s']:.2f}"
                if "checkpoint_sync_s" in t else "")
        lines.append(f"| {t['method']} | {t['compiled'] or 'no'} | {t['backbone']} | "
                     f"{t['batch']} | {t['images_per_s']:.0f} | {t['step_ms']:.1f} | "
                     f"{t['host_ms']:.1f} | {t['ops_per_step'] or ''} | "
                     f"{t['gflop_per_step']:.1f} | {100 * t['mfu']:.1f}% | "
                     f"{t.get('peak_memory_gib', float('nan')):.2f} | {ckpt} |")
    lines += ["", "## Projected paper-preset one-class CIFAR-10 (10 classes, training only)", "",
              "| method | epochs | hours per class | hours for 10 classes |", "|---|---|---|---|"]
    for p in report["projection"]:
        lines.append(f"| {p['method']} | {p['epochs']} | {p['hours_per_class']:.2f} | "
                     f"{p['hours_10_classes']:.1f} |")
    lines += ["", "## End to end through the CLI", ""]
    for e in report["end_to_end"]:
        lines.append(f"- {e['case']}: exit {e['exit_code']}, {e['rows']} rows, "
                     f"{e['scores_files']} score files, leaderboard {e['leaderboard']}, AUROC "
                     f"finite {e['auroc_finite']}, {e['seconds']:.0f} s; AUROC "
                     + ", ".join(f"{k} {v}" for k, v in list(e["auroc"].items())[:6]))
    lines += ["", "## Jobs per device (4 CSI one-class jobs, 1 epoch)", ""]
    for s in report["jobs_per_device"]:
        lines.append(f"- --jobs-per-device {s['jobs_per_device']}: exit {s['exit_code']}, "
                     f"{s['seconds']:.0f} s")
    r = report["resume_after_kill"]
    if r is not None:
        lines += ["", "## Resume after a kill (--deterministic)", "",
                  f"- killed mid-training {r['killed_mid_training']}, resumed {r['resumed']}, "
                  f"rows equal to an uninterrupted run {r['same_rows']}"]
    lines += ["", "## Benchmarks", ""]
    for name, b in report["benchmarks"].items():
        lines.append(f"- {name}: exit {b['exit_code']}, " + ", ".join(
            f"{k} {v}" for k, v in b["ratios"].items()))
    if report["skipped"]:
        lines += ["", "## Skipped", "", *[f"- {s}" for s in report["skipped"]]]
    lines += ["", f"Total {report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--budget-s", type=float, default=480.0, help="never run past this")
    p.add_argument("--out", default=None, help="default: $OUT, else results/gpu/<device name>")
    p.add_argument("--data-dir", default=None,
                   help="carried data (FashionMNIST/raw/*.gz); Debian's copy is found by itself")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, the same stages (CI)")
    p.add_argument("--methods", default=",".join(METHODS_TIMED))
    args = p.parse_args(argv)
    budget, skipped = Budget(args.budget_s), []
    device = select_device(args.device)
    env = environment(device, args.smoke)
    name = re.sub(r"[^A-Za-z0-9]+", "-", env["name"]).strip("-").lower() or device.type
    out = Path(args.out or os.environ.get("OUT") or ROOT / "results" / "gpu" / name)
    out.mkdir(parents=True, exist_ok=True)
    print(f"device: {env['name']} ({device}), torch {env['torch']}, precision auto "
          f"{env['precision_auto']}, bf16 peak {env['bf16_matmul_tflops']:.1f} TFLOP/s", flush=True)
    training = []
    chosen = args.methods.split(",")
    plan = [(m, "") for m in chosen] + [(m, mode) for mode in COMPILE_MODES for m in COMPILED
                                        if m in chosen]
    for method, compiled in plan:
        estimate = (20 if args.smoke else 25) + (60 if compiled and not args.smoke else 0)
        label = f"training {method}" + (f" compiled ({compiled})" if compiled else "")
        if args.smoke and compiled:  # Inductor needs a C++ toolchain and minutes on a CPU
            skipped.append(f"skipped {label}: --smoke does not compile")
            continue
        if compiled == "reduce-overhead" and device.type != "cuda":
            skipped.append(f"skipped {label}: CUDA graphs need a GPU")
            continue
        if not budget.fits(label, estimate, skipped):
            continue
        try:
            t = time_training(method, device, args.smoke, compiled, env["bf16_matmul_tflops"])
            training.append(t)
            print(f"{label}: {t['images_per_s']:.0f} img/s, {t['step_ms']:.1f} ms/step "
                  f"(host {t['host_ms']:.1f} ms"
                  + (f", {t['ops_per_step']} operators" if t["ops_per_step"] else "") + "), "
                  f"MFU {100 * t['mfu']:.1f}%"
                  + (f", peak {t['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in t else ""),
                  flush=True)
        except Exception as exc:  # noqa: BLE001 - a failing stage is reported, the rest runs
            training.append({"method": method, "compiled": compiled, "error": repr(exc)[:500]})
            print(f"{label}: FAILED {exc!r}"[:300], flush=True)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    good = [t for t in training if "error" not in t]
    projection = [project(t) for t in good if not t["compiled"]]
    e2e = end_to_end(device, args.smoke, args.data_dir, out, budget, skipped)
    sharing = jobs_per_device(device, args.smoke, args.data_dir, out, budget, skipped)
    resumed = resume_after_kill(device, args.smoke, args.data_dir, out, budget, skipped)
    benches = benchmark_scripts(device, args.smoke, budget, skipped)
    report = {"environment": env, "training": good,
              "failed": [t for t in training if "error" in t], "projection": projection,
              "end_to_end": e2e, "jobs_per_device": sharing, "resume_after_kill": resumed,
              "benchmarks": benches, "skipped": skipped,
              "seconds": time.monotonic() - budget.start, "budget_s": args.budget_s}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    for pj in projection:
        print(f"projected paper one-class CIFAR-10, {pj['method']}: {pj['hours_10_classes']:.1f} h "
              "for 10 classes (training)")
    failed = (bool(report["failed"]) or any(e["exit_code"] != 0 or not e["auroc_finite"]
                                            for e in e2e)
              or any(s["exit_code"] != 0 for s in sharing)
              or (resumed is not None and not resumed["same_rows"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
