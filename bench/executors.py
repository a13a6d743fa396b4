"""Where jobs run: this machine (one process, or one worker per GPU / CPU share), Ray, or Slurm.

Executors never decide what a job computes: each calls `jobs.execute_job`, which writes the job's
folder atomically, so the same jobs give the same rows whichever executor runs them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
from collections.abc import Sequence

from bench.console import job_label as _label
from bench.console import log, record_line
from bench.errors import BenchError, FileError
from bench.jobs import Job, execute_job


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of `workers` processes sharing this machine: the cores split evenly,
    never more than OMP_NUM_THREADS when the user set it (as a single-process run obeys it)."""
    threads = max(1, cores() // max(1, workers))
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


class LocalExecutor:
    """Jobs on this machine: in this process (one worker), or one process per worker.

    ``devices`` lists devices, ``jobs_per_device`` workers each (spread over the devices in
    turn: cuda:0, cuda:1, cuda:0, ...); otherwise ``workers`` processes share the cores (torch
    threads split evenly between them) or, on CUDA, the visible GPUs in turn. A worker whose
    job hit a CUDA error is replaced by a fresh process (its CUDA context may be unusable).
    Workers print their progress as lines led by the job id (bars of several processes would
    overwrite each other).
    """

    def __init__(self, workers: int = 1, devices: Sequence[str] | None = None,
                 progress: bool = True, jobs_per_device: int = 1):
        self.jobs_per_device = max(1, jobs_per_device)
        self.devices = [d for _ in range(self.jobs_per_device) for d in (devices or [])]
        self.workers = len(self.devices) if self.devices else max(1, workers)
        self.progress = progress

    def _device_of(self, worker: int, device: str) -> str:
        if self.devices:
            return self.devices[worker]
        if device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available() and self.workers > 1:
                return f"cuda:{worker % torch.cuda.device_count()}"
        return device

    def run(self, jobs: list[Job], out: str, device: str, run_id: str) -> list[dict]:
        if not jobs:
            return []
        if min(self.workers, len(jobs)) == 1:
            dev = self._device_of(0, device)
            _use_device(dev)
            records = []
            for i, job in enumerate(jobs, 1):
                log(f"{_label(i, len(jobs), job)} ...")
                record = execute_job(job, out, dev, run_id, self.progress)
                log(f"{_label(i, len(jobs), job)} {record_line(record)}")
                records.append(record)
            return records
        return self._run_pool(jobs, out, device, run_id)

    def _run_pool(self, jobs, out, device, run_id) -> list[dict]:
        ctx = mp.get_context("spawn")
        todo, results = ctx.Queue(), ctx.Queue()
        workers = min(self.workers, len(jobs))  # never more processes than jobs
        for i, job in enumerate(jobs, 1):
            todo.put((i, job))
        for _ in range(workers):
            todo.put(None)  # one stop marker per worker
        threads = threads_per_worker(workers)

        def start(w: int):
            # not a daemon: torch.compile's worker pool must be able to start children
            p = ctx.Process(target=_worker, args=(todo, results, out, self._device_of(w, device),
                                                  run_id, threads, w, os.getpid(),
                                                  "lines" if self.progress else False))
            p.start()
            return p

        procs = {w: start(w) for w in range(workers)}
        records, finished = [], 0
        try:
            while finished < len(jobs):
                try:
                    i, record, restart = results.get(timeout=1.0)
                except queue.Empty:
                    if not any(p.is_alive() for p in procs.values()):
                        log("all workers exited before the queue was empty")
                        break
                    continue
                if i is None:  # a worker could not write the run directory: stop the run
                    raise FileError(record)
                finished += 1
                records.append(record)
                log(f"{_label(i, len(jobs), jobs[i - 1])} {record_line(record)}")
                if restart is not None:
                    procs[restart].join(timeout=30)
                    log(f"worker {restart}: restarted after a CUDA error")
                    todo.put(None)  # the old worker's stop marker is still queued: add one
                    procs[restart] = start(restart)
            for p in procs.values():
                p.join(timeout=10)
        finally:
            for p in procs.values():
                if p.is_alive():
                    p.terminate()
        return records


def _use_device(device: str) -> None:
    """Make a CUDA device the current one of this process (kernels land there by default)."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(device)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux), and exit now if the
    parent is already gone: a killed `bench run` leaves no worker behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _next_job(todo, parent_pid: int):
    """The next queued item, checking every second that the parent is still there (where the
    kernel does not kill orphans, e.g. macOS)."""
    while True:
        try:
            return todo.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:
                os._exit(1)


def _worker(todo, results, out: str, device: str, run_id: str, threads: int,
            worker: int, parent_pid: int, progress: bool | str = False) -> None:
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    _use_device(device)
    while True:
        item = _next_job(todo, parent_pid)
        if item is None:
            return
        i, job = item
        try:
            record = execute_job(job, out, device, run_id, progress=progress)
        except FileError as exc:
            results.put((None, str(exc), None))
            return
        poisoned = record.get("status") == "failed" and "cuda" in record.get("error", "").lower()
        results.put((i, record, worker if poisoned else None))
        if poisoned:
            return  # a CUDA error can leave this process's context unusable: start afresh


def execute_group(jobs: list[Job], out: str, device: str, run_id: str,
                  jobs_per_device: int) -> list[dict]:
    """Several jobs sharing one allocation's device, `jobs_per_device` at once (a Slurm array
    task of --jobs-per-device)."""
    return LocalExecutor(devices=[device], jobs_per_device=jobs_per_device,
                         progress=False).run(jobs, out, device, run_id)


def _ray_execute(job: Job, out: str, device: str, run_id: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return execute_job(job, out, device, run_id, progress=False)


class RayExecutor:
    """Each job a Ray task (``num_gpus=1 / jobs_per_device`` when the cluster has GPUs: Ray's
    fractional GPUs); ``workers`` caps concurrency."""

    def __init__(self, address: str | None = None, workers: int | None = None,
                 jobs_per_device: int = 1):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise BenchError("--executor ray needs Ray: pip install 'mcl-bench[ray]'") from None
        self.address = address
        self.workers = workers
        self.jobs_per_device = max(1, jobs_per_device)  # a task asks for 1/N of a GPU

    def run(self, jobs: list[Job], out: str, device: str, run_id: str) -> list[dict]:
        import ray

        if not jobs:
            return []
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {}
            if not self.address and self.workers:
                kwargs["num_cpus"] = self.workers
            if not self.address:
                Reaper().start()  # the local cluster dies with bench, even a killed one
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        gpus = ray.cluster_resources().get("GPU", 0)
        limit = self.workers or int(gpus * self.jobs_per_device
                                    or ray.cluster_resources().get("CPU", 1))
        threads = threads_per_worker(limit) if not self.address else 1
        task = ray.remote(num_gpus=1 / self.jobs_per_device if gpus else 0,
                          num_cpus=1)(_ray_execute)
        out_abs = os.path.abspath(out)
        pending, index, records = {}, 0, []
        while index < len(jobs) or pending:
            while index < len(jobs) and len(pending) < limit:
                job = jobs[index]
                index += 1
                ref = task.remote(job, out_abs, "auto" if gpus else device, run_id, threads)
                pending[ref] = (index, job)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, job = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the task itself died (worker crash, OOM kill)
                    record = {"job_id": job.job_id, "status": "failed", "error": str(exc)}
                records.append(record)
                log(f"{_label(i, len(jobs), job)} {record_line(record)}")
        return records


REAPER = r"""
import os, signal, sys, time
def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
watched = {}
for line in sys.stdin:  # pid:start pairs; EOF when bench exits or is killed
    for item in line.split():
        pid, _, start = item.partition(":")
        watched[int(pid)] = start
for sig in (signal.SIGTERM, signal.SIGKILL):
    alive = [p for p, s in watched.items() if started(p) == s]
    for pid in alive:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    if not alive:
        break
    time.sleep(2)
"""


def _process_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Reaper:
    """A small process that outlives a killed `bench run` and stops the processes bench started
    below it (a local Ray cluster's agents are left running otherwise): every `interval_s` a
    thread tells it the current ones; it acts when its pipe from bench closes."""

    def __init__(self, interval_s: float = 2.0):
        self.proc = None
        self.interval_s = interval_s
        self.seen: set[int] = set()

    def start(self) -> Reaper:
        import subprocess
        import threading

        if os.path.isdir("/proc"):
            self.proc = subprocess.Popen([sys.executable, "-c", REAPER], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, text=True)
            threading.Thread(target=self._loop, daemon=True, name="bench-reaper").start()
        return self

    def _loop(self) -> None:
        import time

        while self.proc is not None:
            self.watch()
            time.sleep(self.interval_s)

    def watch(self) -> None:
        if self.proc is None:
            return
        new = descendants(os.getpid()) - self.seen - {self.proc.pid}
        pairs = [f"{pid}:{start}" for pid in sorted(new) if (start := _process_start(pid))]
        self.seen |= new
        if pairs:
            try:
                self.proc.stdin.write(" ".join(pairs) + "\n")
                self.proc.stdin.flush()
            except OSError:
                self.proc = None


class SlurmExecutor:
    """A submitit job array, one array task per job; waits and collects unless ``wait=False``.

    Submissions are remembered in ``<out>/slurm/``; running the same command again collects
    finished jobs and does not resubmit jobs that are still queued or running.
    """

    def __init__(self, partition: str | None = None, time_min: int = 240, gpus_per_job: int = 1,
                 wait: bool = True, cluster: str | None = None, cpus_per_job: int = 4,
                 array_parallelism: int = 64, jobs_per_device: int = 1):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise BenchError("--executor slurm needs submitit: pip install 'mcl-bench[slurm]'") from None
        self.partition = partition
        self.time_min = time_min
        self.gpus_per_job = gpus_per_job
        self.wait = wait
        self.cluster = cluster  # None: Slurm; "local": submitit's local executor (tests)
        self.cpus_per_job = cpus_per_job
        self.array_parallelism = array_parallelism
        # > 1: each array task holds that many jobs and runs them at once on its GPU
        self.jobs_per_device = max(1, jobs_per_device)

    def _executor(self, folder: str):
        import submitit

        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        params = dict(timeout_min=self.time_min, cpus_per_task=self.cpus_per_job,
                      slurm_array_parallelism=self.array_parallelism)
        if self.cluster != "local":
            params["gpus_per_node"] = self.gpus_per_job
            if self.partition:
                params["slurm_partition"] = self.partition
        ex.update_parameters(**params)
        return ex

    def run(self, jobs: list[Job], out: str, device: str, run_id: str) -> list[dict]:
        from bench.files import atomic_write_json

        if not jobs:
            return []
        folder = os.path.join(os.path.abspath(out), "slurm")
        queued = _still_queued(folder, jobs)
        submit = [j for j in jobs if j.job_id not in queued]
        if queued:
            log(f"{len(queued)} jobs are still queued or running on Slurm; not resubmitted")
        handles = []
        n = self.jobs_per_device
        groups = [submit[i:i + n] for i in range(0, len(submit), n)]
        if submit:
            ex = self._executor(os.path.join(folder, "%j"))
            dev = "auto" if self.cluster != "local" else device
            out_abs = os.path.abspath(out)
            if n == 1:
                handles = ex.map_array(execute_job, submit, [out_abs] * len(submit),
                                       [dev] * len(submit), [run_id] * len(submit),
                                       [False] * len(submit))
            else:  # one array task per group, its jobs at once on the task's GPU
                handles = ex.map_array(execute_group, groups, [out_abs] * len(groups),
                                       [dev] * len(groups), [run_id] * len(groups),
                                       [n] * len(groups))
            for group, handle in zip(groups, handles):
                for job in group:
                    atomic_write_json(os.path.join(folder, "submitted", f"{job.job_id}.json"),
                                      {"job_id": job.job_id, "slurm_job_id": handle.job_id,
                                       "folder": str(handle.paths.folder)})
            log(f"submitted {len(submit)} jobs as a job array of {len(handles)} tasks "
                f"({handles[0].job_id.split('_')[0]})")
        if not self.wait:
            log("--no-wait: not waiting; run the same command again to collect the results")
            return []
        records = []
        done = 0
        for group, handle in zip(groups, handles):
            try:
                result = handle.result()
                got = result if isinstance(result, list) else [result]
            except Exception as exc:
                error = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
                got = [{"job_id": job.job_id, "status": "failed", "error": error}
                       for job in group]
            for job, record in zip(group, got):
                done += 1
                records.append(record)
                log(f"{_label(done, len(submit), job)} {record_line(record)}")
        return records


def expand_array_ids(text: str) -> set[str]:
    """Slurm job ids as squeue prints them, one array element each: ``123_4`` stays, a folded
    pending array ``123_[4-9%2]`` or ``123_[1,3,5-7]`` becomes 123_4 ... 123_9."""
    base, sep, rest = text.partition("_[")
    if not sep:
        return {text}
    out = set()
    for part in rest.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (hi.isdigit() or not hi):
            out |= {f"{base}_{k}" for k in range(int(lo), int(hi or lo) + 1)}
    return out


def _submitted(folder: str, jobs: list[Job]) -> dict[str, str]:
    """{job id: Slurm job id} of the jobs submitted earlier from this run directory."""
    import json

    sub = os.path.join(folder, "submitted")
    states = {}
    for job in jobs:
        path = os.path.join(sub, f"{job.job_id}.json")
        try:
            with open(path) as f:
                states[job.job_id] = str(json.load(f)["slurm_job_id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return states


def _still_queued(folder: str, jobs: list[Job]) -> set[str]:
    """Job ids submitted earlier whose Slurm job is still pending or running. ``squeue -r`` prints
    every array element on its own line (without it, pending elements are folded onto one line,
    ``123_[4-9]``, which is expanded too)."""
    import subprocess

    states = _submitted(folder, jobs)
    if not states:
        return set()
    try:
        ids = ",".join(sorted({s.split("_")[0] for s in states.values()}))
        out = subprocess.run(["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    active = set()
    for line in out.splitlines():
        if line.strip():
            active |= expand_array_ids(line.split()[0])
    return {job_id for job_id, slurm_id in states.items() if slurm_id in active}


def make_executor(name: str, workers: int = 1, devices: str | None = None,
                  ray_address: str | None = None, slurm_partition: str | None = None,
                  slurm_time: int = 240, slurm_gpus_per_job: int = 1, wait: bool = True,
                  progress: bool = True, jobs_per_device: int = 1, device: str = "auto"):
    if jobs_per_device < 1:
        raise BenchError("--jobs-per-device must be at least 1")
    if name == "local":
        listed = parse_devices(devices)
        if jobs_per_device > 1 and not listed:
            listed = _local_devices(device, workers)
        return LocalExecutor(workers=workers, devices=listed, progress=progress,
                             jobs_per_device=jobs_per_device)
    if name == "ray":
        return RayExecutor(address=ray_address, workers=workers if workers > 1 else None,
                           jobs_per_device=jobs_per_device)
    if name in ("slurm", "slurm-local"):
        if jobs_per_device > 1 and slurm_gpus_per_job != 1:
            raise BenchError("--jobs-per-device shares one GPU between jobs: give it with "
                             "--slurm-gpus-per-job 1")
        if name == "slurm-local":  # submitit's local executor: the Slurm path without a cluster
            return SlurmExecutor(wait=wait, cluster="local", jobs_per_device=jobs_per_device)
        return SlurmExecutor(partition=slurm_partition, time_min=slurm_time,
                             gpus_per_job=slurm_gpus_per_job, wait=wait,
                             jobs_per_device=jobs_per_device)
    raise BenchError(f"unknown executor {name!r} (local, ray, slurm)")


def _local_devices(device: str, workers: int) -> list[str]:
    """The devices --jobs-per-device shares without --devices: every visible GPU (device auto
    or cuda), else the one device named (the CPU: N jobs at once, its cores split)."""
    if workers > 1:
        raise BenchError("--jobs-per-device N runs N jobs on each device; --workers sets the "
                         "number of processes without it: give one of them")
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return parse_devices("all")
    return ["cpu" if device == "auto" else device]


def parse_devices(devices: str | None, device_count: int | None = None) -> list[str]:
    """``0,1,3`` -> cuda:0, cuda:1, cuda:3; ``all`` -> every visible GPU. Indices count the
    GPUs this process sees (after CUDA_VISIBLE_DEVICES) and must exist."""
    if not devices:
        return []
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count()
    if devices == "all":
        if device_count == 0:
            raise BenchError("--devices all: no CUDA device is visible")
        return [f"cuda:{i}" for i in range(device_count)]
    out = []
    for part in devices.split(","):
        part = part.strip()
        if not part.isdigit():
            raise BenchError(f"--devices {devices!r}: expected GPU indices like 0,1 or 'all'")
        if int(part) >= device_count:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise BenchError(f"--devices {devices}: GPU {part} does not exist; this process "
                             f"sees {device_count} GPU(s)"
                             + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible else ""))
        out.append(f"cuda:{part}")
    return list(dict.fromkeys(out))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("bench.executors is a library module")
