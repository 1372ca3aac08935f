"""The writer lease of a dataset root, on a local directory and on the real S3 server (SeaweedFS):
writers started at the same moment (one wins, the other is told who), a crashed holder, a holder
that goes silent (its lease expires, is taken over, and it learns it lost it), and two real
`stablerep synthesize` builds of one root at once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stablerep.shards import read_lease, read_manifest, verify_dataset
from stablerep.shards.lease import LeaseHeld, WriterLease
from stablerep.synthesis import procedural_captions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _writer(*args):
    return subprocess.Popen([sys.executable, "-m", "tests.helpers.lease_writer", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_writers_started_at_the_same_moment_exactly_one_wins_each_round(dataset_root):
    rounds, period = 20, 1.2
    start = time.time() + 4.0  # both processes are up and importing well before the first round
    procs = [_writer("race", dataset_root, name, "--rounds", str(rounds), "--start", str(start),
                     "--period", str(period), "--hold", "0.4") for name in ("writer-a", "writer-b")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    results = [[json.loads(line) for line in out.splitlines()] for out, _ in outputs]
    for round_ in range(rounds):
        a, b = (r[round_] for r in results)
        assert abs(a["attempted"] - b["attempted"]) < 0.1, (round_, a, b)  # they really raced
        assert a["won"] != b["won"], (round_, a, b)  # exactly one holder
        winner, loser = (a, b) if a["won"] else (b, a)
        assert f"pid {winner['pid']})" in loser["message"] and dataset_root in loser["message"], loser["message"]
        assert "writer-" in loser["message"]
    wins = sum(r["won"] for r in results[0])
    assert read_lease(dataset_root)["released"] is True
    print(f"{rounds} rounds: writer-a won {wins}, writer-b won {rounds - wins}")


def test_a_crashed_holder_on_this_host_is_taken_over_at_once(dataset_root):
    holder = _writer("hold", dataset_root, "crashing build", "--ttl", "600")
    assert json.loads(holder.stdout.readline())["held"]
    with pytest.raises(LeaseHeld, match=rf"crashing build \(host [^,]+, pid {holder.pid}\)"):
        WriterLease(dataset_root, "second build", wait_s=0).acquire()
    holder.kill()  # SIGKILL: no release; the lease would live 600 s
    holder.communicate()
    started = time.monotonic()
    with WriterLease(dataset_root, "second build", wait_s=0):  # its process is gone: free at once
        assert read_lease(dataset_root)["holder"]["pid"] == os.getpid()
    took = time.monotonic() - started
    assert took < 10
    print(f"a SIGKILLed holder's 600 s lease was taken over in {took:.2f} s")


def test_a_silent_holder_expires_is_taken_over_and_learns_it_lost(dataset_root):
    holder = _writer("hold", dataset_root, "stalled build", "--ttl", "4")
    assert json.loads(holder.stdout.readline())["held"]
    os.kill(holder.pid, signal.SIGSTOP)  # a host that stops answering: alive, but renews nothing
    try:
        with pytest.raises(LeaseHeld, match="stalled build"):
            WriterLease(dataset_root, "next build", wait_s=0).acquire()
        started = time.monotonic()
        lease = WriterLease(dataset_root, "next build", wait_s=30, ttl_s=30).acquire()
        waited = time.monotonic() - started
        assert 1.0 < waited < 15, waited  # until the stalled lease ran out, not at once and not forever
        mine = read_lease(dataset_root)
        assert mine["purpose"] == "next build" and mine["holder"]["pid"] == os.getpid()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    out, _ = holder.communicate(timeout=30)
    assert holder.returncode == 3 and "lost" in json.loads(out.splitlines()[-1])  # it stops writing
    time.sleep(1.5)  # the woken holder's renewal thread ran: it must not have overwritten the lease
    assert read_lease(dataset_root)["token"] == mine["token"]
    lease.release()
    assert read_lease(dataset_root)["released"]
    print(f"a stopped holder's 4 s lease was taken over after {waited:.1f} s; the holder then reported: "
          f"{json.loads(out.splitlines()[-1])['lost']}")


SYNTH = ["--backend", "procedural", "--images-per-caption", "2", "--captions-per-shard", "4",
         "--resolution", "64", "--image-size", "32"]


@pytest.fixture(scope="module")
def caption_roots(tmp_path_factory):
    """Two caption roots of 20 captions each, with no caption in common."""
    tmp = tmp_path_factory.mktemp("lease-captions")
    captions = procedural_captions(40, seed=11)
    roots = []
    for name, part in (("a", captions[:20]), ("b", captions[20:])):
        (tmp / f"{name}.txt").write_text("\n".join(part) + "\n")
        root = str(tmp / name)
        done = subprocess.run([sys.executable, "-m", "stablerep", "captions", "sample", str(tmp / f"{name}.txt"),
                               "--out", root, "--n", "20"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        roots.append(root)
    return roots, set(captions)


def _build(source, out, wait_s, ttl_s=60):
    env = {**os.environ, "STABLEREP_LEASE_WAIT_S": str(wait_s), "STABLEREP_LEASE_TTL_S": str(ttl_s)}
    return subprocess.Popen([sys.executable, "-m", "stablerep", "synthesize", "--captions", source, "--out", out,
                             *SYNTH], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _paused_while_holding(proc, root, timeout=180):
    """SIGSTOP ``proc`` at a moment it holds the writer lease of ``root``, and return.

    The state is read only while the build is stopped, so what is read is what holds: the build
    cannot let go of the lease between the check and the pause. A build holds the lease from its
    start to its end (hundreds of milliseconds at the least), so a 20 ms slice finds it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGSTOP)
        lease = read_lease(root)
        if lease and not lease["released"] and lease["holder"]["pid"] == proc.pid:
            return
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.poll() is None, f"the first build ended without being seen holding the lease: {proc.communicate()}"
        time.sleep(0.02)
    raise AssertionError(f"the first build did not take the lease of {root} within {timeout} s")


def _two_builds(caption_roots, out, wait_s):
    procs = [_build(source, out, wait_s) for source in caption_roots[0]]
    return [(p, *p.communicate(timeout=300)) for p in procs]


def _captions_in(root):
    from stablerep.data.shards import iter_images

    return {row["caption"] for row in iter_images(root, ["caption"])}


def test_two_builds_appending_to_one_root_at_once_both_land_when_the_second_waits(caption_roots, dataset_root):
    results = _two_builds(caption_roots, dataset_root, wait_s=120)
    assert all(p.returncode == 0 for p, _, _ in results), [err[-1500:] for _, _, err in results]
    # the second build found the first one's captions appended and planned, and finished both
    totals = read_manifest(dataset_root)["totals"]
    assert (totals["shards"], totals["images"], totals["captions"]) == (10, 80, 40)
    assert verify_dataset(dataset_root, deep=True).ok
    assert _captions_in(dataset_root) == caption_roots[1]


def test_a_second_build_that_does_not_wait_fails_naming_the_first(caption_roots, dataset_root):
    # the second build starts once the first holds the lease (paused there, so however loaded the
    # machine, the first cannot have finished before the second asks); the first's lease outlives
    # the pause by far
    first = _build(caption_roots[0][0], dataset_root, wait_s=0, ttl_s=600)
    try:
        _paused_while_holding(first, dataset_root)
        second = _build(caption_roots[0][1], dataset_root, wait_s=0)
        second_out = second.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
    results = [(first, *first.communicate(timeout=300)), (second, *second_out)]
    failed = [(p, err) for p, _, err in results if p.returncode != 0]
    assert len(failed) == 1, [err[-1500:] for _, _, err in results]
    (proc, err), winner = failed[0], next(p for p, _, _ in results if p.returncode == 0)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: dataset root {dataset_root} is being written by stablerep synthesize")
    assert f"pid {winner.pid})" in lines[0]
    assert read_manifest(dataset_root)["totals"]["images"] == 40 and verify_dataset(dataset_root, deep=True).ok
