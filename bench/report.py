#!/usr/bin/env python3
"""Turns the raw files of one benchmark run into a result JSON and a Markdown table.

  report.py --line RUN.json META.json             one summary line of one load run (stderr)
  report.py --build RAWDIR --facts FACTS.json --out PREFIX
                                                  writes PREFIX.json and PREFIX.md

Raw files (written by bench/lib.sh): for each run NAME = TARGET__SCENARIO, NAME.json (oha's
JSON output) or NAME.ttfb.json (bench/ttfb.py), and NAME.meta.json (CPU time of the server
under test during the run, its memory). Added latency is TARGET minus `direct` for the same
scenario. CPU per request is the server's CPU time over the run divided by the answers it gave.
"""
import argparse
import json
import os
import sys

TARGETS = {
    "saturation_1core_rps": (">=", 20000, "saturation on one core (req/s)"),
    "saturation_2core_rps": (">=", 35000, "saturation on two cores (req/s)"),
    "added_p50_ms@50": ("<=", 0.1, "added latency p50 at 50 req/s (ms)"),
    "added_p99_ms@50": ("<=", 0.5, "added latency p99 at 50 req/s (ms)"),
    "added_p50_ms@500": ("<=", 0.1, "added latency p50 at 500 req/s (ms)"),
    "added_p99_ms@500": ("<=", 0.5, "added latency p99 at 500 req/s (ms)"),
    "added_p99_ms@2000": ("<=", 1.0, "added latency p99 at 2,000 req/s (ms)"),
    "added_ttfb_p50_ms": ("<=", 0.2, "added time to first streamed byte p50 (ms)"),
    "peak_rss_mib_under_load": ("<=", 30, "peak memory under load, embedded default, 1 or 2 cores (MiB)"),
    "peak_rss_mib_200k_keys": ("<=", 150, "peak memory with 100k virtual + 100k platform keys (MiB)"),
    "startup_ms_empty": ("<=", 100, "start-up to ready, empty store (ms)"),
    "startup_ms_200k_keys": ("<=", 1000, "start-up to ready with 200k keys (ms)"),
    "scaleout_added_p50_ms@500": ("<=", 0.5, "scale-out (PostgreSQL + Redis) added p50 at 500 req/s (ms)"),
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None


def ms(v):
    return None if v is None else v * 1000.0


def summarize(run, meta):
    """One load run as a flat dict."""
    out = {}
    if meta:
        out.update({k: meta.get(k) for k in ("rate", "conns", "duration")})
    if run is None:
        out["error"] = "no output"
        return out
    if run.get("kind") == "ttfb":
        out["kind"] = "ttfb"
        out["requests"] = run.get("count")
        out["errors"] = run.get("errors")
        for k in ("first_byte_ms", "first_data_ms", "total_ms"):
            out[k] = run.get(k)
        ok = run.get("count") or 0
    else:
        s = run.get("summary", {})
        lp = run.get("latencyPercentiles", {})
        codes = run.get("statusCodeDistribution", {}) or {}
        errs = run.get("errorDistribution", {}) or {}
        # oha cuts the requests in flight when the duration ends: not failures of the server.
        cut = errs.pop("aborted due to deadline", 0)
        fb = run.get("firstBytePercentiles", {}) or {}
        ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
        out.update({
            "kind": "load",
            "requests": sum(codes.values()),
            "ok": ok,
            "non_2xx": sum(v for k, v in codes.items() if not str(k).startswith("2")),
            "errors": sum(errs.values()),
            "error_kinds": errs,
            "rps": s.get("requestsPerSec"),
            "p50_ms": ms(lp.get("p50")),
            "p99_ms": ms(lp.get("p99")),
            "p999_ms": ms(lp.get("p99.9")),
            "mean_ms": ms(s.get("average")),
            "max_ms": ms(s.get("slowest")),
            "cut_at_end": cut,
            "first_byte_p50_ms": ms(fb.get("p50")),
            "first_byte_p99_ms": ms(fb.get("p99")),
        })
        if s.get("total") and ok:
            out["ok_rps"] = ok / s["total"]
    if meta and ok:
        cpu = meta.get("cpu_ns") or 0
        sched = meta.get("sched_ns") or 0
        # Tick-based accounting is coarse (10 ms); below 0.5 s of CPU use schedstat's ns.
        best = cpu if cpu >= 500_000_000 or not sched else sched
        out["cpu_us_per_req"] = best / ok / 1000.0
        if meta.get("wall_ns"):
            out["cpu_share"] = best / meta["wall_ns"]
            # What else ran on the server's CPU during the run (other processes of the machine):
            # 0 on a quiet machine; the figures of a run with a high share are suspect.
            if meta.get("server_core_busy_ns") and meta.get("pid") and cpu:
                out["other_load_on_server_cpu"] = max(0.0, (meta["server_core_busy_ns"] - cpu) / meta["wall_ns"])
    if meta:
        out["vm_hwm_kib"] = meta.get("vm_hwm_kib")
    return out


def line(run_path, meta_path):
    run, meta = load(run_path), load(meta_path)
    s = summarize(run, meta)
    name = (meta or {}).get("name", os.path.basename(run_path))
    if s.get("kind") == "ttfb":
        fd, tt = s.get("first_data_ms") or {}, s.get("total_ms") or {}
        print(f"  {name:38s} ttfb p50 {fmt(fd.get('p50'))} p99 {fmt(fd.get('p99'))} ms; total p50 "
              f"{fmt(tt.get('p50'))} ms; n={s.get('requests')} errors={s.get('errors')}", file=sys.stderr)
    else:
        print(f"  {name:38s} {fmt(s.get('rps'), 0):>8s} req/s  p50 {fmt(s.get('p50_ms'))}  p99 {fmt(s.get('p99_ms'))}"
              f"  p99.9 {fmt(s.get('p999_ms'))} ms  ok={s.get('ok')} bad={s.get('non_2xx', 0) + s.get('errors', 0)}"
              f"  cpu/req {fmt(s.get('cpu_us_per_req'), 1)} us", file=sys.stderr)


def pcts(v):
    return "-" if v is None else f"{v * 100:.0f}%"


def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return f"{v:,.{nd}f}"
    return str(v)


def build(raw, facts_path, prefix):
    facts = load(facts_path) or {}
    runs = {}
    for fn in sorted(os.listdir(raw)):
        if not fn.endswith(".meta.json"):
            continue
        name = fn[: -len(".meta.json")]
        meta = load(os.path.join(raw, fn))
        run = load(os.path.join(raw, name + ".json")) or load(os.path.join(raw, name + ".ttfb.json"))
        target, _, scenario = name.partition("__")
        s = summarize(run, meta)
        s.update({"target": target, "scenario": scenario})
        if target == "direct" or scenario.endswith("2cores"):
            s.pop("other_load_on_server_cpu", None)  # the mock runs on the load CPU; 2 cores: no own CPU
        runs[name] = s

    added = {}
    for name, s in runs.items():
        if s["target"] == "direct":
            continue
        d = runs.get("direct__" + s["scenario"])
        if not d:
            continue
        a = {}
        if s.get("kind") == "load" and d.get("kind") == "load":
            for k in ("p50_ms", "p99_ms", "p999_ms", "mean_ms", "first_byte_p50_ms", "first_byte_p99_ms"):
                if s.get(k) is not None and d.get(k) is not None:
                    a[k] = s[k] - d[k]
        elif s.get("kind") == "ttfb" and d.get("kind") == "ttfb":
            for k in ("first_byte_ms", "first_data_ms", "total_ms"):
                for p in ("p50", "p99"):
                    x, y = (s.get(k) or {}).get(p), (d.get(k) or {}).get(p)
                    if x is not None and y is not None:
                        a[f"{k}_{p}"] = x - y
        if a:
            s["added"] = a
            added[name] = a

    checks = evaluate(runs, facts)
    result = {
        "schema": 1,
        "facts": facts,
        "runs": runs,
        "added": added,
        "targets": checks,
    }
    with open(prefix + ".json", "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(prefix + ".md", "w") as f:
        f.write(markdown(result))
    print(f"wrote {prefix}.json and {prefix}.md", file=sys.stderr)


def get_added(runs, name, key):
    return ((runs.get(name) or {}).get("added") or {}).get(key)


def evaluate(runs, facts):
    kg = facts.get("keygate", {})
    keys = facts.get("keygate_200k_keys", {})
    measured = {
        "saturation_1core_rps": (runs.get("keygate__sat") or {}).get("ok_rps"),
        "saturation_2core_rps": (runs.get("keygate__sat_2cores") or {}).get("ok_rps"),
        "added_p50_ms@50": get_added(runs, "keygate__fixed_50", "p50_ms"),
        "added_p99_ms@50": get_added(runs, "keygate__fixed_50", "p99_ms"),
        "added_p50_ms@500": get_added(runs, "keygate__fixed_500", "p50_ms"),
        "added_p99_ms@500": get_added(runs, "keygate__fixed_500", "p99_ms"),
        "added_p99_ms@2000": get_added(runs, "keygate__fixed_2000", "p99_ms"),
        "added_ttfb_p50_ms": get_added(runs, "keygate__ttfb_50", "first_data_ms_p50"),
        # The highest of the embedded default's runs (one core and the two-core saturation run).
        "peak_rss_mib_under_load": max([(kg.get("peak_rss_kib") or 0)] + [r.get("vm_hwm_kib") or 0 for r in runs.values()
                                        if r.get("target") == "keygate"]) / 1024 or None,
        "peak_rss_mib_200k_keys": (keys.get("peak_rss_kib") or 0) / 1024 or None,
        "startup_ms_empty": kg.get("startup_ms"),
        "startup_ms_200k_keys": keys.get("startup_ms"),
        "scaleout_added_p50_ms@500": get_added(runs, "scaleout__fixed_500", "p50_ms"),
    }
    out = []
    for key, (op, limit, what) in TARGETS.items():
        v = measured.get(key)
        holds = None if v is None else (v >= limit if op == ">=" else v <= limit)
        out.append({"key": key, "what": what, "target": f"{op} {limit:g}", "measured": v, "holds": holds})
    return out


SCENARIOS = [
    ("fixed_50", "non-streaming, 50 req/s"),
    ("fixed_500", "non-streaming, 500 req/s"),
    ("fixed_2000", "non-streaming, 2,000 req/s"),
    ("sat", "non-streaming, saturation, 1 core"),
    ("sat_2cores", "non-streaming, saturation, 2 cores shared"),
    ("stream_fixed_50", "streaming, 50 req/s"),
    ("stream_fixed_500", "streaming, 500 req/s"),
    ("stream_sat", "streaming, saturation, 1 core"),
]


def markdown(r):
    runs = r["runs"]
    facts = r["facts"]
    m = facts.get("machine", {})
    lines = []
    lines.append(f"# {facts.get('title', 'keygate benchmark')}\n")
    lines.append(f"- date: {facts.get('date', '?')}; commit: `{facts.get('commit', '?')}`")
    lines.append(f"- machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, {m.get('memory', '?')}, "
                 f"kernel {m.get('kernel', '?')}; pinned: {m.get('pinned')} (server on CPU {m.get('gateway_core')}, "
                 f"mock + load generator on CPU {m.get('load_core')}); load average at start: "
                 f"{m.get('load_average_at_start', '?')}")
    lines.append(f"- load generator: {m.get('oha', '?')}; duration per run: {facts.get('duration', '?')}; "
                 f"body: `{facts.get('body', '')}`")
    if facts.get("notes"):
        for n in facts["notes"]:
            lines.append(f"- {n}")
    lines.append("")
    targets = sorted({s["target"] for s in runs.values()}, key=lambda t: (t != "direct", t))
    lines.append("| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 "
                 "| first byte p50 ms | CPU µs/req | peak RSS MiB | other load on server CPU | errors |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sc, label in SCENARIOS:
        for t in targets:
            s = runs.get(f"{t}__{sc}")
            if not s or s.get("kind") != "load":
                continue
            a = s.get("added") or {}
            bad = (s.get("non_2xx") or 0) + (s.get("errors") or 0)
            lines.append(
                f"| {label} | {t} | {fmt(s.get('ok_rps') or s.get('rps'), 0)} | {fmt(s.get('p50_ms'))} | "
                f"{fmt(s.get('p99_ms'))} | {fmt(s.get('p999_ms'))} | {fmt(a.get('p50_ms'))} | {fmt(a.get('p99_ms'))} | "
                f"{fmt(a.get('p999_ms'))} | {fmt(s.get('first_byte_p50_ms'))} | {fmt(s.get('cpu_us_per_req'), 1)} | "
                f"{fmt((s.get('vm_hwm_kib') or 0) / 1024, 1)} | {pcts(s.get('other_load_on_server_cpu'))} | {bad} |")
    extra = [n for n, s in runs.items() if s.get("kind") == "load"
             and s["scenario"] not in {sc for sc, _ in SCENARIOS}]
    for n in sorted(extra):
        s = runs[n]
        a = s.get("added") or {}
        bad = (s.get("non_2xx") or 0) + (s.get("errors") or 0)
        lines.append(
            f"| {s['scenario']} | {s['target']} | {fmt(s.get('ok_rps') or s.get('rps'), 0)} | {fmt(s.get('p50_ms'))} | "
            f"{fmt(s.get('p99_ms'))} | {fmt(s.get('p999_ms'))} | {fmt(a.get('p50_ms'))} | {fmt(a.get('p99_ms'))} | "
            f"{fmt(a.get('p999_ms'))} | {fmt(s.get('first_byte_p50_ms'))} | {fmt(s.get('cpu_us_per_req'), 1)} | "
                f"{fmt((s.get('vm_hwm_kib') or 0) / 1024, 1)} | {pcts(s.get('other_load_on_server_cpu'))} | {bad} |")
    lines.append("")
    tt = [(n, s) for n, s in sorted(runs.items()) if s.get("kind") == "ttfb"]
    if tt:
        lines.append("Time to first streamed byte (first `data:` byte after the request is written; one keep-alive "
                     "connection, paced):\n")
        lines.append("| run | n | TTFB p50 ms | TTFB p99 ms | added TTFB p50 | added TTFB p99 | whole stream p50 ms |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for n, s in tt:
            fd, tot = s.get("first_data_ms") or {}, s.get("total_ms") or {}
            a = s.get("added") or {}
            lines.append(f"| {n} | {s.get('requests')} | {fmt(fd.get('p50'))} | {fmt(fd.get('p99'))} | "
                         f"{fmt(a.get('first_data_ms_p50'))} | {fmt(a.get('first_data_ms_p99'))} | {fmt(tot.get('p50'))} |")
        lines.append("")
    fl = []
    for k, label in (("keygate", "keygate, embedded default"), ("keygate_200k_keys", "keygate, 100k virtual + 100k platform keys"),
                     ("scaleout", "keygate, scale-out (PostgreSQL + Redis)"), ("litellm", "LiteLLM proxy"),
                     ("portkey", "Portkey gateway"), ("direct", "mock upstream")):
        f = facts.get(k)
        if not f:
            continue
        parts = []
        if f.get("skipped"):
            parts.append(f"not measured: {f['skipped']}")
        if f.get("version"):
            parts.append(f"version {f['version']}")
        if f.get("startup_ms") is not None:
            parts.append(f"start-up to ready {fmt(f['startup_ms'], 0)} ms")
        if f.get("startup_ms_internal") is not None:
            parts.append(f"(own log: {f['startup_ms_internal']} ms)")
        if f.get("rss_idle_kib"):
            parts.append(f"RSS when ready {fmt(f['rss_idle_kib'] / 1024, 1)} MiB")
        if f.get("peak_rss_kib"):
            parts.append(f"peak RSS {fmt(f['peak_rss_kib'] / 1024, 1)} MiB")
        if f.get("note"):
            parts.append(f["note"])
        fl.append(f"- {label}: " + "; ".join(parts))
    if fl:
        lines.append("Start-up and memory:\n")
        lines.extend(fl)
        lines.append("")
    if r.get("targets") and any(t["measured"] is not None for t in r["targets"]):
        lines.append("Targets (issue #6):\n")
        lines.append("| target | wanted | measured | holds |")
        lines.append("|---|---|---:|---|")
        for t in r["targets"]:
            h = {True: "yes", False: "**no**", None: "not measured"}[t["holds"]]
            lines.append(f"| {t['what']} | {t['target']} | {fmt(t['measured'])} | {h} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--line", nargs=2)
    ap.add_argument("--build")
    ap.add_argument("--facts")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.line:
        line(*a.line)
    elif a.build:
        build(a.build, a.facts, a.out)
    else:
        ap.error("--line or --build")


if __name__ == "__main__":
    main()
