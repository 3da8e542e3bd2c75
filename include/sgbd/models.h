/*
 * models.h - the models behind model.h, one ops table each.
 *
 * Every model follows the contract of model.h; what is specific to each
 * (tensor names of its layout, D_out, what embed_new_item returns) is
 * listed here. Formulas are reference/algorithms.md section 6.
 *
 * Common to all: create copies what it needs from the dataset and the
 * features (the model owns its frozen data; the inputs may be freed
 * afterwards), builds its graphs and allocates its workspaces; loss_grad
 * rejects a batch row outside (U, I) with NaN and changes nothing. An
 * instance keeps per-call workspaces, so it serves one thread at a time
 * (train and serve with separate instances). The graph models run their
 * products on the compute pool and OpenBLAS (parallel.h, mat.h): call
 * them from training or retraining threads. Channel names become tensor
 * names ("<name>.pref", ...), so a name must leave room within
 * SGBD_TENSOR_NAME (SGBD_E_LIMIT otherwise).
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
 * the items seen in training (an "average item": each user scores it at
 * that user's mean score over those items). Returns 0, -ENOMEM, or
 * SGBD_E_SHAPE from the propagation.
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

/*
 * DualGNN (6.2). Per feature channel c (dataset order, image before text
 * as the loader sorts by name) the GCN block: "<name>.pref" (U, 64)
 * xavier_normal, MLP "<name>.mlp.w" (256, D_c), "<name>.mlp.b",
 * "<name>.mlp1.w" (64, 256), "<name>.mlp1.b" (nn.Linear init), R_c =
 * X_c + A X_c + A^2 X_c with X_c = rownorm([P_c ; MLP_c(F_c)]) and A of
 * 5.2 (duplicates kept). With two or more channels "weight_u" (U, C) and
 * "weight_i" (I, C) hold w - 1/C (exact reparametrisation of MMRec's
 * softmax-initialised weights). Items z_i = sum_c R_c[U+i]; users fused
 * as described in dualgnn.c (hparams dualgnn_inplace_bug, default on,
 * reproduces MMRec's w_0 (v + t) + w_1 t), then z'_u = z_u + sum of the
 * 40 sampled co-occurring users' z with softmax(count) weights, resampled
 * by pre_epoch (stream of the caller's rng). Loss: log2 BPR + reg_weight
 * [sum_c mean(P_c[u_b]^2) + mean(weight_u^2) + mean(weight_i^2)].
 * Latent width fixed at 64 as in MMRec (embedding_size is not used);
 * D_out = 64. Any number of channels >= 1, any widths.
 * embed_new_item: sum_c rownorm(MLP_c(f_c)), the item's R_c rows when it
 * has no edges (a missing channel takes its mean feature vector).
 */
extern const struct sgbd_model_ops sgbd_dualgnn_ops;

/*
 * DRAGON (6.3). The GCN block and tensors of DualGNN per channel, and
 * "weight_u" (U, C) with two or more channels (same reparametrisation).
 * Fusion "cat": items Y_i = [R_c[U+i]]_c, users Y_u = [w_uc R_c[u]]_c
 * (W = 64 C wide, channels in dataset order); then Y'_i = Y_i + G Y_i
 * with G the frozen item kNN graph of the raw features (5.3; knn_k,
 * mm_image_weight for the "image" channel, the rest shared by the other
 * channels; one channel: weight 1) and Y'_u = Y_u + the 40 sampled
 * co-occurring users' Y with softmax(count) weights (pre_epoch
 * resamples). Loss: log2 BPR + reg_weight [sum_c mean(P_c[u_b]^2) +
 * mean(weight_u^2)]. D_out = 64 C.
 * embed_new_item: Y_new = [rownorm(MLP_c(f_c))]_c (its R_c rows, as it
 * has no edges), plus the item-graph hop over the new item's own kNN
 * list (cosine on the raw features against every item, the new item
 * itself included as 5.3 includes every item): Y_new + sum_c (w_c / k)
 * sum_{j in list_c} Y_j, where the Y_j of existing items come from a full
 * forward at theta (about one training forward of cost). A missing
 * channel takes its mean feature vector.
 */
extern const struct sgbd_model_ops sgbd_dragon_ops;

/*
 * FREEDOM (6.5). Layout: "user_embedding" (U, D), "item_id_embedding"
 * (I, D) xavier_uniform; per channel "<name>_embedding.delta" (I, D_c)
 * zero, the trainable feature copy held as frozen F_c + delta (exact
 * reparametrisation of MMRec's fine-tuned copy), "<name>_trs.weight"
 * (D, D_c) and "<name>_trs.bias" (nn.Linear init). Items I~ + G E_i with
 * G the frozen item kNN graph (5.3, one hop), [U~; I~] the mean over
 * layers 0..n_layers (2) of A_m^l [E_u; E_i]: A_m is the degree-sensitive
 * pruning that pre_epoch draws (keep floor(|R| (1 - dropout)) training
 * rows without replacement, probability ~ 1/sqrt(d_u d_i), renormalised
 * on the kept rows; dropout 0 trains on A), evaluation uses the full A
 * (5.1). Loss: logsigmoid BPR(U~, I~ + h) + reg_weight sum_c BPR(U~,
 * T_c(F_c + delta_c)). D_out = D.
 * embed_new_item: the new item has no interactions, so its ID part is 0
 * and its vector is the item-graph hop alone: sum_c (w_c / k) times the
 * sum of the ID embeddings of its k cosine-nearest items on channel c
 * (raw features; its own slot adds its zero ID). A missing channel takes
 * the channel's mean feature vector.
 */
extern const struct sgbd_model_ops sgbd_freedom_ops;

/*
 * SLMRec, FAC task (6.4). Layout: "embedding_user" (U, D),
 * "embedding_item" (I, D), xavier_uniform; per channel "<name>_dense"
 * Linear(D_c -> D); "phi_u", "phi_i" Linear(D (C + 1) -> D) (MMRec's
 * embedding_user/item_after_GCN); FAC heads per channel level k:
 * "fac0.g1", "fac0.h" (D -> D; MMRec g_i_iv, g_v_iv), and for k >= 1
 * "fac<k>.g1" (-> D), "fac<k>.g2" (D -> D/2), "fac<k>.h" (D -> D/2)
 * (g_iv_iva, g_iva_ivat, g_t_ivat); every Linear has xavier_uniform
 * weight and nn.Linear bias, each tensor ".weight" / ".bias". Three-layer
 * LightGCN towers on A of 5.1 (eps 1e-8) over [E_u; E_i] and [E_u;
 * P_c(rownorm(F_c))]; loss InfoNCE(rownorm(e_u), rownorm(e_p)) / temp +
 * ssl_alpha * FAC InfoNCEs / ssl_temp; the sampled negatives are unused.
 * No regulariser in the loss: MMRec's weight_decay 1e-4 belongs to the
 * optimiser. embedding_size must be even. D_out = D; scores are <e_u,
 * e_i> (MMRec's sigmoid of it ranks the same).
 * embed_new_item: Phi_i([mean seen ID embedding ; P_c(rownorm(f_c)) ...]
 * / 4), the towers' output for an item without edges (only layer 0 is
 * non-zero); a missing channel takes its raw mean feature vector.
 */
extern const struct sgbd_model_ops sgbd_slmrec_ops;

#endif
