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

#endif
