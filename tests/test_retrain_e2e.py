#!/usr/bin/env python3
# ctest: labels=integration timeout=900
"""test_retrain_e2e.py - online retraining through the real daemon on
../shared/data/scientific (issue #6 checks).

One store (the scientific folder imported), one daemon after another:
  1. start with no checkpoint: the first model trains in the background
     and the daemon turns ready; item feature updates and new items are
     PUT while clients read: a retrain starts, finishes and publishes a
     new version, with zero failed requests and versions that never go
     back for a client;
  2. gate: SIGHUP to a learning rate that diverges, POST
     /v1/model/retrain: the candidate is rejected and the old version
     keeps serving;
  3. crash: SIGKILL while a retrain trains; the restarted daemon serves
     the last published version and retrains again.
Figures on stdout ("bench ..." lines): time from a PUT of a new item to
its appearance in recommendations, p50/p99 latency of recommendations
while a retrain runs versus idle.

Skips when the data is absent or the daemon has no retrainer attached.
"""
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sgbd_http import Daemon, check, run  # noqa: E402

DATA = os.path.join(os.environ.get("SGBD_DATA", "../shared/data"),
                    "scientific")
BIN = os.environ.get("SGBD_BIN")
RECO = "/v1/users/{id}/recommendations"
ITEM = "/v1/items/{id}"
MODEL = "/v1/model"

CONF = """[model]
name = vbpr
learning_rate = %(lr)s
[retrain]
min_item_updates = 30
min_interactions = 100
debounce_s = 0.5
min_interval_s = 0
epochs = 3
initial_epochs = 40
tolerance = %(tol)s
threads = 1
[train]
stopping_step = 5
[log]
level = info
"""

STATE = {}


def skip(why):
    print("skipped: %s" % why)
    sys.exit(77)


def load_npy(path):
    """float32 C-order 2-D .npy -> (rows, cols, flat list)."""
    with open(path, "rb") as f:
        raw = f.read()
    check(raw[:6] == b"\x93NUMPY", path + ": not .npy")
    hlen = struct.unpack("<H", raw[8:10])[0] if raw[6] == 1 else \
        struct.unpack("<I", raw[8:12])[0]
    start = (10 if raw[6] == 1 else 12) + hlen
    header = raw[start - hlen:start].decode("latin1")
    check("'<f4'" in header and "False" in header, path + ": " + header)
    shape = header.split("(")[1].split(")")[0].split(",")
    rows, cols = int(shape[0]), int(shape[1])
    vals = struct.unpack("<%df" % (rows * cols), raw[start:])
    return rows, cols, vals


def features_of(i):
    out = {}
    for name, (rows, cols, vals) in STATE["feat"].items():
        out[name] = list(vals[i * cols:(i + 1) * cols])
    return out


def conf_text(lr="0.001", tol="0.05"):
    return CONF % {"lr": lr, "tol": tol}


def start(conf):
    d = Daemon(args=["--db", STATE["db"]], conf=conf, synthetic=None)
    r = d.request("GET", MODEL, route=MODEL)
    if not r.json["retrain"]["attached"]:
        d.close()
        skip("no retrainer attached to the daemon (serve.c)")
    return d


def model(d):
    return d.request("GET", MODEL, route=MODEL).json


def wait_for(d, cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = model(d)
        if cond(m):
            return m
        time.sleep(0.1)
    raise AssertionError("%s: timed out; /v1/model: %r\n%s" %
                         (what, model(d), d.log()[-3000:]))


class Readers:
    """Clients asking for recommendations as fast as they can."""

    def __init__(self, d, n=2):
        self.d = d
        self.stop = False
        self.samples = []           # (t, latency_s, status, version)
        self.backwards = 0
        self.threads = [threading.Thread(target=self.loop, args=(k,))
                        for k in range(n)]
        for t in self.threads:
            t.start()

    def loop(self, k):
        rnd = random.Random(k)
        conn = self.d.connect()
        last = 0
        while not self.stop:
            u = rnd.randrange(STATE["users"])
            t0 = time.time()
            try:
                conn.request("GET", "/v1/users/%d/recommendations?k=10" % u)
                r = conn.getresponse()
                r.read()
                status = r.status
                ver = int(r.getheader("X-Model-Version", "0"))
            except Exception:
                status, ver = -1, 0
                conn.close()
                conn = self.d.connect()
            dt = time.time() - t0
            if ver < last:
                self.backwards += 1
            last = max(last, ver)
            self.samples.append((t0, dt, status, ver))

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()
        return self.samples


class Monitor:
    """Polls /v1/model: when was a retrain running."""

    def __init__(self, d):
        self.d = d
        self.stop = False
        self.spans = []
        self.t = threading.Thread(target=self.loop)
        self.t.start()

    def loop(self):
        conn = self.d.connect()
        begin = None
        while not self.stop:
            conn.request("GET", MODEL)
            r = conn.getresponse()
            body = r.read()
            training = b'"state":"training"' in body
            now = time.time()
            if training and begin is None:
                begin = now
            if not training and begin is not None:
                self.spans.append((begin, now))
                begin = None
            time.sleep(0.02)
        if begin is not None:
            self.spans.append((begin, time.time()))

    def finish(self):
        self.stop = True
        self.t.join()
        return self.spans


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def latency_report(samples, spans):
    during, idle = [], []
    for t0, dt, status, _ in samples:
        inside = any(a <= t0 <= b for a, b in spans)
        (during if inside else idle).append(dt)
    print("bench retrain_e2e_latency idle_n=%d idle_p50_ms=%.2f "
          "idle_p99_ms=%.2f training_n=%d training_p50_ms=%.2f "
          "training_p99_ms=%.2f" %
          (len(idle), 1e3 * pct(idle, 0.5), 1e3 * pct(idle, 0.99),
           len(during), 1e3 * pct(during, 0.5), 1e3 * pct(during, 0.99)))
    sys.stdout.flush()


def put_to_visible(d):
    """PUT a new item (a copy of user 0's top item's features), then ask
    for user 0's recommendations on the same connection until it shows.
    Raw requests: schema validation of 1,000 items would dominate."""
    r = d.request("GET", "/v1/users/0/recommendations?k=1", route=RECO)
    top = int(r.json["items"][0]["item_id"])
    body = json.dumps({"features": features_of(top)}).encode()
    conn = d.connect()
    polls = 0
    t0 = time.time()
    conn.request("PUT", "/v1/items/fresh-0", body=body,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    check(r.status == 201, "PUT: %d %r" % (r.status, r.read()))
    r.read()
    t_put = time.time() - t0
    while time.time() - t0 < 5:
        conn.request("GET", "/v1/users/0/recommendations?k=1000")
        r = conn.getresponse()
        polls += 1
        if b'"fresh-0"' in r.read():
            break
    seen = time.time() - t0
    check(seen < 5, "new item never appeared")
    print("bench retrain_e2e_put_to_visible put_ms=%.2f visible_ms=%.2f "
          "gets=%d" % (1e3 * t_put, 1e3 * seen, polls))
    sys.stdout.flush()


def test_retrain_e2e_first_model_then_updates_publish():
    d = start(conf_text())
    STATE["daemon"] = d
    m = wait_for(d, lambda m: m["version"] >= 1, 600, "first model")
    check(m["model"] == "vbpr", m)
    r = d.request("GET", "/readyz", route="/readyz")
    check(r.status == 200, r)
    v1 = m["version"]

    readers, mon = Readers(d), Monitor(d)
    time.sleep(1.0)                 # idle samples first
    put_to_visible(d)
    rnd = random.Random(5)
    for k in range(40):             # existing items get another's vectors
        i, j = rnd.randrange(STATE["items"]), rnd.randrange(STATE["items"])
        r = d.request("PUT", "/v1/items/%d" % i, {"features": features_of(j)},
                      route=ITEM)
        check(r.status in (200, 201), r)
    for k in range(1, 6):
        r = d.request("PUT", "/v1/items/fresh-%d" % k,
                      {"features": features_of(rnd.randrange(STATE["items"]))},
                      route=ITEM)
        check(r.status == 201, r)
    m = wait_for(d, lambda m: m["version"] > v1 and
                 m["retrain"]["last_outcome"] == "published", 600,
                 "retrain after updates")
    time.sleep(1.0)                 # idle samples after
    samples, spans = readers.finish(), mon.finish()

    failed = [s for s in samples if s[2] != 200]
    check(not failed, "%d failed requests of %d" % (len(failed), len(samples)))
    check(readers.backwards == 0, "a client saw versions go back")
    check(spans, "never saw the retrain running")
    check(max(s[3] for s in samples) == m["version"], "new version served")
    r = d.request("GET", "/v1/items/fresh-3", route=ITEM)
    check(r.status == 200 and r.json["recommendable"], r)
    latency_report(samples, spans)
    STATE["published"] = m["version"]


def test_retrain_e2e_diverging_config_is_rejected():
    d = STATE["daemon"]
    before = model(d)
    with open(d.conf, "w") as f:
        f.write(conf_text(lr="1000", tol="0.002"))
    d.signal(signal.SIGHUP)
    d.wait_log(r"ev=reloaded")
    rejected = before["retrain"]["rejected_total"]
    r = d.request("POST", "/v1/model/retrain", {}, route="/v1/model/retrain")
    check(r.status == 202, r)
    m = wait_for(d, lambda m: m["retrain"]["rejected_total"] > rejected or
                 m["retrain"]["failed_total"] >
                 before["retrain"]["failed_total"], 600, "gate verdict")
    check(m["retrain"]["last_outcome"] == "rejected", m)
    check(m["version"] == before["version"], "old version kept: %r" % m)
    r = d.request("GET", "/v1/users/1/recommendations", route=RECO)
    check(r.status == 200 and r.json["model_version"] == before["version"],
          r)
    d.wait_log(r"ev=retrain_rejected")


def test_retrain_e2e_sigkill_during_retrain_restarts():
    d = STATE["daemon"]
    with open(d.conf, "w") as f:
        f.write(conf_text())
    d.signal(signal.SIGHUP)
    d.wait_log(r"ev=reloaded")
    served = model(d)["version"]
    # enough interactions for the threshold: a retrain starts
    body = {"interactions": [{"user_id": str(u), "item_id": str(u % 97),
                              "timestamp": 10 ** 9 + u}
                             for u in range(150)]}
    r = d.request("POST", "/v1/interactions", body, route="/v1/interactions")
    check(r.status == 200, r)
    wait_for(d, lambda m: m["state"] == "training", 120, "retrain running")
    d.proc.kill()
    d.proc.wait()
    d.close()

    d = start(conf_text())
    STATE["daemon"] = d
    m = model(d)
    check(m["version"] == served, "restart serves %d, expected %d" %
          (m["version"], served))
    m = wait_for(d, lambda m: m["retrain"]["retrains_total"] >= 1 and
                 m["state"] == "idle", 600, "retrain again")
    check(m["retrain"]["last_outcome"] == "published", m)
    check(m["version"] > served, m)
    check(d.stop() == 0, "clean exit")
    d.close()


def main():
    if not BIN:
        skip("SGBD_BIN is not set (run through ctest)")
    if not os.path.exists(os.path.join(DATA, "scientific.inter")):
        skip("no " + DATA)
    STATE["dir"] = tempfile.mkdtemp(prefix="sgbd_retrain_e2e_")
    STATE["db"] = os.path.join(STATE["dir"], "db")
    subprocess.run([BIN, "import", "--data", DATA, "--db", STATE["db"],
                    "--quiet"], check=True, stdout=subprocess.DEVNULL)
    STATE["feat"] = {n: load_npy(os.path.join(DATA, n + "_feat.npy"))
                     for n in ("image", "text")}
    STATE["items"] = STATE["feat"]["image"][0]
    STATE["users"] = 2928
    try:
        run([test_retrain_e2e_first_model_then_updates_publish,
             test_retrain_e2e_diverging_config_is_rejected,
             test_retrain_e2e_sigkill_during_retrain_restarts])
    finally:
        if "daemon" in STATE:
            STATE["daemon"].close()
        subprocess.run(["rm", "-rf", STATE["dir"]])


if __name__ == "__main__":
    main()
