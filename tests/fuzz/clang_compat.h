/*
 * clang_compat.h - forced into every library source of the fuzz build
 * only (-include), so that GCC-only code compiles with clang.
 *
 * daemon/topk.c uses GCC's __builtin_shuffle with run-time index
 * vectors, which clang does not have (its __builtin_shufflevector wants
 * constant indices). This stand-in has GCC's semantics, lane by lane:
 *   __builtin_shuffle(a, m)    r[i] = a[m[i] mod N]
 *   __builtin_shuffle(a, b, m) r[i] = (a ++ b)[m[i] mod 2N]
 * It is slow, which a fuzz build does not mind; the proper fix belongs in
 * topk.c (issue #8 report).
 */
#ifndef SGBD_FUZZ_CLANG_COMPAT_H
#define SGBD_FUZZ_CLANG_COMPAT_H

#if defined(__clang__) && !__has_builtin(__builtin_shuffle)

#define sgbd_compat_shuffle2(a, m)                                          \
    ({                                                                      \
        __typeof__(+(a)) sa_ = (a), sr_;                                    \
        __typeof__(+(m)) sm_ = (m);                                         \
        const int sn_ = (int)(sizeof(sa_) / sizeof(sa_[0]));                \
        for (int si_ = 0; si_ < sn_; si_++)                                 \
            sr_[si_] = sa_[sm_[si_] & (sn_ - 1)];                           \
        sr_;                                                                \
    })

#define sgbd_compat_shuffle3(a, b, m)                                       \
    ({                                                                      \
        __typeof__(+(a)) sa_ = (a), sb_ = (b), sr_;                         \
        __typeof__(+(m)) sm_ = (m);                                         \
        const int sn_ = (int)(sizeof(sa_) / sizeof(sa_[0]));                \
        for (int si_ = 0; si_ < sn_; si_++) {                               \
            int sk_ = sm_[si_] & (2 * sn_ - 1);                             \
            sr_[si_] = sk_ < sn_ ? sa_[sk_] : sb_[sk_ - sn_];               \
        }                                                                   \
        sr_;                                                                \
    })

#define sgbd_compat_pick(_1, _2, _3, name, ...) name
#define __builtin_shuffle(...)                                              \
    sgbd_compat_pick(__VA_ARGS__, sgbd_compat_shuffle3,                     \
                     sgbd_compat_shuffle2, unused)(__VA_ARGS__)

#endif

#endif
