"""P1 — serving latency and throughput under load (BENCHMARKS.md, P1).

One command::

    python bench/bench_p1_load.py [--data-dir DIR] [--seconds 60] [--warmup 10]
                                  [--rates 500,250] [--closed-seconds 20] [--profile]
                                  [--workers N] [--access-log] [--loadgen-procs N]

Starts `shopcast serve` (one process, as shipped; ``--workers N``: N uvicorn worker
processes with the live state in Redis and one `shopcast worker`, the server's CPU
then summed over all of them; uvicorn's access log off unless ``--access-log``) over a
store holding the real UCI
Online Retail data with a trained model (`shopcast demo --once` into a temporary
directory, or a copy of ``--data-dir``), then drives it from a load generator in a
separate process on loopback (``bench/_loadgen.py``):

1. open loop (fixed arrival rate, latency from the scheduled send time, so queueing
   counts) at each rate: the mix of 80% GET /v1/users/{id}/recommendations?k=10 for
   real customers and 20% POST /v1/events (1-5 view/add_to_cart events of real items,
   committed durably before the 202); then GET /v1/health (the no-op endpoint) at the
   same rate. ``--warmup`` seconds are sent first and not counted;
2. closed loop (``--closed-connections`` clients back to back): recommendations only,
   no-op only and the mix; the throughput ratio recommendations / no-op.

Also the server's CPU time per request in each phase (from /proc), the load
generator's CPU share ("client cpu": it must stay well below one core) and, open loop,
how late it sent its requests (p99 "late", ms: a starved client inflates latencies), and with
``--profile`` where the server's CPU goes at the first rate (py-spy, samples of the
thread holding the GIL, so lock waits are not counted as work).
Prints a table and writes bench/results/p1_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import RESULTS, Server, machine, percentiles, prepare_data, serve, shop_ids

LOADGEN = Path(__file__).resolve().parent / "_loadgen.py"
MIX = {"rec": 0.8, "event": 0.2}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_loadgens(spec: dict[str, Any], procs: int) -> dict[str, Any]:
    """``procs`` load generator processes sharing ``spec`` (the rate and the connections
    split between them, each its own seed and event ids); their results merged."""
    if procs <= 1:
        done = subprocess.run(
            [sys.executable, str(LOADGEN)],
            input=json.dumps(spec).encode(),
            capture_output=True,
            check=True,
        )
        one: dict[str, Any] = json.loads(done.stdout)
        return one
    running = []
    for n in range(procs):
        part = {
            **spec,
            "seed": spec.get("seed", 0) * 1000 + n,
            "run_id": f"{spec.get('run_id', 'p1')}-g{n}",
            "connections": max(1, spec["connections"] // procs),
        }
        if "rate" in spec:
            part["rate"] = spec["rate"] / procs
        proc = subprocess.Popen(
            [sys.executable, str(LOADGEN)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(part).encode())
        proc.stdin.close()
        running.append(proc)
    parts = []
    for proc in running:
        assert proc.stdout is not None
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, str(LOADGEN), out)
        parts.append(json.loads(out))
    merged: dict[str, Any] = {**parts[0], "loadgen_procs": procs}
    merged["latencies_ms"] = {}
    for key in ("unanswered", "status"):
        merged[key] = dict(sum((Counter(p[key]) for p in parts), Counter()))
    for part in parts:
        for kind, values in part["latencies_ms"].items():
            merged["latencies_ms"].setdefault(kind, []).extend(values)
    for key in ("errors", "achieved_rps", "client_cpu_s", "connections_opened", "offered_rps"):
        if key in parts[0]:
            merged[key] = round(sum(p[key] for p in parts), 2)
    if "dispatch_late_p99_ms" in parts[0]:
        merged["dispatch_late_p99_ms"] = max(p["dispatch_late_p99_ms"] for p in parts)
    if "connections" in parts[0]:
        merged["connections"] = sum(p["connections"] for p in parts)
    return merged


def load(
    server: Server, spec: dict[str, Any], profile: Path | None = None, procs: int = 1
) -> dict[str, Any]:
    """Run the load generator process(es) with ``spec``; the result plus the server's CPU."""
    spec = {"port": server.port, "headers": server.headers, **spec}
    settled = settle(server)
    before = server.cpu_seconds()
    spy = None
    if profile is not None:
        duration = int(spec["warmup_s"] + spec["seconds"])
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(duration),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(profile),
                "--nonblocking",
                "--gil",  # only the thread holding the GIL: where the CPU goes
                *(["--subprocesses"] if server.helpers else []),  # --workers N
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    started = time.perf_counter()
    result = run_loadgens(spec, procs)
    wall = time.perf_counter() - started
    if spy is not None:
        spy.wait()
    served = sum(result["status"].values()) + result["errors"]  # answered in the phase
    result["server_cpu_s"] = round(server.cpu_seconds() - before, 2)
    result["server_cpu_ms_per_request"] = round(1000 * result["server_cpu_s"] / max(served, 1), 3)
    result["server_cpu_share"] = round(result["server_cpu_s"] / wall, 2)
    # the load generator's own CPU (whole process: start-up and warm-up included): it
    # must stay well below a core, else the client, not the server, limits the phase
    result["client_cpu_share"] = round(result["client_cpu_s"] / wall, 2)
    result["settled_before_s"] = settled
    return result


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Percentiles per kind and over all requests (raw latencies dropped)."""
    lat: dict[str, list[float]] = result.pop("latencies_ms")
    lost: dict[str, int] = result["unanswered"]
    result["all"] = percentiles([x for v in lat.values() for x in v], sum(lost.values()))
    result["by_kind"] = {
        kind: percentiles(lat.get(kind, []), lost.get(kind, 0)) for kind in sorted({*lat, *lost})
    }
    return result


def settle(server: Server, limit_s: float = 180.0) -> float:
    """Wait until the server is idle (under 5% of a core for a second): an overloaded
    phase leaves requests queued in the server that would slow the next phase."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        before = server.cpu_seconds()
        time.sleep(1.0)
        if server.cpu_seconds() - before < 0.05:
            break
    return round(time.perf_counter() - started, 1)


def profile_summary(raw: Path, top: int = 25) -> dict[str, Any]:
    """Inclusive share of samples per function (shopcast's and the frameworks')."""
    if not raw.exists():
        return {"error": "py-spy wrote no profile (ptrace not permitted?)"}
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaf = frames[-1]
        if any(w in leaf for w in ("wait (threading", "_worker (concurrent", "select (selectors")):
            idle += n
        own[_short(leaf)] += n
        for f in dict.fromkeys(_short(f) for f in frames):
            inclusive[f] += n
    busy = max(total - idle, 1)
    return {
        "samples": total,
        "idle_samples": idle,
        "inclusive_pct_of_busy": {
            f: round(100 * n / busy, 1) for f, n in inclusive.most_common(top * 3) if n < total
        },
        "self_pct_of_busy": {f: round(100 * n / busy, 1) for f, n in own.most_common(top)},
    }


def _short(frame: str) -> str:
    """``fn (path/to/module.py:12)`` → ``fn (module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    if "shopcast" in parts:
        path = "/".join(parts[parts.index("shopcast") :])
    else:
        path = "/".join(parts[-2:])
    return f"{name} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="an existing demo dir")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds/phase")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds first")
    parser.add_argument("--rates", default="500,250", help="open-loop rates, req/s")
    parser.add_argument("--connections", type=int, default=256, help="open loop: at most")
    parser.add_argument("--closed-connections", type=int, default=32)
    parser.add_argument("--closed-seconds", type=float, default=20.0)
    parser.add_argument("--profile", action="store_true", help="py-spy the server (1st rate)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`shopcast serve --workers N` (> 1: live state in Redis + one `shopcast worker`)",
    )
    parser.add_argument(
        "--loadgen-procs",
        type=int,
        default=1,
        help="load generator processes sharing each phase's rate and connections",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="keep uvicorn's access log on (off by default: ~40 us of CPU a request)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "p1_load.json")
    args = parser.parse_args()
    from shopcast.config import ApiSettings

    if "access_log" in ApiSettings.model_fields:  # the served code knows api.access_log
        os.environ["SHOPCAST_API__ACCESS_LOG"] = "true" if args.access_log else "false"
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    info = machine()
    with tempfile.TemporaryDirectory(prefix="shopcast-p1-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        data = prepare_data(work, args.data_dir)
        customers, items = shop_ids(data)
        print(
            f"store ready in {time.perf_counter() - t0:.0f} s: {len(customers)} customers, "
            f"{len(items)} items (UCI Online Retail, real)",
            flush=True,
        )
        run_id = uuid.uuid4().hex[:8]
        base = {"customers": customers, "items": items[:2000], "warmup_s": args.warmup}
        phases: dict[str, Any] = {}
        profile: dict[str, Any] | None = None
        with serve(data, log=work / "server.log", workers=args.workers) as server:
            for n, rate in enumerate(rates):
                for name, mix in (("mix", MIX), ("noop", {"health": 1.0})):
                    label = f"open_{name}_{rate:g}"
                    print(f"{label}: {args.warmup:g}+{args.seconds:g} s ...", flush=True)
                    spy = args.profile and n == 0 and name == "mix"
                    raw = work / "profile.txt" if spy else None
                    phases[label] = summarize(
                        load(
                            server,
                            {
                                **base,
                                "mode": "open",
                                "mix": mix,
                                "rate": rate,
                                "seconds": args.seconds,
                                "connections": args.connections,
                                "seed": n,
                                "run_id": f"p1-{run_id}-{n}",
                            },
                            raw,
                            args.loadgen_procs,
                        )
                    )
                    if raw is not None:
                        profile = profile_summary(raw)
            closed = {"rec": {"rec": 1.0}, "noop": {"health": 1.0}, "mix": MIX}
            for name, mix in closed.items():
                label = f"closed_{name}"
                print(f"{label}: {args.closed_connections} connections ...", flush=True)
                phases[label] = summarize(
                    load(
                        server,
                        {
                            **base,
                            "mode": "closed",
                            "mix": mix,
                            "seconds": args.closed_seconds,
                            "warmup_s": min(args.warmup, 3.0),
                            "connections": args.closed_connections,
                            "run_id": f"p1-{run_id}-closed",
                        },
                        procs=args.loadgen_procs,
                    )
                )
    info["loadavg_1m_end"] = os.getloadavg()[0]
    rec_rps = phases["closed_rec"]["achieved_rps"]
    noop_rps = phases["closed_noop"]["achieved_rps"]
    ratio = rec_rps / noop_rps if noop_rps else 0.0
    first = phases[f"open_mix_{rates[0]:g}"] if rates else None
    results = {
        "benchmark": "P1 serving latency and throughput",
        "dataset": "uci-online-retail (real), model trained by `shopcast demo --once`",
        "machine": info,
        "command": " ".join(["python", "bench/bench_p1_load.py", *sys.argv[1:]]),
        "settings": {
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "rates": rates,
            "open_max_connections": args.connections,
            "closed_connections": args.closed_connections,
            "closed_seconds": args.closed_seconds,
            "workers": args.workers,
            "loadgen_procs": args.loadgen_procs,
            "mix": "80% GET /v1/users/{id}/recommendations?k=10, 20% POST /v1/events (1-5)",
        },
        "phases": phases,
        "throughput_ratio_rec_vs_noop": round(ratio, 3),
        "targets": {
            "p99_le_10ms_at_500": None
            if first is None or rates[0] != 500
            else (first["all"].get("p99_ms") or 1e9) <= 10.0
            and first["achieved_rps"] >= 0.98 * 500,
            "rec_throughput_ge_50pct_noop": ratio >= 0.5,
        },
        # Less sensitive to what else runs on the machine than the throughputs.
        "cpu_per_request_ratio_noop_vs_rec": round(
            phases["closed_noop"]["server_cpu_ms_per_request"]
            / max(phases["closed_rec"]["server_cpu_ms_per_request"], 1e-9),
            3,
        ),
        "profile": profile,
    }
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(results: dict[str, Any]) -> None:
    print()
    print(
        f"{'phase':<20}{'req/s':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"
        f"{'cpu ms/req':>11}{'cpu share':>10}{'client cpu':>11}{'late p99':>9}"
    )

    def ms(p: dict[str, Any], key: str) -> str:
        value = p.get(key, "n/a")
        return "unbounded" if value is None else f"{value:.2f}" if value != "n/a" else value

    for label, r in results["phases"].items():
        rows = [(label, r["all"])]
        rows += [(f"  {kind}", p) for kind, p in r["by_kind"].items() if len(r["by_kind"]) > 1]
        for i, (name, p) in enumerate(rows):
            rps = f"{r['achieved_rps']:.0f}" if i == 0 else ""
            cpu = f"{r['server_cpu_ms_per_request']:.2f}" if i == 0 else ""
            share = f"{r['server_cpu_share']:.2f}" if i == 0 else ""
            client = f"{r.get('client_cpu_share', 0.0):.2f}" if i == 0 else ""
            late = r.get("dispatch_late_p99_ms")
            late_s = f"{late:.1f}" if i == 0 and late is not None else ""
            print(
                f"{name:<20}{rps:>8}{ms(p, 'p50_ms'):>10}{ms(p, 'p95_ms'):>10}"
                f"{ms(p, 'p99_ms'):>10}{cpu:>11}{share:>10}{client:>11}{late_s:>9}"
            )
        lost = sum(r["unanswered"].values())
        if r["errors"] or lost or any(not s.startswith("2") for s in r["status"]):
            print(f"  status {r['status']}, errors {r['errors']}, unanswered {lost}")
    print(
        f"closed-loop throughput ratio recommendations / no-op: "
        f"{results['throughput_ratio_rec_vs_noop']:.2f}"
    )
    print(
        "server CPU per request, no-op / recommendations: "
        f"{results['cpu_per_request_ratio_noop_vs_rec']:.2f}"
    )
    print(f"targets: {results['targets']}")
    m = results["machine"]
    print(
        f"machine: {m.get('cpus')} CPUs, load average {m.get('loadavg_1m_start')} → "
        f"{m.get('loadavg_1m_end')}"
    )


if __name__ == "__main__":
    main()
