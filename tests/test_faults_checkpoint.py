#!/usr/bin/env python3
# ctest: labels=integration timeout=120
"""test_faults_checkpoint.py - a checkpoint is damaged on disk (issue #8).

Two checkpoints from `sgbd train --db` (seeds 1 and 2, each also written
to a file with --out, so their bytes are known). With the daemon
stopped, one bit of version 2's parameters is flipped inside data.mdb
(found by a 64-byte run of the file's arena).

Safe outcome (docs/security.md, "Faults"):
* `sgbd check` exits 1 and names checkpoint 2;
* the daemon starts, logs ev=checkpoint_corrupt version=2 and serves
  version 1 (the previous checkpoint); rollback to 2 is refused with 409
  corrupt; writes and a retrain work, and the retrain's new checkpoint is
  what a restart serves;
* with every kept checkpoint damaged the daemon still starts: liveness 200,
  readiness 503 no_model (no crash loop under systemd), writes are stored,
  and a retrain started by hand trains a fresh model and turns it ready.
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "soak"))
import workload as wl  # noqa: E402


def flip_in_store(db, needle, at=10):
    """Flip bit 0 of byte `at` of every copy of needle in db/data.mdb;
    how many copies there were."""
    path = os.path.join(db, "data.mdb")
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        hits, k = [], data.find(needle)
        while k >= 0:
            hits.append(k)
            k = data.find(needle, k + 1)
        for k in hits:
            data[k + at] ^= 0x01
        f.seek(0)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(hits)


def window(path, back):
    """64 bytes of a checkpoint file, `back` bytes before its end (inside
    the float arena, which is the file's tail)."""
    with open(path, "rb") as f:
        data = f.read()
    return data[len(data) - back:len(data) - back + 64]


def two_checkpoints(binary, work):
    """A store with v1 (seed 1) and v2 (seed 2), also written to v1.bin
    and v2.bin."""
    data = os.path.join(work, "catalogue")
    db = os.path.join(work, "db")
    wl.run(binary, "synth", "--out", data, "--users", 400, "--items", 250,
           "--seed", 7)
    wl.run(binary, "import", "--data", data, "--db", db, "--quiet")
    for seed in (1, 2):
        wl.run(binary, "train", "--db", db, "--model", "vbpr", "--epochs", 2,
               "--seed", seed, "--quiet", "--out",
               os.path.join(work, "v%d.bin" % seed))
    cps = {c["version"]: c for c in wl.checkpoints(binary, db)}
    wl.expect(cps[2]["current"] and cps[1]["previous"],
              "expected current 2, previous 1: %s" % sorted(cps))
    return db


def serve(binary, db, work, name):
    args = ["--db", db, "--set", "retrain.initial_epochs=5"] + \
        wl.retrain_sets(enabled=False)
    return wl.start_daemon(binary, args, work, name=name)


def test_faults_checkpoint_damaged_current_serves_previous():
    binary = wl.need_binary()
    work = tempfile.mkdtemp(prefix="sgbd_faults_ckpt_")
    d = None
    try:
        db = two_checkpoints(binary, work)
        d, client = serve(binary, db, work, "before")
        client.wait_ready(timeout=30)
        if not wl.retrain_attached(client):
            raise wl.Skip("the daemon has no retrainer attached")
        wl.expect(client.model()["version"] == 2, "v2 is not served")
        wl.expect(d.stop() == 0, "stop rc")

        hits = flip_in_store(db, window(os.path.join(work, "v2.bin"), 8192))
        wl.expect(hits == 1, "v2's bytes found %d times in data.mdb" % hits)
        rc, text = wl.check_store(binary, db)
        print("  sgbd check: rc %d: %s" % (rc, text.splitlines()[-1]))
        wl.expect(rc == 1, "sgbd check exited %d on a damaged checkpoint"
                  % rc)
        wl.expect("checkpoint 2" in text, "sgbd check does not name "
                  "checkpoint 2:\n%s" % text)

        d, client = serve(binary, db, work, "damaged")
        client.wait_ready(timeout=30)
        m = client.model()
        wl.expect(m["version"] == 1, "serves v%s, not the previous v1"
                  % m["version"])
        wl.expect(wl.log_events(d.log_text(), "checkpoint_corrupt"),
                  "no ev=checkpoint_corrupt in the log")
        reco = client.recommend("3", k=5)
        wl.expect(reco["model_version"] == 1 and len(reco["items"]) == 5,
                  "recommendations from the fallback: %s" % reco)
        try:
            client.rollback(2)
            raise AssertionError("rollback to the damaged v2 was accepted")
        except wl.sc.Conflict as e:
            wl.expect(e.code == "corrupt", "rollback refused as %s" % e.code)
        wl.expect(client.model()["version"] == 1, "the refusal moved it")

        # Writes and a retrain go on; the new checkpoint survives a restart.
        client.put_item("after-damage", features={
            ch: [0.25] * w for ch, w in wl.CHANNELS.items()})
        total = wl.retrain_counts(client)[0]
        client.retrain(reason="after damage")
        m = wl.wait_retrain_end(client, total, timeout=60)
        wl.expect(m["retrain"]["last_outcome"] == "published",
                  "retrain: %s (%s)" % (m["retrain"]["last_outcome"],
                                        m["retrain"]["message"]))
        v3 = m["version"]
        wl.expect(d.stop() == 0, "stop rc")
        d, client = serve(binary, db, work, "after")
        client.wait_ready(timeout=30)
        wl.expect(client.model()["version"] == v3, "a restart serves v%s, "
                  "not the new v%d" % (client.model()["version"], v3))
        client.get_item("after-damage")
        wl.expect(d.stop() == 0, "stop rc")
        d = None
    finally:
        if d:
            d.kill()
        shutil.rmtree(work, ignore_errors=True)


def test_faults_checkpoint_all_damaged_starts_not_ready():
    binary = wl.need_binary()
    work = tempfile.mkdtemp(prefix="sgbd_faults_ckpt_")
    d = None
    try:
        db = two_checkpoints(binary, work)
        for v in (1, 2):
            hits = flip_in_store(db, window(os.path.join(
                work, "v%d.bin" % v), 8192))
            wl.expect(hits == 1, "v%d's bytes found %d times" % (v, hits))
        d, client = serve(binary, db, work, "all-damaged")
        if not wl.retrain_attached(client):
            raise wl.Skip("the daemon has no retrainer attached")
        wl.expect(client.healthz()["status"] == "ok", "healthz")
        try:
            client.readyz()
            raise AssertionError("ready with every checkpoint damaged")
        except wl.sc.Unavailable as e:
            wl.expect(e.code == "no_model", "readyz: %s" % e.code)
        wl.expect(wl.log_events(d.log_text(), "restore_failed"),
                  "no ev=restore_failed in the log")
        try:
            client.recommend("3", k=5)
            raise AssertionError("recommendations without a model")
        except wl.sc.Unavailable as e:
            wl.expect(e.code == "no_model", "recommend: %s" % e.code)
        got = client.put_item("while-unready", features={
            ch: [0.5] * w for ch, w in wl.CHANNELS.items()})
        wl.expect(got["created"], "the write was not stored")
        client.get_item("while-unready")
        print("  every checkpoint damaged: alive, 503 no_model, writes "
              "stored; log: %s" % wl.log_events(d.log_text(),
                                                "restore_failed")[0][:160])

        # A retrain started by hand trains a fresh model and serves it.
        total = wl.retrain_counts(client)[0]
        client.retrain(reason="no valid checkpoint")
        m = wl.wait_retrain_end(client, total, timeout=60)
        print("  retrain with no valid checkpoint: %s (%s)" % (
            m["retrain"]["last_outcome"], m["retrain"]["message"]))
        wl.expect(m["retrain"]["last_outcome"] == "published",
                  "the fresh retrain ended %s" % m["retrain"]["last_outcome"])
        wl.expect(client.is_ready(), "not ready after the fresh model")
        wl.expect(d.stop() == 0, "stop rc")
        d = None
    finally:
        if d:
            d.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    wl.run_cases([test_faults_checkpoint_damaged_current_serves_previous,
                  test_faults_checkpoint_all_damaged_starts_not_ready])
