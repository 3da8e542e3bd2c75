#!/usr/bin/env python3
# ctest: labels=integration timeout=300
"""The feature tool's plumbing (clients/features/blip_features.py) with a
stand-in encoder: catalogue reading, the .npy writer (checked byte for
byte by `sgbd import` and the daemon), and PUTs into a live daemon. The
tiny BLIP / BLIP-2 models themselves are tested in test_clients_blip.py.

Exit status: 0 passed, 1 failed, 77 when every case was skipped.
"""

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import struct
import sys
import tempfile
import unittest

SOURCE = os.environ.get("SGBD_SOURCE") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SOURCE, "clients", "python"))
sys.path.insert(0, os.path.join(SOURCE, "clients", "features"))

import blip_features as bf  # noqa: E402
import sgbd_client as sc  # noqa: E402
import sgbd_testing as st  # noqa: E402

BIN = st.find_binary()
SERVE_OK, SERVE_WHY = st.serve_available(BIN)
WRITE_TOKEN = "w-features-1"


class HashEncoder:
    """Stands in for BLIP: deterministic vectors from each item's text
    (channel blip, width 8) and id (channel blip2, width 6)."""

    channels = ("blip", "blip2")

    def __init__(self):
        self.batches = []

    @staticmethod
    def vec(key, width):
        h = hashlib.sha256(key.encode()).digest()
        return [(b - 127.5) / 64.0 for b in h[:width]]

    def encode(self, batch):
        self.batches.append(len(batch.items))
        return {"blip": [self.vec(it.text, 8) for it in batch.items],
                "blip2": [self.vec(it.id, 6) for it in batch.items]}


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def assert_served(case, got, want):
    """The daemon prints stored floats with 7 significant digits: equal
    to float32(want) within one part in 10**6."""
    case.assertEqual(len(got), len(want))
    for a, b in zip(got, want):
        case.assertAlmostEqual(a, f32(b), delta=1e-6 * max(1.0, abs(b)))


def write_catalogue(folder, n=10, prefix="sku-"):
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    path = os.path.join(folder, "items.jsonl")
    with open(path, "w") as f:
        for k in range(n):
            img = os.path.join("img", "%d.png" % k)
            with open(os.path.join(folder, img), "wb") as g:
                g.write(b"not decoded by the stand-in encoder")
            f.write(json.dumps({"id": "%s%d" % (prefix, k),
                                "title": "Item %d" % k,
                                "description": "A thing, number %d." % k,
                                "image": img}) + "\n")
            if k == 3:
                f.write("\n")
    return path


def run_main(argv, encoder=None):
    out, err = io.StringIO(), io.StringIO()
    enc = encoder or HashEncoder()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = bf.main(argv, make_encoders=lambda a: [enc])
    return rc, out.getvalue(), err.getvalue()


class TestCatalogue(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def lines(self, *docs):
        path = os.path.join(self.tmp.name, "c%d.jsonl"
                            % len(os.listdir(self.tmp.name)))
        with open(path, "w") as f:
            for d in docs:
                f.write((d if isinstance(d, str) else json.dumps(d)) + "\n")
        return path

    def test_features_catalogue_reads_items_in_order(self):
        path = write_catalogue(self.tmp.name, 5)
        items = bf.read_catalogue(path)
        self.assertEqual([i.id for i in items], ["sku-%d" % k
                                                 for k in range(5)])
        self.assertEqual(items[4].line, 6)       # after the blank line
        self.assertEqual(items[2].text, "Item 2. A thing, number 2")
        self.assertTrue(os.path.isabs(items[0].image))
        p = self.lines({"id": 7, "title": "T"})
        got = bf.read_catalogue(p, need_images=False)[0]
        self.assertEqual((got.id, got.text, got.image), ("7", "T", None))

    def test_features_catalogue_rejects_bad_lines_by_number(self):
        cases = [
            (self.lines({"id": "a"}, "{oops"), ":2: not JSON"),
            (self.lines({"id": "a"}, {"id": "a"}), "already on line 1"),
            (self.lines({"title": "x"}), ":1: 'id' is missing"),
            (self.lines("[1, 2]"), "must be a JSON object"),
            (self.lines({"id": "a", "title": 3}), "'title' must be a str"),
            (self.lines(""), "no items"),
        ]
        for path, want in cases:
            with self.assertRaises(bf.CatalogueError) as cm:
                bf.read_catalogue(path, need_images=False)
            self.assertIn(want, str(cm.exception))
        with self.assertRaises(bf.CatalogueError) as cm:
            bf.read_catalogue(self.lines({"id": "a", "image": "no.png"}))
        self.assertIn("item 'a': image", str(cm.exception))
        self.assertIn("does not exist", str(cm.exception))


class TestNpy(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_features_npy_header_and_round_trip(self):
        path = os.path.join(self.tmp.name, "x_feat.npy")
        rows = [[1.5, -2.0, 3.25], [0.0, 1e-3, -7.0]]
        w = bf.NpyWriter(path, 2, 3)
        w.write(rows[:1])
        w.write(rows[1:])
        w.close()
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], b"\x93NUMPY\x01\x00")
        hlen = int.from_bytes(data[8:10], "little")
        self.assertEqual((10 + hlen) % 64, 0)
        header = data[10:10 + hlen].decode()
        self.assertTrue(header.endswith("\n"))
        self.assertIn("'shape': (2, 3)", header)
        self.assertEqual(len(data), 10 + hlen + 2 * 3 * 4)
        self.assertEqual(struct.unpack("<6f", data[10 + hlen:]),
                         tuple(f32(x) for r in rows for x in r))
        shape, back = bf.read_npy_f32(path)
        self.assertEqual(shape, (2, 3))
        self.assertEqual(back, [[f32(x) for x in r] for r in rows])
        try:
            import numpy as np
        except ImportError:
            return
        a = np.load(path)
        self.assertEqual((a.dtype, a.shape), (np.float32, (2, 3)))
        self.assertEqual(a.tolist(), back)

    def test_features_npy_writer_leaves_nothing_when_short_or_wrong(self):
        path = os.path.join(self.tmp.name, "y_feat.npy")
        w = bf.NpyWriter(path, 3, 2)
        w.write([[1, 2]])
        with self.assertRaises(ValueError):
            w.write([[1, 2, 3]])
        with self.assertRaises(ValueError) as cm:
            w.close()
        self.assertIn("1 of 3 rows", str(cm.exception))
        self.assertEqual(os.listdir(self.tmp.name), [])
        with self.assertRaises(ValueError):
            bf.NpyWriter(path, 0, 2)


class TestCommandLine(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.catalogue = write_catalogue(self.tmp.name, 10)

    def test_features_usage_errors_exit_2(self):
        bad = [[], ["--catalogue", self.catalogue],
               ["--catalogue", self.catalogue, "--out", "x",
                "--channels", "blip,clip"],
               ["--catalogue", self.catalogue, "--out", "x",
                "--rename", "blip"],
               ["--catalogue", self.catalogue, "--out", "x",
                "--rename", "blip=blip2"]]
        for argv in bad:
            with contextlib.redirect_stderr(io.StringIO()):
                with self.assertRaises(SystemExit) as cm:
                    bf.parse_args(argv)
            self.assertEqual(cm.exception.code, 2, argv)

    def test_features_cli_writes_npy_files_and_the_id_order(self):
        out = os.path.join(self.tmp.name, "feats")
        enc = HashEncoder()
        rc, stdout, err = run_main(["--catalogue", self.catalogue,
                                    "--out", out, "--batch-size", "4",
                                    "--rename", "blip2=qformer", "--json"],
                                   enc)
        self.assertEqual(rc, 0, err)
        self.assertEqual(enc.batches, [4, 4, 2])
        summary = json.loads(stdout)
        self.assertEqual(summary["channels"], {"blip": 8, "qformer": 6})
        self.assertEqual(sorted(os.listdir(out)),
                         ["blip_feat.npy", "item_ids.txt",
                          "qformer_feat.npy"])
        items = bf.read_catalogue(self.catalogue)
        with open(os.path.join(out, "item_ids.txt")) as f:
            self.assertEqual(f.read().split("\n")[:-1],
                             [i.id for i in items])
        shape, rows = bf.read_npy_f32(os.path.join(out, "qformer_feat.npy"))
        self.assertEqual(shape, (10, 6))
        self.assertEqual(rows[7], [f32(x) for x in
                                   HashEncoder.vec(items[7].id, 6)])

    def test_features_cli_failure_leaves_no_files(self):
        class Broken(HashEncoder):
            def encode(self, batch):
                got = super().encode(batch)
                if len(self.batches) == 2:
                    got["blip"][1] = got["blip"][1][:3]
                return got
        out = os.path.join(self.tmp.name, "feats")
        rc, _, err = run_main(["--catalogue", self.catalogue, "--out", out,
                               "--batch-size", "4"], Broken())
        self.assertEqual(rc, 1)
        self.assertIn("channel blip: item 'sku-5' has width 3", err)
        self.assertEqual(os.listdir(out), [])

    def test_features_cli_without_the_models_says_what_is_missing(self):
        if all(importlib.util.find_spec(m) for m in ("torch",
                                                      "transformers")):
            self.skipTest("torch and transformers are installed")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = bf.main(["--catalogue", self.catalogue, "--out",
                          os.path.join(self.tmp.name, "o")])
        self.assertEqual(rc, 1)
        self.assertIn("needs torch, transformers and Pillow", err.getvalue())

    @unittest.skipUnless(SERVE_OK, SERVE_WHY)
    def test_features_npy_files_import_into_the_store(self):
        data = os.path.join(self.tmp.name, "mm")
        rc, _, err = run_main(["--catalogue", self.catalogue, "--out", data,
                               "--quiet"])
        self.assertEqual(rc, 0, err)
        with open(os.path.join(data, "mm.inter"), "w") as f:
            f.write("userID\titemID\trating\ttimestamp\tx_label\n")
            for u in range(6):
                for i in range(10):
                    if (u + i) % 3 == 0:
                        f.write("%d\t%d\t1\t%d\t0\n" % (u, i, i))
        db = os.path.join(self.tmp.name, "db")
        summary = json.loads(st.run(BIN, "import", "--data", data, "--db",
                                    db, "--json", "--quiet"))
        self.assertEqual(summary["items"], 10)
        self.assertEqual(sorted(summary["channels"].split(",")),
                         ["blip2:6", "blip:8"])
        items = bf.read_catalogue(self.catalogue)
        d = st.Daemon(BIN, ["--db", db], self.tmp.name, "serve-npy").start()
        try:
            c = sc.Client(d.url, retries=0)
            for k in (0, 4, 9):
                got = c.get_item(str(k))["features"]
                assert_served(self, got["blip"],
                              HashEncoder.vec(items[k].text, 8))
                assert_served(self, got["blip2"],
                              HashEncoder.vec(items[k].id, 6))
            c.close()
        finally:
            self.assertEqual(d.stop(), 0)


@unittest.skipUnless(SERVE_OK, SERVE_WHY)
class TestPutToDaemon(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sgbd-features-")
        sets = st.write_tokens(cls.tmp.name, WRITE_TOKEN, None)
        cls.daemon, cls.cat = st.start_with_model(BIN, cls.tmp.name, sets,
                                                  prefer_trained=False)
        cls.catalogue = write_catalogue(cls.tmp.name, 9)
        cls.client = sc.Client(cls.daemon.url)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        rc = cls.daemon.stop()
        cls.tmp.cleanup()
        if rc != 0:
            raise AssertionError("sgbd serve exited %r" % rc)

    def put(self, *extra, token=WRITE_TOKEN, encoder=None):
        argv = ["--catalogue", self.catalogue, "--put", self.daemon.url,
                "--batch-size", "4", "--workers", "3", "--json"]
        if token:
            argv += ["--token", token]
        return run_main(argv + list(extra), encoder)

    def test_features_put_every_item_with_attributes(self):
        rc, out, err = self.put("--attributes", "--rename", "blip=fused")
        self.assertEqual(rc, 0, err)
        summary = json.loads(out)
        self.assertEqual(summary["items"], 9)
        self.assertEqual(summary["put"]["created"] + summary["put"]["updated"],
                         9)
        for it in bf.read_catalogue(self.catalogue):
            got = self.client.get_item(it.id)
            assert_served(self, got["features"]["fused"],
                          HashEncoder.vec(it.text, 8))
            assert_served(self, got["features"]["blip2"],
                          HashEncoder.vec(it.id, 6))
            self.assertEqual(got["attributes"],
                             {"title": it.title,
                              "description": it.description})
        rc, out, err = self.put("--rename", "blip=fused")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["put"]["updated"], 9)

    def test_features_put_errors_name_the_item(self):
        rc, _, err = self.put("--rename", "blip=image")   # width 8, not 64
        self.assertEqual(rc, 1)
        self.assertIn("PUT item 'sku-0'", err)
        self.assertIn("422 feature_width", err)
        rc, _, err = self.put(token=None)
        self.assertEqual(rc, 1)
        self.assertIn("401 unauthorized", err)


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
