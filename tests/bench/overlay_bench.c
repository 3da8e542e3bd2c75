/*
 * overlay_bench.c - what one write costs the overlay while writes wait
 * for a retrain: sgbd_overlay_derive of one edit at a time on a synthetic
 * snapshot, timed over each span of SPAN writes as the pending entries
 * grow.
 *
 *     overlay_bench [U,I,D] [WRITES] [seen|mixed]
 *
 * Defaults: 192000,63000,64 (the Electronics size), 30000 writes, seen.
 * seen: interactions, each from a user not seen before (the table of
 * pending users grows by one a write). mixed: in turn a new item (no
 * features), an interaction, a delete of a base item; then, on the
 * overlay that leaves, SPAN interactions alone.
 *
 * Build: cc -O2 -I include -o /tmp/overlay_bench
 * tests/bench/overlay_bench.c build/libsgbd.a -llmdb -lopenblas -luring
 * -lsystemd -linih -ljansson -lmicrohttpd -lpthread -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/err.h"
#include "sgbd/overlay.h"
#include "sgbd/serve.h"
#include "sgbd/snapshot.h"

#define SPAN 3000

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

/* Replace *ov by *ov plus edit e; exits on failure. */
static void derive(struct sgbd_overlay **ov, const struct sgbd_snapshot *s,
                   const struct sgbd_overlay_edit *e)
{
    struct sgbd_overlay *next;
    int rc = sgbd_overlay_derive(&next, *ov, s, e, 1);

    if (rc != 0) {
        fprintf(stderr, "overlay_bench: %s\n", sgbd_err_detail(rc));
        exit(1);
    }
    sgbd_overlay_unref(*ov);
    *ov = next;
}

/* Write k (1-based) of the mix: an edit into e, its ids into the buffers. */
static void make_edit(int k, int mixed, uint32_t users, uint32_t items,
                      char *uid, char *iid, struct sgbd_overlay_edit *e)
{
    int what = mixed ? k % 3 : 2;

    memset(e, 0, sizeof(*e));
    e->seq = (uint64_t)k;
    e->item_id = iid;
    if (what == 0) {
        snprintf(iid, 32, "i%u", (uint32_t)((uint64_t)k * 104729 % items));
        e->op = SGBD_OVERLAY_DELETE_ITEM;
    } else if (what == 1) {
        snprintf(iid, 32, "new%d", k);
        e->op = SGBD_OVERLAY_PUT_ITEM;
    } else {
        snprintf(iid, 32, "i%u", (uint32_t)k % items);
        snprintf(uid, 32, "u%u", (uint32_t)((uint64_t)k * 7919 % users));
        e->op = SGBD_OVERLAY_SEEN;
        e->user_id = uid;
    }
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "192000,63000,64";
    int writes = argc > 2 ? atoi(argv[2]) : 30000;
    int mixed = argc > 3 && strcmp(argv[3], "mixed") == 0;
    struct sgbd_overlay *empty, *ov;
    struct sgbd_overlay_edit e;
    struct sgbd_snapshot *s;
    char uid[32], iid[32];
    uint64_t items, pairs;
    double t0;
    int rc;

    if ((rc = sgbd_serve_synthetic(&s, spec)) != 0 ||
        (rc = sgbd_overlay_new_empty(&empty)) != 0 ||
        (rc = sgbd_overlay_rebase(&ov, empty, s)) != 0) {
        fprintf(stderr, "overlay_bench: %s\n", sgbd_err_detail(rc));
        return 1;
    }
    sgbd_overlay_unref(empty);
    printf("%s, %s writes, us a write over each %d\n", spec,
           mixed ? "mixed" : "interaction", SPAN);
    t0 = now_us();
    for (int k = 1; k <= writes; k++) {
        make_edit(k, mixed, s->n_users, s->n_items, uid, iid, &e);
        derive(&ov, s, &e);
        if (k % SPAN == 0) {
            double t = now_us();
            sgbd_overlay_pending(ov, &items, &pairs);
            printf("%6d writes (%llu items, %llu interactions pending): "
                   "%.1f us\n", k, (unsigned long long)items,
                   (unsigned long long)pairs, (t - t0) / SPAN);
            t0 = t;
        }
    }
    if (mixed) {
        t0 = now_us();
        for (int k = 1; k <= SPAN; k++) {
            make_edit(3 * k + 2, 0, s->n_users, s->n_items, uid, iid, &e);
            e.seq = (uint64_t)(writes + k);
            derive(&ov, s, &e);
        }
        printf("then interactions alone: %.1f us\n",
               (now_us() - t0) / SPAN);
    }
    sgbd_overlay_unref(ov);
    sgbd_snapshot_free(s);
    return 0;
}
