#!/usr/bin/env python3
# ctest: labels=integration timeout=180
"""test_http_lifecycle.py - start with an empty store, SIGHUP reload,
SIGTERM drain, and the sd_notify messages seen by a fake systemd."""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sgbd_http import Daemon, check, run  # noqa: E402

RECO = "/v1/users/{id}/recommendations"


def test_http_empty_store_starts_not_ready():
    with Daemon(synthetic=None) as d:
        r = d.request("GET", "/readyz", route="/readyz")
        check(r.status == 503 and r.code == "no_model", r)
        check(r.json["model_version"] == 0, r)
        r = d.request("GET", "/healthz", route="/healthz")
        check(r.status == 200, r)
        r = d.request("GET", "/v1/users/u1/recommendations", route=RECO)
        check(r.status == 503 and r.code == "no_model", r)
        r = d.request("PUT", "/v1/items/first", {"features": {"image":
                      [1.0, 2.0]}}, route="/v1/items/{id}")
        check(r.status == 201 and not r.json["recommendable"], r)
        r = d.request("POST", "/v1/interactions", {"interactions": [
            {"user_id": "a", "item_id": "first"}]},
            route="/v1/interactions")
        check(r.status == 200, r)
        r = d.request("GET", "/v1/model", route="/v1/model")
        check(r.json["model"] is None and r.json["pending_updates"] == 2, r)
        check(d.stop() == 0, "exit status")


def test_http_sighup_reloads_limits_and_tokens():
    conf = "[server]\nmax_k = 50\n[log]\nlevel = info\n"
    with Daemon(conf=conf) as d:
        r = d.request("GET", "/v1/users/u1/recommendations?k=60", route=RECO)
        check(r.status == 400 and r.code == "bad_k", r)
        tok = os.path.join(d.dir, "w.tok")
        with open(tok, "w") as f:
            f.write("fresh-token\n")
        with open(d.conf, "w") as f:
            f.write("[server]\nmax_k = 100\nwrite_token_file = %s\n"
                    "http_threads = 3\n[log]\nlevel = debug\n" % tok)
        d.signal(signal.SIGHUP)
        d.wait_log(r"ev=reloaded .*max_k=100")
        d.wait_log(r"ev=reload_needs_restart option=server.http_threads")
        r = d.request("GET", "/v1/users/u1/recommendations?k=60", route=RECO)
        check(r.status == 200 and len(r.json["items"]) == 60, r)
        r = d.request("DELETE", "/v1/items/i1", route="/v1/items/{id}")
        check(r.status == 401, "new token file in force: %r" % r)
        # a broken file keeps the old settings
        with open(d.conf, "w") as f:
            f.write("[server]\nmax_k = banana\n")
        d.signal(signal.SIGHUP)
        d.wait_log(r"ev=reload_failed")
        r = d.request("GET", "/v1/users/u1/recommendations?k=60", route=RECO)
        check(r.status == 200, "old settings kept: %r" % r)
        r = d.request("GET", "/metrics")
        check("sgbd_config_reload_failures_total 1" in r.raw.decode(), "count")
        check(d.stop() == 0, "exit status")


def test_http_sigterm_drains_in_flight_requests():
    with Daemon() as d:
        keep = d.connect()
        r = d.request("GET", "/readyz", conn=keep, route="/readyz")
        check(r.status == 200, r)
        # a request in flight: headers and half of its body sent
        body = b'{"interactions": [{"user_id": "u1", "item_id": "i2"}]}'
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(b"POST /v1/interactions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                  b"\r\n" % len(body) + body[:10])
        time.sleep(0.2)
        d.signal(signal.SIGTERM)
        d.wait_log(r"ev=draining")
        r = d.request("GET", "/readyz", conn=keep, route="/readyz")
        check(r.status == 503 and r.code == "draining", r)
        check(r.headers.get("connection") == "close", r.headers)
        keep.close()
        check(d.proc.poll() is None, "exited before the request finished")
        s.sendall(body[10:])
        reply = s.recv(4096)
        s.close()
        check(reply.startswith(b"HTTP/1.1 200"), reply[:200])
        t0 = time.time()
        rc = d.proc.wait(10)
        check(rc == 0, "exit status %d" % rc)
        check(time.time() - t0 < 3, "exit took too long")
        check("ev=stopped" in d.log(), d.log())


class FakeSystemd:
    """An AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []

    def drain(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                return

    def wait(self, text, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.drain()
            for k, m in enumerate(self.messages):
                if text in m.split("\n"):
                    return k
        raise AssertionError("no %r in %r" % (text, self.messages))

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def test_http_sd_notify_ready_watchdog_reload_stopping():
    path = "/tmp/sgbd_notify_%d.sock" % os.getpid()
    fake = FakeSystemd(path)
    try:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
        with Daemon(env=env) as d:
            ready = fake.wait("READY=1")
            check(any(l.startswith("STATUS=serving model version 1")
                      for l in fake.messages[ready].split("\n")),
                  fake.messages)
            fake.wait("WATCHDOG=1")
            n = len(fake.messages)
            time.sleep(0.7)
            fake.drain()
            pings = [m for m in fake.messages[n:] if m == "WATCHDOG=1"]
            check(len(pings) >= 2, "watchdog pings: %r" % fake.messages)
            d.signal(signal.SIGHUP)
            k = fake.wait("RELOADING=1")
            check("MONOTONIC_USEC=" in fake.messages[k], fake.messages[k])
            deadline = time.time() + 5
            while time.time() < deadline:
                fake.drain()
                if any("READY=1" in m.split("\n")
                       for m in fake.messages[k + 1:]):
                    break
                time.sleep(0.05)
            check(any("READY=1" in m.split("\n")
                      for m in fake.messages[k + 1:]), "READY after reload")
            check(d.stop() == 0, "exit status")
            fake.wait("STOPPING=1")
    finally:
        fake.close()


if __name__ == "__main__":
    run([test_http_empty_store_starts_not_ready,
         test_http_sighup_reloads_limits_and_tokens,
         test_http_sigterm_drains_in_flight_requests,
         test_http_sd_notify_ready_watchdog_reload_stopping])
