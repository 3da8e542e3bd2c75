#!/usr/bin/env python3
# ctest: labels=integration timeout=120
"""test_faults_disk.py - the disk under the store fills up (issue #8).

The store lives on a tmpfs mounted with a size limit (root only; the case
skips with the reason where mounting is not allowed). The daemon serves a
trained checkpoint; items are PUT until the disk refuses twenty writes in a
row. Safe outcome (docs/security.md, "Faults"):

* a refused write is answered with an error (507 storage_full) and changes
  nothing; the daemon does not crash;
* reads go on: recommendations, batches, similar items, item reads,
  status routes;
* a retrain cannot save its checkpoint: it fails, is counted, and the
  model it would have replaced keeps serving;
* once space is back (the tmpfs is remounted larger) writes and retrains
  succeed again without a restart;
* after a restart every acknowledged write is in the store and
  `sgbd check` passes.

The capped LMDB map (no disk involved) is tests/test_faults_store.c.
"""
import collections
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "soak"))
import workload as wl  # noqa: E402

FULL_RUN = 20          # refusals in a row that mean "full"
MAX_PUTS = 20000


def mount_tmpfs(path, size):
    if os.geteuid() != 0:
        raise wl.Skip("needs root to mount a tmpfs")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size,
                        "tmpfs", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise wl.Skip("cannot mount a tmpfs here: %s"
                      % p.stdout.decode().strip())


def resize_tmpfs(path, size):
    subprocess.run(["mount", "-o", "remount,size=%s" % size, path],
                   check=True)


def umount(path):
    for _ in range(20):
        if subprocess.run(["umount", path], stderr=subprocess.DEVNULL
                          ).returncode == 0:
            return
        time.sleep(0.1)


def fill(client, cat, ledger, rng):
    """PUT full-<k> until FULL_RUN refusals in a row; Counter of refusals
    by (status, code)."""
    refused = collections.Counter()
    run = 0
    for k in range(MAX_PUTS):
        if run >= FULL_RUN:
            return refused
        iid = "full-%d" % k
        feats = {ch: wl.feature_vector(w, rng)
                 for ch, w in cat.channels.items()}
        attrs = {"k": k, "pad": "p" * 2048}
        state = wl.item_state(feats, attrs)
        ledger.item_sent(iid, state)
        try:
            client.put_item(iid, features=feats, attributes=attrs)
            ledger.item_answered(iid, state, True)
            run = 0
        except wl.sc.APIError as e:
            ledger.item_answered(iid, state, False)
            refused[(e.status, e.code)] += 1
            run += 1
    raise AssertionError("the disk never filled")


def reads_work(client, cat, ledger, rng):
    acked = sorted(ledger.items)
    for _ in range(20):
        client.recommend(rng.choice(cat.users), k=10)
        iid = rng.choice(acked)
        got = wl.state_of_answer(client.get_item(iid))
        wl.expect(got == ledger.items[iid], "item %s reads back changed"
                  % iid)
    client.recommend_batch(rng.sample(cat.users, 20), k=5)
    client.similar(rng.choice(cat.items), k=5)
    client.model()
    client.readyz()
    client.metrics()


def post_events(client, cat, ledger, rng, n):
    """One batch of n events; the status (200, or the refusal's)."""
    evs = [(rng.choice(cat.users), rng.choice(cat.items),
            wl.next_timestamp()) for _ in range(n)]
    ledger.events_sent(evs)
    try:
        client.post_interactions(evs, batch_size=n)
        ledger.events_answered(evs, True)
        return 200
    except wl.sc.APIError as e:
        ledger.events_answered(evs, False)
        return e.status


def test_faults_disk_full_tmpfs():
    binary = wl.need_binary()
    rng = random.Random(11)
    work = tempfile.mkdtemp(prefix="sgbd_faults_disk_")
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    d = None
    try:
        mount_tmpfs(mnt, "4m")
        cat = wl.trained_store(binary, work, users=300, items=200)
        db = os.path.join(mnt, "db")
        os.mkdir(db)
        shutil.copy(os.path.join(cat.db, "data.mdb"), db)
        cat.db = db
        ledger = wl.Ledger()
        args = ["--db", db, "--set", "store.map_size_mb=2"] + \
            wl.retrain_sets(enabled=False)
        d, client = wl.start_daemon(binary, args, work, name="full")
        client.wait_ready(timeout=30)
        if not wl.retrain_attached(client):
            raise wl.Skip("the daemon has no retrainer attached")
        v0 = client.model()["version"]

        # Full: every refusal is an error answer, the daemon lives on.
        refused = fill(client, cat, ledger, rng)
        print("  acknowledged %d items, refusals %s" % (
            len(ledger.items), dict(refused)))
        wl.expect(len(ledger.items) > 0, "no write was accepted at all")
        wl.expect(all(s >= 500 for s, _ in refused),
                  "a refusal of a full disk was a %s" % refused)
        wl.expect(d.proc.poll() is None, "the daemon died")
        wl.expect(set(refused) == {(507, "storage_full")},
                  "ENOSPC from the disk is answered %s, not 507 "
                  "storage_full" % sorted(refused))
        reads_work(client, cat, ledger, rng)
        st = post_events(client, cat, ledger, rng, 500)
        wl.expect(st == 200 or st >= 500, "events on a full disk: %d" % st)
        print("  500 events on the full disk: %d" % st)

        # A retrain cannot store its checkpoint: failed, counted, the old
        # model serves.
        total, failed, _, _ = wl.retrain_counts(client)
        client.retrain(reason="disk full")
        m = wl.wait_retrain_end(client, total, timeout=60)
        wl.expect(m["retrain"]["last_outcome"] == "failed",
                  "retrain on a full disk: %s (%s)" % (
                      m["retrain"]["last_outcome"],
                      m["retrain"]["message"]))
        wl.expect(m["retrain"]["failed_total"] == failed + 1,
                  "the failed retrain was not counted")
        wl.expect(m["version"] == v0, "the served version changed")
        print("  retrain on the full disk: %s, v%d serves" % (
            m["retrain"]["message"], m["version"]))
        reads_work(client, cat, ledger, rng)

        # Space again: writes and a retrain succeed without a restart.
        resize_tmpfs(mnt, "64m")
        feats = {ch: wl.feature_vector(w, rng)
                 for ch, w in cat.channels.items()}
        state = wl.item_state(feats, {})
        ledger.item_sent("after-full", state)
        client.put_item("after-full", features=feats, attributes={})
        ledger.item_answered("after-full", state, True)
        wl.expect(post_events(client, cat, ledger, rng, 50) == 200,
                  "events refused after the disk grew")
        total, _, _, _ = wl.retrain_counts(client)
        client.retrain(reason="space back")
        m = wl.wait_retrain_end(client, total, timeout=60)
        wl.expect(m["retrain"]["last_outcome"] in ("published", "rejected"),
                  "retrain after the disk grew: %s (%s)" % (
                      m["retrain"]["last_outcome"],
                      m["retrain"]["message"]))
        wl.expect(d.stop() == 0, "the daemon did not stop with 0")

        # Nothing acknowledged is lost.
        rc, text = wl.check_store(binary, db)
        wl.expect(rc == 0, "sgbd check: %s" % text)
        d, client = wl.start_daemon(binary, args, work, name="reopen")
        res = wl.verify(client, ledger)
        wl.expect(not res["item_problems"], res["item_problems"][:5])
        wl.expect(res["events_lost"] == 0, "%d acknowledged events lost"
                  % res["events_lost"])
        wl.expect(d.stop() == 0, "the daemon did not stop with 0")
        d = None
    finally:
        if d:
            d.kill()
        umount(mnt)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    wl.run_cases([test_faults_disk_full_tmpfs])
