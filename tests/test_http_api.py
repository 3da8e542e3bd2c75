#!/usr/bin/env python3
# ctest: labels=integration timeout=180
"""test_http_api.py - every route of the real daemon, each response
validated against proto/openapi.yaml."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sgbd_http import Daemon, check, run, validate_request  # noqa: E402

U, I = 300, 120
RECO = "/v1/users/{id}/recommendations"
ITEM = "/v1/items/{id}"


def ids(reply):
    return [x["item_id"] for x in reply.json["items"]]


def test_http_status_routes():
    with Daemon() as d:
        r = d.request("GET", "/healthz", route="/healthz")
        check(r.status == 200, r)
        r = d.request("GET", "/readyz", route="/readyz")
        check(r.status == 200 and r.json["model_version"] == 1, r)
        r = d.request("GET", "/v1/model", route="/v1/model")
        check(r.status == 200 and r.json["model"] == "synthetic", r)
        check(r.json["users"] == U and r.json["items"] == I, r)
        check(r.json["state"] == "idle", r)
        r = d.request("GET", "/v1/model/checkpoints",
                      route="/v1/model/checkpoints")
        check(r.status == 200 and r.json["checkpoints"] == [], r)
        r = d.request("GET", "/metrics", route="/metrics")
        text = r.raw.decode()
        check(r.headers["content-type"].startswith("text/plain"), r.headers)
        check('sgbd_http_requests_total{route="/readyz",code="200"} 1' in
              text, text[:400])
        check("sgbd_model_version 1\n" in text, "model version gauge")
        check("process_resident_memory_bytes" in text, "process metrics")
        r = d.request("HEAD", "/healthz")
        check(r.status == 200 and r.raw == b"", r)
        check(d.stop() == 0, "exit status")


def test_http_recommendations_and_fallback():
    with Daemon() as d:
        r = d.request("GET", "/v1/users/u7/recommendations?k=20", route=RECO)
        check(r.status == 200 and len(r.json["items"]) == 20, r)
        check("fallback" not in r.json, r)
        scores = [x["score"] for x in r.json["items"]]
        check(scores == sorted(scores, reverse=True), "scores descending")
        top = ids(r)[:3]
        r2 = d.request("GET", "/v1/users/u7/recommendations?k=20&exclude=" +
                       ",".join(top), route=RECO)
        check(not set(top) & set(ids(r2)), "exclude honoured")
        check(ids(r2)[:17] == ids(r)[3:], "the rest keeps its order")

        r = d.request("GET", "/v1/users/newcomer/recommendations?k=5",
                      route=RECO)
        check(r.status == 200 and r.json.get("fallback") == "popular", r)
        counts = [x["score"] for x in r.json["items"]]
        check(counts == sorted(counts, reverse=True), "popularity order")

        body = {"user_ids": ["u1", "newcomer", "u2"], "k": 4,
                "exclude": ["i0"]}
        validate_request("/v1/recommendations", "post", body)
        r = d.request("POST", "/v1/recommendations", body,
                      route="/v1/recommendations")
        check(r.status == 200 and len(r.json["results"]) == 3, r)
        check([x["user_id"] for x in r.json["results"]] ==
              ["u1", "newcomer", "u2"], "request order")
        check(r.json["results"][1]["fallback"] == "popular", r)
        single = d.request("GET", "/v1/users/u2/recommendations?k=4"
                           "&exclude=i0", route=RECO)
        check([x["item_id"] for x in r.json["results"][2]["items"]] ==
              ids(single), "batch equals single")

        r = d.request("GET", "/v1/items/i3/similar?k=5",
                      route="/v1/items/{id}/similar")
        check(r.status == 200 and "i3" not in ids(r), r)
        check(len(r.json["items"]) == 5, r)
        r = d.request("GET", "/v1/items/zzz/similar",
                      route="/v1/items/{id}/similar")
        check(r.status == 404 and r.code == "item_not_found", r)


def test_http_item_lifecycle():
    with Daemon() as d:
        feat = {"image": [0.5] * 64, "text": [(-1) ** j for j in range(32)]}
        body = {"features": feat, "attributes": {"title": "Green tea",
                                                 "price": 3.5}}
        validate_request(ITEM, "put", body)
        r = d.request("PUT", "/v1/items/tea%2F42", body, route=ITEM)
        check(r.status == 201 and r.json["created"], r)
        check(r.json["recommendable"], r)
        check(r.json["item_id"] == "tea/42", "encoded slash kept in the id")

        # recommendable at once: every user's full list holds it
        r = d.request("GET", "/v1/users/u5/recommendations?k=%d" % (I + 1),
                      route=RECO)
        check("tea/42" in ids(r), "new item in the full ranking")
        r = d.request("GET", "/v1/items/tea%2F42/similar?k=3",
                      route="/v1/items/{id}/similar")
        check(r.status == 200 and len(r.json["items"]) == 3, r)

        r = d.request("GET", "/v1/items/tea%2F42", route=ITEM)
        check(r.status == 200 and r.json["attributes"]["price"] == 3.5, r)
        check(r.json["features"]["image"] == [0.5] * 64, r)
        check(not r.json["hidden"], r)

        r = d.request("PUT", "/v1/items/tea%2F42",
                      {"attributes": {"title": "Sencha"}}, route=ITEM)
        check(r.status == 200 and not r.json["created"], r)
        r = d.request("GET", "/v1/items/tea%2F42", route=ITEM)
        check(r.json["attributes"] == {"title": "Sencha"}, r)
        check(len(r.json["features"]["text"]) == 32, "features kept")

        r = d.request("DELETE", "/v1/items/tea%2F42", route=ITEM)
        check(r.status == 200 and r.json["deleted"] is True, r)
        for u in ("u5", "u6", "stranger"):
            r = d.request("GET", "/v1/users/%s/recommendations?k=%d" %
                          (u, I + 1), route=RECO)
            check("tea/42" not in ids(r), "deleted item hidden at once")
        r = d.request("GET", "/v1/items/tea%2F42", route=ITEM)
        check(r.json["hidden"] and not r.json["recommendable"], r)
        r = d.request("DELETE", "/v1/items/never-was", route=ITEM)
        check(r.status == 404 and r.code == "item_not_found", r)

        # hiding a trained item
        r = d.request("GET", "/v1/users/u9/recommendations?k=1", route=RECO)
        best = ids(r)[0]
        r = d.request("DELETE", "/v1/items/" + best, route=ITEM)
        check(r.status == 200, r)
        r = d.request("GET", "/v1/users/u9/recommendations?k=1", route=RECO)
        check(ids(r)[0] != best, "trained item hidden at once")


def test_http_interactions_exclude_at_once():
    with Daemon() as d:
        r = d.request("GET", "/v1/users/u11/recommendations?k=3", route=RECO)
        first = ids(r)[0]
        body = {"interactions": [
            {"user_id": "u11", "item_id": first, "timestamp": 1700000000},
            {"user_id": "brand-new", "item_id": "i1"}]}
        validate_request("/v1/interactions", "post", body)
        r = d.request("POST", "/v1/interactions", body,
                      route="/v1/interactions")
        check(r.status == 200 and r.json["accepted"] == 2, r)
        check(r.json["new"] == 2, r)
        r = d.request("POST", "/v1/interactions", body,
                      route="/v1/interactions")
        check(r.json["new"] == 0, "a repeated event is logged once")
        r = d.request("GET", "/v1/users/u11/recommendations?k=3", route=RECO)
        check(first not in ids(r), "seen item excluded at once")
        r = d.request("GET", "/v1/users/brand-new/recommendations?k=%d" % I,
                      route=RECO)
        check("i1" not in ids(r) and r.json["fallback"] == "popular", r)
        r = d.request("GET", "/v1/model", route="/v1/model")
        check(r.json["pending_interactions"] == 2, r)
        r = d.request("POST", "/v1/interactions", {"interactions": [
            {"user_id": "u1", "item_id": "ghost"}]},
            route="/v1/interactions")
        check(r.status == 422 and r.code == "unknown_item", r)


def test_http_admin_routes_without_retrainer():
    # Without a store nothing can be retrained: no retrainer is attached.
    with Daemon(store=False) as d:
        r = d.request("POST", "/v1/model/retrain", route="/v1/model/retrain")
        check(r.status == 501 and r.code == "not_implemented", r)
        r = d.request("POST", "/v1/model/rollback", {"version": 1},
                      route="/v1/model/rollback")
        check(r.status == 501, r)
        r = d.request("POST", "/v1/model/rollback", {"version": 0},
                      route="/v1/model/rollback")
        check(r.status == 400, r)


def test_http_keep_alive_serves_many_requests():
    with Daemon() as d:
        c = d.connect()
        for j in range(50):
            r = d.request("GET", "/v1/users/u%d/recommendations?k=5" % j,
                          route=RECO, conn=c)
            check(r.status == 200, r)
            check(r.headers.get("connection") != "close", "keep-alive")
        r = d.request("GET", "/nope", conn=c)
        check(r.status == 404, r)
        r = d.request("GET", "/healthz", conn=c, route="/healthz")
        check(r.status == 200, "connection still usable after a 404")
        c.close()


def cache_counts(d):
    text = d.request("GET", "/metrics", route="/metrics").raw.decode()
    got = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("sgbd_reco_cache_"):
            got[name[len("sgbd_reco_cache_"):]] = float(value)
    return got


def test_http_answer_cache():
    with Daemon() as d:
        r1 = d.request("GET", "/v1/users/u21/recommendations?k=8", route=RECO)
        before = cache_counts(d)
        r2 = d.request("GET", "/v1/users/u21/recommendations?k=8", route=RECO)
        after = cache_counts(d)
        check(r2.raw == r1.raw, "a repeat gets the same bytes")
        check(r2.headers["x-model-version"] == r1.headers["x-model-version"],
              r2.headers)
        check(after["hits_total"] == before["hits_total"] + 1, after)
        check(after["entries"] >= 1 and after["bytes"] > len(r1.raw), after)
        # The user's own interaction retires the answer at once ...
        top = ids(r1)[0]
        r = d.request("POST", "/v1/interactions", {"interactions": [
            {"user_id": "u21", "item_id": top}]}, route="/v1/interactions")
        check(r.status == 200, r)
        r3 = d.request("GET", "/v1/users/u21/recommendations?k=8", route=RECO)
        check(top not in ids(r3) and ids(r3)[:7] == ids(r1)[1:], r3)
        # ... and deleting one of its items does too.
        r = d.request("DELETE", "/v1/items/" + ids(r3)[0], route=ITEM)
        check(r.status == 200, r)
        r4 = d.request("GET", "/v1/users/u21/recommendations?k=8", route=RECO)
        check(ids(r4)[:7] == ids(r3)[1:], r4)
        # Similar items and batch entries come from the same cache.
        sim = "/v1/items/i5/similar?k=6"
        s1 = d.request("GET", sim, route="/v1/items/{id}/similar")
        before = cache_counts(d)
        s2 = d.request("GET", sim, route="/v1/items/{id}/similar")
        check(s2.raw == s1.raw, "a repeated similar-items request")
        check(cache_counts(d)["hits_total"] == before["hits_total"] + 1,
              cache_counts(d))
        b = d.request("POST", "/v1/recommendations",
                      {"user_ids": ["u21", "u22"], "k": 8},
                      route="/v1/recommendations")
        check(b.status == 200 and b.json["results"][0] == r4.json, b)
    with Daemon(args=["--set", "server.result_cache_mb=0"]) as d:
        d.request("GET", "/v1/users/u21/recommendations?k=8", route=RECO)
        check(cache_counts(d) == {}, "no cache metrics when it is off")


if __name__ == "__main__":
    run([test_http_status_routes,
         test_http_recommendations_and_fallback,
         test_http_item_lifecycle,
         test_http_interactions_exclude_at_once,
         test_http_admin_routes_without_retrainer,
         test_http_keep_alive_serves_many_requests,
         test_http_answer_cache])
