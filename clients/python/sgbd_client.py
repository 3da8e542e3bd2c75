"""sgbd_client - a Python client for the SGBD recommendation daemon.

One file, standard library only (Python 3.8+): copy it into a service or
install it with ``pip install clients/python``. It speaks the v1 HTTP/JSON
API of ``sgbd serve`` (DESIGN.md section 7, proto/openapi.yaml)::

    from sgbd_client import Client, NotFound

    with Client("http://127.0.0.1:8080", token="s3cret") as sgbd:
        reco = sgbd.recommend("u42", k=10, exclude=["i7"])
        for item in reco["items"]:
            print(item["item_id"], item["score"])

Every method returns the decoded JSON body of the answer (a dict) except
:meth:`Client.metrics`, which returns the Prometheus text. Errors raise a
subclass of :class:`SGBDError`: one class per HTTP status the daemon uses
(:class:`BadRequest`, :class:`NotFound`, :class:`Unavailable`, ...), each
carrying the daemon's stable error ``code`` and ``message``, and
:class:`TransportError` / :class:`Timeout` when no answer came back.

Retries (bounded, exponential backoff with full jitter):

* 503 Unavailable and 429 Too Many Requests are retried on every route:
  the daemon answers 503 only before acting (no model yet, draining, no
  store), so a retry cannot apply anything twice. A ``Retry-After``
  header is honoured, capped at ``backoff_max``.
* A connection that could not be opened (refused, unreachable, DNS) is
  retried on every route: the daemon never saw the request.
* A failure after the request may have reached the daemon (reset, closed
  keep-alive connection, read timeout) is retried only on idempotent
  routes: every GET, PUT and DELETE, POST /v1/recommendations (a read),
  POST /v1/model/rollback (the same target version twice is one
  rollback) and POST /v1/interactions, which the store deduplicates on
  (user, item, timestamp): the client stamps events that lack a timestamp
  once, before the first attempt, so a retried batch is recognised.
  POST /v1/model/retrain is not retried after it may have been sent.

Connections are kept alive (HTTP/1.1, ``http.client``) in a small pool, so
one Client may be shared by many threads.
"""

import http.client
import json
import math
import random
import socket
import ssl
import threading
import time
import urllib.parse

__all__ = [
    "Client", "SGBDError", "TransportError", "Timeout", "APIError",
    "BadRequest", "Unauthorized", "Forbidden", "NotFound",
    "MethodNotAllowed", "Conflict", "PayloadTooLarge",
    "UnsupportedMediaType", "UnprocessableEntity", "TooManyRequests",
    "ServerError", "NotSupported", "Unavailable", "InsufficientStorage",
    "parse_metrics", "DEFAULT_URL",
]

__version__ = "0.1.0"

DEFAULT_URL = "http://127.0.0.1:8080"

#: Statuses retried on every route (the daemon did not act).
RETRY_STATUSES = frozenset((429, 503))


# ---- errors ----

class SGBDError(Exception):
    """Base of every error this client raises.

    Attributes: ``status`` (HTTP status, None when no answer came),
    ``code`` (the daemon's stable error code, e.g. ``"no_model"``),
    ``message``, ``model_version`` (of the daemon when it answered),
    ``method`` and ``path`` of the request, ``body`` (raw answer bytes).
    """

    status = None

    def __init__(self, message, code=None, status=None, model_version=None,
                 method=None, path=None, body=None, retry_after=None):
        super().__init__(message)
        self.message = message
        self.code = code
        if status is not None:
            self.status = status
        self.model_version = model_version
        self.method = method
        self.path = path
        self.body = body
        self.retry_after = retry_after

    def __repr__(self):
        return "%s(status=%r, code=%r, message=%r)" % (
            type(self).__name__, self.status, self.code, self.message)

    def __str__(self):
        where = " ".join(p for p in (self.method, self.path) if p)
        head = "%s %s" % (self.status, self.code) if self.status else \
            (self.code or "transport")
        return "%s: %s%s" % (head, self.message,
                             " (%s)" % where if where else "")


class TransportError(SGBDError):
    """No HTTP answer: the connection failed or broke (``cause`` holds
    the underlying exception)."""

    def __init__(self, message, cause=None, **kw):
        kw.setdefault("code", "transport")
        super().__init__(message, **kw)
        self.cause = cause


class Timeout(TransportError):
    """No answer within the client's timeout."""


class APIError(SGBDError):
    """The daemon answered with an error status (4xx, 5xx)."""


class BadRequest(APIError):
    """400: malformed JSON, unknown member, bad id, k out of range."""
    status = 400


class Unauthorized(APIError):
    """401: the route needs a bearer token and none was sent."""
    status = 401


class Forbidden(APIError):
    """403: the token does not open this route (e.g. a write token on an
    admin route)."""
    status = 403


class NotFound(APIError):
    """404: no such route, item or checkpoint."""
    status = 404


class MethodNotAllowed(APIError):
    """405: the route exists but not for this method."""
    status = 405


class Conflict(APIError):
    """409: a retrain is running, nothing to train on, the item has no
    vector yet, a corrupt checkpoint."""
    status = 409


class PayloadTooLarge(APIError):
    """413: the body (or an item's attributes) is over the daemon's
    limit."""
    status = 413


class UnsupportedMediaType(APIError):
    """415: the body was not sent as application/json."""
    status = 415


class UnprocessableEntity(APIError):
    """422: well-formed but unusable: a feature width that does not match
    the channel or the model, an unknown item in an interaction, too many
    channels."""
    status = 422


class TooManyRequests(APIError):
    """429: a proxy in front of the daemon asks to slow down."""
    status = 429


class ServerError(APIError):
    """500 and any other 5xx without a class of its own."""
    status = 500


class NotSupported(APIError):
    """501: this daemon runs without the feature (e.g. no retrainer)."""
    status = 501


class Unavailable(APIError):
    """503: no model published yet, draining, or no store."""
    status = 503


class InsufficientStorage(APIError):
    """507: the store is full."""
    status = 507


_BY_STATUS = {c.status: c for c in (
    BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed,
    Conflict, PayloadTooLarge, UnsupportedMediaType, UnprocessableEntity,
    TooManyRequests, ServerError, NotSupported, Unavailable,
    InsufficientStorage)}


def _error_class(status):
    cls = _BY_STATUS.get(status)
    if cls:
        return cls
    return ServerError if status >= 500 else APIError


def _error_from_answer(status, headers, raw, method, path):
    """The exception for an error answer; tolerates non-JSON bodies (a
    proxy's HTML page)."""
    code, message, version = None, None, None
    try:
        doc = json.loads(raw.decode("utf-8"))
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            code = err.get("code")
            message = err.get("message")
        if isinstance(doc, dict):
            version = doc.get("model_version")
    except (ValueError, UnicodeDecodeError):
        pass
    if message is None:
        text = raw[:200].decode("utf-8", "replace").strip()
        message = text or http.client.responses.get(status, "error")
    if version is None:
        version = _int_or_none(headers.get("X-Model-Version"))
    return _error_class(status)(
        message, code=code, status=status, model_version=version,
        method=method, path=path, body=raw,
        retry_after=_retry_after(headers))


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _retry_after(headers):
    """Seconds of a Retry-After header given as a number, else None."""
    value = headers.get("Retry-After")
    try:
        secs = float(value)
    except (TypeError, ValueError):
        return None
    return secs if secs >= 0 and math.isfinite(secs) else None


# ---- connections ----

class _Pool:
    """Idle keep-alive connections to one host; thread-safe."""

    def __init__(self, scheme, host, port, timeout, ssl_context, max_idle):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.max_idle = max_idle
        self._idle = []
        self._lock = threading.Lock()

    def get(self, fresh=False):
        """An idle connection (reused=True) or a new, unopened one (always
        new when fresh)."""
        with self._lock:
            if self._idle and not fresh:
                return self._idle.pop(), True
        if self.scheme == "https":
            ctx = self.ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(self.host, self.port,
                                               timeout=self.timeout,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port,
                                              timeout=self.timeout)
        return conn, False

    def put(self, conn):
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Sent(Exception):
    """Wraps a failure that happened after the request may have been
    delivered (so only idempotent requests may be repeated)."""

    def __init__(self, cause):
        super().__init__(str(cause))
        self.cause = cause


# ---- the client ----

def _quote(segment):
    """Percent-encode one path segment or id ('/' and ',' included)."""
    return urllib.parse.quote(str(segment), safe="")


def _check_id(value, what):
    if not isinstance(value, str) or not value:
        raise ValueError("%s must be a non-empty string, got %r"
                         % (what, value))
    return value


def _vector(values, where):
    """A feature vector as a list of finite floats (numpy arrays and any
    iterable of numbers are accepted)."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    out = []
    for j, v in enumerate(values):
        f = float(v)
        if not math.isfinite(f):
            raise ValueError("%s[%d] is not finite: %r" % (where, j, v))
        out.append(f)
    if not out:
        raise ValueError("%s is empty" % where)
    return out


class Client:
    """A connection to one daemon.

    :param url: base URL, e.g. ``http://127.0.0.1:8080`` (a path prefix
        such as ``http://lb/sgbd`` is kept in front of every route).
    :param token: bearer token sent with every request (write and admin
        routes need one when the daemon has token files; reads never do).
    :param timeout: seconds for connecting and for each socket read.
    :param retries: how many times a failed request is repeated (0: never),
        under the rules of the module docstring.
    :param backoff: first backoff interval in seconds; attempt n waits a
        random time in [0, min(backoff_max, backoff * 2**n)].
    :param backoff_max: cap of one wait, also of a Retry-After.
    :param ssl_context: for https URLs (default: the system's CAs).
    :param max_idle: keep-alive connections kept open for reuse.

    Thread-safe: each request takes its own pooled connection.
    """

    def __init__(self, url=DEFAULT_URL, token=None, timeout=10.0, retries=3,
                 backoff=0.1, backoff_max=5.0, ssl_context=None, max_idle=8,
                 user_agent=None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http://HOST[:PORT][/PREFIX], "
                             "got %r" % url)
        if retries < 0 or backoff < 0 or backoff_max < 0 or timeout <= 0:
            raise ValueError("retries, backoff and backoff_max must be >= 0 "
                             "and timeout > 0")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.user_agent = user_agent or "sgbd-client-python/" + __version__
        self._prefix = parts.path.rstrip("/")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._pool = _Pool(parts.scheme, parts.hostname, port, timeout,
                           ssl_context, max_idle)
        # Seams for the tests: the sleep between attempts and its dice.
        self._sleep = time.sleep
        self._random = random.Random()

    # -- lifecycle --

    def close(self):
        """Close the idle connections (the client stays usable)."""
        self._pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "Client(%r)" % self.url

    # -- the routes: reads --

    def recommend(self, user_id, k=None, exclude=None):
        """Personalised top-k for one user:
        ``GET /v1/users/{id}/recommendations?k=&exclude=``.

        Returns ``{"user_id", "model_version", "items": [{"item_id",
        "score"}, ...]}`` best first, plus ``"fallback": "popular"`` when
        the model does not know the user. Items the user has seen, hidden
        items and ``exclude`` never appear. ``k`` defaults to the daemon's
        (10, at most ``[server] max_k``).
        """
        _check_id(user_id, "user_id")
        query = []
        if k is not None:
            query.append(("k", str(int(k))))
        if exclude:
            ids = [_check_id(e, "exclude item") for e in exclude]
            query.append(("exclude", ",".join(_quote(e) for e in ids)))
        path = "/v1/users/%s/recommendations" % _quote(user_id)
        return self.request("GET", path, query=query)

    def recommend_batch(self, user_ids, k=None, exclude=None):
        """Top-k for many users in one call: ``POST /v1/recommendations``.

        Returns ``{"model_version", "results": [...]}`` with one object per
        user, in request order, shaped as :meth:`recommend`'s answer.
        ``exclude`` applies to every user. At most ``[server]
        max_batch_users`` users (default 1000).
        """
        users = [_check_id(u, "user id") for u in user_ids]
        body = {"user_ids": users}
        if k is not None:
            body["k"] = int(k)
        if exclude:
            body["exclude"] = [_check_id(e, "exclude item") for e in exclude]
        return self.request("POST", "/v1/recommendations", body=body,
                            idempotent=True)

    def similar(self, item_id, k=None, exclude=None):
        """Items closest to one item by the model's embeddings (cosine):
        ``GET /v1/items/{id}/similar?k=``.

        Returns ``{"item_id", "model_version", "items": [...]}``; the item
        itself is never in the list. Raises :class:`NotFound` for unknown
        or hidden items and :class:`Conflict` (``not_recommendable``) for
        an item without a vector yet.
        """
        _check_id(item_id, "item_id")
        query = []
        if k is not None:
            query.append(("k", str(int(k))))
        if exclude:
            ids = [_check_id(e, "exclude item") for e in exclude]
            query.append(("exclude", ",".join(_quote(e) for e in ids)))
        path = "/v1/items/%s/similar" % _quote(item_id)
        return self.request("GET", path, query=query)

    def get_item(self, item_id):
        """An item as stored: ``GET /v1/items/{id}``.

        Returns ``{"item_id", "hidden", "recommendable", "updated_at",
        "features": {channel: [floats]}, "attributes": {...}}``.
        """
        _check_id(item_id, "item_id")
        return self.request("GET", "/v1/items/%s" % _quote(item_id))

    # -- the routes: writes --

    def put_item(self, item_id, features=None, attributes=None):
        """Create or update an item: ``PUT /v1/items/{id}``.

        ``features`` maps channel names to vectors (lists, tuples, numpy
        arrays); a channel the store does not know is defined by its first
        vector's width. Channels not given keep their stored vectors;
        ``attributes`` (a JSON object, at most 64 KiB) replaces the stored
        ones when given. A hidden item becomes visible again.

        Returns ``{"item_id", "created", "recommendable"}``: recommendable
        is true when the served model can score the item at once (a
        multimodal model with its feature tower), false for ID-only models
        until the next retrain.
        """
        _check_id(item_id, "item_id")
        body = {}
        if features is not None:
            body["features"] = {
                str(name): _vector(vec, "features.%s" % name)
                for name, vec in dict(features).items()}
        if attributes is not None:
            if not isinstance(attributes, dict):
                raise ValueError("attributes must be a dict")
            body["attributes"] = attributes
        return self.request("PUT", "/v1/items/%s" % _quote(item_id),
                            body=body, idempotent=True)

    def delete_item(self, item_id):
        """Hide an item at once: ``DELETE /v1/items/{id}`` (it keeps its
        data; a later :meth:`put_item` shows it again)."""
        _check_id(item_id, "item_id")
        return self.request("DELETE", "/v1/items/%s" % _quote(item_id),
                            idempotent=True)

    def post_interactions(self, events, batch_size=1000):
        """Append feedback events: ``POST /v1/interactions``, in batches.

        ``events`` is an iterable of dicts ``{"user_id", "item_id",
        "timestamp"}`` or tuples ``(user_id, item_id[, timestamp])``;
        timestamps are whole unix seconds. Events without one are stamped
        with the current time here, once, so that a retried batch is
        deduplicated by the store instead of counted twice. Each seen item
        disappears from that user's recommendations at once.

        Returns ``{"accepted", "new", "requests", "model_version"}`` summed
        over the batches (``new`` counts events the store had not seen).
        An error stops at the failing batch; earlier batches are committed.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        now = int(time.time())
        total = {"accepted": 0, "new": 0, "requests": 0,
                 "model_version": None}
        batch = []
        for ev in events:
            batch.append(self._event(ev, now))
            if len(batch) == batch_size:
                self._post_events(batch, total)
                batch = []
        if batch:
            self._post_events(batch, total)
        return total

    def add_interaction(self, user_id, item_id, timestamp=None):
        """One event; see :meth:`post_interactions`."""
        return self.post_interactions([(user_id, item_id, timestamp)])

    @staticmethod
    def _event(ev, now):
        if isinstance(ev, dict):
            user, item, ts = ev.get("user_id"), ev.get("item_id"), \
                ev.get("timestamp")
        else:
            ev = tuple(ev)
            if len(ev) not in (2, 3):
                raise ValueError("an event tuple is (user_id, item_id"
                                 "[, timestamp]), got %r" % (ev,))
            user, item = ev[0], ev[1]
            ts = ev[2] if len(ev) == 3 else None
        out = {"user_id": _check_id(user, "user_id"),
               "item_id": _check_id(item, "item_id"),
               "timestamp": now if ts is None else int(ts)}
        if out["timestamp"] < 0:
            raise ValueError("timestamp must be >= 0, got %r" % ts)
        return out

    def _post_events(self, batch, total):
        got = self.request("POST", "/v1/interactions",
                           body={"interactions": batch}, idempotent=True)
        total["accepted"] += int(got.get("accepted", 0))
        total["new"] += int(got.get("new", 0))
        total["requests"] += 1
        total["model_version"] = got.get("model_version")

    # -- the routes: model and admin --

    def model(self):
        """The served model and the retrainer: ``GET /v1/model``.

        Has at least ``version``, ``state`` (``idle``/``training``),
        ``model``, ``optimizer``, ``trained_at``, ``metrics``,
        ``pending_updates`` and ``ready``.
        """
        return self.request("GET", "/v1/model")

    def checkpoints(self):
        """Kept checkpoints, newest first: ``GET /v1/model/checkpoints``;
        returns ``{"model_version", "checkpoints": [{"version", "model",
        "optimizer", "created_at", "metrics", "current", "previous",
        ...}]}``."""
        return self.request("GET", "/v1/model/checkpoints")

    def retrain(self, reason=None):
        """Queue a retrain now: ``POST /v1/model/retrain`` (admin token).

        Returns ``{"accepted": true}`` (202). Raises :class:`Conflict`
        (``retrain_running``, ``nothing_to_train``) or
        :class:`NotSupported` when the daemon has no retrainer. Not
        repeated after it may have reached the daemon.
        """
        body = {"reason": str(reason)} if reason is not None else None
        return self.request("POST", "/v1/model/retrain", body=body,
                            idempotent=False)

    def rollback(self, version):
        """Serve a kept checkpoint again: ``POST /v1/model/rollback``
        (admin token). Raises :class:`NotFound` (``checkpoint_not_found``)
        or :class:`Conflict` (a retrain runs, a corrupt checkpoint)."""
        version = int(version)
        if version < 1:
            raise ValueError("version must be >= 1")
        return self.request("POST", "/v1/model/rollback",
                            body={"version": version}, idempotent=True)

    # -- the routes: operations --

    def healthz(self):
        """Liveness: ``GET /healthz`` -> ``{"status": "ok"}``."""
        return self.request("GET", "/healthz")

    def readyz(self):
        """Readiness: ``GET /readyz`` -> ``{"ready": true}``; raises
        :class:`Unavailable` (``no_model``, ``draining``) at once, without
        retrying, when the daemon is not ready."""
        return self.request("GET", "/readyz", retry_statuses=())

    def is_ready(self):
        """True when /readyz answers 200; False on 503 or no answer."""
        try:
            self.readyz()
            return True
        except (Unavailable, TransportError):
            return False

    def wait_ready(self, timeout=30.0, interval=0.2):
        """Poll /readyz until the daemon serves a model; raises
        :class:`Timeout` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.is_ready():
                return
            if time.monotonic() >= deadline:
                raise Timeout("the daemon was not ready within %.1f s"
                              % timeout, method="GET", path="/readyz")
            self._sleep(interval)

    def metrics(self):
        """Prometheus text exposition: ``GET /metrics`` (a str; see
        :func:`parse_metrics`)."""
        return self.request("GET", "/metrics", expect="text")

    # -- the transport --

    def request(self, method, path, query=None, body=None, idempotent=None,
                expect="json", retry_statuses=RETRY_STATUSES):
        """Send one request with the retry rules; return the decoded body.

        ``path`` is the route, already percent-encoded; ``query`` a list of
        (key, value) pairs whose values are already encoded; ``body`` any
        JSON-serialisable value. ``idempotent`` defaults to True for GET,
        HEAD, PUT and DELETE. ``expect`` is ``"json"``, ``"text"`` or
        ``"bytes"``.
        """
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        target = self._prefix + path
        if query:
            target += "?" + "&".join("%s=%s" % (k, v) for k, v in query)
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"),
                              allow_nan=False).encode("utf-8")
        headers = self._headers(data)
        attempt, stale_seen = 0, False
        while True:
            failure = None
            try:
                # A request that must not be repeated never rides on a
                # reused connection the daemon may have closed meanwhile.
                status, rheaders, raw = self._once(method, target, data,
                                                   headers, not idempotent)
            except _StaleConnection as e:
                # The pool's other idle connections are as old: drop them
                # and repeat once, at once, without spending a retry.
                self._pool.close()
                if not stale_seen:
                    stale_seen = True
                    continue
                failure = _Sent(e.cause)
            except (OSError, http.client.HTTPException, _Sent) as e:
                failure = e
            if failure is not None:
                err, may_retry = self._transport_error(failure, method, path,
                                                       idempotent)
                if not may_retry or attempt >= self.retries:
                    raise err from getattr(failure, "cause", failure)
                delay = self._delay(attempt, None)
            elif 200 <= status < 300:
                return self._decode(raw, expect, method, path)
            else:
                err = _error_from_answer(status, rheaders, raw, method, path)
                if status not in retry_statuses or attempt >= self.retries:
                    raise err
                delay = self._delay(attempt, err.retry_after)
            self._sleep(delay)
            attempt += 1

    def _headers(self, data):
        h = {"Host": self._host_header, "Accept": "application/json",
             "User-Agent": self.user_agent}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if data is not None:
            h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(data) if data is not None else 0)
        return h

    def _once(self, method, target, data, headers, fresh):
        """One attempt on a pooled connection (a new one when fresh).
        Failures before the request left raise the OSError itself; a
        closed keep-alive connection _StaleConnection; the rest _Sent."""
        conn, reused = self._pool.get(fresh)
        if conn.sock is None:
            try:
                conn.connect()
            except BaseException:
                conn.close()
                raise
        try:
            conn.putrequest(method, target, skip_host=True,
                            skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(data)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if reused and _stale(e):
                # The daemon closed an idle keep-alive connection before
                # reading this request: it never saw it, like a refused
                # connection.
                raise _StaleConnection(e)
            raise _Sent(e)
        if resp.will_close:
            conn.close()
        else:
            self._pool.put(conn)
        return resp.status, resp.headers, raw

    def _transport_error(self, e, method, path, idempotent):
        """(exception to raise, whether a retry is allowed)."""
        sent = isinstance(e, _Sent)
        cause = e.cause if sent else e
        if isinstance(cause, socket.timeout):
            err = Timeout("no answer within %.3g s" % self.timeout,
                          cause=cause, method=method, path=path)
        else:
            what = "connection broke" if sent else "cannot connect"
            err = TransportError("%s: %s" % (what, cause), cause=cause,
                                 method=method, path=path)
        return err, (idempotent or not sent)

    def _delay(self, attempt, retry_after):
        """Full-jitter exponential backoff; Retry-After wins, capped."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        cap = min(self.backoff_max, self.backoff * (2 ** attempt))
        return self._random.uniform(0, cap)

    @staticmethod
    def _decode(raw, expect, method, path):
        if expect == "bytes":
            return raw
        text = raw.decode("utf-8")
        if expect == "text":
            return text
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError as e:
            raise APIError("the answer is not JSON: %s" % e, code="bad_answer",
                           method=method, path=path, body=raw)


class _StaleConnection(_Sent):
    """A reused connection that the daemon had closed: safe to repeat."""


def _stale(e):
    """Whether e is how a closed keep-alive connection shows itself before
    any byte of an answer came back."""
    return isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                          ConnectionResetError, ConnectionAbortedError))


# ---- metrics ----

def parse_metrics(text):
    """Parse Prometheus text exposition into ``{name: [(labels, value)]}``
    with labels a dict. Comments and blank lines are skipped; values
    ``+Inf``, ``-Inf`` and ``NaN`` become floats."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            body, _, tail = rest.rpartition("}")
            labels = _parse_labels(body)
            fields = tail.split()
        else:
            name, *fields = line.split()
        if not fields:
            continue
        out.setdefault(name.strip(), []).append((labels, float(fields[0])))
    return out


def _parse_labels(body):
    labels = {}
    i, n = 0, len(body)
    while i < n:
        eq = body.index("=", i)
        key = body[i:eq].strip().lstrip(",").strip()
        j = eq + 2                       # past '="'
        val = []
        while body[j] != '"':
            if body[j] == "\\":
                j += 1
                val.append({"n": "\n"}.get(body[j], body[j]))
            else:
                val.append(body[j])
            j += 1
        labels[key] = "".join(val)
        i = j + 1
        while i < n and body[i] in ", ":
            i += 1
    return labels
