#!/usr/bin/env python3
# ctest: labels=integration timeout=120
"""test_faults_disconnect.py - clients that go away mid-request (issue #8).

Raw sockets against the real daemon while a well-behaved client keeps
asking for recommendations:

* half-sent bodies: headers with a Content-Length, part of the body, then
  close (FIN) or reset (RST); the same with a chunked body;
* gone while waiting: a complete request (a heavy batch, a large k, an
  item PUT) and close or reset at once, before the answer.

Safe outcome (docs/security.md, "Faults"): the other client gets every
answer; nothing of a half-sent write is stored; a complete write whose
client closed the connection (FIN) is stored whole, one whose client
reset it is stored whole or not at all; afterwards the daemon
holds no more descriptors than before, no request counts as in flight,
and SIGTERM drains at once (a leaked in-flight request would hold the
drain for drain_timeout_s). Slow clients (slowloris) are
tests/test_http_limits.py.
"""
import json
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "soak"))
import workload as wl  # noqa: E402

ROUNDS = 150
SYNTH = "2000,1000,32,7"        # users, items, width, seed
CHANNELS = {"image": 64, "text": 32}


class Good(threading.Thread):
    """A client that asks for recommendations until stopped."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.client = wl.sc.Client(url, retries=0, timeout=10)
        self.stop = threading.Event()
        self.ok = 0
        self.bad = []

    def run(self):
        rng = random.Random(3)
        while not self.stop.is_set():
            try:
                self.client.recommend("u%d" % rng.randrange(2000), k=10)
                self.ok += 1
            except wl.sc.SGBDError as e:
                self.bad.append(str(e))
        self.client.close()


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def hang_up(s, reset):
    """Close s: with RST when reset (SO_LINGER 0), else a FIN."""
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
    s.close()


def item_body(k):
    rng = random.Random(k)
    return json.dumps({"features": {
        ch: [rng.randint(-500, 500) / 64.0 for _ in range(w)]
        for ch, w in CHANNELS.items()}}).encode()


def head(method, path, length=None, chunked=False):
    h = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
    h += "Content-Type: application/json\r\n"
    if chunked:
        h += "Transfer-Encoding: chunked\r\n"
    elif length is not None:
        h += "Content-Length: %d\r\n" % length
    return (h + "\r\n").encode()


def half_sent(port, k):
    """One of four ways to abandon a request body."""
    body = item_body(k)
    kind = k % 4
    s = connect(port)
    if kind == 0:      # PUT, a tenth of the body, FIN
        s.sendall(head("PUT", "/v1/items/half-%d" % k, len(body)) +
                  body[:len(body) // 10])
    elif kind == 1:    # PUT, all but the last byte, RST
        s.sendall(head("PUT", "/v1/items/half-%d" % k, len(body)) +
                  body[:-1])
    elif kind == 2:    # chunked PUT, one chunk, no terminator, FIN
        part = body[:200]
        s.sendall(head("PUT", "/v1/items/half-%d" % k, chunked=True) +
                  b"%x\r\n" % len(part) + part + b"\r\n")
    else:              # interactions, headers only, RST
        s.sendall(head("POST", "/v1/interactions", 4096))
    time.sleep(0.002)
    hang_up(s, reset=kind in (1, 3))


def gone_waiting(port, k):
    """A complete request, then hang up before the answer."""
    kind = k % 4
    if kind == 0:
        users = ["u%d" % (j % 2000) for j in range(1000)]
        body = json.dumps({"user_ids": users, "k": 100}).encode()
        req = head("POST", "/v1/recommendations", len(body)) + body
    elif kind == 1:
        req = head("GET", "/v1/users/u%d/recommendations?k=1000" % k)
    else:
        body = item_body(k)
        req = head("PUT", "/v1/items/gone-%d" % k, len(body)) + body
    s = connect(port)
    s.sendall(req)
    hang_up(s, reset=kind == 3)


def in_flight(client):
    m = wl.sc.parse_metrics(client.metrics())
    return m["sgbd_http_requests_in_flight"][0][1] - 1   # minus this one


def settle(d, client, fds0):
    """Wait until the daemon's descriptors and in-flight count are back;
    (fds, in_flight) at the end."""
    def back():
        fds = wl.proc_status(d.pid)["fds"]
        return fds <= fds0 and in_flight(client) == 0
    try:
        wl.wait_for(back, 15, 0.1, "descriptors and in-flight to settle")
    except RuntimeError:
        pass
    return wl.proc_status(d.pid)["fds"], in_flight(client)


def start(work):
    binary = wl.need_binary()
    args = ["--db", os.path.join(work, "db"), "--synthetic", SYNTH,
            "--set", "retrain.enabled=false",
            "--set", "server.http_threads=2"]
    d, client = wl.start_daemon(binary, args, work, name="disconnect")
    client.wait_ready(timeout=30)
    # Warm-up: every route once, so allocator arenas and the keep-alive
    # pool exist before the baseline is taken.
    client.recommend("u1", k=10)
    client.recommend_batch(["u1", "u2"], k=10)
    client.put_item("warm", features={ch: [0.5] * w for ch, w in
                                      CHANNELS.items()})
    client.close()
    return d, client


def run_storm(storm, name):
    work = tempfile.mkdtemp(prefix="sgbd_faults_disc_")
    d = None
    try:
        d, client = start(work)
        in_flight(client)     # its keep-alive connection is in the baseline
        fds0 = wl.proc_status(d.pid)["fds"]
        good = Good(d.url)
        good.start()
        for k in range(ROUNDS):
            storm(d.port, k)
        time.sleep(0.2)
        good.stop.set()
        good.join(10)
        fds, inflight = settle(d, client, fds0)
        print("  %s: %d rounds, other client %d ok %d failed, fds %d -> "
              "%d, in flight %d" % (name, ROUNDS, good.ok, len(good.bad),
                                    fds0, fds, inflight))
        wl.expect(not good.bad, "the other client failed: %s"
                  % good.bad[:3])
        wl.expect(good.ok > 0, "the other client got no answer")
        wl.expect(fds <= fds0, "descriptors leaked: %d -> %d" % (fds0, fds))
        wl.expect(inflight == 0, "%d requests stuck in flight" % inflight)
        check_items(client, storm)
        client.close()
        t = time.monotonic()
        rc = d.stop(timeout=30)
        secs = time.monotonic() - t
        wl.expect(rc == 0, "stop rc %s" % rc)
        wl.expect(secs < 5, "SIGTERM took %.1f s to drain" % secs)
        d = None
    finally:
        if d:
            d.kill()
        shutil.rmtree(work, ignore_errors=True)


def check_items(client, storm):
    """Half-sent items must not exist; a complete PUT whose client closed
    (FIN) is stored whole; one whose client reset is whole or absent."""
    stored = 0
    for k in range(ROUNDS):
        prefix = "half" if storm is half_sent else "gone"
        if storm is gone_waiting and k % 4 < 2:
            continue
        if storm is half_sent and k % 4 == 3:
            continue
        try:
            got = client.get_item("%s-%d" % (prefix, k))
        except wl.sc.NotFound:
            wl.expect(storm is half_sent or k % 4 == 3,
                      "gone-%d, complete and closed with FIN, was not "
                      "stored" % k)
            continue
        wl.expect(prefix == "gone", "half-sent item half-%d was stored" % k)
        want = json.loads(item_body(k))["features"]
        wl.expect(got["features"] == want, "gone-%d stored partly" % k)
        stored += 1
    if storm is gone_waiting:
        print("  complete PUTs whose client left: %d of %d stored (every "
              "one closed with FIN)" % (stored, ROUNDS // 2))


def test_faults_disconnect_half_sent_bodies():
    run_storm(half_sent, "half-sent bodies")


def test_faults_disconnect_gone_while_waiting():
    run_storm(gone_waiting, "gone while waiting")


if __name__ == "__main__":
    wl.run_cases([test_faults_disconnect_half_sent_bodies,
                  test_faults_disconnect_gone_while_waiting])
