/*
 * models.h - the models behind model.h, one ops table each.
 *
 * Every model follows the contract of model.h; what is specific to each
 * (tensor names of its layout, D_out, what embed_new_item returns) is
 * listed here. Formulas are reference/algorithms.md section 6.
 */
#ifndef SGBD_MODELS_H
#define SGBD_MODELS_H

#include "sgbd/model.h"

/*
 * LightGCN (6.1). Layout: "user_embedding" (U, D), "item_embedding"
 * (I, D), xavier_uniform. Forward: mean over layers 0..L of A^l E0 with
 * A the symmetric normalised bipartite adjacency (5.1, eps 1e-7,
 * duplicate rows collapse). Loss: BPR (natural log, 1e-10) + reg_weight *
 * EmbLoss of the layer-0 rows of the batch. D_out = D.
 * Hyper-parameters: embedding_size, n_layers, reg_weight. No features.
 * embed_new_item: the model has no feature path, so it ignores feats and
 * returns the documented fallback, the mean of the final item vectors of
 * the items seen in training (an "average item": every user scores it at
 * his mean score over the catalogue). Returns 0.
 */
extern const struct sgbd_model_ops sgbd_lightgcn_ops;

/*
 * VBPR (6.7). Layout: "user_embedding" (U, 2D), "item_embedding" (I, D),
 * xavier_uniform; "item_linear.weight" (D, F) xavier_normal and
 * "item_linear.bias" (1, D) zero, F = sum of the channel widths. Item
 * vector [E_i ; W f_i + b] (2D), user vector E_u; D_out = 2D. Loss: BPR
 * (natural log, 1e-10) + reg_weight * EmbLoss of the final user, positive
 * and negative vectors of the batch.
 * Feature order inside f: channels named "text" first, then the others
 * in the dataset's channel order (MMRec's [text ; image] when the
 * channels are image and text). Any number of channels >= 1 of any width.
 * embed_new_item: [mean ID vector of the items seen in training ;
 * W f + b], with a missing channel (feats[c] NULL) replaced by that
 * channel's mean feature vector over all items (MMRec fills missing
 * images the same way). feats is indexed in the dataset's channel order.
 */
extern const struct sgbd_model_ops sgbd_vbpr_ops;

#endif
