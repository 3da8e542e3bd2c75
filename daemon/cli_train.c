/*
 * cli_train.c - `sgbd train` and `sgbd eval`: the offline engine.
 *
 * Both share one job description (struct job): where the data comes from,
 * the configuration (the same option table as the daemon, so a model
 * trained offline and online is the same model), and how to report.
 * Command-line flags are shorthands for configuration options; -c FILE is
 * read first, then the flags in order.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "sgbd/bf16.h"
#include "sgbd/cli.h"
#include "sgbd/config.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/mat.h"
#include "sgbd/metrics.h"
#include "sgbd/model.h"
#include "sgbd/progress.h"
#include "sgbd/sharpness.h"
#include "sgbd/svg.h"
#include "sgbd/trainer.h"
#include "sgbd/train_job.h"

#define MAX_COMPARE 4

/* Flags that are shorthands for an option of the configuration table. */
static const struct {
    const char *flag;
    const char *option;
} shorthands[] = {
    {"model", "model.name"},
    {"optimizer", "optimizer.name"},
    {"epochs", "train.epochs"},
    {"seed", "model.seed"},
    {"threads", "train.threads"},
    {"lr", "model.learning_rate"},
    {"reg", "model.reg_weight"},
    {"embedding", "model.embedding_size"},
    {"layers", "model.n_layers"},
    {"batch", "model.batch_size"},
    {"weight-decay", "optimizer.weight_decay"},
    {"alpha1", "optimizer.alpha1"},
    {"alpha2", "optimizer.alpha2"},
    {"beta", "optimizer.beta"},
    {"rho", "optimizer.rho"},
    {"valid-metric", "train.valid_metric"},
    {"topk", "train.topk"},
    {"stopping-step", "train.stopping_step"},
};

#define N_SHORTHANDS (sizeof(shorthands) / sizeof(shorthands[0]))

enum {
    OPT_DATA = 256, OPT_DB, OPT_JSON, OPT_QUIET, OPT_OUT, OPT_IN, OPT_NOISE,
    OPT_SET, OPT_HELP, OPT_VERSION, OPT_PLOT, OPT_FORCE_PREAD, OPT_COMPARE,
    OPT_FEATURES, OPT_CKPT_VERSION,
    OPT_SHORTHAND, /* OPT_SHORTHAND + i is shorthands[i] */
};

static void print_train_help(void)
{
    printf(
        "usage: sgbd train (--data DIR | --db PATH) [OPTIONS]\n"
        "\n"
        "Train a model on an MMRec-format folder (DIR holds one .inter file\n"
        "and optional <name>_feat.npy feature files) and report the test\n"
        "metrics of the best validation epoch.\n"
        "\n"
        "  -c FILE              read options from FILE first (sgbd.conf)\n"
        "  --model NAME         lightgcn, vbpr, dualgnn, dragon, slmrec, "
        "freedom\n"
        "  --optimizer NAME     adam, mg, sam or sgbd\n"
        "  --epochs N           maximum epochs (early stopping may end "
        "sooner)\n"
        "  --seed N             random seed (999); LightGCN draws as MMRec\n"
        "                       does, so a seed is MMRec's run of it\n"
        "                       ([train] streams)\n"
        "  --threads N          maths threads; 0 = all cores\n"
        "  --lr X --reg X --embedding N --layers N --batch N\n"
        "  --weight-decay X --alpha1 X --alpha2 X --beta N --rho X\n"
        "  --valid-metric M     early-stopping metric, e.g. recall@20\n"
        "  --topk LIST          cut-offs, e.g. 5,10,20\n"
        "  --stopping-step N    patience in epochs (20)\n"
        "  --set SECTION.KEY=V  any configuration option\n"
        "  --feature-noise S    also evaluate with N(0, S^2) noise added to\n"
        "                       the features (robustness test)\n"
        "  --features DIR       read <name>_feat.npy files from DIR\n"
        "  --out FILE           save the trained model to FILE\n"
        "  --compare LIST       train once per optimiser of LIST (e.g.\n"
        "                       adam,sgbd) with the same seed and data\n"
        "  --plot FILE.svg      draw loss and valid metric per epoch\n"
        "  --force-pread        read files without io_uring\n"
        "  --json               print one JSON object on stdout\n"
        "  --quiet              no progress lines\n");
}

static void print_eval_help(void)
{
    printf(
        "usage: sgbd eval (--data DIR --in FILE | --db PATH [--version N])\n"
        "                 [OPTIONS]\n"
        "\n"
        "Evaluate a saved model on the valid and test splits of its data.\n"
        "\n"
        "  --in FILE            model file written by sgbd train --out\n"
        "  --db PATH            a store; evaluates its current checkpoint\n"
        "  --version N          ... or checkpoint N of the store\n"
        "  --features DIR       read <name>_feat.npy files from DIR\n"
        "  --topk LIST          cut-offs, e.g. 5,10,20\n"
        "  --feature-noise S    add N(0, S^2) noise to the features first\n"
        "  --seed N             seed of the noise (999)\n"
        "  --threads N          maths threads; 0 = all cores\n"
        "  --json               print one JSON object on stdout\n");
}

static struct option *long_options(void)
{
    static struct option opts[N_SHORTHANDS + 16];
    static const struct option fixed[] = {
        {"data", required_argument, NULL, OPT_DATA},
        {"db", required_argument, NULL, OPT_DB},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"out", required_argument, NULL, OPT_OUT},
        {"in", required_argument, NULL, OPT_IN},
        {"feature-noise", required_argument, NULL, OPT_NOISE},
        {"set", required_argument, NULL, OPT_SET},
        {"plot", required_argument, NULL, OPT_PLOT},
        {"force-pread", no_argument, NULL, OPT_FORCE_PREAD},
        {"compare", required_argument, NULL, OPT_COMPARE},
        {"features", required_argument, NULL, OPT_FEATURES},
        {"version", required_argument, NULL, OPT_CKPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
    };
    size_t n = 0;

    for (; n < sizeof(fixed) / sizeof(fixed[0]); n++)
        opts[n] = fixed[n];
    for (size_t i = 0; i < N_SHORTHANDS; i++, n++) {
        opts[n].name = shorthands[i].flag;
        opts[n].has_arg = required_argument;
        opts[n].flag = NULL;
        opts[n].val = OPT_SHORTHAND + (int)i;
    }
    memset(&opts[n], 0, sizeof(opts[n]));
    return opts;
}

static int parse_double(const char *flag, const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end || !isfinite(v) || v < 0)
        return sgbd_errf(SGBD_E_USAGE, "--%s: '%s' is not a number >= 0",
                         flag, s);
    *out = v;
    return 0;
}

/* Apply "-c FILE" first so that flags override the file, whatever their
 * order on the command line. */
static int load_config_flag(struct sgbd_config *cfg, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                return sgbd_errf(SGBD_E_USAGE, "-c needs a FILE");
            return sgbd_config_load(cfg, argv[i + 1]);
        }
    }
    return 0;
}

static int parse_args(struct sgbd_train_job *job, int argc, char **argv,
                      int *help, const char **compare)
{
    struct option *opts = long_options();
    int c, rc;

    sgbd_train_job_defaults(job);
    rc = load_config_flag(&job->cfg, argc, argv);
    if (rc)
        return rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        rc = 0;
        switch (c) {
        case 'c': break; /* done first */
        case 'h':
        case OPT_HELP: *help = 1; return 0;
        case OPT_DATA: job->data_dir = optarg; break;
        case OPT_DB: job->db_path = optarg; break;
        case OPT_FEATURES: job->features_dir = optarg; break;
        case OPT_CKPT_VERSION: {
            char *end;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (end == optarg || *end || v == 0)
                return sgbd_errf(SGBD_E_USAGE, "--version: '%s' is not a "
                                 "checkpoint version", optarg);
            job->version = v;
            break;
        }
        case OPT_JSON: job->json = 1; break;
        case OPT_QUIET: job->quiet = 1; break;
        case OPT_OUT: job->out_path = optarg; break;
        case OPT_IN: job->in_path = optarg; break;
        case OPT_PLOT: job->plot_path = optarg; break;
        case OPT_COMPARE:
            if (!compare)
                return sgbd_errf(SGBD_E_USAGE, "--compare is for train");
            *compare = optarg;
            break;
        case OPT_FORCE_PREAD: job->io.force_pread = 1; break;
        case OPT_NOISE:
            rc = parse_double("feature-noise", optarg, &job->feature_noise);
            break;
        case OPT_SET: {
            char name[128];
            const char *eq = strchr(optarg, '=');
            if (!eq || (size_t)(eq - optarg) >= sizeof(name))
                return sgbd_errf(SGBD_E_USAGE,
                                 "--set: '%s' is not SECTION.KEY=VALUE",
                                 optarg);
            memcpy(name, optarg, (size_t)(eq - optarg));
            name[eq - optarg] = '\0';
            rc = sgbd_config_set(&job->cfg, name, eq + 1);
            break;
        }
        case '?':
            return sgbd_errf(SGBD_E_USAGE, "unknown or incomplete option "
                             "'%s' (see --help)", argv[optind - 1]);
        default:
            if (c >= OPT_SHORTHAND && c < OPT_SHORTHAND + (int)N_SHORTHANDS) {
                rc = sgbd_config_set(&job->cfg,
                                     shorthands[c - OPT_SHORTHAND].option,
                                     optarg);
                if (rc)
                    rc = sgbd_errf(SGBD_E_USAGE, "--%s: %s",
                                   shorthands[c - OPT_SHORTHAND].flag,
                                   sgbd_err_detail(rc));
            }
            break;
        }
        if (rc)
            return rc;
    }
    if (optind < argc)
        return sgbd_errf(SGBD_E_USAGE, "unexpected argument '%s'",
                         argv[optind]);
    sgbd_log_level = sgbd_log_level_parse(job->cfg.log_level);
    if (job->quiet && sgbd_log_level > SGBD_LOG_WARNING)
        sgbd_log_level = SGBD_LOG_WARNING;
    return 0;
}

/* ---- Reports ---------------------------------------------------------- */

struct live {
    struct sgbd_progress progress;
    const char *metric;
};

static void on_epoch(void *ctx, const struct sgbd_epoch_info *e)
{
    struct live *l = ctx;
    char eta[32];

    sgbd_progress_duration(e->eta_seconds, eta, sizeof(eta));
    sgbd_progress_line(&l->progress,
                       "epoch=%d loss=%.4f train_s=%.2f epoch_s=%.2f "
                       "valid_%s=%.4f best=%.4f best_epoch=%d%s eta=%s",
                       e->epoch, e->loss, e->train_seconds, e->seconds,
                       l->metric, e->valid, e->best, e->best_epoch,
                       e->improved ? " *" : "", eta);
}

static long peak_rss_bytes(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss * 1024L;
}

static json_t *metrics_object(const struct sgbd_epoch_eval *ev, int test)
{
    json_t *o = json_object();

    for (int i = 0; i < ev->n; i++)
        json_object_set_new(o, ev->v[i].name,
                            json_real(test ? ev->v[i].test : ev->v[i].valid));
    return o;
}

static json_t *summary_object(const struct sgbd_train_job *job,
                              const struct sgbd_train_report *rep)
{
    const struct sgbd_epoch_eval *ev = &rep->result.best;
    json_t *o = json_object();

        json_object_set_new(o, "model", json_string(job->cfg.model));
        json_object_set_new(o, "optimizer", json_string(job->cfg.optimizer));
        json_object_set_new(o, "seed", json_integer(job->cfg.seed));
        json_object_set_new(o, "epochs", json_integer(rep->result.epochs));
        json_object_set_new(o, "best_epoch",
                            json_integer(rep->result.best_epoch));
        json_object_set_new(o, "stopped_early",
                            json_boolean(rep->result.stopped_early));
        json_object_set_new(o, "seconds", json_real(rep->result.seconds));
        json_object_set_new(o, "seconds_per_epoch",
                            json_real(rep->train_seconds_per_epoch));
        json_object_set_new(o, "eval_seconds_per_split",
                            json_real(rep->eval_seconds_per_split));
        json_object_set_new(o, "grad_evals",
                            json_integer((json_int_t)rep->result.grad_evals));
        json_object_set_new(o, "peak_rss_bytes",
                            json_integer(peak_rss_bytes()));
        json_object_set_new(o, "bf16_features",
                            json_boolean(job->cfg.bf16_features &&
                                         sgbd_bf16_supported()));
        json_object_set_new(o, "streams",
                            json_string(rep->mmrec_streams ? "mmrec"
                                                           : "sgbd"));
        json_object_set_new(o, "valid_metric",
                            json_string(job->cfg.valid_metric));
        json_object_set_new(o, "valid", metrics_object(ev, 0));
        json_object_set_new(o, "test", metrics_object(ev, 1));
        if (rep->has_noisy) {
            json_object_set_new(o, "feature_noise",
                                json_real(job->feature_noise));
            json_object_set_new(o, "test_noisy",
                                metrics_object(&rep->noisy, 1));
        }
    return o;
}

static void print_json(json_t *o)
{
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    fputc('\n', stdout);
    json_decref(o);
}

static void print_compare_json(const struct sgbd_train_job *job,
                               const char **names,
                               struct sgbd_train_report *reps, int n)
{
    struct sgbd_train_job one = *job;
    json_t *runs = json_array(), *o = json_object();

    for (int i = 0; i < n; i++) {
        memcpy(one.cfg.optimizer, names[i], strlen(names[i]) + 1);
        json_array_append_new(runs, summary_object(&one, &reps[i]));
    }
    json_object_set_new(o, "runs", runs);
    print_json(o);
}

static void print_summary(const struct sgbd_train_job *job,
                          const struct sgbd_train_report *rep)
{
    const struct sgbd_epoch_eval *ev = &rep->result.best;

    if (job->json) {
        print_json(summary_object(job, rep));
        return;
    }
    printf("model=%s optimizer=%s epochs=%d best_epoch=%d "
           "seconds_per_epoch=%.3f peak_rss_mb=%.1f\n",
           job->cfg.model, job->cfg.optimizer, rep->result.epochs,
           rep->result.best_epoch, rep->train_seconds_per_epoch,
           (double)peak_rss_bytes() / (1 << 20));
    for (int i = 0; i < ev->n; i++)
        printf("%-14s valid %.4f  test %.4f\n", ev->v[i].name,
               ev->v[i].valid, ev->v[i].test);
    if (rep->has_noisy)
        for (int i = 0; i < rep->noisy.n; i++)
            printf("%-14s test with noise %g: %.4f\n", rep->noisy.v[i].name,
                   job->feature_noise, rep->noisy.v[i].test);
}

/* Learning curves of one or more runs: loss and valid metric per epoch. */
static int write_plot(const struct sgbd_train_job *job, const char **names,
                      struct sgbd_train_report *reps, int n)
{
    struct sgbd_svg_chart chart = {0};
    double *xs[MAX_COMPARE] = {0}, *loss[MAX_COMPARE] = {0};
    double *valid[MAX_COMPARE] = {0};
    char title[160], ylabel[64];
    int rc = -ENOMEM;

    snprintf(title, sizeof(title), "%s: training curves", job->cfg.model);
    snprintf(ylabel, sizeof(ylabel), "valid %s", job->cfg.valid_metric);
    chart.title = title;
    chart.n_panels = 2;
    chart.panels[0].title = "training loss";
    chart.panels[0].xlabel = "epoch";
    chart.panels[0].ylabel = "loss (sum of batches)";
    chart.panels[0].n_series = n;
    chart.panels[1].title = "validation";
    chart.panels[1].xlabel = "epoch";
    chart.panels[1].ylabel = ylabel;
    chart.panels[1].n_series = n;
    for (int r = 0; r < n; r++) {
        int m = reps[r].n_points;
        xs[r] = malloc((size_t)(m + 1) * sizeof(double));
        loss[r] = malloc((size_t)(m + 1) * sizeof(double));
        valid[r] = malloc((size_t)(m + 1) * sizeof(double));
        if (!xs[r] || !loss[r] || !valid[r])
            goto out;
        for (int e = 0; e < m; e++) {
            xs[r][e] = e;
            loss[r][e] = reps[r].points[e].loss;
            valid[r][e] = reps[r].points[e].valid;
        }
        chart.panels[0].series[r] =
            (struct sgbd_svg_series){names[r], xs[r], loss[r], (size_t)m};
        chart.panels[1].series[r] =
            (struct sgbd_svg_series){names[r], xs[r], valid[r], (size_t)m};
    }
    rc = sgbd_svg_write(job->plot_path, &chart);
out:
    for (int r = 0; r < n; r++)
        free(xs[r]), free(loss[r]), free(valid[r]);
    return rc;
}

/* "adam,sgbd" -> names (pointers into buf). */
static int split_compare(const char *list, char *buf, size_t size,
                         const char **names, int *n)
{
    char *save = NULL, *tok;

    if (strlen(list) >= size)
        return sgbd_errf(SGBD_E_USAGE, "--compare: list too long");
    memcpy(buf, list, strlen(list) + 1);
    *n = 0;
    for (tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_COMPARE)
            return sgbd_errf(SGBD_E_USAGE, "--compare: at most %d "
                             "optimisers", MAX_COMPARE);
        names[(*n)++] = tok;
    }
    if (*n == 0)
        return sgbd_errf(SGBD_E_USAGE, "--compare: empty list");
    return 0;
}

int sgbd_cli_train(int argc, char **argv)
{
    struct sgbd_train_job job;
    struct sgbd_train_report reps[MAX_COMPARE];
    const char *compare = NULL, *names[MAX_COMPARE];
    char buf[128];
    struct live live;
    int help = 0, n = 1, done = 0, rc;

    rc = parse_args(&job, argc, argv, &help, &compare);
    if (rc)
        return rc;
    if (help)
        return print_train_help(), SGBD_CLI_HELP;
    if (!job.data_dir && !job.db_path)
        return sgbd_errf(SGBD_E_USAGE, "--data DIR or --db PATH is needed");
    names[0] = job.cfg.optimizer;
    if (compare && (rc = split_compare(compare, buf, sizeof(buf), names,
                                       &n)) != 0)
        return rc;

    live.metric = job.cfg.valid_metric;
    sgbd_progress_init(&live.progress, "epoch", job.quiet);
    job.progress = on_epoch;
    job.progress_ctx = &live;
    for (; done < n && rc == 0; done++) {
        rc = sgbd_config_set(&job.cfg, "optimizer.name", names[done]);
        if (rc == 0)
            rc = sgbd_train_job_run(&job, &reps[done]);
        sgbd_progress_finish(&live.progress);
        if (rc == 0 && !(job.json && n > 1))
            print_summary(&job, &reps[done]);
    }
    if (rc == 0 && job.json && n > 1)
        print_compare_json(&job, names, reps, n);
    if (rc == 0 && job.plot_path)
        rc = write_plot(&job, names, reps, n);
    for (int i = 0; i < done; i++)
        sgbd_train_report_free(&reps[i]);
    return rc;
}

int sgbd_cli_eval(int argc, char **argv)
{
    struct sgbd_train_job job;
    struct sgbd_train_report rep;
    int help = 0, rc;

    rc = parse_args(&job, argc, argv, &help, NULL);
    if (rc)
        return rc;
    if (help)
        return print_eval_help(), SGBD_CLI_HELP;
    if (!job.data_dir && !job.db_path)
        return sgbd_errf(SGBD_E_USAGE, "--data DIR or --db PATH is needed");
    if (!job.in_path && !job.db_path)
        return sgbd_errf(SGBD_E_USAGE, "--in FILE (a saved model) is needed");
    rc = sgbd_train_job_eval(&job, &rep);
    if (rc)
        return rc;
    print_summary(&job, &rep);
    return 0;
}
