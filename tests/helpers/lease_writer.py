"""A process that competes for a dataset root's writer lease (for tests/shards/test_lease.py).

    python -m tests.helpers.lease_writer race ROOT NAME --rounds N --start T0 --period P --hold H
        at T0, T0+P, ...: try the lease once (no waiting), hold it H seconds if won; one JSON line a round
    python -m tests.helpers.lease_writer hold ROOT NAME --ttl S
        take the lease, then check it every 0.1 s until it is lost (exit 3) or SIGTERM
"""

import argparse
import json
import os
import sys
import time

from stablerep.shards.lease import LeaseHeld, LeaseLost, WriterLease, read_lease


def race(args) -> None:
    read_lease(args.root)  # connect to the store before the first round, as a long-lived build would be
    for round_ in range(args.rounds):
        time.sleep(max(0.0, args.start + round_ * args.period - time.time()))
        attempted = time.time()
        lease = WriterLease(args.root, args.name, wait_s=0)
        try:
            lease.acquire()
        except LeaseHeld as exc:
            print(json.dumps({"round": round_, "won": False, "attempted": attempted, "message": str(exc)}), flush=True)
            continue
        acquired = time.time()
        time.sleep(args.hold)
        lease.release()
        print(json.dumps({"round": round_, "won": True, "attempted": attempted, "pid": os.getpid(),
                          "acquire_s": acquired - attempted, "release_s": time.time() - acquired - args.hold}), flush=True)


def hold(args) -> None:
    lease = WriterLease(args.root, args.name, wait_s=0, ttl_s=args.ttl).acquire()
    print(json.dumps({"held": True, "pid": os.getpid()}), flush=True)
    while True:
        try:
            lease.ensure_held()
        except LeaseLost as exc:
            print(json.dumps({"lost": str(exc)}), flush=True)
            sys.exit(3)
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["race", "hold"])
    parser.add_argument("root")
    parser.add_argument("name")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--start", type=float, default=0.0)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=0.3)
    parser.add_argument("--ttl", type=float, default=3.0)
    args = parser.parse_args()
    race(args) if args.mode == "race" else hold(args)


if __name__ == "__main__":
    main()
