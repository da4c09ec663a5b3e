"""`uv run python -m bench [--quick] [--only w1,w2] [--json PATH] [--pin]`: every workload of
issue 9 (or those named), one table of figures against their targets, and the JSON of all."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import report
from bench.context import Context
from bench.procs import ROOT, Resources, start_fake
from bench.workloads import WORKLOADS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short version of each workload")
    parser.add_argument(
        "--only",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=list(WORKLOADS),
        help=f"comma-separated workloads, of: {','.join(WORKLOADS)} (the ceiling always runs)",
    )
    parser.add_argument("--json", type=Path, help="default: bench/results/<timestamp>.json")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the fake model to the last CPU (taskset), away from the service's first",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    return args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # As Ctrl-C does: the exit stacks stop every process the suite started on the way out.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # W7 holds a thousand event streams: this driver and the API (which inherits the limit)
    # need more open files than a common soft limit of 1024.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.json or ROOT / "bench" / "results" / f"{stamp}{'-quick' if args.quick else ''}.json"
    machine, peers = report.machine(), report.peer_versions()
    print(report.header(machine, peers), file=sys.stderr)
    names = ["ceiling", *(name for name in WORKLOADS if name in args.only and name != "ceiling")]
    outcomes: dict[str, report.Outcome] = {}
    started = time.perf_counter()
    with Resources() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-runs-bench.")))
        cpus = str((os.cpu_count() or 1) - 1) if args.pin else None
        fake = start_fake(stack, root, cpus=cpus)
        ctx = Context(quick=args.quick, fake=fake, root=root)
        for name in names:
            print(f"--- {name}", file=sys.stderr, flush=True)
            began = time.perf_counter()
            try:
                outcomes[name] = WORKLOADS[name](ctx)
            except Exception as exc:  # one workload failing must not cost the others' figures
                traceback.print_exc()
                outcomes[name] = report.Outcome(error=f"{type(exc).__name__}: {exc}")
            outcomes[name].details["workload_seconds"] = round(time.perf_counter() - began, 1)
    payload = {
        "started": stamp,
        "quick": args.quick,
        "pinned": args.pin,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine,
        "peers": peers,
    }
    report.write(path, payload, outcomes)
    print(report.header(machine, peers))
    print(report.table(outcomes))
    print(f"\nall figures: {path} ({payload['seconds']:.0f} s)")
    return 1 if any(outcome.error for outcome in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
