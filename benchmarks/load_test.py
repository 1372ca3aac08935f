"""Load test of the stack on loopback: many shard batches as flow runs, several workers, busy API.

`deployments/stack.sh up` (auth, heartbeats, the missing-heartbeat automation) with WORKERS process
workers on the gpu pool; one build-dataset run fans BATCHES one-shard batches out as flow runs of
synthesize-shards/gpu (procedural backend, small shards) while CLIENTS threads read the API the way
dashboards do. Reported: throughput (batches/min) against the same dataset built sequentially in one
process in the same run, the API latency those clients saw (p50/p95), failures and retries, and
whether the dataset is complete and identical (manifest, shard sha256) to the sequential build.
With --kills K, K gpu workers are killed at random moments (SIGKILL to the worker and its flow-run
processes, as a lost host) and started again; the automation marks their runs Crashed and the
build runs those batches again. Every request goes to 127.0.0.1 and is bounded in count and time.

    python benchmarks/load_test.py [--batches 200] [--workers 4] [--clients 20] [--kills 0]
                                   [--out benchmarks/results/load_test.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
READS = [("POST", "/flow_runs/filter", {"limit": 50, "sort": "START_TIME_DESC"}), ("POST", "/flow_runs/count", {}),
         ("POST", "/deployments/filter", {"limit": 20}), ("POST", "/work_pools/filter", {}),
         ("POST", "/logs/filter", {"limit": 50, "sort": "TIMESTAMP_DESC"}), ("POST", "/artifacts/filter", {"limit": 20})]
SYNTHESIS = {"backend": "procedural", "images_per_caption": 2, "captions_per_shard": 2, "resolution": 64,
             "image_size": 32, "image_format": "png"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


class Stack:
    """`deployments/stack.sh` on a free port in DIRECTORY; stopped on exit."""

    def __init__(self, directory: Path, workers: int, zombie_after_s: int, pending_after_s: int):
        self.dir = directory
        port = _free_port()
        self.env = {**os.environ, "PREFECT_PORT": str(port), "STACK_DIR": str(directory),
                    "PYTHON_BIN": str(Path(sys.executable).parent), "STACK_GPU_WORKERS": str(workers),
                    "STACK_ZOMBIE_AFTER_S": str(zombie_after_s), "STACK_PENDING_AFTER_S": str(pending_after_s),
                    "PREFECT_WORKER_QUERY_SECONDS": "2"}
        for key in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_API_AUTH_STRING"):
            self.env.pop(key, None)
        self.api = f"http://127.0.0.1:{port}/api"

    def _script(self, command: str) -> None:
        done = subprocess.run([str(REPO / "deployments/stack.sh"), command], env=self.env, capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh {command} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def __enter__(self) -> Stack:
        self._script("up")
        line = (self.dir / "auth.env").read_text().strip().split("=", 1)[1]
        self.client = httpx.Client(base_url=self.api, auth=tuple(line.split(":", 1)), timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self._script("down")

    def call(self, method: str, path: str, body=None):
        response = self.client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def log_count(self, name: str, needle: str) -> int:
        """Lines of DIR/NAME.log that contain ``needle``."""
        return sum(needle in line for line in (self.dir / f"{name}.log").read_text(errors="replace").splitlines())

    def gpu_workers(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in self.dir.glob("worker-gpu*.pid")}

    def kill_worker(self, pid: int) -> int:
        """SIGKILL the worker and every process under it (a lost host); returns how many died."""
        killed = 0
        for p in _descendants(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
                killed += 1
        return killed

    def restart_workers(self) -> None:
        self._script("workers")


class Readers:
    """CLIENTS threads, each reading the API in a loop (THINK_S between requests) until stopped."""

    def __init__(self, stack: Stack, clients: int, think_s: float):
        self.stack, self.clients, self.think_s = stack, clients, think_s
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(clients)]

    def _read(self, index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=self.stack.api, auth=self.stack.client.auth, timeout=30) as client:
            while not self._stop.wait(self.think_s * rng.uniform(0.5, 1.5)):
                method, path, body = rng.choice(READS)
                started = time.perf_counter()
                try:
                    client.request(method, path, json=body).raise_for_status()
                    self.latencies.append(time.perf_counter() - started)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{path}: {type(exc).__name__}: {exc}"[:200])

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def summary(self) -> dict:
        ms = sorted(x * 1000 for x in self.latencies)
        pct = (lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)) if ms else (lambda q: None)
        return {"clients": self.clients, "requests": len(ms), "failures": len(self.failures),
                "failure_samples": self.failures[:5], "p50_ms": pct(0.50), "p95_ms": pct(0.95), "max_ms": pct(1.0),
                "mean_ms": round(statistics.fmean(ms), 1) if ms else None}


def _flow_run_of(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
                return entry.split(b"=", 1)[1].decode()
    return None


class Chaos:
    """KILLS times, after a random pause, kill a gpu worker chosen at random among those running a
    batch (with ``running_only``: a batch whose run is Running), then start it again."""

    def __init__(self, stack: Stack, kills: int, seed: int, gap_s: tuple[float, float], running_only: bool):
        self.stack, self.kills, self.rng, self.gap_s = stack, kills, random.Random(seed), gap_s
        self.running_only = running_only
        self.events: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _busy(self) -> dict[str, tuple[int, str, str]]:
        """{worker: (pid, flow run, its state)} for the gpu workers running a batch now."""
        out = {}
        for name, pid in self.stack.gpu_workers().items():
            runs = {_flow_run_of(p) for p in _descendants(pid)[1:]} - {None}
            if runs:
                run = runs.pop()
                state = self.stack.call("GET", f"/flow_runs/{run}")["state"]["type"]
                if state == "RUNNING" or not self.running_only:
                    out[name] = (pid, run, state)
        return out

    def _run(self) -> None:
        while len(self.events) < self.kills and not self._stop.wait(self.rng.uniform(*self.gap_s)):
            while not (busy := self._busy()) and not self._stop.wait(0.3):
                pass
            if not busy:
                return
            name = self.rng.choice(sorted(busy))
            pid, run, state = busy[name]
            processes = self.stack.kill_worker(pid)
            self.events.append({"at_s": round(time.monotonic() - self.started, 1), "worker": name, "flow_run": run,
                                "state_at_kill": state, "processes_killed": processes})
            time.sleep(3)
            self.stack.restart_workers()

    def __enter__(self) -> Chaos:
        self.started = time.monotonic()
        if self.kills:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)

    def outcomes(self, children: list[dict]) -> list[dict]:
        """Each kill with the killed run's final state and whether its batch completed in another run."""
        by_id = {c["id"]: c for c in children}
        out = []
        for event in self.events:
            killed = by_id.get(event["flow_run"], {})
            shards = killed.get("parameters", {}).get("shards")
            reruns = [c for c in children if c["parameters"].get("shards") == shards and c["id"] != event["flow_run"]]
            out.append({**event, "final_state": killed.get("state", {}).get("type"),
                        "batch_completed_by_a_rerun": any(c["state"]["type"] == "COMPLETED" for c in reruns)})
        return out


def _fingerprint(root: str) -> list[tuple[int, str, int]]:
    from stablerep.shards import read_manifest

    return [(s["index"], s["sha256"], s["rows"]) for s in read_manifest(root)["shards"]]


def _cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "stablerep", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"stablerep {args[0]} failed: {done.stderr[-2000:]}")


def sequential_build(tmp: Path, batches: int) -> tuple[str, float]:
    """The corpus and the reference: the same dataset built in one `stablerep synthesize` process."""
    from stablerep.synthesis import procedural_captions

    n = batches * SYNTHESIS["captions_per_shard"]
    (tmp / "corpus.txt").write_text("\n".join(procedural_captions(n, seed=21)) + "\n")
    root = str(tmp / "sequential")
    _cli("captions", "sample", str(tmp / "corpus.txt"), "--out", root, "--n", str(n))
    options = [f"--{k.replace('_', '-')}={v}" for k, v in SYNTHESIS.items() if k != "image_format"]
    started = time.perf_counter()
    _cli("synthesize", "--captions", root, "--out", root, *options, f"--format={SYNTHESIS['image_format']}")
    return root, time.perf_counter() - started


def _children(stack: Stack, parent: str) -> list[dict]:
    out: list[dict] = []
    while page := stack.call("POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}},
                                                           "limit": 200, "offset": len(out)}):
        out += page
    return [c for c in out if c.get("deployment_id")]


def _task_retries(stack: Stack, runs: list[str]) -> int:
    retried = 0
    for i in range(0, len(runs), 100):
        tasks = stack.call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": runs[i:i + 100]}}, "limit": 200})
        retried += sum(max(0, t["run_count"] - 1) for t in tasks)
    return retried


def load_run(stack: Stack, tmp: Path, name: str, batches: int, clients: int, think_s: float, kills: int,
             seed: int, timeout_s: float, kill_gap_s: tuple[float, float], running_only: bool) -> dict:
    """One build of BATCHES batches under load (and KILLS worker kills); its figures."""
    from stablerep.shards import verify_dataset

    root = str(tmp / name)
    request = {"root": root, "captions": {"source": str(tmp / "corpus.txt"), "n": batches * SYNTHESIS["captions_per_shard"]},
               "synthesis": SYNTHESIS, "shards_per_task": 1, "fan_out": "deployment", "batch_attempts": 4}
    deployment = stack.call("GET", "/deployments/name/build-dataset/default")
    locked_before = stack.log_count("server", "database is locked")
    with Readers(stack, clients, think_s) as readers, Chaos(stack, kills, seed, kill_gap_s, running_only) as chaos:
        started = time.monotonic()
        parent = stack.call("POST", f"/deployments/{deployment['id']}/create_flow_run",
                            {"parameters": {"request": request}})["id"]
        while (state := stack.call("GET", f"/flow_runs/{parent}")["state"]["type"]) not in (
                "COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            if time.monotonic() - started > timeout_s:
                state = f"TIMED OUT ({state} after {timeout_s:.0f} s)"
                break
            time.sleep(2)
        wall = time.monotonic() - started
    children = _children(stack, parent)
    states = [c["state"]["type"] for c in children]
    complete = state == "COMPLETED"
    return {"run": name, "build_state": state,
            "build_message": None if complete else stack.call("GET", f"/flow_runs/{parent}")["state"]["message"],
            "server_db_locked_errors": stack.log_count("server", "database is locked") - locked_before,
            "batches": batches, "wall_s": round(wall, 1),
            "batches_per_min": round(batches / wall * 60, 1), "api": readers.summary(),
            "batch_flow_runs": len(children), "crashed_runs": states.count("CRASHED"),
            "failed_runs": states.count("FAILED"), "batches_rerun": len(children) - batches,
            "task_retries": _task_retries(stack, [c["id"] for c in children]), "kills": chaos.outcomes(children),
            "dataset_verified": complete and verify_dataset(root, deep=True).ok,
            "fingerprint": _fingerprint(root) if complete else None}


def run_load_test(batches: int, workers: int, clients: int, kills: int, think_s: float = 1.0, seed: int = 0,
                  zombie_after_s: int = 60, pending_after_s: int = 180, timeout_s: float = 3600,
                  runs: tuple[str, ...] = ("clean",), kill_gap_s: tuple[float, float] = (10, 40),
                  running_only: bool = False, save: Path | None = None) -> dict:
    """The sequential reference, then each of RUNS ("clean": no kills; "kills": KILLS worker kills);
    the results so far are written to ``save`` after each run."""
    tmp = Path(tempfile.mkdtemp(prefix="stablerep-load-"))
    settings = {"batches": batches, "gpu_workers": workers, "clients": clients, "think_s": think_s,
                "zombie_after_s": zombie_after_s, "pending_after_s": pending_after_s, "kill_gap_s": kill_gap_s,
                "kill_running_only": running_only, "synthesis": SYNTHESIS, "shards_per_batch": 1,
                "worker_query_s": 2, "heartbeat_s": 30, "timeout_s": timeout_s}
    try:
        return _run_all(tmp, settings, kills, seed, runs, save)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_all(tmp: Path, settings: dict, kills: int, seed: int, runs: tuple[str, ...], save: Path | None) -> dict:
    batches = settings["batches"]
    reference, sequential_s = sequential_build(tmp, batches)
    expected = _fingerprint(reference)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                           "load_average_at_start": os.getloadavg()},
               "settings": settings,
               "sequential": {"wall_s": round(sequential_s, 1), "batches_per_min": round(batches / sequential_s * 60, 1)},
               "runs": []}
    with Stack(tmp / "stack", settings["gpu_workers"], settings["zombie_after_s"], settings["pending_after_s"]) as stack:
        for name in runs:
            run = load_run(stack, tmp, name, batches, settings["clients"], settings["think_s"],
                           kills if name == "kills" else 0, seed, settings["timeout_s"], tuple(settings["kill_gap_s"]),
                           settings["kill_running_only"])
            run["identical_to_sequential"] = run.pop("fingerprint") == expected
            run["vs_sequential"] = round(run["batches_per_min"] / results["sequential"]["batches_per_min"], 3)
            run["load_average_at_end"] = os.getloadavg()
            results["runs"].append(run)
            if save is not None:
                save.parent.mkdir(parents=True, exist_ok=True)
                save.write_text(json.dumps(results, indent=1) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="process workers on the gpu pool")
    parser.add_argument("--clients", type=int, default=20, help="threads reading the API at the same time")
    parser.add_argument("--think-s", type=float, default=1.0, help="mean pause between a client's requests")
    parser.add_argument("--kills", type=int, default=4, help="worker kills in the second run (0: no second run)")
    parser.add_argument("--zombie-after-s", type=int, default=60, help="the automation's silence threshold")
    parser.add_argument("--pending-after-s", type=int, default=180, help="the automation's threshold for Pending")
    parser.add_argument("--timeout-s", type=float, default=3600, help="give up on a build after this long")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/load_test.json"))
    args = parser.parse_args()
    runs = ("clean", "kills") if args.kills else ("clean",)
    results = run_load_test(args.batches, args.workers, args.clients, args.kills, args.think_s,
                            zombie_after_s=args.zombie_after_s, pending_after_s=args.pending_after_s,
                            timeout_s=args.timeout_s, runs=runs, save=Path(args.out))
    print(f"sequential (one process): {results['sequential']['batches_per_min']} batches/min")
    for run in results["runs"]:
        api = run["api"]
        print(f"{run['run']}: {run['batches_per_min']} batches/min ({run['vs_sequential']}x sequential), API p50 "
              f"{api['p50_ms']} ms p95 {api['p95_ms']} ms over {api['requests']} requests, {api['failures']} failed; "
              f"batch runs {run['batch_flow_runs']} ({run['crashed_runs']} crashed, {run['batches_rerun']} rerun), "
              f"task retries {run['task_retries']}, kills {len(run['kills'])}, server 'database is locked' errors "
              f"{run['server_db_locked_errors']}; build {run['build_state']}, identical: {run['identical_to_sequential']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
