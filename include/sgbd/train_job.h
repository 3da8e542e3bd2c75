/*
 * train_job.h - one offline training or evaluation job, end to end.
 *
 * A job reads an MMRec-format folder (or the store), builds the model the
 * configuration names, trains it with the configured step rule and
 * MMRec's early stopping, and reports the valid and test metrics of the
 * best epoch; optionally also under feature noise, and saves the model.
 * `sgbd train` and `sgbd eval` are thin front ends to it; benchmarks and
 * tests call it directly.
 */
#ifndef SGBD_TRAIN_JOB_H
#define SGBD_TRAIN_JOB_H

#include "sgbd/bulkio.h"
#include "sgbd/config.h"
#include "sgbd/trainer.h"

#define SGBD_JOB_MAX_K 8
#define SGBD_JOB_MAX_EPOCHS 100000

struct sgbd_train_job {
    struct sgbd_config cfg;       /* model, optimizer, train sections */
    const char *data_dir;         /* MMRec folder, or NULL */
    const char *features_dir;     /* feature files, if not in data_dir */
    const char *db_path;          /* store, or NULL */
    const char *out_path;         /* save the trained model here, or NULL */
    const char *in_path;          /* eval: the saved model */
    uint64_t version;             /* eval --db: checkpoint (0: current) */
    const char *plot_path;        /* SVG of the learning curves, or NULL */
    struct sgbd_bulkio_opts io;
    double feature_noise;         /* sigma; 0: no noisy evaluation */
    int json, quiet;              /* front-end settings */
    sgbd_progress_fn progress;    /* per-epoch callback, or NULL */
    void *progress_ctx;
};

/* Per-epoch history, for plots and reports. */
struct sgbd_epoch_point {
    double loss, valid, seconds;
};

struct sgbd_train_report {
    struct sgbd_train_result result;   /* best metrics in result.best */
    double train_seconds_per_epoch;    /* sampling and steps only */
    double eval_seconds_per_split;     /* full ranking of one split */
    int mmrec_streams;                 /* drew from MMRec's generators */
    int has_noisy;
    struct sgbd_epoch_eval noisy;      /* test metrics under noise */
    int n_points;
    struct sgbd_epoch_point *points;   /* (n_points), owned by the job */
};

/* Defaults of every option (config.h) and no paths. */
void sgbd_train_job_defaults(struct sgbd_train_job *job);

/*
 * Train as job says and fill *rep. Errors: SGBD_E_USAGE / SGBD_E_CONFIG
 * for bad settings (unknown model or metric, a model that needs
 * features without them), the loaders' errors naming the file,
 * SGBD_E_DIVERGED, -ENOMEM. rep->points stays valid until the next call
 * with the same rep (free it with sgbd_train_report_free()).
 */
int sgbd_train_job_run(struct sgbd_train_job *job,
                       struct sgbd_train_report *rep);

/* Evaluate the model saved at job->in_path on job's data. */
int sgbd_train_job_eval(struct sgbd_train_job *job,
                        struct sgbd_train_report *rep);

void sgbd_train_report_free(struct sgbd_train_report *rep);

/* ---- Shared with the online retrainer --------------------------------- */

struct sgbd_checkpoint_info;
struct sgbd_ckpt_kv;

/* The model hyper-parameters of configuration c. */
void sgbd_train_job_hparams(struct sgbd_hparams *hp,
                            const struct sgbd_config *c);

/* The step rule of configuration c; SGBD_E_NOTFOUND for an unknown
 * optimiser name. */
int sgbd_train_job_step_opts(struct sgbd_step_opts *s,
                             const struct sgbd_config *c);

/* Append (key, value) to a checkpoint's key/value list of *n entries;
 * nothing once it holds SGBD_CKPT_KV_MAX. */
void sgbd_train_job_kv_add(struct sgbd_ckpt_kv *kv, int *n, const char *key,
                           double value);

/* Write hp into info->hparams (keys "embedding_size", "n_layers", ...),
 * and read them back over hp (unknown keys are left to the caller). */
void sgbd_train_job_hparams_to_info(struct sgbd_checkpoint_info *info,
                                    const struct sgbd_hparams *hp);
void sgbd_train_job_hparams_from_info(struct sgbd_hparams *hp,
                                      const struct sgbd_checkpoint_info *info);

/* ---- Loss landscape ---------------------------------------------------- */

#define SGBD_LANDSCAPE_MAX_STEPS 101
#define SGBD_LANDSCAPE_MAX_BATCHES 64

struct sgbd_landscape_opts {
    int steps;          /* points along each direction (21) */
    double radius;      /* t runs over [-radius, radius] (0.5) */
    int n_batches;      /* training batches the loss is averaged over (8) */
    uint64_t seed;      /* batches, negatives and the random direction */
};

/*
 * Loss of a saved model along two directions through its parameters:
 * L(theta + t d) for a Gaussian direction and for the gradient direction,
 * each scaled tensor by tensor to the norm of theta's tensor, so t = 0.1
 * moves every tensor by a tenth of its size. The loss is the mean over a
 * fixed set of training batches (same negatives at every point).
 * Sharpness: the largest rise of the loss over its value at t = 0.
 */
struct sgbd_landscape_curve {
    char model[32], optimizer[32];
    int n;
    double t[SGBD_LANDSCAPE_MAX_STEPS];
    double random[SGBD_LANDSCAPE_MAX_STEPS];
    double gradient[SGBD_LANDSCAPE_MAX_STEPS];
    double center;                  /* loss at theta */
    double sharpness_random, sharpness_gradient;
};

void sgbd_landscape_opts_defaults(struct sgbd_landscape_opts *o);

/* The landscape of the model saved at job->in_path (or the store's current
 * checkpoint with job->db_path) on job's data. Errors as
 * sgbd_train_job_eval, and SGBD_E_USAGE for options out of range. */
int sgbd_train_job_landscape(struct sgbd_train_job *job,
                             const struct sgbd_landscape_opts *o,
                             struct sgbd_landscape_curve *out);

#endif
