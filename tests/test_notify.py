#!/usr/bin/env python3
# ctest: labels=integration timeout=240
"""test_notify.py - the daemon's side of systemd's Type=notify protocol,
seen by a fake service manager: an AF_UNIX datagram socket in a temporary
folder, named by NOTIFY_SOCKET, that records each message with the
sender's credentials (SO_PASSCRED), as systemd does for NotifyAccess=main.

Cases: READY=1 after the port listens, WATCHDOG=1 at less than
WATCHDOG_USEC apart while requests are served, RELOADING=1 (with
MONOTONIC_USEC) then READY=1 on SIGHUP, also when the new configuration
is rejected, STOPPING=1 on SIGTERM and exit status 0; no watchdog without
WATCHDOG_USEC or for another WATCHDOG_PID; the ExecStart line of
systemd/sgbd.service with the shipped configs/sgbd.conf; a store made by
`sgbd demo --no-serve`. Standard library only.
"""
import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("SGBD_BIN")
SOURCE = os.environ.get("SGBD_SOURCE",
                        os.path.join(os.path.dirname(__file__), ".."))
UCRED = struct.Struct("iII")    # struct ucred: pid, uid, gid


class Failure(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class FakeManager:
    """The notification socket of a service manager."""

    def __init__(self, folder):
        self.path = os.path.join(folder, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []      # (monotonic seconds, sender pid, fields)
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self):
        while self.running:
            try:
                data, anc, _, _ = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(UCRED.size))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and \
                        kind == socket.SCM_CREDENTIALS:
                    pid = UCRED.unpack(blob[:UCRED.size])[0]
            fields = data.decode("utf-8", "replace").split("\n")
            with self.lock:
                self.messages.append((time.monotonic(), pid, fields))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def find(self, field, start=0):
        """Index of the first message from `start` on holding `field`."""
        for k, (_, _, fields) in enumerate(self.snapshot()[start:]):
            if field in fields:
                return start + k
        return None

    def wait(self, field, start=0, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            k = self.find(field, start)
            if k is not None:
                return k
            time.sleep(0.02)
        raise Failure("no %s after message %d; got %r" %
                      (field, start, self.fields()))

    def fields(self):
        return [m[2] for m in self.snapshot()]

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class Daemon:
    """`sgbd serve` under the fake manager; stderr kept for diagnostics."""

    def __init__(self, args, manager, watchdog_usec=None, env=None):
        check(BIN, "SGBD_BIN is not set (run through ctest)")
        full = dict(os.environ)
        full.pop("WATCHDOG_USEC", None)
        full.pop("WATCHDOG_PID", None)
        full["NOTIFY_SOCKET"] = manager.path
        if watchdog_usec:
            full["WATCHDOG_USEC"] = str(watchdog_usec)
        full.update(env or {})
        self.lines = []
        self.port = None
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=full)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 30
        while self.port is None and time.monotonic() < deadline:
            check(self.proc.poll() is None,
                  "daemon exited %s at start:\n%s" %
                  (self.proc.returncode, self.log()))
            time.sleep(0.02)
        check(self.port is not None, "daemon did not listen:\n" + self.log())

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            m = re.search(r"ev=http_listening .*port=(\d+)", line)
            if m:
                self.port = int(m.group(1))

    def log(self):
        return "\n".join(self.lines)

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stop(self):
        """SIGTERM; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("no exit within 20 s of SIGTERM:\n" + self.log())
        self.reader.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Session:
    """A temporary folder, a fake manager and at most one daemon."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="sgbd_notify_")
        self.manager = FakeManager(self.dir)
        self.daemon = None
        return self

    def start(self, args, **kw):
        self.daemon = Daemon(args, self.manager, **kw)
        return self.daemon

    def __exit__(self, *exc):
        if self.daemon:
            self.daemon.kill()
        self.manager.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def synthetic(extra=()):
    return [BIN, "serve", "--synthetic", "100,50,16", "--no-store",
            "--listen", "127.0.0.1:0"] + list(extra)


def status_of(fields):
    for f in fields:
        if f.startswith("STATUS="):
            return f[len("STATUS="):]
    return None


def only_from(manager, pid):
    senders = {m[1] for m in manager.snapshot()}
    check(senders == {pid}, "messages from pids %r, not only the main "
          "process %d (NotifyAccess=main)" % (senders, pid))


def watchdog_times(manager, start=0):
    return [t for t, _, f in manager.snapshot()[start:] if "WATCHDOG=1" in f]


def test_notify_ready_watchdog_reload_stopping():
    usec = 1000000
    with Session() as s:
        d = s.start(synthetic(), watchdog_usec=usec)
        m = s.manager
        ready = m.wait("READY=1")
        check(status_of(m.fields()[ready]) ==
              "serving model version 1 on port %d" % d.port, m.fields())
        first_ping = m.wait("WATCHDOG=1")
        check(first_ping > ready, "a watchdog ping before READY=1")

        # Pings keep coming, less than WATCHDOG_USEC apart, while the
        # daemon answers requests.
        t0 = time.monotonic()
        n0 = len(m.snapshot())
        while time.monotonic() - t0 < 3.0:
            status, _ = d.get("/v1/users/3/recommendations?k=5")
            check(status == 200, "recommendations: %d" % status)
            time.sleep(0.05)
        pings = watchdog_times(m, n0)
        check(len(pings) >= 4, "%d pings in 3 s at WATCHDOG_USEC=%d" %
              (len(pings), usec))
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        check(max(gaps) < usec / 1e6, "pings %.3f s apart, over "
              "WATCHDOG_USEC" % max(gaps))

        # SIGHUP: RELOADING=1 with a current MONOTONIC_USEC, then READY=1.
        before = time.monotonic()
        mark = len(m.snapshot())
        d.proc.send_signal(signal.SIGHUP)
        k = m.wait("RELOADING=1", mark)
        mono = [f for f in m.fields()[k] if f.startswith("MONOTONIC_USEC=")]
        check(mono, "RELOADING=1 without MONOTONIC_USEC: %r" % m.fields()[k])
        sent = int(mono[0].split("=")[1]) / 1e6
        check(before - 0.5 <= sent <= time.monotonic() + 0.5,
              "MONOTONIC_USEC %.3f is not the time of the reload (%.3f)" %
              (sent, before))
        r = m.wait("READY=1", k + 1)
        check(status_of(m.fields()[r]) == "reloaded", m.fields()[r])
        m.wait("WATCHDOG=1", r + 1)

        # SIGTERM: STOPPING=1 and exit 0; nothing claims readiness after.
        mark = len(m.snapshot())
        rc = d.stop()
        check(rc == 0, "exit status %d:\n%s" % (rc, d.log()))
        stop = m.wait("STOPPING=1", mark, timeout=2)
        after = [f for f in m.fields()[stop + 1:]
                 if "READY=1" in f or "WATCHDOG=1" in f]
        check(not after, "READY or WATCHDOG after STOPPING=1: %r" % after)
        only_from(m, d.proc.pid)


def test_notify_no_watchdog_without_watchdog_usec():
    with Session() as s:
        d = s.start(synthetic())
        s.manager.wait("READY=1")
        time.sleep(1.5)
        check(not watchdog_times(s.manager), "WATCHDOG=1 without "
              "WATCHDOG_USEC: %r" % s.manager.fields())
        check(re.search(r"ev=serve_ready .*watchdog_ms=0", d.log()),
              d.log())
        check(d.stop() == 0, "exit status")


def test_notify_no_watchdog_for_another_pid():
    # systemd sets WATCHDOG_PID to the main process; a child that
    # inherits the environment must not ping for it.
    with Session() as s:
        d = s.start(synthetic(), watchdog_usec=400000,
                    env={"WATCHDOG_PID": str(os.getpid())})
        s.manager.wait("READY=1")
        time.sleep(1.2)
        check(not watchdog_times(s.manager), "pinged for WATCHDOG_PID of "
              "another process: %r" % s.manager.fields())
        check(d.stop() == 0, "exit status")


def test_notify_rejected_reload_is_ready_again():
    # A reload that fails must still end in READY=1, or systemctl reload
    # waits for ever; the status says the old settings stay.
    with Session() as s:
        conf = os.path.join(s.dir, "sgbd.conf")
        with open(conf, "w") as f:
            f.write("[server]\nmax_k = 50\n")
        d = s.start(synthetic(["-c", conf]))
        m = s.manager
        m.wait("READY=1")
        with open(conf, "w") as f:
            f.write("[server]\nmax_k = banana\n")
        mark = len(m.snapshot())
        d.proc.send_signal(signal.SIGHUP)
        k = m.wait("RELOADING=1", mark)
        r = m.wait("READY=1", k + 1)
        check("fail" in (status_of(m.fields()[r]) or ""),
              "status after a rejected reload: %r" % m.fields()[r])
        status, _ = d.get("/v1/users/3/recommendations?k=50")
        check(status == 200, "old max_k kept: %d" % status)
        check(d.stop() == 0, "exit status")


def unit_exec(key):
    """The command line of KEY= in systemd/sgbd.service, split."""
    path = os.path.join(SOURCE, "systemd", "sgbd.service")
    with open(path) as f:
        for line in f:
            if line.startswith(key + "="):
                return shlex.split(line[len(key) + 1:].strip())
    raise Failure("%s: no %s=" % (path, key))


def unit_watchdog_usec():
    path = os.path.join(SOURCE, "systemd", "sgbd.service")
    with open(path) as f:
        m = re.search(r"^WatchdogSec=(\d+)s$", f.read(), re.M)
    check(m, "%s: no WatchdogSec=Ns" % path)
    return int(m.group(1)) * 1000000


def test_notify_unit_command_with_shipped_config():
    # What systemd runs after a fresh install: the unit's ExecStart, the
    # reference sgbd.conf (store path and port moved into the temporary
    # folder) and an empty store: READY=1 without a model, /readyz 503,
    # the watchdog at half of WatchdogSec, ExecReload, then a clean stop.
    argv = unit_exec("ExecStart")
    check(argv[0] == "/usr/bin/sgbd" and argv[1:3] == ["serve", "-c"],
          "ExecStart is %r" % argv)
    reload_argv = unit_exec("ExecReload")
    check(reload_argv == ["/bin/kill", "-HUP", "$MAINPID"],
          "ExecReload is %r" % reload_argv)
    usec = unit_watchdog_usec()
    with Session() as s:
        with open(os.path.join(SOURCE, "configs", "sgbd.conf")) as f:
            text = f.read()
        db = os.path.join(s.dir, "db")
        text, n1 = re.subn(r"(?m)^path = /var/lib/sgbd/db$", "path = " + db,
                           text)
        text, n2 = re.subn(r"(?m)^listen = 127\.0\.0\.1:8080$",
                           "listen = 127.0.0.1:0", text)
        check(n1 == 1 and n2 == 1, "configs/sgbd.conf: [store] path or "
              "[server] listen is not the documented default")
        conf = os.path.join(s.dir, "sgbd.conf")
        with open(conf, "w") as f:
            f.write(text)
        d = s.start([BIN, "serve", "-c", conf] + argv[4:],
                    watchdog_usec=usec)
        m = s.manager
        ready = m.wait("READY=1")
        check("waiting for a first model" in status_of(m.fields()[ready]),
              m.fields()[ready])
        status, _ = d.get("/readyz")
        check(status == 503, "/readyz of an empty store: %d" % status)
        check(re.search(r"ev=serve_ready .*watchdog_ms=%d\b" %
                        (usec // 2000), d.log()), d.log())
        subprocess.run(["kill", "-HUP", str(d.proc.pid)], check=True)
        k = m.wait("RELOADING=1", ready + 1)
        m.wait("READY=1", k + 1)
        check(d.stop() == 0, "exit status:\n" + d.log())
        m.wait("STOPPING=1", k + 1, timeout=2)
        only_from(m, d.proc.pid)
        check(os.path.isfile(os.path.join(db, "data.mdb")), "no store made")


def test_notify_store_from_demo():
    # A real store (catalogue, interactions, a trained checkpoint): READY=1
    # comes after the store is open; with a retrainer attached the daemon
    # restores the checkpoint first and says which version it serves.
    with Session() as s:
        folder = os.path.join(s.dir, "demo")
        r = subprocess.run([BIN, "demo", "--no-serve", "--dir", folder],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        check(r.returncode == 0, "sgbd demo --no-serve: %s" %
              r.stderr.decode()[-500:])
        d = s.start([BIN, "serve", "--db", os.path.join(folder, "db"),
                     "--listen", "127.0.0.1:0"], watchdog_usec=1000000)
        m = s.manager
        ready = m.wait("READY=1")
        check("ev=store_opened" in d.log(), d.log())
        m.wait("WATCHDOG=1", ready + 1)
        status, body = d.get("/v1/model")
        check(status == 200, "/v1/model: %d" % status)
        text = status_of(m.fields()[ready]) or ""
        if b'"attached":true' in body.replace(b" ", b""):
            check(text.startswith("serving model version "), text)
        else:
            check("waiting for a first model" in text, text)
        check(d.stop() == 0, "exit status:\n" + d.log())
        m.wait("STOPPING=1", ready + 1, timeout=2)
        only_from(m, d.proc.pid)


def main():
    if not hasattr(socket, "SO_PASSCRED"):
        print("skipped: no SO_PASSCRED on this platform")
        return 77
    tests = [test_notify_ready_watchdog_reload_stopping,
             test_notify_no_watchdog_without_watchdog_usec,
             test_notify_no_watchdog_for_another_pid,
             test_notify_rejected_reload_is_ready_again,
             test_notify_unit_command_with_shipped_config,
             test_notify_store_from_demo]
    failed = 0
    for t in tests:
        t0 = time.time()
        try:
            t()
            print("ok   %s (%.1fs)" % (t.__name__, time.time() - t0))
        except Exception as e:  # report, then the next case
            failed += 1
            print("FAIL %s: %s: %s" % (t.__name__, type(e).__name__, e))
        sys.stdout.flush()
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
