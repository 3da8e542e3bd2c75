#!/usr/bin/env python3
# ctest: labels=integration timeout=150
"""test_faults_sigkill.py - SIGKILL at random moments (issue #8).

Six cycles on one store. Each cycle starts the daemon with a retrain
policy that fires about every second, runs client threads that write
(item PUTs with features, deletes, interactions) and read, and kills the
daemon with SIGKILL: in even cycles at a random moment 0.3-2 s into the
traffic, in odd ones while a retrain is training (plus 0-0.2 s, so the
kill lands in training, the gate, the checkpoint save or the publish).

Safe outcome (docs/security.md, "Faults"), checked after every kill:
* `sgbd check` passes on the killed store;
* the restarted daemon turns ready and serves the store's current
  checkpoint, and answers recommendations;
* every write acknowledged before any kill is in the store (an item reads
  back as its last acknowledged state or as a later write that got no
  answer; an acknowledged event posted again is already known).
Finally SIGTERM exits 0. The retrainer's own crash points (in-process,
one kill per point) are tests/test_retrain.c; a single kill through the
daemon on real data is tests/test_retrain_e2e.py.
"""
import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "soak"))
import workload as wl  # noqa: E402

CYCLES = 6


def daemon_args(db):
    return ["--db", db] + wl.retrain_sets(
        min_item_updates=10, min_interactions=40, debounce_s=0.2,
        min_interval_s=0.5, epochs=3, keep=4)


def wait_training(client, timeout=6.0):
    """True once /v1/model says training (False at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.model()["state"] == "training":
                return True
        except wl.sc.SGBDError:
            return False
        time.sleep(0.01)
    return False


def check_restart(binary, db, work, ledger, cycle):
    """Start on the killed store; check the model and every acknowledged
    write; the running daemon and its client."""
    rc, text = wl.check_store(binary, db)
    wl.expect(rc == 0, "cycle %d: sgbd check after the kill: %s"
              % (cycle, text))
    d, client = wl.start_daemon(binary, daemon_args(db), work,
                                name="cycle%d" % cycle)
    client.wait_ready(timeout=30)
    m = client.model()
    cur = [c["version"] for c in client.checkpoints()["checkpoints"]
           if c["current"]]
    wl.expect(cur and m["version"] == cur[0], "cycle %d: serves v%s, the "
              "current checkpoint is %s" % (cycle, m["version"], cur))
    reco = client.recommend("1", k=5)
    wl.expect(len(reco["items"]) == 5, "cycle %d: %s" % (cycle, reco))
    res = wl.verify(client, ledger)
    wl.expect(not res["item_problems"], "cycle %d: %s" % (
        cycle, res["item_problems"][:5]))
    wl.expect(res["events_lost"] == 0, "cycle %d: %d acknowledged events "
              "lost" % (cycle, res["events_lost"]))
    return d, client, m["version"], res


def traffic_then_kill(d, client, cat, ledger, cycle, rng):
    """Workers until the kill; whether it landed in a training job."""
    stats, stop = wl.Stats(), threading.Event()
    workers = [wl.Worker(cycle * 10 + k, lambda: wl.client_for(d), cat,
                         ledger, stats, stop, seed=cycle * 10 + k,
                         write_only=k < 3) for k in range(4)]
    for w in workers:
        w.start()
    in_training = False
    if cycle % 2:
        in_training = wait_training(client)
        time.sleep(rng.uniform(0, 0.2))
    else:
        time.sleep(rng.uniform(0.3, 2.0))
    d.proc.kill()
    d.proc.wait()
    stop.set()
    for w in workers:
        w.join(15)
    faults = [w.fatal for w in workers if w.fatal]
    wl.expect(not faults, "cycle %d: worker faults %s" % (cycle, faults))
    rows = stats.snapshot()
    bad = [r for r in rows if r[3] >= 500]
    wl.expect(not bad, "cycle %d: 5xx before the kill: %s" % (cycle,
                                                            bad[:3]))
    return in_training, len(rows)


def test_faults_sigkill_during_writes_and_retrains():
    binary = wl.need_binary()
    rng = random.Random(2024)
    work = tempfile.mkdtemp(prefix="sgbd_faults_kill_")
    d = None
    try:
        cat = wl.trained_store(binary, work, users=400, items=250)
        ledger = wl.Ledger()
        d, client = wl.start_daemon(binary, daemon_args(cat.db), work,
                                    name="first")
        client.wait_ready(timeout=30)
        if not wl.retrain_attached(client):
            raise wl.Skip("the daemon has no retrainer attached")
        kills_in_training = 0
        for cycle in range(CYCLES):
            in_training, n = traffic_then_kill(d, client, cat, ledger,
                                               cycle, rng)
            kills_in_training += in_training
            d, client, version, res = check_restart(binary, cat.db, work,
                                                    ledger, cycle)
            print("  cycle %d: %d requests, killed %s; restart serves v%d; "
                  "%d items and %d events verified (%d items, %d events "
                  "unanswered)" % (cycle, n, "in training" if in_training
                                   else "at random", version,
                                   res["items_checked"],
                                   res["events_checked"],
                                   res["unsure_items"],
                                   res["unsure_events"]))
        wl.expect(kills_in_training > 0, "no kill landed in a retrain")
        wl.expect(d.stop() == 0, "the last daemon did not stop with 0")
        d = None
        rc, text = wl.check_store(binary, cat.db)
        wl.expect(rc == 0, "sgbd check at the end: %s" % text)
    finally:
        if d:
            d.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    wl.run_cases([test_faults_sigkill_during_writes_and_retrains])
