"""All benchmarks in one run: ``python -m bench [--quick] [--json] [--only NAME ...]``.

Why one entry point: every figure in docs/performance.md comes from one command on one
machine, with the peers (ccxt's order book, ccxt's message handling, the bare book update)
measured in the same process, so ratios are comparable across machines even when absolute
numbers are not.

``--json`` prints ONE JSON object (the machine, the command, every bench's keys merged,
``targets`` and ``met``); without it, a readable table. A bench that fails is reported under
``errors`` and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

# (name, target key, comparison, target value, unit/description)
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("book", "book_vs_ccxt_ratio", "<=", 0.9, "our book vs ccxt's OrderBook (time ratio)"),
    ("signals", "signals_vs_book_ratio", "<=", 1.0, "signals + detector vs the bare book update"),
    ("feed", "feed_overhead_vs_ccxt", "<=", 0.25, "our feed work vs ccxt's per message"),
    ("replay", "replay_events_per_s", ">=", 100_000, "bot replay events/s"),
    ("latency", "tick_to_order_p99_ms", "<", 1.0, "in-process tick-to-order p99 (ms)"),
    ("store", "sqlite_fills_per_s", ">=", 20_000, "SQLite writer fills/s"),
    ("emulator", "emulator_ccxt_updates_per_s", ">=", 2_000, "emulator -> one ccxt client, book updates/s"),
]


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python: what the numbers depend on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import ccxt

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ccxt": ccxt.__version__,
    }


def _emulator(quick: bool) -> dict[str, Any]:
    """bench/emulator.py has no ``run``; drive its two clients the way its ``main`` does."""
    import asyncio
    import logging

    from bench import emulator as em
    from bot.emulator import Emulator

    async def both() -> dict[str, Any]:
        out: dict[str, Any] = {}
        seconds = 2.0 if quick else 5.0
        logging.disable(logging.INFO)
        for key, fn in (
            ("emulator_raw_updates_per_s", em.raw_client),
            ("emulator_ccxt_updates_per_s", em.ccxt_client),
        ):
            emu = Emulator(speed=5000, symbols=(em.SYM,))
            await emu.start()
            try:
                n, dt = await fn(emu, seconds)
            finally:
                await emu.stop()
            out[key] = round(n / dt)
        return out

    return asyncio.run(both())


def _benches() -> dict[str, Callable[[bool], dict[str, Any]]]:
    def book(q: bool) -> dict[str, Any]:
        from bench import book as m

        return m.run(q)

    def signals(q: bool) -> dict[str, Any]:
        from bench import signals as m

        return m.run(q)

    def feed(q: bool) -> dict[str, Any]:
        from bench import feed as m

        return m.run(q)

    def replay(q: bool) -> dict[str, Any]:
        from bench import replay as m

        return m.run(q)

    def latency(q: bool) -> dict[str, Any]:
        from bench import latency as m

        return m.run(q)

    def store(q: bool) -> dict[str, Any]:
        from bench import store as m

        return m.run(q)

    def loop_lag(q: bool) -> dict[str, Any]:
        from bench import loop_lag as m

        return m.run(q)

    def latency_wire(q: bool) -> dict[str, Any]:
        from bench import latency_wire as m

        return m.run(q)

    def detector(q: bool) -> dict[str, Any]:
        from bench import detector as m

        return m.run(q)

    return {
        "book": book,
        "signals": signals,
        "feed": feed,
        "replay": replay,
        "latency": latency,
        "store": store,
        "loop_lag": loop_lag,
        "emulator": _emulator,
        "detector": detector,
        "latency_wire": latency_wire,
    }


# keys that two benches both report under the same name: prefix them with the bench's name
_CLASH = {
    "data",
    "python",
    "events",
    "book_us",
    "replay_events",
    "replay_events_per_s",
    "repeats",
    "records",
    "levels",
}


def run_all(
    quick: bool, only: list[str] | None = None, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the benches (all, or ``only``) and merge their results into one dict."""
    out: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m bench" + (" --quick" if quick else "") + " --json",
        "quick": quick,
    }
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    for name, fn in _benches().items():
        if only and name not in only:
            continue
        if log:
            log(f"running {name} ...")
        t0 = time.perf_counter()
        try:
            res = fn(quick)
        except Exception as exc:  # one broken bench must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        finally:
            timings[name] = round(time.perf_counter() - t0, 1)
        for k, v in res.items():
            if k in _CLASH and not (name == "replay" and k.startswith("replay_")):
                out[f"{name}_{k}"] = v
            else:
                out[k] = v
    targets: dict[str, str] = {}
    met: dict[str, bool | None] = {}
    for _bench, key, op, value, _desc in TARGETS:
        targets[key] = f"{op} {value:g}"
        v = out.get(key)
        if not isinstance(v, int | float):
            met[key] = None
            continue
        met[key] = bool(v <= value if op == "<=" else v >= value if op == ">=" else v < value)
    out["targets"] = targets
    out["met"] = met
    out["bench_seconds"] = timings
    if errors:
        out["errors"] = errors
    return out


def table(res: dict[str, Any]) -> str:
    """The readable form: machine, headline figures against targets, then every key."""
    lines = []
    m = res["machine"]
    lines.append(f"machine: {m['nproc']} x {m['cpu']}, Python {m['python']}, ccxt {m['ccxt']}")
    lines.append(f"command: {res['command']}")
    lines.append("")
    lines.append(f"{'figure':<28} {'value':>14}  {'target':>10}  met")
    for _b, key, _op, _v, desc in TARGETS:
        val = res.get(key)
        ok = res["met"].get(key)
        mark = "-" if ok is None else ("yes" if ok else "NO")
        lines.append(f"{key:<28} {val!s:>14}  {res['targets'][key]:>10}  {mark:<4} {desc}")
    lines.append("")
    skip = {"machine", "targets", "met", "command", "quick"}
    width = max((len(k) for k in res if k not in skip), default=10)
    for k, v in res.items():
        if k not in skip:
            lines.append(f"{k:<{width}}  {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes; the whole run in about a minute")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--only", nargs="*", choices=list(_benches()), help="run only these benches")
    args = ap.parse_args(argv)
    if args.json:
        # log lines (structlog writes to stdout) and chatty libraries go to stderr, so that
        # stdout carries exactly one JSON object
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            res = run_all(args.quick, args.only)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        print(json.dumps(res, default=str))
    else:
        res = run_all(args.quick, args.only, log=lambda s: print(s, file=sys.stderr))
        print(table(res))


if __name__ == "__main__":
    main()
