#!/usr/bin/env python3
"""soak.py - a bounded soak test of `sgbd serve` (issue #8).

Builds a store from a synthetic catalogue (sgbd synth, sgbd import,
sgbd train --db), starts the daemon with a retrain policy that fires every
few seconds, and runs several client threads of mixed traffic through the
Python client for --minutes: recommendations, batch recommendations,
similar items, item reads, item PUTs with features, deletes and
interactions. It records requests served, errors by status, latency
percentiles per minute, the daemon's RSS every --rss-every seconds and the
retrains it publishes. Afterwards it stops the daemon (SIGTERM), runs
`sgbd check` on the store, starts the daemon again on the same store and
verifies that every acknowledged write is there (workload.verify).

    tests/soak/soak.py --bin build/sgbd --minutes 1      # smoke run
    tests/soak/soak.py --bin build/sgbd                  # 10 minutes
    tests/soak/soak.py --bin build/sgbd --json out.json  # figures as JSON

Exit status 0 when: no answer was a 5xx and no request failed in
transport, the store checks clean, every acknowledged write was found,
the daemon stopped with 0, at least one retrain published (unless
--allow-no-retrain), and anonymous RSS grew by at most
--max-anon-growth-mb after warm-up. 1 otherwise, 2 on a usage error.

Standard library only; not run by ctest (see tests/soak/README.md).
"""

import argparse
import collections
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload as wl  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", help="the sgbd binary (default $SGBD_BIN, "
                   "PATH, build/sgbd)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="traffic duration (default 10; 1 is a smoke run)")
    p.add_argument("--workers", type=int, default=4,
                   help="client threads (default 4)")
    p.add_argument("--rate", type=float, default=150.0,
                   help="requests per second over all workers, 0 for as "
                   "fast as they go (default 150)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rss-every", type=float, default=10.0,
                   help="seconds between RSS samples (default 10)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of warm-up before RSS growth counts "
                   "(default: a fifth of the run, at least 30)")
    p.add_argument("--max-anon-growth-mb", type=float, default=32.0,
                   help="allowed RssAnon growth after warm-up (default 32)")
    p.add_argument("--min-interval", type=float, default=5.0,
                   help="retrain.min_interval_s (default 5)")
    p.add_argument("--new-items", type=int, default=100,
                   help="new items each worker creates at most, then PUTs "
                   "update its own items (default 100; -1: no bound)")
    p.add_argument("--new-users", type=int, default=100,
                   help="new users each worker creates at most (default "
                   "100; -1: no bound)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="retrain.tolerance of the gate (default: the "
                   "configuration's, 0.002)")
    p.add_argument("--allow-no-retrain", action="store_true",
                   help="do not fail when no retrain published")
    p.add_argument("--workdir", help="keep files here (default: a "
                   "temporary folder, removed afterwards)")
    p.add_argument("--json", help="also write the report to this file")
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.workers < 1 or a.rss_every <= 0:
        p.error("--minutes and --rss-every must be > 0, --workers >= 1")
    return a


# ---- sampling ----

class Sampler(threading.Thread):
    """Every `every` seconds: the daemon's /proc status and /v1/model."""

    def __init__(self, pid, client, every, stop, t0):
        super().__init__(daemon=True, name="sampler")
        self.pid, self.client, self.every = pid, client, every
        self.stop, self.t0 = stop, t0
        self.samples = []

    def sample(self):
        row = {"t": round(time.monotonic() - self.t0, 1)}
        row.update(wl.proc_status(self.pid) or {})
        try:
            m = self.client.model()
            r = m.get("retrain", {})
            row.update(version=m.get("version"), state=m.get("state"),
                       retrains=r.get("retrains_total"),
                       rejected=r.get("rejected_total"),
                       failed=r.get("failed_total"),
                       pending=m.get("pending_updates"))
            g = wl.sc.parse_metrics(self.client.metrics())
            for name in ("sgbd_snapshot_bytes", "sgbd_snapshots_live",
                         "sgbd_overlay_items", "sgbd_items", "sgbd_users"):
                if name in g:
                    row[name[5:]] = g[name][0][1]
        except wl.sc.SGBDError as e:
            row["model_error"] = str(e)
        self.samples.append(row)

    def run(self):
        self.sample()
        while not self.stop.wait(self.every):
            self.sample()
        self.sample()


# ---- figures ----

def retrain_events(log):
    """The daemon's retrain outcomes in order: [{outcome, seconds,
    version, candidate, current, why}] from its log lines."""
    out = []
    for ln in log.splitlines():
        m = re.search(r"ev=retrain_(published|rejected|failed)\b(.*)", ln)
        if not m:
            continue
        facts = dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", m.group(2)))
        out.append({"outcome": m.group(1),
                    "seconds": float(facts.get("seconds", "nan")),
                    "version": facts.get("version"),
                    "candidate": facts.get("candidate"),
                    "current": facts.get("current"),
                    "why": facts.get("why", "").strip('"')})
    return out


def per_minute(rows, samples):
    """One dict per minute of traffic: requests, errors, latencies, the
    model version and pending updates at the minute's last sample."""
    by = collections.defaultdict(list)
    for t, op, secs, status, code in rows:
        by[int(t // 60)].append((secs, status))
    last = {}
    for smp in samples:
        last[int(smp["t"] // 60)] = smp
    out = []
    for m in sorted(by):
        lat = [s for s, _ in by[m]]
        statuses = collections.Counter(st for _, st in by[m])
        out.append({
            "minute": m + 1, "requests": len(lat),
            "p50_ms": round(wl.percentile(lat, 50) * 1e3, 2),
            "p99_ms": round(wl.percentile(lat, 99) * 1e3, 2),
            "max_ms": round(max(lat) * 1e3, 2),
            "non_2xx": sum(n for s, n in statuses.items()
                           if not 200 <= s < 300),
            "version": last.get(m, {}).get("version"),
            "pending": last.get(m, {}).get("pending"),
        })
    return out


def per_op(rows):
    by = collections.defaultdict(list)
    for _, op, secs, status, _ in rows:
        by[op].append(secs)
    return {op: {"requests": len(v),
                 "p50_ms": round(wl.percentile(v, 50) * 1e3, 2),
                 "p99_ms": round(wl.percentile(v, 99) * 1e3, 2)}
            for op, v in sorted(by.items())}


def errors(rows):
    """{"<status> <code> (<op>)": count} for every non-2xx answer."""
    c = collections.Counter()
    for _, op, _, status, code in rows:
        if not 200 <= status < 300:
            c["%s %s (%s)" % (status or "transport", code, op)] += 1
    return dict(c)


def rss_growth(samples, warmup):
    """RssAnon and VmRSS (MB) at the end of warm-up, at the end, and the
    largest after warm-up."""
    after = [s for s in samples if s["t"] >= warmup and "RssAnon" in s]
    if len(after) < 2:
        return None
    mb = 1.0 / 1024
    return {
        "warmup_s": warmup,
        "anon_mb_after_warmup": round(after[0]["RssAnon"] * mb, 1),
        "anon_mb_end": round(after[-1]["RssAnon"] * mb, 1),
        "anon_mb_max": round(max(s["RssAnon"] for s in after) * mb, 1),
        "anon_growth_mb": round((after[-1]["RssAnon"] -
                                 after[0]["RssAnon"]) * mb, 1),
        "rss_mb_after_warmup": round(after[0]["VmRSS"] * mb, 1),
        "rss_mb_end": round(after[-1]["VmRSS"] * mb, 1),
        "fds_after_warmup": after[0].get("fds"),
        "fds_end": after[-1].get("fds"),
    }


# ---- phases ----

def build(a, binary, workdir):
    t = time.monotonic()
    cat = wl.trained_store(binary, workdir, users=a.users, items=a.items,
                           seed=a.seed)
    print("store: %d users, %d items, trained in %.1f s (%s)" % (
        a.users, a.items, time.monotonic() - t, cat.db), flush=True)
    return cat


def traffic(a, binary, workdir, cat, ledger):
    """Start the daemon, run the workers, stop it; the raw results."""
    args = ["--db", cat.db, "--set", "server.http_threads=2"] + \
        wl.retrain_sets(min_item_updates=20, min_interactions=100,
                        debounce_s=0.5, min_interval_s=a.min_interval,
                        epochs=2, keep=4)
    if a.tolerance is not None:
        args += ["--set", "retrain.tolerance=%g" % a.tolerance]
    d, client = wl.start_daemon(binary, args, workdir, name="soak")
    res = {"daemon_args": args}
    try:
        client.wait_ready(timeout=60)
        res["retrain_attached"] = wl.retrain_attached(client)
        res["start_version"] = client.model()["version"]
        stats, stop = wl.Stats(), threading.Event()
        t0 = time.monotonic()
        per = a.rate / a.workers if a.rate > 0 else 0.0
        bound = (lambda n: None if n < 0 else n)
        workers = [wl.Worker(k, lambda: wl.client_for(d), cat, ledger,
                             stats, stop, seed=a.seed * 100 + k, rate=per,
                             t0=t0, max_items=bound(a.new_items),
                             max_users=bound(a.new_users))
                   for k in range(a.workers)]
        sampler = Sampler(d.pid, client, a.rss_every, stop, t0)
        sampler.start()
        for w in workers:
            w.start()
        progress(a, stats, sampler, stop, t0)
        stop.set()
        for w in workers:
            w.join(30)
        sampler.join(30)
        res["seconds"] = time.monotonic() - t0
        res["rows"] = stats.snapshot()
        res["samples"] = sampler.samples
        res["worker_faults"] = [w.fatal for w in workers if w.fatal]
        res["model"] = client.model()
        res["metrics"] = wl.sc.parse_metrics(client.metrics())
        res["api_checkpoints"] = client.checkpoints()["checkpoints"]
    finally:
        res["stop_rc"] = d.stop(timeout=60)
        res["log"] = d.log_text()
    return res


def progress(a, stats, sampler, stop, t0):
    """Sleep through the run, one line a minute."""
    end = t0 + a.minutes * 60
    next_line = t0 + 60
    while time.monotonic() < end:
        stop.wait(min(1.0, max(0.0, end - time.monotonic())))
        if time.monotonic() >= next_line:
            rows = stats.snapshot()
            last = sampler.samples[-1] if sampler.samples else {}
            print("  %4.1f min: %d requests, %d non-2xx, model v%s, "
                  "retrains %s, RSS %.1f MB" % (
                      (time.monotonic() - t0) / 60, len(rows),
                      sum(1 for r in rows if not 200 <= r[3] < 300),
                      last.get("version"), last.get("retrains"),
                      last.get("VmRSS", 0) / 1024), flush=True)
            next_line += 60


def afterwards(binary, workdir, cat, ledger, attached):
    """sgbd check, then the daemon again on the same store: the model it
    serves and every acknowledged write."""
    out = {}
    out["check_rc"], out["check"] = wl.check_store(binary, cat.db)
    out["checkpoints"] = wl.checkpoints(binary, cat.db)
    args = ["--db", cat.db] + wl.retrain_sets(enabled=False)
    d, client = wl.start_daemon(binary, args, workdir, name="verify")
    try:
        current = [c["version"] for c in out["checkpoints"] if c["current"]]
        out["current_checkpoint"] = current[0] if current else None
        if attached:
            wl.wait_for(client.is_ready, 30, 0.1, "the restarted daemon")
            out["served_after_restart"] = client.model()["version"]
        out["verify"] = wl.verify(client, ledger)
    finally:
        out["verify_stop_rc"] = d.stop(timeout=60)
    return out


# ---- the report ----

def report(a, res, after, ledger):
    rows = res["rows"]
    warm = a.warmup if a.warmup is not None else max(30.0, res["seconds"] / 5)
    statuses = collections.Counter(r[3] for r in rows)
    m = res["model"]
    r = m.get("retrain", {})
    swaps = res["metrics"].get("sgbd_model_swaps_total", [({}, 0)])[0][1]
    rep = {
        "command": " ".join(sys.argv),
        "minutes": round(res["seconds"] / 60, 2),
        "workers": a.workers, "rate_target": a.rate,
        "catalogue": {"users": a.users, "items": a.items},
        "requests": len(rows),
        "requests_per_s": round(len(rows) / res["seconds"], 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors(rows),
        "non_4xx_errors": sum(v for k, v in statuses.items()
                              if not (200 <= k < 300 or 400 <= k < 500)),
        "per_minute": per_minute(rows, res["samples"]),
        "per_op": per_op(rows),
        "rss": rss_growth(res["samples"], warm),
        "rss_samples": [{k: s.get(k) for k in
                         ("t", "VmRSS", "RssAnon", "RssFile", "fds",
                          "version", "retrains", "rejected", "failed",
                          "pending", "state", "snapshot_bytes",
                          "snapshots_live", "overlay_items", "items",
                          "users")} for s in res["samples"]],
        "retrain_attached": res["retrain_attached"],
        "retrains": {"total": r.get("retrains_total"),
                     "rejected": r.get("rejected_total"),
                     "failed": r.get("failed_total"),
                     "published": len(wl.log_events(res["log"],
                                                    "retrain_published")),
                     "model_swaps": swaps,
                     "start_version": res["start_version"],
                     "end_version": m.get("version")},
        "retrain_events": retrain_events(res["log"]),
        "acknowledged_writes": ledger.acked_writes,
        "stop_rc": res["stop_rc"],
        "worker_faults": res["worker_faults"],
        "after": {k: v for k, v in after.items() if k != "checkpoints"},
        "checkpoints_kept": [c["version"] for c in after["checkpoints"]],
    }
    rep["failures"] = failures(a, rep)
    return rep


def failures(a, rep):
    f = []
    if rep["non_4xx_errors"]:
        f.append("%d answers were 5xx or failed in transport"
                 % rep["non_4xx_errors"])
    if rep["worker_faults"]:
        f.append("worker faults: %s" % rep["worker_faults"])
    if rep["stop_rc"] != 0:
        f.append("the daemon stopped with %s" % rep["stop_rc"])
    after = rep["after"]
    if after.get("check_rc") != 0:
        f.append("sgbd check: %s" % after.get("check"))
    v = after.get("verify", {})
    if v.get("item_problems") or v.get("events_lost"):
        f.append("lost writes: %d item problems, %d events" % (
            len(v.get("item_problems", [])), v.get("events_lost", 0)))
    if rep["retrain_attached"] and after.get("served_after_restart") != \
            after.get("current_checkpoint"):
        f.append("after restart the daemon serves v%s, the store's current "
                 "checkpoint is v%s" % (after.get("served_after_restart"),
                                        after.get("current_checkpoint")))
    if not a.allow_no_retrain and not rep["retrains"]["published"]:
        f.append("no retrain published (attached: %s)"
                 % rep["retrain_attached"])
    g = rep["rss"]
    if g and g["anon_growth_mb"] > a.max_anon_growth_mb:
        f.append("RssAnon grew %.1f MB after warm-up (limit %.0f)" % (
            g["anon_growth_mb"], a.max_anon_growth_mb))
    return f


def _int(v):
    return "-" if v is None else "%d" % v


def print_report(rep):
    p = print
    p("\n== soak report ==")
    p("command: %s" % rep["command"])
    p("duration %.2f min, %d workers, %d requests (%.1f/s), acknowledged "
      "writes %d" % (rep["minutes"], rep["workers"], rep["requests"],
                     rep["requests_per_s"], rep["acknowledged_writes"]))
    p("statuses: %s" % rep["statuses"])
    p("non-2xx: %s" % (rep["errors"] or "none"))
    p("\nminute  requests  p50_ms  p99_ms  max_ms  non_2xx  model  pending")
    for m in rep["per_minute"]:
        p("%6d  %8d  %6.2f  %6.2f  %6.1f  %7d  %5s  %7s" % (
            m["minute"], m["requests"], m["p50_ms"], m["p99_ms"],
            m["max_ms"], m["non_2xx"], "v%s" % m["version"],
            m["pending"]))
    p("\nop            requests  p50_ms  p99_ms")
    for op, v in rep["per_op"].items():
        p("%-12s  %8d  %6.2f  %6.2f" % (op, v["requests"], v["p50_ms"],
                                        v["p99_ms"]))
    p("\n     t  VmRSS_MB  RssAnon_MB  snapshots_MB  fds  model   items  "
      "users  overlay")
    for s in rep["rss_samples"]:
        p("%6.0f  %8.1f  %10.1f  %12.1f  %3s  %5s  %6s  %5s  %7s" % (
            s["t"], (s["VmRSS"] or 0) / 1024, (s["RssAnon"] or 0) / 1024,
            (s["snapshot_bytes"] or 0) / 2 ** 20, s["fds"],
            "v%s" % s["version"], _int(s["items"]), _int(s["users"]),
            _int(s["overlay_items"])))
    p("growth after warm-up: %s" % rep["rss"])
    p("retrains: %s" % rep["retrains"])
    ev = rep["retrain_events"]
    if ev:
        secs = [e["seconds"] for e in ev]
        p("retrain jobs: %d, seconds p50 %.2f max %.2f; outcomes in order: "
          "%s" % (len(ev), wl.percentile(secs, 50), max(secs),
                  " ".join(e["outcome"][0] for e in ev)))
    p("after: %s" % json.dumps(rep["after"], sort_keys=True))
    p("checkpoints kept: %s" % rep["checkpoints_kept"])
    p("\nresult: %s" % ("PASS" if not rep["failures"] else
                        "FAIL: " + "; ".join(rep["failures"])))


def main(argv):
    a = parse_args(argv)
    binary = wl.find_binary(a.bin)
    if not binary:
        print("soak.py: no sgbd binary (use --bin or set SGBD_BIN)",
              file=sys.stderr)
        return 2
    workdir = a.workdir or tempfile.mkdtemp(prefix="sgbd_soak_")
    os.makedirs(workdir, exist_ok=True)
    ledger = wl.Ledger()
    try:
        cat = build(a, binary, workdir)
        res = traffic(a, binary, workdir, cat, ledger)
        after = afterwards(binary, workdir, cat, ledger,
                           res["retrain_attached"])
        rep = report(a, res, after, ledger)
    finally:
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(rep)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=1, sort_keys=True)
    return 1 if rep["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
