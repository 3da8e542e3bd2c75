#!/usr/bin/env python3
"""blip_features - BLIP and BLIP-2 item embeddings for SGBD and MMRec.

Reads a product catalogue (JSON lines: ``id``, ``title``, ``description``,
``image`` - a path, relative to the catalogue's folder or --images-root),
encodes every item with Hugging Face ``transformers`` + ``torch``, and
writes the vectors as MMRec ``.npy`` files, PUTs them to a running
``sgbd serve`` (through clients/python/sgbd_client.py), or both::

    blip_features.py --catalogue items.jsonl --out feats/
    blip_features.py --catalogue items.jsonl --put http://127.0.0.1:8080 \\
        --token "$SGBD_TOKEN"

Channels (``--channels``, default ``blip,blip2``):

``blip``   BLIP image-text fused embedding: the item text run through
           BLIP's text encoder with cross-attention on the image's ViT
           tokens (the image-text-matching path), [CLS] hidden state;
           text width (768 for BLIP base).
``blip2``  BLIP-2 Q-Former embedding of the image: the learned query
           tokens (32) after cross-attending the frozen ViT, mean-pooled;
           Q-Former width (768), or the 256-d image-text space with
           ``--blip2-project`` (a Blip2ForImageTextRetrieval checkpoint).
``image``  BLIP's image embedding in the contrastive space (256).
``text``   BLIP's text embedding in the contrastive space (256).

Vectors are L2-normalised unless ``--no-normalize``. ``--out DIR`` writes
``<channel>_feat.npy`` (float32, (items, width), row i = the i-th line of
the catalogue) and ``item_ids.txt`` (the id of each row), which is what
``sgbd import`` and MMRec read; ``--rename blip_image=image`` changes a
channel's name (and file). ``--put URL`` sends one ``PUT
/v1/items/{id}`` per item with all its channels (keep-alive, ``--workers``
in parallel, retried on 503 by the client); a channel the store does not
know is defined by the first vector's width.

torch, transformers and Pillow are imported only when a model is loaded,
so the catalogue, .npy and daemon parts run on the standard library alone.
README.md next to this file names the real checkpoints and their widths.
"""

import argparse
import array
import concurrent.futures
import json
import math
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import sgbd_client  # noqa: E402

DEFAULT_BLIP = "Salesforce/blip-itm-base-coco"
DEFAULT_BLIP2 = "Salesforce/blip2-opt-2.7b"
CHANNELS = ("blip", "blip2", "image", "text")


class CatalogueError(ValueError):
    """A catalogue line that cannot be used; the message names file:line."""


# ---- the catalogue ----

class Item:
    """One catalogue line: ``id``, ``title``, ``description``, ``image``
    (absolute path or None), ``line`` (1-based)."""

    __slots__ = ("id", "title", "description", "image", "line")

    def __init__(self, id, title, description, image, line):
        self.id = id
        self.title = title
        self.description = description
        self.image = image
        self.line = line

    @property
    def text(self):
        """Title and description, the text BLIP reads."""
        parts = [p.strip() for p in (self.title, self.description) if p]
        return ". ".join(p.rstrip(".") for p in parts if p) or self.id


def _field(doc, names, where, kind=str):
    for name in names:
        v = doc.get(name)
        if v is None:
            continue
        if kind is str and isinstance(v, (int, float)) and \
                not isinstance(v, bool) and name == "id":
            v = str(v)
        if not isinstance(v, kind):
            raise CatalogueError("%s: '%s' must be a %s" % (
                where, name, kind.__name__))
        return v
    return None


def read_catalogue(path, images_root=None, need_images=True):
    """The items of a JSON-lines catalogue, in file order.

    Each line is an object with ``id`` (string or number), optional
    ``title`` and ``description`` strings and ``image`` (or
    ``image_path``): a path relative to ``images_root`` (default: the
    catalogue's folder). Blank lines are skipped. With ``need_images`` every
    item must name an image file that exists. Raises
    :class:`CatalogueError` naming the line (bad JSON, no id, the same id
    twice, a missing image) and OSError when the file cannot be read.
    """
    root = images_root or os.path.dirname(os.path.abspath(path))
    items, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = "%s:%d" % (path, n)
            try:
                doc = json.loads(line)
            except ValueError as e:
                raise CatalogueError("%s: not JSON: %s" % (where, e))
            if not isinstance(doc, dict):
                raise CatalogueError("%s: a line must be a JSON object"
                                     % where)
            item_id = _field(doc, ("id",), where)
            if not item_id:
                raise CatalogueError("%s: 'id' is missing or empty" % where)
            if item_id in seen:
                raise CatalogueError("%s: id '%s' already on line %d" % (
                    where, item_id, seen[item_id]))
            seen[item_id] = n
            image = _field(doc, ("image", "image_path"), where)
            if image:
                image = os.path.join(root, image)
            if need_images and not (image and os.path.isfile(image)):
                raise CatalogueError("%s: item '%s': image %s" % (
                    where, item_id,
                    "'%s' does not exist" % image if image else "missing"))
            items.append(Item(item_id, _field(doc, ("title",), where),
                              _field(doc, ("description",), where),
                              image, n))
    if not items:
        raise CatalogueError("%s: no items" % path)
    return items


# ---- .npy files (standard library) ----

class NpyWriter:
    """Stream a float32 (rows, cols) C-order matrix into a .npy v1.0 file.

    The file appears under its name only after :meth:`close` has checked
    that exactly ``rows`` rows were written (written to ``path.tmp``,
    fsync'd, renamed); :meth:`abort` removes the partial file.
    """

    def __init__(self, path, rows, cols):
        if rows < 1 or cols < 1:
            raise ValueError("%s: shape (%d, %d) is empty" % (path, rows,
                                                            cols))
        self.path, self.rows, self.cols = path, rows, cols
        self.written = 0
        self._tmp = path + ".tmp"
        self._f = open(self._tmp, "wb")
        self._f.write(npy_header(rows, cols))

    def write(self, rows):
        """Append rows (sequences of cols numbers)."""
        for r in rows:
            if len(r) != self.cols:
                raise ValueError("%s: row %d has %d values, not %d" % (
                    self.path, self.written, len(r), self.cols))
            a = array.array("f", r)
            if sys.byteorder != "little":
                a.byteswap()
            self._f.write(a.tobytes())
            self.written += 1
        if self.written > self.rows:
            raise ValueError("%s: more than %d rows" % (self.path,
                                                        self.rows))

    def close(self):
        if self.written != self.rows:
            self.abort()
            raise ValueError("%s: %d of %d rows written" % (
                self.path, self.written, self.rows))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)

    def abort(self):
        if not self._f.closed:
            self._f.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


def npy_header(rows, cols):
    """Magic, version 1.0, and the header dict padded so that the data
    starts on a 64-byte boundary (as numpy writes it)."""
    d = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (
        rows, cols)
    total = 10 + len(d) + 1
    d += " " * ((64 - total % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(d).to_bytes(2, "little") + d.encode()


def read_npy_f32(path):
    """(shape, rows as lists) of a little-endian float32 2-D .npy file
    written by :class:`NpyWriter` or numpy (v1-v3 headers, C order)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError("%s: not a .npy file" % path)
    size = 2 if data[6] == 1 else 4
    hlen = int.from_bytes(data[8:8 + size], "little")
    header = data[8 + size:8 + size + hlen].decode("latin1")
    if "'<f4'" not in header or "'fortran_order': False" not in header:
        raise ValueError("%s: not C-order little-endian float32" % path)
    shape = tuple(int(x) for x in header.split("(")[1].split(")")[0]
                  .split(",") if x.strip())
    a = array.array("f")
    a.frombytes(data[8 + size + hlen:])
    if sys.byteorder != "little":
        a.byteswap()
    rows, cols = shape
    if len(a) != rows * cols:
        raise ValueError("%s: %d values for shape %r" % (path, len(a),
                                                         shape))
    return shape, [list(a[r * cols:(r + 1) * cols]) for r in range(rows)]


# ---- batches and encoders ----

class Batch:
    """Items encoded together; images are opened once, on first use, and
    shared by every encoder."""

    def __init__(self, items):
        self.items = items
        self._images = None

    @property
    def texts(self):
        return [it.text for it in self.items]

    @property
    def images(self):
        if self._images is None:
            from PIL import Image
            imgs = []
            for it in self.items:
                try:
                    with Image.open(it.image) as im:
                        imgs.append(im.convert("RGB"))
                except OSError as e:
                    raise CatalogueError("line %d: item '%s': cannot read "
                                         "image %s: %s" % (it.line, it.id,
                                                           it.image, e))
            self._images = imgs
        return self._images


def _torch():
    import torch
    return torch


def _rows(t, normalize):
    """(B, D) tensor -> list of float lists, L2-normalised if asked."""
    torch = _torch()
    t = t.detach().to(torch.float32)
    if normalize:
        t = torch.nn.functional.normalize(t, dim=-1)
    return t.cpu().tolist()


def _load(model_cls, name, dtype):
    """from_pretrained with the dtype keyword of this transformers
    (``dtype`` since 4.56, ``torch_dtype`` before)."""
    import transformers
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return model_cls.from_pretrained(name, **{key: dtype})


def _pooled(out):
    """The pooled output of a transformers output, tuple or object."""
    if hasattr(out, "pooler_output"):
        return out.pooler_output
    return out[1]


def _hidden(out):
    """The last hidden state of a transformers output, tuple or tensor."""
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


class BlipEncoder:
    """BLIP (``BlipForImageTextRetrieval``, or ``BlipModel``) channels
    ``blip`` (fused), ``image`` and ``text`` (contrastive space).

    ``model``, ``image_processor`` and ``tokenizer`` are transformers
    objects (see :meth:`from_pretrained`); one vision pass per batch feeds
    every channel asked for.
    """

    def __init__(self, model, image_processor, tokenizer, channels=("blip",),
                 device="cpu", max_text_tokens=64, normalize=True):
        bad = set(channels) - {"blip", "image", "text"}
        if bad:
            raise ValueError("BLIP has no channel %s" % ", ".join(sorted(bad)))
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.channels = tuple(channels)
        self.device = device
        self.max_text_tokens = max_text_tokens
        self.normalize = normalize
        # BlipForImageTextRetrieval calls its BERT text_encoder; BlipModel
        # calls it text_model. Both take encoder_hidden_states.
        self.text_model = getattr(model, "text_encoder", None)
        if self.text_model is None:
            self.text_model = model.text_model

    @classmethod
    def from_pretrained(cls, name, channels, device="cpu", dtype=None,
                        **kw):
        from transformers import (AutoConfig, BlipForImageTextRetrieval,
                                  BlipModel, BlipProcessor)
        arch = (AutoConfig.from_pretrained(name).architectures or [""])[0]
        model_cls = BlipModel if arch == "BlipModel" else \
            BlipForImageTextRetrieval
        model = _load(model_cls, name, dtype)
        proc = BlipProcessor.from_pretrained(name)
        return cls(model.to(device), proc.image_processor, proc.tokenizer,
                   channels, device, **kw)

    def encode(self, batch):
        """{channel: rows} for the batch."""
        torch = _torch()
        with torch.no_grad():
            pixels = self.image_processor(images=batch.images,
                                          return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, self.model.dtype)
            tok = self.tokenizer(batch.texts, padding=True, truncation=True,
                                 max_length=self.max_text_tokens,
                                 return_tensors="pt").to(self.device)
            vision = self.model.vision_model(pixel_values=pixels)
            out = {}
            if "blip" in self.channels:
                out["blip"] = _rows(self.fused(vision, tok), self.normalize)
            if "image" in self.channels:
                out["image"] = _rows(self.image_space(vision),
                                     self.normalize)
            if "text" in self.channels:
                out["text"] = _rows(self.text_space(tok), self.normalize)
        return out

    def fused(self, vision, tok):
        """(B, text width): text encoder [CLS] cross-attending the image."""
        torch = _torch()
        image_embeds = _hidden(vision)                 # (B, 1 + P, Dv)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long,
                                device=image_embeds.device)
        out = self.text_model(input_ids=tok["input_ids"],
                              attention_mask=tok["attention_mask"],
                              encoder_hidden_states=image_embeds,
                              encoder_attention_mask=image_mask)
        return _hidden(out)[:, 0, :]

    def image_space(self, vision):
        if hasattr(self.model, "vision_proj"):         # retrieval head
            return self.model.vision_proj(_hidden(vision)[:, 0, :])
        return self.model.visual_projection(_pooled(vision))

    def text_space(self, tok):
        out = self.text_model(input_ids=tok["input_ids"],
                              attention_mask=tok["attention_mask"])
        if hasattr(self.model, "text_proj"):
            return self.model.text_proj(_hidden(out)[:, 0, :])
        return self.model.text_projection(_pooled(out))


class Blip2Encoder:
    """BLIP-2 Q-Former channel ``blip2``: the query tokens' outputs after
    cross-attending the image, mean-pooled over the queries.

    ``model`` is a ``Blip2Model`` (``get_qformer_features``) or any BLIP-2
    class with ``vision_model``, ``query_tokens`` and ``qformer``; with
    ``project`` its ``vision_projection`` (Blip2ForImageTextRetrieval) maps
    each query to the image-text space first.
    """

    def __init__(self, model, image_processor, device="cpu", project=False,
                 normalize=True):
        if project and not hasattr(model, "vision_projection"):
            raise ValueError("--blip2-project needs a checkpoint with a "
                             "vision_projection (Blip2ForImageTextRetrieval,"
                             " e.g. Salesforce/blip2-itm-vit-g)")
        self.model = model.eval()
        self.image_processor = image_processor
        self.device = device
        self.project = project
        self.normalize = normalize
        self.channels = ("blip2",)

    @classmethod
    def from_pretrained(cls, name, device="cpu", dtype=None, project=False,
                        **kw):
        import transformers
        model_cls = transformers.Blip2Model
        if project:    # added in transformers 4.45
            model_cls = transformers.Blip2ForImageTextRetrieval
        model = _load(model_cls, name, dtype)
        proc = transformers.AutoImageProcessor.from_pretrained(name)
        return cls(model.to(device), proc, device, project, **kw)

    def queries(self, pixels):
        """(B, Q, Dq) Q-Former outputs for the images."""
        torch = _torch()
        if hasattr(self.model, "get_qformer_features") and not self.project:
            return _hidden(self.model.get_qformer_features(
                pixel_values=pixels))
        image_embeds = _hidden(self.model.vision_model(pixel_values=pixels))
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long,
                          device=image_embeds.device)
        query = self.model.query_tokens.expand(image_embeds.shape[0], -1, -1)
        out = self.model.qformer(query_embeds=query,
                                 encoder_hidden_states=image_embeds,
                                 encoder_attention_mask=mask)
        return _hidden(out)

    def encode(self, batch):
        torch = _torch()
        with torch.no_grad():
            pixels = self.image_processor(images=batch.images,
                                          return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device,
                               self.model.vision_model.dtype)
            q = self.queries(pixels)
            if self.project:
                proj = self.model.vision_projection
                q = torch.nn.functional.normalize(
                    proj(q.to(proj.weight.dtype)), dim=-1)
            return {"blip2": _rows(q.mean(dim=1), self.normalize)}


# ---- where the vectors go ----

def npy_name(channel):
    return "%s_feat.npy" % channel


class NpySink:
    """``<channel>_feat.npy`` per channel and ``item_ids.txt`` in out_dir;
    nothing is left half-written when a run fails."""

    def __init__(self, out_dir, n_items):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.n_items = out_dir, n_items
        self.writers = {}
        self.ids = []

    def write(self, items, vectors):
        for ch, rows in vectors.items():
            w = self.writers.get(ch)
            if w is None:
                w = NpyWriter(os.path.join(self.out_dir, npy_name(ch)),
                              self.n_items, len(rows[0]))
                self.writers[ch] = w
            w.write(rows)
        self.ids.extend(it.id for it in items)

    def close(self):
        for w in self.writers.values():
            w.close()
        tmp = os.path.join(self.out_dir, "item_ids.txt.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(i + "\n" for i in self.ids))
        os.replace(tmp, os.path.join(self.out_dir, "item_ids.txt"))

    def abort(self):
        for w in self.writers.values():
            w.abort()


class PutSink:
    """One ``PUT /v1/items/{id}`` per item with every channel (plus title
    and description as attributes with ``attributes``), ``workers`` at a
    time on a shared keep-alive client. The first failure stops the run:
    :meth:`write` raises it, naming the item."""

    def __init__(self, client, workers=4, attributes=False):
        self.client = client
        self.attributes = attributes
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self.pending = []
        self.lock = threading.Lock()
        self.created = self.updated = 0
        self.recommendable = 0

    def _put(self, item, features):
        attrs = None
        if self.attributes:
            attrs = {k: v for k, v in (("title", item.title),
                                       ("description", item.description))
                     if v}
        try:
            got = self.client.put_item(item.id, features=features,
                                       attributes=attrs)
        except sgbd_client.SGBDError as e:
            raise RuntimeError("line %d: PUT item '%s': %s" % (
                item.line, item.id, e)) from e
        with self.lock:
            if got.get("created"):
                self.created += 1
            else:
                self.updated += 1
            self.recommendable += bool(got.get("recommendable"))

    def write(self, items, vectors):
        for k, it in enumerate(items):
            feats = {ch: rows[k] for ch, rows in vectors.items()}
            self.pending.append(self.pool.submit(self._put, it, feats))
        self._drain(keep=64)

    def _drain(self, keep=0):
        """Wait for all but `keep` requests; raise the first failure."""
        while len(self.pending) > keep:
            self.pending.pop(0).result()

    def close(self):
        try:
            self._drain()
        finally:
            self.pool.shutdown(wait=True)

    def abort(self):
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)


# ---- the run ----

def encode_all(items, encoders, sinks, batch_size=16, rename=None,
               progress=None):
    """Encode items in batches and hand each batch's vectors to every sink.

    ``rename`` maps encoder channel names to output names. Returns
    ``{"items", "channels": {name: width}, "seconds"}``. On any error every
    sink is aborted (no partial .npy files) and the error is raised.
    """
    rename = rename or {}
    widths = {}
    t0 = time.monotonic()
    try:
        for start in range(0, len(items), batch_size):
            batch = Batch(items[start:start + batch_size])
            vectors = {}
            for enc in encoders:
                for ch, rows in enc.encode(batch).items():
                    vectors[rename.get(ch, ch)] = rows
            check_vectors(batch.items, vectors, widths)
            for sink in sinks:
                sink.write(batch.items, vectors)
            if progress:
                progress(start + len(batch.items), len(items))
        for sink in sinks:
            sink.close()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return {"items": len(items), "channels": widths,
            "seconds": round(time.monotonic() - t0, 3)}


def check_vectors(items, vectors, widths):
    """Every channel has one finite row per item, of a stable width."""
    for ch, rows in vectors.items():
        if len(rows) != len(items):
            raise RuntimeError("channel %s: %d vectors for %d items" % (
                ch, len(rows), len(items)))
        for it, r in zip(items, rows):
            if widths.setdefault(ch, len(r)) != len(r):
                raise RuntimeError("channel %s: item '%s' has width %d, "
                                   "earlier ones %d" % (ch, it.id, len(r),
                                                        widths[ch]))
            if not all(math.isfinite(x) for x in r):
                raise RuntimeError("channel %s: item '%s' has a non-finite "
                                   "value" % (ch, it.id))


# ---- the command line ----

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="blip_features.py",
        description="BLIP / BLIP-2 item embeddings from a JSON-lines "
                    "catalogue, as MMRec .npy files or PUT to sgbd serve.")
    p.add_argument("--catalogue", required=True,
                   help="JSON lines: id, title, description, image")
    p.add_argument("--images-root", help="folder image paths are relative "
                   "to (default: the catalogue's)")
    p.add_argument("--channels", default="blip,blip2",
                   help="comma list of %s (default blip,blip2)"
                   % ", ".join(CHANNELS))
    p.add_argument("--blip-model", default=DEFAULT_BLIP)
    p.add_argument("--blip2-model", default=DEFAULT_BLIP2)
    p.add_argument("--blip2-project", action="store_true",
                   help="blip2 in the 256-d image-text space "
                   "(Blip2ForImageTextRetrieval checkpoints)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="float32",
                   choices=("float32", "float16", "bfloat16"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-text-tokens", type=int, default=64)
    p.add_argument("--no-normalize", action="store_true",
                   help="keep raw vectors (default: L2-normalised)")
    p.add_argument("--rename", action="append", default=[],
                   metavar="CHANNEL=NAME", help="output name of a channel")
    p.add_argument("--out", help="write <name>_feat.npy and item_ids.txt")
    p.add_argument("--put", metavar="URL", help="PUT every item to sgbd")
    p.add_argument("--token", default=os.environ.get("SGBD_TOKEN"),
                   help="bearer token for --put (default $SGBD_TOKEN)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--attributes", action="store_true",
                   help="also PUT title and description as attributes")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    a.channels = [c.strip() for c in a.channels.split(",") if c.strip()]
    bad = [c for c in a.channels if c not in CHANNELS]
    if bad or not a.channels:
        p.error("--channels: unknown %s (choose from %s)"
                % (", ".join(bad) or "(none)", ", ".join(CHANNELS)))
    a.rename_map = {}
    for r in a.rename:
        src, sep, dst = r.partition("=")
        if not sep or src not in CHANNELS or not dst:
            p.error("--rename takes CHANNEL=NAME, got '%s'" % r)
        a.rename_map[src] = dst
    names = [a.rename_map.get(c, c) for c in a.channels]
    if len(set(names)) != len(names):
        p.error("two channels would get the same name: %s" % names)
    if not a.out and not a.put:
        p.error("give --out DIR, --put URL, or both")
    if a.batch_size < 1 or a.workers < 1:
        p.error("--batch-size and --workers must be >= 1")
    return a


def model_encoders(a):
    """The BLIP / BLIP-2 encoders the arguments ask for."""
    import torch
    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, a.dtype)
    encs = []
    blip_ch = [c for c in a.channels if c in ("blip", "image", "text")]
    if blip_ch:
        encs.append(BlipEncoder.from_pretrained(
            a.blip_model, blip_ch, device, dtype,
            max_text_tokens=a.max_text_tokens,
            normalize=not a.no_normalize))
    if "blip2" in a.channels:
        encs.append(Blip2Encoder.from_pretrained(
            a.blip2_model, device, dtype, project=a.blip2_project,
            normalize=not a.no_normalize))
    return encs


def main(argv=None, make_encoders=model_encoders):
    """The command; returns the exit status (0, 1 on errors; argparse
    exits 2 on usage errors). ``make_encoders`` lets tests substitute
    encoders."""
    a = parse_args(argv)
    try:
        items = read_catalogue(a.catalogue, a.images_root)
    except (OSError, CatalogueError) as e:
        print("blip_features: %s" % e, file=sys.stderr)
        return 1
    try:
        encoders = make_encoders(a)
    except ImportError as e:
        print("blip_features: needs torch, transformers and Pillow: %s" % e,
              file=sys.stderr)
        return 1
    sinks, client = [], None
    if a.out:
        sinks.append(NpySink(a.out, len(items)))
    if a.put:
        client = sgbd_client.Client(a.put, token=a.token, timeout=a.timeout)
        sinks.append(PutSink(client, a.workers, a.attributes))

    def progress(done, total):
        if not a.quiet:
            print("blip_features: %d/%d items" % (done, total),
                  file=sys.stderr)
    try:
        summary = encode_all(items, encoders, sinks, a.batch_size,
                             a.rename_map, progress)
    except (RuntimeError, ValueError, OSError) as e:
        print("blip_features: %s" % e, file=sys.stderr)
        return 1
    finally:
        if client:
            client.close()
    for s in sinks:
        if isinstance(s, PutSink):
            summary["put"] = {"created": s.created, "updated": s.updated,
                              "recommendable": s.recommendable}
    if a.out:
        summary["out"] = a.out
    if a.json:
        print(json.dumps(summary, sort_keys=True))
    elif not a.quiet:
        print("blip_features: %d items, channels %s in %.1f s" % (
            summary["items"], ", ".join("%s:%d" % kv for kv in
                                        sorted(summary["channels"].items())),
            summary["seconds"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
