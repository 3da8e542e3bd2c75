"""sgbd_testing - throwaway SGBD daemons for tests, examples and demos.

Standard library only. Starts ``sgbd serve`` on a free loopback port
(``--listen 127.0.0.1:0``; the port is read from the daemon's
``ev=http_listening`` log line), with a temporary store, and stops it with
SIGTERM (the daemon drains and exits 0)::

    from sgbd_testing import start_with_model
    daemon, cat = start_with_model("/usr/bin/sgbd", "/tmp/work")
    try:
        print(daemon.url, cat.users[:3], cat.channels)
    finally:
        daemon.stop()

:func:`start_with_model` prefers the real path (``sgbd synth`` ->
``sgbd import`` -> ``sgbd train`` -> ``sgbd serve --db``); when that daemon
does not publish the trained checkpoint (a build without the online
retrainer, which restores checkpoints at start-up), it falls back to
``sgbd serve --synthetic`` over an empty store, so every route still has a
model to work with. :class:`Catalogue` says which one runs.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import time

LISTEN_RE = re.compile(r"ev=http_listening\b.*?\bport=(\d+)")

# What `sgbd serve --synthetic U,I,D` serves (serve.h): ids u<k> and i<k>,
# a cold-start tower over channels image (64) and text (32).
SYNTHETIC_CHANNELS = {"image": 64, "text": 32}


def find_binary():
    """The sgbd binary: $SGBD_BIN, else `sgbd` on PATH, else None."""
    path = os.environ.get("SGBD_BIN")
    if path:
        return path if os.access(path, os.X_OK) else None
    return shutil.which("sgbd")


def serve_available(binary):
    """(True, "") when `binary serve --help` works, else (False, why)."""
    if not binary:
        return False, "no sgbd binary (set SGBD_BIN)"
    try:
        p = subprocess.run([binary, "serve", "--help"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
    except OSError as e:
        return False, "cannot run %s: %s" % (binary, e)
    if p.returncode != 0:
        why = (p.stderr or p.stdout).decode("utf-8", "replace").strip()
        return False, "'sgbd serve' is not available in %s: %s" % (
            binary, why.splitlines()[-1] if why else "rc=%d" % p.returncode)
    return True, ""


def run(binary, *args, timeout=300):
    """Run `binary args...`; return stdout as text, raise RuntimeError with
    the command and its stderr when it fails."""
    p = subprocess.run([binary] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s failed (rc=%d): %s" % (
            " ".join([os.path.basename(binary)] + [str(a) for a in args]),
            p.returncode, p.stderr.decode("utf-8", "replace").strip()))
    return p.stdout.decode("utf-8", "replace")


def write_tokens(workdir, write_token="write-token-1",
                 admin_token="admin-token-1"):
    """Token files for the daemon; returns the `--set` arguments."""
    sets = []
    for kind, tok in (("write", write_token), ("admin", admin_token)):
        if tok is None:
            continue
        path = os.path.join(workdir, "%s.tokens" % kind)
        with open(path, "w") as f:
            f.write("# %s tokens\n%s\n" % (kind, tok))
        sets += ["--set", "server.%s_token_file=%s" % (kind, path)]
    return sets


class Daemon:
    """One `sgbd serve` process on 127.0.0.1 and a free port.

    ``args`` are passed after ``serve --listen 127.0.0.1:0``. The log
    (stderr) goes to ``workdir/<name>.log``.
    """

    def __init__(self, binary, args, workdir, name="serve"):
        # The daemon runs in workdir: a relative path must not move.
        self.binary = os.path.abspath(binary) if os.sep in binary else binary
        self.args = [str(a) for a in args]
        self.workdir = workdir
        self.log_path = os.path.join(workdir, name + ".log")
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=30.0):
        """Start and wait for the listening socket; RuntimeError with the
        log's tail when the daemon exits or does not listen in time."""
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--listen", "127.0.0.1:0"] + self.args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.workdir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.log_text())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("sgbd serve exited (rc=%d) before "
                                   "listening:\n%s" % (self.proc.returncode,
                                                       self.log_tail()))
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("sgbd serve did not listen within %.0f s:\n%s"
                           % (timeout, self.log_tail()))

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=30):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def ready(self):
        """Whether GET /readyz answers 200 now."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self, timeout=20.0):
        """SIGTERM, wait for the drain; SIGKILL past timeout. Returns the
        exit status (None if it was not running)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Catalogue:
    """What a started daemon serves.

    ``kind``: ``"trained"`` (a checkpoint of `sgbd train`) or
    ``"synthetic"``; ``users`` / ``items``: ids the model knows;
    ``channels``: {name: width} of the store's feature channels;
    ``cold_start``: whether a new item with features is scored at once.
    """

    def __init__(self, kind, users, items, channels, cold_start, db):
        self.kind = kind
        self.users = users
        self.items = items
        self.channels = channels
        self.cold_start = cold_start
        self.db = db

    def __repr__(self):
        return "Catalogue(%s, %d users, %d items, channels=%r)" % (
            self.kind, len(self.users), len(self.items), self.channels)


def _trained_store(binary, workdir, users, items, seed):
    data = os.path.join(workdir, "catalogue")
    db = os.path.join(workdir, "trained.db")
    run(binary, "synth", "--out", data, "--users", users, "--items", items,
        "--seed", seed)
    run(binary, "import", "--data", data, "--db", db, "--quiet")
    run(binary, "train", "--db", db, "--model", "lightgcn", "--epochs", 5,
        "--seed", seed, "--quiet")
    return db


def start_with_model(binary, workdir, sets=(), users=60, items=40, seed=7,
                     prefer_trained=True):
    """A daemon that serves a model; returns (Daemon, Catalogue).

    ``sets`` are extra daemon arguments (e.g. from :func:`write_tokens`).
    Tries a trained checkpoint first (see the module docstring); the
    fallback is `--synthetic users,items,16,seed` over an empty store.
    """
    if prefer_trained:
        db = _trained_store(binary, workdir, users, items, seed)
        d = Daemon(binary, ["--db", db] + list(sets), workdir,
                   name="serve-trained").start()
        if d.ready():
            cat = Catalogue("trained", [str(u) for u in range(users)],
                            [str(i) for i in range(items)],
                            {"image": 128, "text": 64}, False, db)
            return d, cat
        d.stop()
    db = os.path.join(workdir, "synthetic.db")
    d = Daemon(binary, ["--db", db, "--synthetic",
                        "%d,%d,16,%d" % (users, items, seed)] + list(sets),
               workdir, name="serve-synthetic").start()
    deadline = time.monotonic() + 10
    while not d.ready():
        if time.monotonic() > deadline:
            d.stop()
            raise RuntimeError("the synthetic daemon is not ready:\n%s"
                               % d.log_tail())
        time.sleep(0.05)
    cat = Catalogue("synthetic", ["u%d" % u for u in range(users)],
                    ["i%d" % i for i in range(items)],
                    dict(SYNTHETIC_CHANNELS), True, db)
    return d, cat
