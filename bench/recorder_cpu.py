"""The recorder's CPU time per boot step: a micro-benchmark of ``serve``'s main process.

    .venv/bin/python -m bench.recorder_cpu                       # SQLite, 2.25 and 9 steps/node
    .venv/bin/python -m bench.recorder_cpu --store etcd --per-node 9
    .venv/bin/python -m bench.recorder_cpu --profile prof.out    # cProfile of the flushes

The recorder exactly as ``pxeserver serve`` builds it (:func:`pxeserver.daemon.make_recorder`
over :func:`pxeserver.daemon.make_registry`: for etcd the outage layer too) reads real step
logs that a :class:`pxeserver.nodes.steps.StepLog` wrote, and writes to a real store (SQLite
in the data dir; etcd: Debian's etcd 3.4 started here on loopback, as the tests do). Each
round notes about ``STEPS`` steps (``--per-node`` of each node on average: its iPXE script,
then its cloud-config, again and again, as a machine in a boot loop asks for them), then
calls ``Recorder.flush()`` until nothing is left. Only the flushes are timed, in CPU time
of this process (``time.process_time``: the machine is shared, wall-clock is noise);
etcd's own CPU is not in it. The figure is the minimum over ``--repeat`` measurements of
µs per step, each over ``--rounds`` rounds after ``WARM`` rounds that fill every node's
timeline to ``events_kept``. To compare two versions, run each a few times alternately.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = 1000  # per round: a busy read (BUSY is 256)
WARM = 25


def setup(kind: str, where: Path, etcd_url: str | None) -> tuple[Any, Any, Any]:
    """The registry, the recorder and the step log of a server over ``kind``."""
    from pxeserver.config import load
    from pxeserver.daemon import make_recorder, make_registry, steps_folder
    from pxeserver.nodes.steps import StepLog

    overrides: dict[str, Any] = {"paths.data_dir": str(where), "store.backend": kind}
    if kind == "etcd":
        overrides["store.etcd_endpoints"] = [etcd_url]
        overrides["store.etcd_prefix"] = f"/bench-{time.monotonic_ns()}/"
    settings, _ = load(None, overrides)
    if kind == "etcd":
        from pxeserver.store.etcd import EtcdStore

        store: Any = EtcdStore((etcd_url,), settings.store.etcd_prefix, timeout=10.0)
    else:
        from pxeserver.store.sqlite import SQLiteStore

        store = SQLiteStore(where / "store.db", timeout=10.0)
    registry = make_registry(settings, store)
    return registry, make_recorder(settings, registry), StepLog(steps_folder(settings))


class Loop:
    """Nodes in a boot loop: each asks for its iPXE script, then its cloud-config."""

    def __init__(self, registry: Any, nodes: int) -> None:
        from pxeserver.model import MAC, EventKind, Machine
        from pxeserver.nodes.registry import Change

        self.macs = [MAC.parse(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}") for i in range(nodes)]
        self.turn = dict.fromkeys(self.macs, 0)
        self.t = time.time()
        for mac in self.macs:
            registry.apply(mac, Change(EventKind.DHCP, "bench", Machine(mac, arch="x86_64")))

    def note(self, log: Any, per_node: float, round_: int) -> int:
        """One round's steps, ``per_node`` of each node on average (in order of time)."""
        from dataclasses import replace

        from pxeserver.model import EventKind, Machine, new_event_id
        from pxeserver.nodes.registry import Change

        noted = 0
        base, extra = int(per_node), per_node - int(per_node)
        for i, mac in enumerate(self.macs):
            # e.g. 2.25: every fourth node has one more step this round
            count = base + (1 if math.floor((i + round_) * extra) != math.floor(
                (i + round_ - 1) * extra) else 0)  # fmt: skip
            for _ in range(count):
                self.t += 0.0001
                n = self.turn[mac]
                self.turn[mac] = n + 1
                if n % 2 == 0:
                    change = Change(EventKind.IPXE, "profile coreos (group default)",
                                    Machine(mac, ip="192.0.2.10", arch="x86_64",
                                            platform="pcbios"), count_boot=True)  # fmt: skip
                else:
                    change = Change(EventKind.CLOUD_CONFIG, "profile coreos",
                                    config_issued=int(self.t * 1e6))  # fmt: skip
                log.note(mac, replace(change, at=self.t, event_id=new_event_id(), answered=True))
                noted += 1
        return noted


def measure(args: argparse.Namespace, etcd_url: str | None) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        registry, recorder, log = setup(args.store, Path(tmp), etcd_url)
        loop = Loop(registry, max(1, round(STEPS / args.per_node)))
        for r in range(WARM):
            loop.note(log, args.per_node, r)
            while recorder.flush():
                pass
        figures = []
        profile = cProfile.Profile() if args.profile else None
        for m in range(args.repeat):
            cpu = 0.0
            steps = 0
            for r in range(args.rounds):
                steps += loop.note(log, args.per_node, WARM + m * args.rounds + r)
                t0 = time.process_time()
                if profile:
                    profile.enable()
                while recorder.flush():
                    pass
                if profile:
                    profile.disable()
                cpu += time.process_time() - t0
            figures.append(cpu / steps * 1e6)
        if profile:
            profile.dump_stats(args.profile)
        log.close()
        recorder.stop()
        registry.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    parser.add_argument("--per-node", type=float, action="append", help="default 2.25 and 9")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", help="write cProfile stats of the timed flushes here")
    args = parser.parse_args(argv)
    member = None
    etcd_url = None
    if args.store == "etcd":
        from tests.support.etcd import EtcdMember

        base = Path(tempfile.mkdtemp(prefix="bench-etcd-"))
        member = EtcdMember("bench", base / "data", base)
        member.start()
        etcd_url = member.client_url
    try:
        for per_node in args.per_node or [2.25, 9.0]:
            figures = measure(argparse.Namespace(**{**vars(args), "per_node": per_node}),
                              etcd_url)  # fmt: skip
            print(f"{args.store} {per_node:g} steps/node: {min(figures):.1f} µs CPU per step "
                  f"(min of {', '.join(f'{f:.1f}' for f in figures)})")  # fmt: skip
            sys.stdout.flush()
    finally:
        if member is not None:
            member.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
