/*
 * config.h - every configuration option, declared once.
 *
 * The options live in one table in config.c (section, key, type, default,
 * range, whether SIGHUP may change it, one line of help). The table drives
 * defaults, parsing of the INI file (through inih), command-line overrides
 * ("section.key=value") and the reference file configs/sgbd.conf, so the
 * four can never disagree.
 */
#ifndef SGBD_CONFIG_H
#define SGBD_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define SGBD_PATH_MAX 1024

struct sgbd_config {
    /* [server] */
    char listen[128];            /* "ADDR:PORT", 127.0.0.1 by default */
    int http_threads;            /* MHD worker pool size */
    int64_t max_body_bytes;      /* larger bodies get 413 */
    int max_connections;
    int connection_timeout_s;    /* idle or slow connections are closed */
    int max_k;                   /* largest k a request may ask for */
    int max_batch_users;         /* users in one POST /v1/recommendations */
    char write_token_file[SGBD_PATH_MAX]; /* tokens for write routes */
    char admin_token_file[SGBD_PATH_MAX]; /* tokens for admin routes */
    int request_timeout_s;       /* deadline for one whole request */
    int drain_timeout_s;         /* SIGTERM: wait for in-flight requests */
    int64_t result_cache_mb;     /* answer cache (reco_cache.h), 0: off */

    /* [store] */
    char db_path[SGBD_PATH_MAX];
    int64_t map_size_mb;         /* initial LMDB map size; grown on demand */
    int keep_checkpoints;        /* older checkpoints are deleted */

    /* [model] */
    char model[32];              /* lightgcn, vbpr, dualgnn, dragon, ... */
    int embedding_size;          /* D */
    int n_layers;
    double reg_weight;
    double learning_rate;
    int batch_size;              /* B, interactions per step */
    int64_t seed;
    int knn_k;                   /* item kNN neighbours (DRAGON, FREEDOM) */
    double mm_image_weight;      /* weight of the image kNN graph */
    int user_knn_k;              /* user co-occurrence neighbours */
    double dropout;              /* FREEDOM edge dropout */
    double ssl_alpha, ssl_temp, temp; /* SLMRec */
    int dualgnn_inplace_bug;     /* reproduce MMRec's DualGNN fusion */

    /* [optimizer] */
    char optimizer[16];          /* adam, mg, sam, sgbd */
    double weight_decay;         /* coupled L2 inside Adam */
    double alpha1, alpha2;       /* MG gradient factors */
    int beta;                    /* MG interval: every beta-th batch mirrors */
    double rho;                  /* SAM radius */
    int sam_on_normal_steps;
    int adaptive;                /* ASAM */

    /* [train] */
    int epochs;                  /* maximum; early stopping may end sooner */
    int stopping_step;           /* patience in epochs */
    char valid_metric[32];       /* e.g. recall@20 */
    char topk[64];               /* evaluated K list, "5,10,20" */
    int threads;                 /* OpenBLAS and SpMM threads for training */
    int bf16_features;           /* feature projections in bfloat16 */
    char streams[8];             /* offline draws: auto, mmrec, sgbd */

    /* [retrain] */
    int retrain_enabled;
    int retrain_min_item_updates;
    int retrain_min_interactions;
    double retrain_debounce_s;
    double retrain_min_interval_s;
    double retrain_max_interval_s; /* 0: no periodic retrain */
    int retrain_epochs;
    int retrain_warm_start;
    double retrain_tolerance;    /* publish unless candidate < current - tol */
    int retrain_initial_epochs;  /* a first model, or warm_start off */
    int retrain_holdout_min;     /* live holdout: users with this many */
    int retrain_threads;         /* maths threads of a retrain */
    int retrain_nice;            /* scheduling niceness of the retrainer */

    /* [log] */
    char log_level[16];
};

/* Fill every field with its default. */
void sgbd_config_defaults(struct sgbd_config *cfg);

/*
 * Read an INI file over cfg. Unknown sections or keys and values out of
 * range are errors: SGBD_E_CONFIG with "FILE:LINE: [section] key: why" as
 * the detail (see err.h); -errno when the file cannot be read.
 */
int sgbd_config_load(struct sgbd_config *cfg, const char *path);

/* Set one option from "section.key" and a value; same checks as the file. */
int sgbd_config_set(struct sgbd_config *cfg, const char *name,
                    const char *value);

/*
 * Whether options that SIGHUP cannot change differ between a and b; on
 * a difference, *name is the first such "section.key".
 */
int sgbd_config_fixed_differs(const struct sgbd_config *a,
                              const struct sgbd_config *b, const char **name);

/* Write the reference configuration: every option, commented, defaults. */
void sgbd_config_write_reference(FILE *f);

#endif
