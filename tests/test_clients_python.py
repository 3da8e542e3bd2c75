#!/usr/bin/env python3
# ctest: labels=integration timeout=300
"""The Python client (clients/python/sgbd_client.py).

Unit part: a fake daemon (http.server in a thread) answers from a script,
so retries, backoff, timeouts, keep-alive and the error mapping are checked
exactly. Live part: the real `sgbd serve` ($SGBD_BIN) on a free loopback
port with a temporary store, every client method against it; skipped, with
the reason, when the binary has no `serve` command.

Exit status: 0 passed, 1 failed, 77 when every case was skipped.
"""

import http.server
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
import unittest

SOURCE = os.environ.get("SGBD_SOURCE") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SOURCE, "clients", "python"))

import sgbd_client as sc  # noqa: E402
import sgbd_testing as st  # noqa: E402


# ---- a scripted fake daemon ----

class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        fake = self.server.fake
        with fake.lock:
            fake.requests.append({
                "method": self.command, "path": self.path,
                "headers": dict(self.headers.items()), "body": body,
                "conn": self.client_address[1]})
            action = fake.script.pop(0) if fake.script else fake.default
        self.act(action)

    def act(self, action):
        kind = action[0]
        if kind == "sleep":
            time.sleep(action[1])
            return self.act(action[2])
        if kind == "drop":
            self.close_connection = True
            return
        status, payload, headers = action[1], action[2], action[3]
        data = payload if isinstance(payload, bytes) else \
            json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        if kind == "then_close":
            # Keep-alive promised, then the socket closes: what an idle
            # timeout on the daemon's side looks like to the client.
            self.wfile.flush()
            self.close_connection = True

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass            # the client gave up first (timeout cases)

    do_GET = do_POST = do_PUT = do_DELETE = handle_one


class FakeDaemon:
    def __init__(self):
        self.lock = threading.Lock()
        self.script = []
        self.requests = []
        self.default = ("json", 200, {"model_version": 3, "ok": True}, {})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     FakeHandler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def answer(self, status, body, headers=None, kind="json"):
        self.script.append((kind, status, body, headers or {}))

    def error(self, status, code, message="m", version=3, headers=None):
        self.answer(status, {"error": {"code": code, "message": message},
                             "model_version": version}, headers)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeCase(unittest.TestCase):
    def setUp(self):
        self.fake = FakeDaemon()
        self.sleeps = []

    def tearDown(self):
        self.fake.close()

    def client(self, **kw):
        kw.setdefault("timeout", 5.0)
        c = sc.Client(kw.pop("url", self.fake.url), **kw)
        c._sleep = self.sleeps.append
        c._random = random.Random(7)
        self.addCleanup(c.close)
        return c


class TestRequests(FakeCase):
    def test_client_recommend_encodes_ids_k_and_exclude(self):
        c = self.client(token="tok")
        c.recommend("user/1 é", k=5, exclude=["a,b", "c"])
        r = self.fake.requests[0]
        self.assertEqual(r["method"], "GET")
        self.assertEqual(r["path"], "/v1/users/user%2F1%20%C3%A9/"
                         "recommendations?k=5&exclude=a%2Cb,c")
        self.assertEqual(r["headers"]["Authorization"], "Bearer tok")
        self.assertEqual(r["body"], b"")

    def test_client_every_route_has_its_method_path_and_body(self):
        c = self.client()
        c.recommend_batch(["u1", "u2"], k=3, exclude=["i1"])
        c.similar("i/9", k=4)
        c.put_item("i9", features={"image": (1, 2.5)},
                   attributes={"title": "t"})
        c.get_item("i9")
        c.delete_item("i9")
        c.post_interactions([("u1", "i9", 17)])
        c.model()
        c.checkpoints()
        c.retrain(reason="nightly")
        c.rollback(4)
        c.healthz()
        c.readyz()
        self.fake.answer(200, b"# HELP x\nx 1\n")
        self.assertEqual(c.metrics(), "# HELP x\nx 1\n")
        got = [(r["method"], r["path"],
                json.loads(r["body"]) if r["body"] else None)
               for r in self.fake.requests]
        self.assertEqual(got, [
            ("POST", "/v1/recommendations",
             {"user_ids": ["u1", "u2"], "k": 3, "exclude": ["i1"]}),
            ("GET", "/v1/items/i%2F9/similar?k=4", None),
            ("PUT", "/v1/items/i9", {"features": {"image": [1.0, 2.5]},
                                     "attributes": {"title": "t"}}),
            ("GET", "/v1/items/i9", None),
            ("DELETE", "/v1/items/i9", None),
            ("POST", "/v1/interactions", {"interactions": [
                {"user_id": "u1", "item_id": "i9", "timestamp": 17}]}),
            ("GET", "/v1/model", None),
            ("GET", "/v1/model/checkpoints", None),
            ("POST", "/v1/model/retrain", {"reason": "nightly"}),
            ("POST", "/v1/model/rollback", {"version": 4}),
            ("GET", "/healthz", None),
            ("GET", "/readyz", None),
            ("GET", "/metrics", None),
        ])
        for r in self.fake.requests:
            if r["body"]:
                self.assertEqual(r["headers"]["Content-Type"],
                                 "application/json")

    def test_client_keeps_a_url_prefix(self):
        c = self.client(url=self.fake.url + "/sgbd/")
        c.model()
        self.assertEqual(self.fake.requests[0]["path"], "/sgbd/v1/model")

    def test_client_rejects_bad_input_before_sending(self):
        c = self.client()
        with self.assertRaises(ValueError):
            c.put_item("i1", features={"image": [1.0, float("nan")]})
        with self.assertRaises(ValueError):
            c.put_item("i1", features={"image": []})
        with self.assertRaises(ValueError):
            c.recommend("")
        with self.assertRaises(ValueError):
            c.post_interactions([("u1",)])
        with self.assertRaises(ValueError):
            c.rollback(0)
        with self.assertRaises(ValueError):
            sc.Client("ftp://x")
        self.assertEqual(self.fake.requests, [])

    def test_client_interactions_are_batched_and_stamped_once(self):
        for n in (2, 2, 1):
            self.fake.answer(200, {"accepted": n, "new": n - 1,
                                   "model_version": 5})
        c = self.client()
        before = int(time.time())
        got = c.post_interactions(
            [("u1", "i1"), {"user_id": "u2", "item_id": "i2"},
             ("u3", "i3", 99), ("u4", "i4"), ("u5", "i5")], batch_size=2)
        after = int(time.time())
        self.assertEqual(got, {"accepted": 5, "new": 2, "requests": 3,
                               "model_version": 5})
        batches = [json.loads(r["body"])["interactions"]
                   for r in self.fake.requests]
        self.assertEqual([len(b) for b in batches], [2, 2, 1])
        stamps = [e["timestamp"] for b in batches for e in b]
        self.assertEqual(stamps[2], 99)
        others = {stamps[k] for k in (0, 1, 3, 4)}
        self.assertEqual(len(others), 1)
        self.assertTrue(before <= others.pop() <= after)


class TestErrors(FakeCase):
    TABLE = [
        (400, "bad_k", sc.BadRequest), (401, "unauthorized",
                                        sc.Unauthorized),
        (403, "forbidden", sc.Forbidden), (404, "item_not_found",
                                           sc.NotFound),
        (405, "method_not_allowed", sc.MethodNotAllowed),
        (409, "retrain_running", sc.Conflict),
        (413, "body_too_large", sc.PayloadTooLarge),
        (415, "unsupported_media_type", sc.UnsupportedMediaType),
        (422, "feature_width", sc.UnprocessableEntity),
        (429, "slow_down", sc.TooManyRequests),
        (500, "internal", sc.ServerError),
        (501, "not_implemented", sc.NotSupported),
        (503, "no_model", sc.Unavailable),
        (507, "storage_full", sc.InsufficientStorage),
        (502, "bad_gateway", sc.ServerError),
        (418, "teapot", sc.APIError),
    ]

    def test_client_maps_each_status_to_its_error_class(self):
        c = self.client(retries=0)
        for status, code, cls in self.TABLE:
            self.fake.error(status, code, "why %d" % status, version=9)
            with self.assertRaises(cls) as cm:
                c.get_item("i1")
            e = cm.exception
            self.assertIsInstance(e, sc.APIError)
            self.assertEqual((e.status, e.code, e.message, e.model_version),
                             (status, code, "why %d" % status, 9))
            self.assertEqual((e.method, e.path), ("GET", "/v1/items/i1"))
            self.assertIn(code, str(e))
        self.assertEqual(len(self.fake.requests), len(self.TABLE))

    def test_client_error_without_json_body_keeps_the_text(self):
        self.fake.answer(502, b"<html>Bad Gateway</html>",
                         {"X-Model-Version": "4"})
        with self.assertRaises(sc.ServerError) as cm:
            self.client(retries=0).model()
        self.assertIsNone(cm.exception.code)
        self.assertIn("Bad Gateway", cm.exception.message)
        self.assertEqual(cm.exception.model_version, 4)

    def test_client_no_retry_on_client_errors(self):
        for status, code, _ in self.TABLE:
            if status in (429, 503):
                continue
            self.fake.error(status, code)
            with self.assertRaises(sc.APIError):
                self.client(retries=5).get_item("i1")
        self.assertEqual(len(self.fake.requests), len(self.TABLE) - 2)
        self.assertEqual(self.sleeps, [])


class TestRetries(FakeCase):
    def test_client_retries_503_then_succeeds(self):
        self.fake.error(503, "no_model")
        self.fake.error(503, "no_model")
        self.fake.answer(200, {"model_version": 1, "items": []})
        got = self.client(retries=3, backoff=0.1).recommend("u1")
        self.assertEqual(got["items"], [])
        self.assertEqual(len(self.fake.requests), 3)
        self.assertEqual(len(self.sleeps), 2)

    def test_client_gives_up_after_the_retry_budget(self):
        for _ in range(10):
            self.fake.error(503, "draining")
        with self.assertRaises(sc.Unavailable) as cm:
            self.client(retries=2).model()
        self.assertEqual(cm.exception.code, "draining")
        self.assertEqual(len(self.fake.requests), 3)
        self.assertEqual(len(self.sleeps), 2)

    def test_client_backoff_is_exponential_jittered_and_capped(self):
        for _ in range(5):
            self.fake.error(503, "no_model")
        c = self.client(retries=5, backoff=0.1, backoff_max=0.3)
        c.model()
        caps = [0.1, 0.2, 0.3, 0.3, 0.3]
        self.assertEqual(len(self.sleeps), 5)
        for d, cap in zip(self.sleeps, caps):
            self.assertTrue(0 <= d <= cap, (d, cap))
        draws = [c._delay(6, None) for _ in range(400)]
        self.assertTrue(min(draws) < 0.05 and max(draws) > 0.25, draws[:5])
        self.assertTrue(all(0 <= d <= 0.3 for d in draws))

    def test_client_honours_retry_after_with_a_cap(self):
        self.fake.error(503, "no_model", headers={"Retry-After": "2"})
        self.fake.error(429, "slow", headers={"Retry-After": "120"})
        self.client(retries=3, backoff_max=5).model()
        self.assertEqual(self.sleeps, [2.0, 5.0])

    def test_client_readyz_does_not_retry(self):
        self.fake.error(503, "no_model")
        c = self.client(retries=4)
        self.assertFalse(c.is_ready())
        self.assertEqual(len(self.fake.requests), 1)
        self.assertTrue(c.is_ready())

    def test_client_retrain_retried_on_503_but_not_after_a_drop(self):
        self.fake.error(503, "no_model")
        self.fake.answer(202, {"accepted": True})
        self.assertEqual(self.client(retries=3).retrain(),
                         {"accepted": True})
        self.assertEqual(len(self.fake.requests), 2)
        del self.fake.requests[:]
        self.fake.script.append(("drop",))
        with self.assertRaises(sc.TransportError) as cm:
            self.client(retries=3).retrain()
        self.assertNotIsInstance(cm.exception, sc.Timeout)
        self.assertEqual(len(self.fake.requests), 1)

    def test_client_idempotent_writes_retried_after_a_drop(self):
        self.fake.script.append(("drop",))
        self.fake.answer(200, {"item_id": "i1", "created": False})
        c = self.client(retries=2)
        self.assertFalse(c.put_item("i1", features={"f": [1]})["created"])
        self.fake.script.append(("drop",))
        c.post_interactions([("u1", "i1")])
        bodies = [r["body"] for r in self.fake.requests]
        self.assertEqual(bodies[0], bodies[1])
        self.assertEqual(bodies[2], bodies[3])   # same stamped batch
        self.assertEqual(len(bodies), 4)

    def test_client_timeout_raises_timeout_after_retries(self):
        for _ in range(3):
            self.fake.script.append(("sleep", 0.6, self.fake.default))
        c = self.client(timeout=0.2, retries=1)
        t0 = time.monotonic()
        with self.assertRaises(sc.Timeout) as cm:
            c.model()
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertIsInstance(cm.exception, sc.TransportError)
        self.assertEqual(len(self.fake.requests), 2)
        self.fake.script.clear()
        with self.assertRaises(sc.Timeout):
            self.fake.script.append(("sleep", 0.6, self.fake.default))
            c.retrain()                      # not repeated
        self.assertEqual(len(self.fake.requests), 3)

    def test_client_connection_refused_is_retried_then_raised(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        c = self.client(url="http://127.0.0.1:%d" % port, retries=2)
        with self.assertRaises(sc.TransportError) as cm:
            c.retrain()                      # never sent: safe to repeat
        self.assertIn("cannot connect", cm.exception.message)
        self.assertIsInstance(cm.exception.cause, ConnectionRefusedError)
        self.assertEqual(len(self.sleeps), 2)


class TestConnections(FakeCase):
    def test_client_keeps_connections_alive(self):
        c = self.client()
        for _ in range(5):
            c.healthz()
        conns = {r["conn"] for r in self.fake.requests}
        self.assertEqual(len(conns), 1)

    def test_client_recovers_from_a_closed_keep_alive_connection(self):
        self.fake.answer(200, {"status": "ok"}, kind="then_close")
        c = self.client(retries=0)
        c.healthz()
        time.sleep(0.1)
        self.assertEqual(c.healthz(), self.fake.default[2])
        conns = [r["conn"] for r in self.fake.requests]
        self.assertEqual(len(conns), 2)
        self.assertNotEqual(conns[0], conns[1])
        self.assertEqual(self.sleeps, [])

    def test_client_retrain_never_reuses_a_connection(self):
        c = self.client()
        c.healthz()
        c.retrain()
        conns = [r["conn"] for r in self.fake.requests]
        self.assertNotEqual(conns[0], conns[1])

    def test_client_is_thread_safe(self):
        c = self.client(max_idle=4)
        errors = []

        def work(t):
            try:
                for k in range(10):
                    c.get_item("t%d-%d" % (t, k))
            except Exception as e:        # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=work, args=(t,))
                   for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        paths = sorted(r["path"] for r in self.fake.requests)
        self.assertEqual(paths, sorted("/v1/items/t%d-%d" % (t, k)
                                       for t in range(8) for k in range(10)))


class TestMetricsParser(unittest.TestCase):
    def test_parse_metrics_reads_labels_and_special_values(self):
        text = ('# HELP sgbd_x a counter\n# TYPE sgbd_x counter\n'
                'sgbd_x{route="/v1/items/{id}",code="200"} 3\n'
                'sgbd_x{route="a\\"b",code="5\\\\0"} 1.5e3\n'
                'sgbd_up 1\n\nsgbd_inf{le="+Inf"} +Inf\n')
        m = sc.parse_metrics(text)
        self.assertEqual(m["sgbd_x"], [
            ({"route": "/v1/items/{id}", "code": "200"}, 3.0),
            ({"route": 'a"b', "code": "5\\0"}, 1500.0)])
        self.assertEqual(m["sgbd_up"], [({}, 1.0)])
        self.assertEqual(m["sgbd_inf"], [({"le": "+Inf"}, float("inf"))])


# ---- the live daemon ----

BIN = st.find_binary()
SERVE_OK, SERVE_WHY = st.serve_available(BIN)
WRITE_TOKEN, ADMIN_TOKEN = "w-0123456789", "a-9876543210"


@unittest.skipUnless(SERVE_OK, SERVE_WHY)
class TestLiveDaemon(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sgbd-clients-")
        work = cls.tmp.name
        sets = st.write_tokens(work, WRITE_TOKEN, ADMIN_TOKEN) + [
            "--set", "server.max_k=50",
            "--set", "server.max_body_bytes=262144",
            "--set", "server.connection_timeout_s=1"]
        cls.daemon, cls.cat = st.start_with_model(BIN, work, sets)
        print("live daemon: %s %r" % (cls.daemon.url, cls.cat),
              file=sys.stderr)
        cls.reader = sc.Client(cls.daemon.url, retries=0)
        cls.writer = sc.Client(cls.daemon.url, token=WRITE_TOKEN, retries=1)
        cls.admin = sc.Client(cls.daemon.url, token=ADMIN_TOKEN, retries=1)

    @classmethod
    def tearDownClass(cls):
        for c in (cls.reader, cls.writer, cls.admin):
            c.close()
        rc = cls.daemon.stop()
        cls.tmp.cleanup()
        if rc != 0:
            raise AssertionError("sgbd serve exited %r:\n%s"
                                 % (rc, cls.daemon.log_tail()))

    def features(self, seed):
        rng = random.Random(seed)
        return {name: [rng.gauss(0, 1) for _ in range(width)]
                for name, width in self.cat.channels.items()}

    def test_live_health_ready_and_model(self):
        self.assertEqual(self.reader.healthz()["status"], "ok")
        self.assertEqual(self.reader.readyz()["ready"], True)
        self.reader.wait_ready(timeout=5)
        m = self.reader.model()
        for key in ("version", "state", "model", "optimizer", "trained_at",
                    "metrics", "pending_updates"):
            self.assertIn(key, m)
        self.assertGreaterEqual(m["version"], 1)
        self.assertIn(m["state"], ("idle", "training"))
        self.assertEqual(m["users"], len(self.cat.users))

    def test_live_recommend_k_exclude_and_fallback(self):
        user = self.cat.users[3]
        r = self.reader.recommend(user, k=5)
        self.assertEqual(r["user_id"], user)
        self.assertEqual(len(r["items"]), 5)
        self.assertNotIn("fallback", r)
        scores = [it["score"] for it in r["items"]]
        self.assertEqual(scores, sorted(scores, reverse=True))
        drop = [r["items"][0]["item_id"], r["items"][2]["item_id"]]
        r2 = self.reader.recommend(user, k=5, exclude=drop)
        ids2 = [it["item_id"] for it in r2["items"]]
        self.assertFalse(set(drop) & set(ids2))
        self.assertEqual(ids2[0], r["items"][1]["item_id"])
        unknown = self.reader.recommend("nobody-at-all", k=3)
        self.assertEqual(unknown["fallback"], "popular")
        self.assertEqual(len(unknown["items"]), 3)

    def test_live_batch_matches_single_calls(self):
        users = self.cat.users[:4] + ["stranger"]
        got = self.reader.recommend_batch(users, k=4)
        self.assertEqual([x["user_id"] for x in got["results"]], users)
        for res in got["results"]:
            one = self.reader.recommend(res["user_id"], k=4)
            self.assertEqual([i["item_id"] for i in res["items"]],
                             [i["item_id"] for i in one["items"]])
            self.assertEqual(res.get("fallback"), one.get("fallback"))

    def test_live_similar_items(self):
        item = self.cat.items[5]
        got = self.reader.similar(item, k=6)
        ids = [i["item_id"] for i in got["items"]]
        self.assertEqual(len(ids), 6)
        self.assertNotIn(item, ids)
        with self.assertRaises(sc.NotFound) as cm:
            self.reader.similar("no-such-item")
        self.assertEqual(cm.exception.code, "item_not_found")

    def test_live_bad_requests(self):
        with self.assertRaises(sc.BadRequest) as cm:
            self.reader.recommend(self.cat.users[0], k=51)
        self.assertEqual(cm.exception.code, "bad_k")
        with self.assertRaises(sc.BadRequest):
            self.reader.recommend(self.cat.users[0], k=0)
        with self.assertRaises(sc.NotFound):
            self.reader.request("GET", "/v1/nothing-here")
        with self.assertRaises(sc.MethodNotAllowed):
            self.reader.request("DELETE", "/v1/model")
        with self.assertRaises(sc.UnsupportedMediaType):
            c = sc.Client(self.daemon.url, token=WRITE_TOKEN, retries=0)
            c._headers = lambda data: {
                "Host": "x", "Content-Type": "text/plain",
                "Authorization": "Bearer " + WRITE_TOKEN,
                "Content-Length": str(len(data or b""))}
            c.put_item("i-media", attributes={})

    def test_live_item_lifecycle(self):
        item = "sku/new-%d" % os.getpid()
        feats = self.features(1)
        put = self.writer.put_item(item, features=feats,
                                   attributes={"title": "Blue mug"})
        self.assertEqual(put["item_id"], item)
        self.assertTrue(put["created"])
        again = self.writer.put_item(item, features=feats)
        self.assertFalse(again["created"])
        got = self.reader.get_item(item)
        self.assertFalse(got["hidden"])
        self.assertEqual(got["attributes"], {"title": "Blue mug"})
        for name, vec in feats.items():
            self.assertEqual(len(got["features"][name]), len(vec))
            for a, b in zip(got["features"][name], vec):
                self.assertAlmostEqual(a, b, places=5)
        if put["recommendable"]:
            sim = self.reader.similar(item, k=3)
            self.assertEqual(len(sim["items"]), 3)
        else:
            with self.assertRaises(sc.Conflict) as cm:
                self.reader.similar(item)
            self.assertEqual(cm.exception.code, "not_recommendable")
        self.assertTrue(self.writer.delete_item(item)["deleted"])
        self.assertTrue(self.reader.get_item(item)["hidden"])
        with self.assertRaises(sc.NotFound):
            self.reader.similar(item)
        for u in self.cat.users[:10]:
            ids = [i["item_id"]
                   for i in self.reader.recommend(u, k=50)["items"]]
            self.assertNotIn(item, ids)
        self.writer.put_item(item)              # shows it again
        self.assertFalse(self.reader.get_item(item)["hidden"])

    def test_live_delete_hides_a_trained_item_at_once(self):
        user = self.cat.users[7]
        top = self.reader.recommend(user, k=3)["items"][0]["item_id"]
        self.writer.delete_item(top)
        try:
            ids = [i["item_id"]
                   for i in self.reader.recommend(user, k=10)["items"]]
            self.assertNotIn(top, ids)
        finally:
            self.writer.put_item(top)
        ids = [i["item_id"] for i in self.reader.recommend(user, k=3)["items"]]
        self.assertEqual(ids[0], top)

    def test_live_write_errors(self):
        with self.assertRaises(sc.UnprocessableEntity) as cm:
            name = sorted(self.cat.channels)[0]
            self.writer.put_item("i-bad", features={name: [1.0, 2.0]})
        self.assertEqual(cm.exception.code, "feature_width")
        with self.assertRaises(sc.NotFound) as cm:
            self.reader.get_item("never-stored")
        self.assertEqual(cm.exception.code, "item_not_found")
        with self.assertRaises(sc.UnprocessableEntity) as cm:
            self.writer.post_interactions([(self.cat.users[0], "ghost")])
        self.assertEqual(cm.exception.code, "unknown_item")
        with self.assertRaises(sc.PayloadTooLarge) as cm:
            self.writer.put_item("i-big", attributes={"x": "y" * 70000})
        self.assertEqual(cm.exception.code, "attributes_too_large")
        with self.assertRaises(sc.PayloadTooLarge) as cm:
            self.writer.put_item("i-big", attributes={"x": "y" * 300000})
        self.assertEqual(cm.exception.code, "body_too_large")
        with self.assertRaises(sc.NotFound):
            self.reader.get_item("i-big")

    def test_live_tokens(self):
        with self.assertRaises(sc.Unauthorized):
            self.reader.put_item("i-auth", attributes={})
        bad = sc.Client(self.daemon.url, token="wrong", retries=0)
        with self.assertRaises(sc.Forbidden):
            bad.put_item("i-auth", attributes={})
        with self.assertRaises(sc.Forbidden):
            self.writer.retrain()          # admin route, write token
        with self.assertRaises(sc.Unauthorized):
            self.reader.rollback(1)
        bad.close()

    def test_live_interactions_exclude_at_once_and_dedupe(self):
        user = self.cat.users[11]
        top = self.reader.recommend(user, k=5)["items"]
        seen = [top[0]["item_id"], top[1]["item_id"]]
        ts = 1700000000 + os.getpid()
        events = [(user, i, ts) for i in seen]
        first = self.writer.post_interactions(events, batch_size=1)
        self.assertEqual((first["accepted"], first["new"],
                          first["requests"]), (2, 2, 2))
        again = self.writer.post_interactions(events)
        self.assertEqual((again["accepted"], again["new"]), (2, 0))
        ids = [i["item_id"] for i in self.reader.recommend(user, k=5)["items"]]
        self.assertFalse(set(seen) & set(ids))
        self.assertEqual(ids[:3], [t["item_id"] for t in top[2:5]])
        self.assertGreaterEqual(self.reader.model()["pending_updates"], 2)

    def test_live_checkpoints(self):
        ck = self.reader.checkpoints()
        self.assertIsInstance(ck["checkpoints"], list)
        if self.cat.kind == "trained":
            current = [c for c in ck["checkpoints"] if c["current"]]
            self.assertEqual(len(current), 1)
            self.assertEqual(current[0]["version"],
                             self.reader.model()["version"])

    def wait_idle(self, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            m = self.reader.model()
            if m["state"] == "idle" and \
                    m["retrain"]["last_outcome"] != "none":
                return m
            self.assertLess(time.monotonic(), deadline,
                            "the retrain did not finish: %r" % m)
            time.sleep(0.2)

    def test_live_zz_retrain_and_rollback(self):
        # Last (by name): a published retrain changes what later cases see.
        before = self.reader.model()["version"]
        try:
            self.assertTrue(self.admin.retrain(reason="test")["accepted"])
        except sc.NotSupported as e:
            self.assertEqual(e.code, "not_implemented")
            with self.assertRaises(sc.NotSupported):
                self.admin.rollback(before)
            return
        except sc.Conflict as e:
            self.assertIn(e.code, ("retrain_running", "nothing_to_train"))
        m = self.wait_idle()
        with self.assertRaises(sc.NotFound) as cm:
            self.admin.rollback(987654)
        self.assertEqual(cm.exception.code, "checkpoint_not_found")
        if m["retrain"]["last_outcome"] != "published" or \
                m["version"] == before:
            return
        back = self.admin.rollback(before)
        self.assertEqual(back["version"], before)
        current = [c["version"] for c in
                   self.reader.checkpoints()["checkpoints"] if c["current"]]
        self.assertEqual(current, [before])

    def test_live_metrics_count_requests(self):
        self.reader.healthz()
        m = sc.parse_metrics(self.reader.metrics())
        self.assertIn("sgbd_http_requests_total", m)
        routes = {lab.get("route") for lab, _ in
                  m["sgbd_http_requests_total"]}
        self.assertIn("/healthz", routes)
        version = m["sgbd_model_version"][0][1]
        self.assertEqual(version, self.reader.model()["version"])

    def test_live_idle_keep_alive_connection_is_replaced(self):
        c = sc.Client(self.daemon.url, retries=0)
        c.healthz()
        time.sleep(2.5)                     # past connection_timeout_s=1
        self.assertEqual(c.healthz()["status"], "ok")
        c.close()


@unittest.skipUnless(SERVE_OK, SERVE_WHY)
class TestLiveNotReady(unittest.TestCase):
    def test_live_unavailable_without_a_model(self):
        with tempfile.TemporaryDirectory(prefix="sgbd-clients-") as work:
            d = st.Daemon(BIN, ["--no-store"], work, name="empty").start()
            try:
                c = sc.Client(d.url, retries=2, backoff=0.01)
                self.assertEqual(c.healthz()["status"], "ok")
                self.assertFalse(c.is_ready())
                with self.assertRaises(sc.Timeout):
                    c.wait_ready(timeout=0.3, interval=0.05)
                t0 = time.monotonic()
                with self.assertRaises(sc.Unavailable) as cm:
                    c.recommend("u1")
                self.assertEqual(cm.exception.code, "no_model")
                self.assertLess(time.monotonic() - t0, 2)
                with self.assertRaises(sc.Unavailable) as cm:
                    c.get_item("i1")
                self.assertEqual(cm.exception.code, "no_store")
                c.close()
            finally:
                self.assertEqual(d.stop(), 0)


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(
        sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        return 1
    if result.testsRun and len(result.skipped) == result.testsRun:
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main())
