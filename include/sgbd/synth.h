/*
 * synth.h - synthetic multimodal catalogues in MMRec format.
 *
 * The model behind the data (L latent dimensions, C clusters):
 *   item i:  cluster c_i (balanced, shuffled), latent z_i = mu_{c_i} +
 *            0.5 e_i with mu_c, e_i ~ N(0, I_L);
 *   user u:  1..3 preferred clusters; n_u interactions (uniform in
 *            [5, 2N - 5], mean N), each from a preferred cluster with
 *            probability 0.8 (else any cluster), the item uniform among
 *            the cluster's items the user has not taken yet;
 *   items nobody took go to a user who prefers their cluster, so every
 *            item is referenced;
 *   features of channel m:  F_m = Z W_m + sigma E_m, W_m (L, D_m) with
 *            N(0, 1/L) entries fixed by the seed, E_m ~ N(0, 1). The signal
 *            has about unit variance per coordinate: sigma 0 makes the
 *            features perfectly informative about the clusters, sigma >> 1
 *            (10 and more) makes them useless.
 * The split is MMRec's random per-user rule (algorithms.md 2.1): n < 10:
 * n - 2 train, 1 valid, 1 test; else k = floor(0.2 n): n - k train,
 * floor(k / 2) valid, the rest test.
 *
 * Output in dir: <name>.inter (header userID itemID rating timestamp
 * x_label; rating 1, timestamp = order of the user's interactions),
 * image_feat.npy (I, D_image) and text_feat.npy (I, D_text), float32.
 * The same seed gives the same files; the item latents and features depend
 * only on (seed, items, clusters, latent, dims, noise), so --features-only
 * reproduces the features of a full run. Ids are 0-based and contiguous.
 */
#ifndef SGBD_SYNTH_H
#define SGBD_SYNTH_H

#include <stdint.h>

struct sgbd_synth_params {
    char name[64];              /* stem of <name>.inter; "": the last
                                 * component of dir, or "synth" */
    uint32_t n_users;           /* U (500) */
    uint32_t n_items;           /* I (300) */
    uint32_t n_clusters;        /* C (10), 1..I */
    uint32_t dim_latent;        /* L (16) */
    uint32_t dim_image;         /* D_image (128); 0: no image_feat.npy */
    uint32_t dim_text;          /* D_text (64); 0: no text_feat.npy */
    double noise;               /* sigma (0.5), >= 0 */
    uint32_t interactions_per_user; /* N (10), >= 5, 2N - 5 <= I */
    uint64_t seed;              /* 999 */
    int features_only;          /* 1: write only the .npy files */
};

/* The defaults written above: a catalogue that trains in seconds. */
void sgbd_synth_defaults(struct sgbd_synth_params *p);

/* -EINVAL with a detail naming the field when p is out of range. */
int sgbd_synth_check(const struct sgbd_synth_params *p);

/*
 * Write the catalogue of p into dir, creating dir when missing. Each file
 * is replaced atomically (bulkio.h). Errors: those of sgbd_synth_check;
 * SGBD_E_EXISTS when dir already holds a .inter file of another name (a
 * dataset folder holds one); -ENOMEM; -errno of the file system, naming
 * the path. Logs ev=synth_written with the sizes.
 */
int sgbd_synth_write(const char *dir, const struct sgbd_synth_params *p);

#endif
