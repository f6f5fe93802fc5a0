"""Turns the raw output of scripts/bench (wrk runs + a metrics file) into one table with ratios and
the targets of the benchmark, printed, and optionally written as Markdown for BENCHMARKS.md."""
import argparse
import pathlib
import re
import statistics

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(path):
    text = path.read_text()
    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    lat = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", text)
    out["avg"], out["max"] = ms(lat.group(1)), ms(lat.group(3))
    for p in ("50", "75", "90", "99"):
        out["p" + p] = ms(re.search(rf"\s{p}%\s+(\S+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["non2xx"] = int(bad.group(1)) if bad else 0
    out["socket_errors"] = sum(map(int, errors.groups())) if errors else 0
    out["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
    return out


def probe(path):
    rows = [tuple(map(int, l.split())) for l in path.read_text().split("\n") if l.strip()]
    return rows


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def rfc3339_us(text):
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z", text.strip())
    import calendar
    secs = calendar.timegm(tuple(int(g) for g in m.groups()[:6]))
    frac = (m.group(7) or "0")[:6].ljust(6, "0")
    return secs * 1_000_000 + int(frac)


def best(runs):
    return max(runs, key=lambda r: r["rps"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    d = pathlib.Path(a.dir)
    metrics = {}
    for line in (d / "metrics").read_text().splitlines():
        k, v = line.split(" ", 1)
        metrics.setdefault(k, []).append(v.strip('"'))
    num = lambda k: float(metrics[k][0])
    runs = {name: [wrk(p) for p in sorted(d.glob(f"wrk.{name}.*"))] for name in ("minimal", "imds", "ecs")}
    minimal, imds, ecs = best(runs["minimal"]), best(runs["imds"]), best(runs["ecs"])
    moto = wrk(d / "wrk.moto")
    rot64, rot500 = wrk(d / "wrk.rotation64"), wrk(d / "wrk.rotation500")
    calls500, rotations500 = num("rotation500_sts_calls"), num("rotation500_rotations")
    calls64, rotations64 = num("rotation64_sts_calls"), num("rotation64_rotations")
    ready = [int(v) / 1000 for v in metrics["ready_us"]]
    errors = sum(r["non2xx"] + r["socket_errors"] for rs in runs.values() for r in rs)
    errors += rot64["non2xx"] + rot64["socket_errors"]

    rows = []

    def row(what, value, target, ok):
        rows.append((what, value, target, "met" if ok else "MISSED"))

    row("IMDS credentials path, req/s (ratio to minimal hyper)",
        f"{imds['rps']:,.0f} ({imds['rps'] / minimal['rps']:.2f}x)", ">= 0.8x", imds["rps"] >= 0.8 * minimal["rps"])
    row("ECS path, req/s (ratio to minimal hyper)",
        f"{ecs['rps']:,.0f} ({ecs['rps'] / minimal['rps']:.2f}x)", ">= 0.8x", ecs["rps"] >= 0.8 * minimal["rps"])
    row("minimal hyper server, req/s", f"{minimal['rps']:,.0f}", "(the limit)", True)
    row("IMDS p99 at 64 keep-alive connections (ratio to minimal)",
        f"{imds['p99']:.2f} ms ({imds['p99'] / minimal['p99']:.2f}x; minimal {minimal['p99']:.2f} ms)", "<= 1.5x",
        imds["p99"] <= 1.5 * minimal["p99"])
    row("ECS p99 (ratio to minimal)", f"{ecs['p99']:.2f} ms ({ecs['p99'] / minimal['p99']:.2f}x)", "<= 1.5x",
        ecs["p99"] <= 1.5 * minimal["p99"])
    probe_c, probe_m = probe(d / "probe.credvend"), probe(d / "probe.minimal")
    rotations = [rfc3339_us(l) for l in (d / "rotations").read_text().splitlines() if l.strip() and l.strip() != "None"]
    in_window = [lat for ts, lat in probe_c if any(r - 50_000 <= ts <= r + 250_000 for r in rotations)]
    outside = [lat for ts, lat in probe_c if not any(r - 50_000 <= ts <= r + 250_000 for r in rotations)]
    window_max = max(in_window) / 1000 if in_window else float("nan")
    first, last = (probe_c[0][0], max(ts for ts, _ in probe_c)) if probe_c else (0, 0)
    rotations = [r for r in rotations if first <= r <= last]
    row("worst request around a rotation (paced probe, 16k req/s)",
        f"{window_max:.2f} ms ({len(in_window)} requests in {len(rotations)} rotation windows)", "<= 5 ms", window_max <= 5.0)
    row("  same probe away from rotations / against the minimal server",
        f"max {max(outside) / 1000:.2f} ms / {max(l for _, l in probe_m) / 1000:.2f} ms; "
        f"p99.9 {pct(outside, 0.999) / 1000:.2f} / {pct([l for _, l in probe_m], 0.999) / 1000:.2f} ms", "", True)
    row("worst request under wrk (64 conns, closed loop) while rotating / minimal server",
        f"{rot64['max']:.2f} ms / {minimal['max']:.2f} ms", "", True)
    row("moto's IMDS emulation, req/s (credvend's multiple)",
        f"{moto['rps']:,.0f} ({imds['rps'] / moto['rps']:,.0f}x)", ">= 50x", imds["rps"] >= 50 * moto["rps"])
    row("RSS idle", f"{num('rss_idle_kb') / 1024:.1f} MB", "< 15 MB", num("rss_idle_kb") < 15 * 1024)
    row("RSS with 1,000 open connections", f"{num('rss_1000_conns_kb') / 1024:.1f} MB", "< 40 MB",
        num("rss_1000_conns_kb") < 40 * 1024)
    row("RSS after the throughput runs", f"{num('rss_after_load_kb') / 1024:.1f} MB", "", True)
    row("STS calls per rotation, 500 concurrent clients",
        f"{calls500 / max(rotations500, 1):.2f} ({calls500:.0f} calls / {rotations500:.0f} rotations)", "exactly 1",
        calls500 == rotations500 and rotations500 > 0)
    row("STS calls per rotation, 64 connections", f"{calls64 / max(rotations64, 1):.2f}", "exactly 1",
        calls64 == rotations64 and rotations64 > 0)
    per_hour = lambda k: num(k) * 3600 / num("cost_seconds")
    row("STS calls/hour, 200 profiles configured, 5 used: all minted / on demand",
        f"{per_hour('cost_prewarm_all_sts_calls'):,.0f} / {per_hour('cost_on_demand_sts_calls'):,.0f} "
        "(900 s sessions rotating every 5 s)", "<= 5/200", num("cost_on_demand_sts_calls") * 200
        <= num("cost_prewarm_all_sts_calls") * 5 * 1.5)
    row("wake-ups/min, 200 idle profiles, no client", f"{num('idle_wakeups') * 60 / num('cost_seconds'):.1f}", "< 10",
        num("idle_wakeups") * 60 / num("cost_seconds") < 10)
    row("failed responses in credvend runs", f"{errors}", "0", errors == 0)
    row("start to ready (median of 5)", f"{statistics.median(ready):.1f} ms", "", True)
    row("binary size (release)", f"{num('binary_bytes') / 1e6:.1f} MB", "", True)

    width = max(len(r[0]) for r in rows)
    print(f"\nmachine: {metrics['machine'][0]}")
    print(f"{'measure':{width}}  {'value':52}  {'target':9}  result")
    for what, value, target, res in rows:
        print(f"{what:{width}}  {value:52}  {target:9}  {res}")
    detail = "\nlatency percentiles (ms), best of 2 runs each:\n"
    detail += f"{'':10}{'p50':>8}{'p75':>8}{'p90':>8}{'p99':>8}{'max':>9}{'req/s':>11}\n"
    for name, r in (("minimal", minimal), ("imds", imds), ("ecs", ecs), ("moto", moto), ("rot64", rot64), ("rot500", rot500)):
        detail += f"{name:10}{r['p50']:8.2f}{r['p75']:8.2f}{r['p90']:8.2f}{r['p99']:8.2f}{r['max']:9.2f}{r['rps']:11,.0f}\n"
    print(detail)
    if a.markdown:
        md = [f"Machine: {metrics['machine'][0]}", "", "| measure | value | target | result |", "|---|---|---|---|"]
        md += [f"| {w} | {v} | {t} | {r} |" for w, v, t, r in rows]
        md += ["", "```", detail.strip("\n"), "```", ""]
        pathlib.Path(a.markdown).write_text("\n".join(md))


if __name__ == "__main__":
    main()
