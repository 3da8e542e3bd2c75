"""sgbd_http.py - helpers for the HTTP integration tests (test_http_*.py).

Starts the real `sgbd serve` on a loopback port with a temporary store and
validates every response against the schemas in proto/openapi.yaml: a
response whose status the document does not list for its route, or whose
body breaks the declared schema, fails the test.

Standard library plus python3-jsonschema and python3-yaml (Debian 12).
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover - reported as a skip
    print("skipped: %s (install python3-jsonschema python3-yaml)" % e)
    sys.exit(77)

SOURCE = os.environ.get("SGBD_SOURCE",
                        os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("SGBD_BIN")

with open(os.path.join(SOURCE, "proto", "openapi.yaml")) as _f:
    SPEC = yaml.safe_load(_f)


class Failure(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def _resolve(node):
    """Follow one local $ref of the document."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = SPEC
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def validate(instance, schema):
    """Validate against a schema of the document (refs resolve in it)."""
    root = dict(schema)
    root["components"] = SPEC["components"]
    jsonschema.Draft202012Validator(root).validate(instance)


def response_schema(route, method, status):
    op = SPEC["paths"][route][method.lower()]
    resp = op["responses"].get(str(status))
    check(resp is not None,
          "%s %s: status %d is not in proto/openapi.yaml" %
          (method, route, status))
    resp = _resolve(resp)
    return resp.get("content", {})


def validate_request(route, method, body):
    op = SPEC["paths"][route][method.lower()]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    validate(body, schema)


class Reply:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.json = None
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/json") and raw:
            self.json = json.loads(raw.decode("utf-8"))

    @property
    def code(self):
        return (self.json or {}).get("error", {}).get("code")

    def __repr__(self):
        return "<%d %s>" % (self.status, self.raw[:300])


class Daemon:
    """One `sgbd serve` process with its own temporary store."""

    def __init__(self, args=(), conf=None, env=None, store=True,
                 synthetic="300,120,16,7"):
        check(BIN, "SGBD_BIN is not set (run through ctest)")
        self.dir = tempfile.mkdtemp(prefix="sgbd_http_")
        self.lines = []
        self.port = None
        cmd = [BIN, "serve", "--listen", "127.0.0.1:0"]
        if conf is not None:
            self.conf = os.path.join(self.dir, "sgbd.conf")
            with open(self.conf, "w") as f:
                f.write(conf)
            cmd += ["-c", self.conf]
        if store:
            cmd += ["--db", os.path.join(self.dir, "db")]
        else:
            cmd += ["--no-store"]
        if synthetic:
            cmd += ["--synthetic", synthetic]
        cmd += list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=full_env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.time() + 30
        while self.port is None and time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failure("daemon exited %d at start:\n%s" %
                              (self.proc.returncode, self.log()))
            time.sleep(0.02)
        check(self.port is not None, "daemon did not listen:\n" + self.log())

    def _read(self):
        for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(text)
            m = re.search(r"ev=http_listening .*port=(\d+)", text)
            if m:
                self.port = int(m.group(1))

    def log(self):
        return "\n".join(self.lines)

    def wait_log(self, pattern, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.02)
        raise Failure("no log line /%s/ in:\n%s" % (pattern, self.log()))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise Failure("daemon did not stop on SIGTERM:\n" + self.log())
        self._reader.join(5)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- requests ----

    def connect(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)

    def request(self, method, path, body=None, headers=None, route=None,
                conn=None, raw_body=None):
        """One request; validates the reply against the route's schema."""
        hdrs = {}
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        own = conn is None
        c = conn or self.connect()
        try:
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            reply = Reply(r.status, {k.lower(): v for k, v in
                                     r.getheaders()}, r.read())
        finally:
            if own:
                c.close()
        check("x-model-version" in reply.headers,
              "%s %s: no X-Model-Version header" % (method, path))
        if route and method != "HEAD":
            self.validate(reply, route, method)
        return reply

    def validate(self, reply, route, method):
        content = response_schema(route, method, reply.status)
        if "application/json" in content:
            check(reply.json is not None, "%s %s: %d is not JSON: %r" %
                  (method, route, reply.status, reply.raw[:200]))
            try:
                validate(reply.json, content["application/json"]["schema"])
            except jsonschema.ValidationError as e:
                raise Failure("%s %s %d: %s\nbody: %s" %
                              (method, route, reply.status, e.message,
                               reply.raw[:500]))
            check(reply.json["model_version"] ==
                  int(reply.headers["x-model-version"]),
                  "body and header model_version differ")


def raw_exchange(port, data, timeout=5):
    """Send raw bytes, return the raw reply (until the peer closes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def run(tests):
    """Run test functions; print ok/FAIL lines; exit 0 or 1."""
    failed = 0
    for t in tests:
        t0 = time.time()
        try:
            t()
            print("ok   %s (%.1fs)" % (t.__name__, time.time() - t0))
        except Exception as e:  # report and go on with the next case
            failed += 1
            print("FAIL %s: %s: %s" % (t.__name__, type(e).__name__, e))
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
