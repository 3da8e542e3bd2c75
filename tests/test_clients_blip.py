#!/usr/bin/env python3
# ctest: labels=integration timeout=300
"""BLIP and BLIP-2 features end to end with tiny random models.

Builds randomly initialised BlipForImageTextRetrieval and Blip2Model from
tiny BlipConfig / Blip2Config (no weight download: everything is saved to
and loaded from a temporary folder, as real checkpoints would be), writes
a catalogue with generated images, runs clients/features/blip_features.py
into .npy files and into a live `sgbd serve`, and checks the vectors
against transformers' own forward passes.

Needs torch, transformers and Pillow. When this interpreter lacks them and
/usr/bin/python3 has them, the test re-runs itself there; otherwise it
says what is missing and exits 77 (skipped). Debian 12 packages torch and
Pillow (python3-torch, python3-pil) but not transformers: install it with
pip where the network allows.
"""

import contextlib
import importlib.util
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import unittest

REQUIRED = ("torch", "transformers", "PIL")
SYSTEM_PYTHON = "/usr/bin/python3"


def missing_modules():
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def rerun_or_skip():
    """Re-run under the system Python when it has what this one lacks;
    else exit 77 with the reason."""
    missing = missing_modules()
    if not missing:
        return
    here = os.path.realpath(sys.executable)
    if (os.path.exists(SYSTEM_PYTHON) and
            os.path.realpath(SYSTEM_PYTHON) != here and
            not os.environ.get("SGBD_BLIP_RERUN")):
        probe = subprocess.run([SYSTEM_PYTHON, "-c",
                                "import " + ", ".join(REQUIRED)],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if probe.returncode == 0:
            env = dict(os.environ, SGBD_BLIP_RERUN="1")
            os.execve(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv, env)
    print("SKIPPED: %s cannot import %s (transformers is not packaged for "
          "Debian 12; pip install torch transformers pillow to run this "
          "test)" % (sys.executable, ", ".join(missing)))
    sys.exit(77)


if __name__ == "__main__":
    rerun_or_skip()

SOURCE = os.environ.get("SGBD_SOURCE") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SOURCE, "clients", "python"))
sys.path.insert(0, os.path.join(SOURCE, "clients", "features"))

import blip_features as bf  # noqa: E402
import sgbd_client as sc  # noqa: E402
import sgbd_testing as st  # noqa: E402

BIN = st.find_binary()
SERVE_OK, SERVE_WHY = st.serve_available(BIN)
WRITE_TOKEN = "w-blip-1"

# Distinct widths, so that a channel mix-up cannot pass unnoticed.
VISION, TEXT, ITC, QFORMER, QUERIES, BLIP2_ITC = 24, 32, 20, 28, 5, 12
IMAGE = 32
TEXTS = ["red ceramic mug with a handle", "blue cotton shirt for summer",
         "wooden chair for the kitchen", "steel water bottle keeps cold",
         "soft wool scarf in green"]


def tiny_tokenizer(folder):
    from transformers import BertTokenizer
    words = sorted({w for t in TEXTS for w in t.replace(".", " ").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + words
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(vocab) + "\n")
    return BertTokenizer(path, do_lower_case=True)


def image_processor():
    from transformers import BlipImageProcessor
    return BlipImageProcessor(size={"height": IMAGE, "width": IMAGE})


def tiny_blip(folder):
    """A random BlipForImageTextRetrieval and its processor in folder."""
    import torch
    from transformers import (BlipConfig, BlipForImageTextRetrieval,
                              BlipProcessor)
    torch.manual_seed(1)
    cfg = BlipConfig(
        text_config=dict(vocab_size=64, hidden_size=TEXT,
                         encoder_hidden_size=VISION, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=2, sep_token_id=3),
        vision_config=dict(hidden_size=VISION, intermediate_size=37,
                           num_hidden_layers=2, num_attention_heads=4,
                           image_size=IMAGE, patch_size=8),
        projection_dim=16, image_text_hidden_size=ITC)
    model = BlipForImageTextRetrieval(cfg).eval()
    proc = BlipProcessor(image_processor=image_processor(),
                         tokenizer=tiny_tokenizer(folder))
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return model, proc


def blip2_config():
    from transformers import Blip2Config
    return Blip2Config(
        vision_config=dict(hidden_size=VISION, intermediate_size=37,
                           num_hidden_layers=2, num_attention_heads=4,
                           image_size=IMAGE, patch_size=8),
        qformer_config=dict(vocab_size=64, hidden_size=QFORMER,
                            num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, encoder_hidden_size=VISION,
                            max_position_embeddings=64),
        text_config=dict(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, ffn_dim=32,
                         max_position_embeddings=64, word_embed_proj_dim=16),
        num_query_tokens=QUERIES, image_text_hidden_size=BLIP2_ITC)


def tiny_blip2(folder, cls_name="Blip2Model"):
    """A random BLIP-2 model of class cls_name and its image processor."""
    import torch
    import transformers
    torch.manual_seed(2)
    model = getattr(transformers, cls_name)(blip2_config()).eval()
    model.save_pretrained(folder)
    image_processor().save_pretrained(folder)
    return model


def write_images_and_catalogue(folder):
    """Six items; a0/a1 share an image, a0/a2 share a text."""
    from PIL import Image
    rng = random.Random(3)
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    for k in range(5):
        data = bytes(rng.randrange(256) for _ in range(40 * 40 * 3))
        Image.frombytes("RGB", (40, 40), data).save(
            os.path.join(folder, "img", "%d.png" % k))
    rows = [("a0", 0, 0), ("a1", 0, 1), ("a2", 1, 0), ("a3", 2, 2),
            ("a4", 3, 3), ("a5", 4, 4)]
    path = os.path.join(folder, "items.jsonl")
    with open(path, "w") as f:
        for item, img, text in rows:
            f.write(json.dumps({"id": item, "title": TEXTS[text],
                                "description": "",
                                "image": "img/%d.png" % img}) + "\n")
    return path


def dist(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def norm(a):
    return math.sqrt(sum(x * x for x in a))


class TestBlipFeatures(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sgbd-blip-")
        t = cls.tmp.name
        cls.blip_dir = os.path.join(t, "blip")
        cls.blip2_dir = os.path.join(t, "blip2")
        os.makedirs(cls.blip_dir)
        os.makedirs(cls.blip2_dir)
        cls.blip, cls.proc = tiny_blip(cls.blip_dir)
        cls.blip2 = tiny_blip2(cls.blip2_dir)
        cls.catalogue = write_images_and_catalogue(t)
        cls.items = bf.read_catalogue(cls.catalogue)
        cls.out = os.path.join(t, "feats")
        cls.daemon = None
        argv = ["--catalogue", cls.catalogue, "--out", cls.out,
                "--channels", "blip,blip2,image,text",
                "--rename", "image=blip_image", "--rename", "text=blip_text",
                "--blip-model", cls.blip_dir, "--blip2-model", cls.blip2_dir,
                "--device", "cpu", "--batch-size", "4", "--json"]
        if SERVE_OK:
            sets = st.write_tokens(t, WRITE_TOKEN, None)
            cls.daemon, cls.cat = st.start_with_model(
                BIN, t, sets, prefer_trained=False)
            argv += ["--put", cls.daemon.url, "--token", WRITE_TOKEN,
                     "--attributes"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cls.rc = bf.main(argv)
        cls.stdout, cls.stderr = out.getvalue(), err.getvalue()

    @classmethod
    def tearDownClass(cls):
        if cls.daemon:
            cls.daemon.stop()
        cls.tmp.cleanup()

    def rows(self, channel):
        shape, rows = bf.read_npy_f32(os.path.join(self.out,
                                                   bf.npy_name(channel)))
        self.assertEqual(shape[0], len(self.items))
        return rows

    def pixels_and_tokens(self, k):
        from PIL import Image
        with Image.open(self.items[k].image) as im:
            img = im.convert("RGB")
        enc = self.proc(images=[img], text=[self.items[k].text],
                        return_tensors="pt")
        return enc["pixel_values"], enc["input_ids"], enc["attention_mask"]

    def test_blip_run_succeeds_with_every_channel_and_width(self):
        self.assertEqual(self.rc, 0, self.stderr)
        summary = json.loads(self.stdout)
        self.assertEqual(summary["channels"], {
            "blip": TEXT, "blip2": QFORMER, "blip_image": ITC,
            "blip_text": ITC})
        for ch in summary["channels"]:
            for r in self.rows(ch):
                self.assertAlmostEqual(norm(r), 1.0, places=5)

    def test_blip_fused_vector_is_the_itm_cls_state(self):
        import torch
        k = 3
        pv, ids, mask = self.pixels_and_tokens(k)
        with torch.no_grad():
            img = self.blip.vision_model(pixel_values=pv)[0]
            atts = torch.ones(img.shape[:-1], dtype=torch.long)
            cls_state = self.blip.text_encoder(
                input_ids=ids, attention_mask=mask,
                encoder_hidden_states=img, encoder_attention_mask=atts)[0]
            want = torch.nn.functional.normalize(cls_state[:, 0, :],
                                                 dim=-1)[0].tolist()
        got = self.rows("blip")[k]
        self.assertLess(dist(got, want), 1e-4)

    def test_blip_contrastive_vectors_match_transformers_itc_score(self):
        import torch
        k = 4
        pv, ids, mask = self.pixels_and_tokens(k)
        with torch.no_grad():
            score = self.blip(input_ids=ids, pixel_values=pv,
                              attention_mask=mask, use_itm_head=False)[0]
        img, txt = self.rows("blip_image")[k], self.rows("blip_text")[k]
        dot = sum(a * b for a, b in zip(img, txt))
        self.assertAlmostEqual(dot, float(score[0, 0]), places=4)

    def test_blip_fused_depends_on_both_image_and_text(self):
        fused = self.rows("blip")
        image_only = self.rows("blip_image")
        text_only = self.rows("blip_text")
        # a0/a1 share the image: same image vector, different fused ones.
        self.assertLess(dist(image_only[0], image_only[1]), 1e-5)
        self.assertGreater(dist(fused[0], fused[1]), 1e-4)
        # a0/a2 share the text: same text vector, different fused ones.
        self.assertLess(dist(text_only[0], text_only[2]), 1e-4)
        self.assertGreater(dist(fused[0], fused[2]), 1e-4)

    def test_blip2_vector_is_the_mean_qformer_query_output(self):
        import torch
        from PIL import Image
        rows = self.rows("blip2")
        self.assertLess(dist(rows[0], rows[1]), 1e-5)     # same image
        self.assertGreater(dist(rows[0], rows[2]), 1e-4)
        with Image.open(self.items[5].image) as im:
            pv = image_processor()(images=[im.convert("RGB")],
                                   return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            q = self.blip2.get_qformer_features(pixel_values=pv)
            q = q.last_hidden_state if hasattr(q, "last_hidden_state") \
                else q[0]
            self.assertEqual(tuple(q.shape), (1, QUERIES, QFORMER))
            want = torch.nn.functional.normalize(q.mean(dim=1),
                                                 dim=-1)[0].tolist()
        self.assertLess(dist(rows[5], want), 1e-4)

    def test_blip2_projected_into_the_image_text_space(self):
        import transformers
        if not hasattr(transformers, "Blip2ForImageTextRetrieval"):
            self.skipTest("this transformers has no "
                          "Blip2ForImageTextRetrieval")
        folder = os.path.join(self.tmp.name, "blip2-itm")
        os.makedirs(folder)
        tiny_blip2(folder, "Blip2ForImageTextRetrieval")
        out = os.path.join(self.tmp.name, "proj")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            rc = bf.main(["--catalogue", self.catalogue, "--out", out,
                          "--channels", "blip2", "--blip2-project",
                          "--blip2-model", folder, "--device", "cpu"])
        self.assertEqual(rc, 0, err.getvalue())
        shape, rows = bf.read_npy_f32(os.path.join(out, "blip2_feat.npy"))
        self.assertEqual(shape, (len(self.items), BLIP2_ITC))

    @unittest.skipUnless(SERVE_OK, SERVE_WHY)
    def test_blip_features_reach_the_daemon(self):
        self.assertEqual(self.rc, 0, self.stderr)
        summary = json.loads(self.stdout)
        self.assertEqual(summary["put"]["created"], len(self.items))
        c = sc.Client(self.daemon.url)
        try:
            for k, it in enumerate(self.items):
                got = c.get_item(it.id)
                self.assertEqual(got["attributes"], {"title": it.title})
                for ch in ("blip", "blip2", "blip_image", "blip_text"):
                    want = self.rows(ch)[k]
                    self.assertEqual(len(got["features"][ch]), len(want))
                    self.assertLess(dist(got["features"][ch], want), 1e-5)
        finally:
            c.close()


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
