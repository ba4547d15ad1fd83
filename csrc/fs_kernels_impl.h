/* Type-generic body of fs_kernels.h: included once per element type with FS_T (the type),
 * FS_S(name) (the suffixed function name) and FS_PW (the panel width) defined.
 * No include guard on purpose. */

/* ---- matrix products --------------------------------------------------------------------- */

/* Copy W (k x m, row stride ldw) into ceil(m / FS_PW) panels of k rows by FS_PW columns, the
 * columns past m set to zero.  A panel row is what the micro-kernel loads per step, so ten
 * outputs become one contiguous, fully vectorizable row of FS_PW lanes. */
static void FS_S(fs_pack_panels)(const FS_T *W, fs_i64 ldw, fs_i64 k, fs_i64 m, FS_T *P)
{
    fs_i64 npanels = (m + FS_PW - 1) / FS_PW;
    for (fs_i64 p = 0; p < npanels; p++) {
        fs_i64 j0 = p * FS_PW;
        fs_i64 mw = m - j0 < FS_PW ? m - j0 : FS_PW;
        for (fs_i64 t = 0; t < k; t++) {
            FS_T *dst = P + (p * k + t) * FS_PW;
            const FS_T *src = W + t * ldw + j0;
            fs_i64 j = 0;
            for (; j < mw; j++) dst[j] = src[j];
            for (; j < FS_PW; j++) dst[j] = 0;
        }
    }
}

/* C[r, 0:mw] = init[0:mw] + sum_t A(r, t) * P[t, 0:mw] for r < R, where A(r, t) is
 * A[r * a_rs + t * a_ts].  Forward passes use A = X (a_ts = 1); the weight gradient uses
 * A = X^T (a_rs = 1, a_ts = ldx) over a packed G.  The FS_MR x FS_PW accumulators are vector
 * values (two vectors a row), which the compiler keeps in registers where a plain array would be
 * spilled to the stack on every step; each step loads one panel row and reuses it FS_MR times. */
FS_INLINE void FS_S(fs_micro)(const FS_T *A, fs_i64 a_rs, fs_i64 a_ts, int R, fs_i64 tlen,
                              const FS_T *P, const FS_T *init, FS_T *C, fs_i64 c_rs, fs_i64 mw)
{
    const FS_V zero = {0};
    FS_V c00 = zero, c01 = zero, c10 = zero, c11 = zero;
    FS_V c20 = zero, c21 = zero, c30 = zero, c31 = zero;
    if (R == FS_MR) {
        for (fs_i64 t = 0; t < tlen; t++) {
            const FS_VU *p = (const FS_VU *)(P + t * FS_PW);
            const FS_V p0 = p[0], p1 = p[1];
            const FS_T *a = A + t * a_ts;
            const FS_T a0 = a[0], a1 = a[a_rs], a2 = a[2 * a_rs], a3 = a[3 * a_rs];
            c00 += a0 * p0; c01 += a0 * p1;
            c10 += a1 * p0; c11 += a1 * p1;
            c20 += a2 * p0; c21 += a2 * p1;
            c30 += a3 * p0; c31 += a3 * p1;
        }
    } else {
        /* Tail block: rows past R are computed from row 0 and thrown away. */
        const FS_T *a1p = A + (R > 1 ? 1 : 0) * a_rs, *a2p = A + (R > 2 ? 2 : 0) * a_rs;
        for (fs_i64 t = 0; t < tlen; t++) {
            const FS_VU *p = (const FS_VU *)(P + t * FS_PW);
            const FS_V p0 = p[0], p1 = p[1];
            const FS_T a0 = A[t * a_ts], a1 = a1p[t * a_ts], a2 = a2p[t * a_ts];
            c00 += a0 * p0; c01 += a0 * p1;
            c10 += a1 * p0; c11 += a1 * p1;
            c20 += a2 * p0; c21 += a2 * p1;
        }
    }
    FS_T acc[FS_MR][FS_PW];
    memcpy(acc[0], &c00, sizeof c00); memcpy(acc[0] + FS_VL, &c01, sizeof c01);
    memcpy(acc[1], &c10, sizeof c10); memcpy(acc[1] + FS_VL, &c11, sizeof c11);
    memcpy(acc[2], &c20, sizeof c20); memcpy(acc[2] + FS_VL, &c21, sizeof c21);
    memcpy(acc[3], &c30, sizeof c30); memcpy(acc[3] + FS_VL, &c31, sizeof c31);
    for (int r = 0; r < R; r++)
        for (fs_i64 j = 0; j < mw; j++) C[r * c_rs + j] = (init ? init[j] : 0) + acc[r][j];
}

#if FS_HAVE_WIDE
/* The same product for CPUs with AVX-512: a panel row (FS_PW values) is one 64-byte register,
 * so each step costs one multiply-add per row instead of two, and 8 rows share a panel load.
 * Each row still sums its terms in the same order. */
#define FS_MR4 8
FS_V4_TARGET static void FS_S(fs_gemm_rows_v4)(const FS_T *A, fs_i64 a_rs, fs_i64 a_ts,
                                               fs_i64 rows, fs_i64 tlen, const FS_T *P, fs_i64 m,
                                               const FS_T *init, FS_T *C, fs_i64 c_rs)
{
    const fs_i64 npanels = (m + FS_PW - 1) / FS_PW;
    for (fs_i64 r0 = 0; r0 < rows; r0 += FS_MR4) {
        const int R = rows - r0 < FS_MR4 ? (int)(rows - r0) : FS_MR4;
        const FS_T *Ar = A + r0 * a_rs;
        for (fs_i64 p = 0; p < npanels; p++) {
            const FS_T *Pp = P + p * tlen * FS_PW;
            const fs_i64 j0 = p * FS_PW, mw = m - j0 < FS_PW ? m - j0 : FS_PW;
            FS_W acc[FS_MR4];
            if (R == FS_MR4) {
                FS_W c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, c6 = {0},
                     c7 = {0};
                for (fs_i64 t = 0; t < tlen; t++) {
                    const FS_W w = *(const FS_WU *)(Pp + t * FS_PW);
                    const FS_T *a = Ar + t * a_ts;
                    c0 += a[0] * w; c1 += a[a_rs] * w; c2 += a[2 * a_rs] * w;
                    c3 += a[3 * a_rs] * w; c4 += a[4 * a_rs] * w; c5 += a[5 * a_rs] * w;
                    c6 += a[6 * a_rs] * w; c7 += a[7 * a_rs] * w;
                }
                acc[0] = c0; acc[1] = c1; acc[2] = c2; acc[3] = c3;
                acc[4] = c4; acc[5] = c5; acc[6] = c6; acc[7] = c7;
            } else {
                for (int r = 0; r < R; r++) {
                    FS_W c = {0};
                    for (fs_i64 t = 0; t < tlen; t++)
                        c += Ar[r * a_rs + t * a_ts] * *(const FS_WU *)(Pp + t * FS_PW);
                    acc[r] = c;
                }
            }
            for (int r = 0; r < R; r++) {
                FS_T row[FS_PW];
                memcpy(row, &acc[r], sizeof row);
                FS_T *out = C + (r0 + r) * c_rs + j0;
                for (fs_i64 j = 0; j < mw; j++) out[j] = (init ? init[j0 + j] : 0) + row[j];
            }
        }
    }
}
#endif

/* C[r, :] = init + A(r, :) @ W for `rows` rows, W given as packed panels of tlen rows. */
FS_CLONES static void FS_S(fs_gemm_rows)(const FS_T *A, fs_i64 a_rs, fs_i64 a_ts, fs_i64 rows,
                                         fs_i64 tlen, const FS_T *P, fs_i64 m, const FS_T *init,
                                         FS_T *C, fs_i64 c_rs)
{
#if FS_HAVE_WIDE
    if (fs_use_v4()) {
        FS_S(fs_gemm_rows_v4)(A, a_rs, a_ts, rows, tlen, P, m, init, C, c_rs);
        return;
    }
#endif
    fs_i64 npanels = (m + FS_PW - 1) / FS_PW;
    for (fs_i64 r0 = 0; r0 < rows; r0 += FS_MR) {
        int R = rows - r0 < FS_MR ? (int)(rows - r0) : FS_MR;
        for (fs_i64 p = 0; p < npanels; p++) {
            fs_i64 j0 = p * FS_PW;
            fs_i64 mw = m - j0 < FS_PW ? m - j0 : FS_PW;
            FS_S(fs_micro)(A + r0 * a_rs, a_rs, a_ts, R, tlen, P + p * tlen * FS_PW,
                           init ? init + j0 : NULL, C + r0 * c_rs + j0, c_rs, mw);
        }
    }
}

/* ---- few outputs (m <= FS_DOT_MAX): the contraction runs along the vector lanes ----------
 * With the weights transposed (Wt is m x k), every lane of every multiply-add is useful, where
 * the panel layout pads m = 10 outputs to 16 lanes.  Blocks of 2 rows x 4 outputs keep 8 vector
 * accumulators in registers; each output's lanes are then summed in a fixed order. */

FS_INLINE FS_T FS_S(fs_hsum)(FS_V v)
{
    FS_T lanes[FS_VL], s = 0;
    memcpy(lanes, &v, sizeof lanes);
    for (int l = 0; l < FS_VL; l++) s += lanes[l];
    return s;
}

/* Where a product's rows come from: row i is X[idx ? idx[i] : i] (stride ldx elements), read as
 * `mode` says (FS_ROWS_*). */
typedef struct {
    const void *X;
    fs_i64 ldx;
    const fs_i64 *idx;
    int mode;
    FS_T scale;
} FS_S(fs_rows);

/* The mode for examples of uint8 (x_u8) or FS_T, multiplied by scale as they are read. */
FS_INLINE int FS_S(fs_rows_mode)(int x_u8, FS_T scale)
{
    return x_u8 ? FS_ROWS_U8 : scale == (FS_T)1 ? FS_ROWS_PLAIN : FS_ROWS_SCALED;
}

FS_INLINE const void *FS_S(fs_row)(const FS_S(fs_rows) *s, const int mode, fs_i64 i)
{
    const fs_i64 r = s->idx ? s->idx[i] : i;
    return mode == FS_ROWS_U8 ? (const void *)((const uint8_t *)s->X + r * s->ldx)
                                 : (const void *)((const FS_T *)s->X + r * s->ldx);
}

/* Element t of a row. */
FS_INLINE FS_T FS_S(fs_row_value)(const void *row, const int mode, fs_i64 t, FS_T scale)
{
    if (mode == FS_ROWS_U8) return (FS_T)((const uint8_t *)row)[t] * scale;
    const FS_T v = ((const FS_T *)row)[t];
    return mode == FS_ROWS_SCALED ? v * scale : v;
}

/* Everything one fused epoch segment needs (defined here, with fs_regression_row below, for the
 * fused one-output rows of the hand-blocked kernels).  The weights live in a working layout for
 * the whole segment: transposed Wt (m <= FS_DOT_MAX, an m x k matrix) or packed panels (larger
 * m; see fs_pack_panels), with the momentum buffer V in the same layout. */
typedef struct {
    const void *X;          /* n_total x k examples, uint8 (x_u8) or FS_T, row stride ldx */
    int x_u8;
    fs_i64 ldx, k;
    FS_T scale;             /* applied to every feature as it is read */
    const fs_i64 *labels;   /* class labels (softmax cross-entropy) */
    const uint8_t *labels8; /* or the same as uint8 (up to 256 classes), labels NULL */
    const FS_T *targets;    /* n_total x m targets (L2 / Huber) */
    const fs_i64 *perm;     /* the epoch's example order */
    fs_i64 n;               /* examples in the epoch (length of perm) */
    fs_i64 batch;           /* minibatch size; the last batch may be smaller */
    int loss;
    FS_T smooth, delta;     /* label smoothing; Huber threshold */
    fs_i64 m;               /* outputs */
    int panel;              /* weight layout: 1 panels, 0 transposed (m <= FS_DOT_MAX) */
    FS_T *Wp;               /* working weights */
    FS_T *b, *V, *vb;       /* bias; momentum buffers (NULL without momentum) */
    const FS_T *lrs;        /* learning rate of every batch of the epoch */
    FS_T momentum, wd;
    /* scratch, sized for one full batch */
    FS_T *Xb;               /* batch x k gathered rows */
    FS_T *Z;                /* batch x m outputs */
    FS_T *G;                /* batch x m loss gradient */
    FS_T *Gp;               /* panels of G, batch rows each (panel layout only) */
    FS_T *dW;               /* weight gradient: k x m (panels) or m x k; with shares one m x k
                               and (after those) one m share per chunk of the batch */
    FS_T *db;               /* m bias gradient */
    FS_T *rowloss;          /* batch */
    fs_i64 *rowhit;         /* batch */
    double *chunk_loss;     /* with shares: each chunk's loss and hits */
    fs_i64 *chunk_hits;
    /* results, one per batch */
    double *batch_loss;
    fs_i64 *batch_hits;
    int nt;
} FS_S(fs_fused_args);

/* One example of a regression loss, averaged over its m > 0 outputs: 0.5 d^2 (L2) or, with
 * `huber`, 0.5 d^2 where |d| <= delta and delta (|d| - delta / 2) beyond, for d = z - t; g gets
 * the gradient with respect to z.  The per-batch losses and the fused step share this, so both
 * round alike. */
FS_INLINE FS_T FS_S(fs_regression_row)(const FS_T *z, const FS_T *t, fs_i64 m, int huber,
                                       FS_T delta, FS_T *g)
{
    FS_T s = 0;
    for (fs_i64 j = 0; j < m; j++) {
        const FS_T d = z[j] - t[j];
        FS_T l, gj;
        if (!huber || fabs(d) <= delta) {
            l = (FS_T)0.5 * d * d;
            gj = d;
        } else {
            l = delta * (fabs(d) - (FS_T)0.5 * delta);
            /* clip(d, -delta, delta): a NaN residual stays NaN, as the loss and NumPy have it */
            gj = d > delta ? delta : d < -delta ? -delta : d;
        }
        s += l;
        g[j] = gj / (FS_T)m;
    }
    return s / (FS_T)m;
}

/* ---- hand-blocked kernels for few outputs: AVX-512 and AVX2 ---------------------------- */
#if FS_HAVE_WIDE

/* AVX-512: 64-byte vectors (two 512-bit multiply-add units on the machines measured: twice the
 * arithmetic of AVX2).  The 32 registers hold wide blocks: 4 rows x 5 outputs in the forward
 * product (20 accumulators); in the weight gradient 2 vectors of columns x up to 10 outputs, or
 * 4 x up to 5, so each loaded vector serves several multiply-adds and a block holds up to 20
 * independent sums. */
#define FS_WL ((int)(64 / sizeof(FS_T)))

/* The lanes of v summed as a fixed tree: halves, then quarters, ... (in registers: through
 * memory this took a fifth of the forward product's time). */
FS_V4_TARGET FS_INLINE FS_T FS_S(fs_hsum_v4)(FS_W v)
{
    typedef FS_T half_t __attribute__((vector_size(32)));
    typedef FS_T quarter_t __attribute__((vector_size(16)));
#if FS_VL == 8  /* float: 16 lanes */
    const half_t h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
                   + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const quarter_t q = __builtin_shufflevector(h, h, 0, 1, 2, 3)
                      + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
#else  /* double: 8 lanes */
    const half_t h = __builtin_shufflevector(v, v, 0, 1, 2, 3)
                   + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    const quarter_t q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
    return q[0] + q[1];
#endif
}

/* The first `n` (< FS_WL) values at p, the other lanes zero: a masked load, which reads
 * nothing past p + n, and no wider than it needs.  A row's last few values are usually
 * followed, in the same 64 bytes, by the next row in memory, which nobody requested: a 64-byte
 * load there, even masked, cost a linear-regression epoch about 6% against a 16- or 32-byte
 * one.  And the store of such a vector's first n values. */
#if FS_VL == 8
FS_V4_TARGET FS_INLINE FS_W FS_S(fs_load_first_v4)(const FS_T *p, unsigned n)
{
    const __mmask16 k = (__mmask16)((1u << n) - 1);
    if (n <= 4) return (FS_W)_mm512_zextps128_ps512(_mm_maskz_loadu_ps((__mmask8)k, p));
    if (n <= 8) return (FS_W)_mm512_zextps256_ps512(_mm256_maskz_loadu_ps((__mmask8)k, p));
    return (FS_W)_mm512_maskz_loadu_ps(k, p);
}
FS_V4_TARGET FS_INLINE void FS_S(fs_store_first_v4)(FS_T *p, unsigned n, FS_W v)
{
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
}
#else
FS_V4_TARGET FS_INLINE FS_W FS_S(fs_load_first_v4)(const FS_T *p, unsigned n)
{
    const __mmask8 k = (__mmask8)((1u << n) - 1);
    if (n <= 2) return (FS_W)_mm512_zextpd128_pd512(_mm_maskz_loadu_pd(k, p));
    if (n <= 4) return (FS_W)_mm512_zextpd256_pd512(_mm256_maskz_loadu_pd(k, p));
    return (FS_W)_mm512_maskz_loadu_pd(k, p);
}
FS_V4_TARGET FS_INLINE void FS_S(fs_store_first_v4)(FS_T *p, unsigned n, FS_W v)
{
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v);
}
#endif

/* FS_WL uint8 values at p (n > 0: the first n, masked, the other lanes zero) as FS_T. */
FS_V4_TARGET FS_INLINE FS_W FS_S(fs_load_u8_v4)(const uint8_t *p, unsigned n)
{
#if FS_VL == 8
    const __m128i b = n ? _mm_maskz_loadu_epi8((__mmask16)((1u << n) - 1), p)
                        : _mm_loadu_si128((const __m128i *)p);
    return (FS_W)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
#else
    const __m128i b = n ? _mm_maskz_loadu_epi8((__mmask16)((1u << n) - 1), p)
                        : _mm_loadl_epi64((const __m128i *)p);
    return (FS_W)_mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(b));
#endif
}

/* v * scale in lanes [0, n), zero in the others (masked: an infinite scale cannot turn the
 * zero lanes into NaN). */
FS_V4_TARGET FS_INLINE FS_W FS_S(fs_scale_first_v4)(FS_W v, FS_W scale, unsigned n)
{
#if FS_VL == 8
    return (FS_W)_mm512_maskz_mul_ps((__mmask16)((1u << n) - 1), (__m512)v, (__m512)scale);
#else
    return (FS_W)_mm512_maskz_mul_pd((__mmask8)((1u << n) - 1), (__m512d)v, (__m512d)scale);
#endif
}

/* fs_load_u8_v4(p, 0) * scale: fs_dot_fwd's first pass over uint8 rows (FS_XU8FMA is 0 here:
 * AVX-512 keeps the conversion and the multiply, see fs_load_u8_scaled_v3). */
FS_V4_TARGET FS_INLINE FS_W FS_S(fs_load_u8_scaled_v4)(const uint8_t *p, FS_W scale, FS_W shift)
{
    (void)shift;
    return FS_S(fs_load_u8_v4)(p, 0) * scale;
}

#define FS_X(name) FS_S(name##_v4)
#define FS_X_TARGET FS_V4_TARGET
#define FS_XV FS_W
#define FS_XVU FS_WU
#define FS_XL FS_WL
#define FS_XR 4
#define FS_XACC 20
#define FS_XONE 8
#define FS_XREG(v) ((void)0)
#define FS_XGB 0
#define FS_XU8FMA 0
#include "fs_kernels_wide.h"
#undef FS_WL

/* AVX2 + FMA: 32-byte vectors and 16 registers, so narrower blocks than AVX-512's: 2 rows x 5
 * outputs forward (10 independent chains are what the multiply-add latency needs: a bare loop
 * ran at 42.5, 51.8 and 51.8 billion a second with 8, 10 and 12 on one core of an AMD EPYC, Zen
 * 2), and the gradient over G broadcast ahead (fs_kernels_wide.h, FS_XGB).  There, against the
 * portable loops (each chunk's rows gathered into floats, then 4 rows x 2 outputs), a
 * Fashion-MNIST epoch took 0.75 of the time on one thread and 0.85 on two (in turns), with the
 * gradient then broadcasting each value of G as it went, in blocks of 10 outputs x 1 vector;
 * the gradient over G broadcast ahead then took it to 0.90 (one thread) and 0.93 (two) of that.
 * Measured there as well and not kept: that gradient in blocks of 5 outputs x 2 vectors (the
 * same speed), and of 6 x 2 (12 chains, none spilled: the same speed again, so the chains'
 * latency is not what bounds it); phase 1 writing the rows it converts for phase 2 to read as
 * floats, converting each value once (10% slower: 4 bytes a value to write and read again,
 * where phase 2 reads 1 from the examples); G broadcast ahead with the scale still applied to
 * every pixel: 1.2x as fast with the rows in cache, but the epoch 1.02x as long (it is the
 * scale moved into G that pays); rows ahead requested once per cache line rather than once per
 * vector (a step over uint8 rows reads 8 bytes): 0.98x as fast on two threads, 1.01x on one,
 * and again with the gradient over G broadcast ahead, 1.00x on one; the forward's passes over
 * the outputs in alternating order, so that each half of the weights is read twice in a row
 * from L1: the same speed; its passes over each chunk of 64 rows one set of outputs at a time
 * (no kept rows, each row converted in each pass): 1.05x as long on one thread; its steps
 * unrolled by 2 or 4: the same; blocks of 3 rows x 4 outputs, 3 x 3 and 4 x 3: 0.80-0.87x as
 * fast from cache, 2 x 6 0.73x (GCC keeps an accumulator in memory).  From cache it runs at
 * about 35 billion a second on one core, over float rows already in L1 at 40, and the lanes'
 * sums at the end of each block are 1-2% of its time; the test set's forward pass (10000 uint8
 * rows in order, one thread) at 35 billion with the pixels scaled by fs_load_u8_scaled_v3, 33.4
 * with a conversion and a multiply. */
#define FS_V3_TARGET __attribute__((target("arch=x86-64-v3")))

/* The lanes of v summed as a fixed tree, as fs_hsum_v4 does. */
FS_V3_TARGET FS_INLINE FS_T FS_S(fs_hsum_v3)(FS_V v)
{
    typedef FS_T half_t __attribute__((vector_size(16)));
#if FS_VL == 8
    const half_t h = __builtin_shufflevector(v, v, 0, 1, 2, 3)
                   + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return (h[0] + h[2]) + (h[1] + h[3]);
#else
    const half_t h = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
    return h[0] + h[1];
#endif
}

/* All bits set in lanes [0, n), clear in the others. */
FS_V3_TARGET FS_INLINE __m256i FS_S(fs_lanes_v3)(unsigned n)
{
#if FS_VL == 8
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#else
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
#endif
}

/* The first n (< FS_VL) values at p, the other lanes zero, reading nothing past p + n; and
 * their store. */
FS_V3_TARGET FS_INLINE FS_V FS_S(fs_load_first_v3)(const FS_T *p, unsigned n)
{
#if FS_VL == 8
    return (FS_V)_mm256_maskload_ps(p, FS_S(fs_lanes_v3)(n));
#else
    return (FS_V)_mm256_maskload_pd(p, FS_S(fs_lanes_v3)(n));
#endif
}

FS_V3_TARGET FS_INLINE void FS_S(fs_store_first_v3)(FS_T *p, unsigned n, FS_V v)
{
#if FS_VL == 8
    _mm256_maskstore_ps(p, FS_S(fs_lanes_v3)(n), (__m256)v);
#else
    _mm256_maskstore_pd(p, FS_S(fs_lanes_v3)(n), (__m256d)v);
#endif
}

#if FS_VL == 8
/* The 8 uint8 values at p (n > 0: the first n, the other lanes zero) in 32-bit lanes; a partial
 * vector's bytes are copied first, as no AVX2 load masks bytes. */
FS_V3_TARGET FS_INLINE __m256i FS_S(fs_widen_u8_v3)(const uint8_t *p, unsigned n)
{
    uint64_t bytes = 0;
    memcpy(&bytes, p, n ? n : 8);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)bytes));
}
#endif

/* FS_VL uint8 values at p (n > 0: the first n, the other lanes zero) as FS_T, widened from 8
 * bytes (floats) or 4 (doubles); a partial vector's bytes are copied first, as no AVX2 load
 * masks bytes. */
FS_V3_TARGET FS_INLINE FS_V FS_S(fs_load_u8_v3)(const uint8_t *p, unsigned n)
{
#if FS_VL == 8
    return (FS_V)_mm256_cvtepi32_ps(FS_S(fs_widen_u8_v3)(p, n));
#else
    uint32_t bytes = 0;
    memcpy(&bytes, p, n ? n : 4);
    return (FS_V)_mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)bytes)));
#endif
}

/* v * scale in lanes [0, n), zero in the others (cleared after scaling: an infinite scale made
 * them NaN). */
FS_V3_TARGET FS_INLINE FS_V FS_S(fs_scale_first_v3)(FS_V v, FS_V scale, unsigned n)
{
    return (FS_V)((__m256i)(v * scale) & FS_S(fs_lanes_v3)(n));
}

/* FS_VL uint8 values at p times scale, with shift = -2^23 * scale: for floats, the bits of
 * fs_load_u8_v3(p, 0) * scale whenever 0 < scale < 2^104 (fs_dot_fwd checks).  A value u OR-ed
 * into the bits of 2^23 is the float 2^23 + u, and the multiply-add (2^23 + u) * scale + shift
 * rounds u * scale once, as the multiply does (below 2^104, 2^23 * scale is exact).  Zen 2 runs
 * the conversion and the multiply beside the multiply-adds, on their units: 10 multiply-adds
 * and two vectors of pixels took 7.1 cycles a step that way, 6.0 this way, 5.0 with nothing to
 * convert (a bare loop).  For doubles (not timed) the conversion and the multiply. */
FS_V3_TARGET FS_INLINE FS_V FS_S(fs_load_u8_scaled_v3)(const uint8_t *p, FS_V scale, FS_V shift)
{
#if FS_VL == 8
    const __m256i u = FS_S(fs_widen_u8_v3)(p, 0);
    const __m256i f = _mm256_or_si256(u, _mm256_set1_epi32(0x4B000000));  /* 2^23 + u */
    return (FS_V)_mm256_fmadd_ps(_mm256_castsi256_ps(f), (__m256)scale, (__m256)shift);
#else
    (void)shift;
    return FS_S(fs_load_u8_v3)(p, 0) * scale;
#endif
}

#define FS_X(name) FS_S(name##_v3)
#define FS_X_TARGET FS_V3_TARGET
#define FS_XV FS_V
#define FS_XVU FS_VU
#define FS_XL FS_VL
#define FS_XR 2
/* 16: a row's 13 vectors (100 floats), its weights and its share take more than the 16
 * registers, but the linear-regression epoch waits on its rows from memory: with each row read
 * once (fs_fused_one_body) rather than three general passes over each chunk (fs_dot_fwd, the
 * losses, fs_dot_bwd), the 1,000,000 x 100 epoch ran 1.35x as fast on two threads and 1.65x on
 * one (in turns, 5 and 3 turns).  Shuffled chunks now take two passes of their own
 * (fs_fused_one_shuffled), faster still. */
#define FS_XONE 16
/* GCC folded each weight load into both rows' multiply-adds, loading it twice: 12 loads a step
 * where 7 do, and a forward product about 4% slower (from cache, uint8 rows). */
#define FS_XREG(v) __asm__("" : "+x"(v))
#define FS_XGB 1
#define FS_XU8FMA 1
#include "fs_kernels_wide.h"
#endif


/* C[i, j] = bias[j] + X[i, :] . Wt[j, :] for `rows` rows and all m outputs, in blocks of 4 rows
 * x 2 outputs (ten outputs are five blocks: no lane is wasted). */
FS_CLONES static void FS_S(fs_dot_fwd)(const FS_T *X, fs_i64 ldx, fs_i64 rows, fs_i64 k,
                                       const FS_T *Wt, fs_i64 m, const FS_T *bias, FS_T *C,
                                       fs_i64 c_rs)
{
#if FS_HAVE_WIDE
    if (fs_wide()) {
        const FS_S(fs_rows) src = {X, ldx, NULL, FS_ROWS_PLAIN, 1};
        FS_WIDE(fs_dot_fwd, &src, rows, k, Wt, m, bias, C, c_rs, NULL, 0);
        return;
    }
#endif
    const fs_i64 kv = k - k % FS_VL;
    for (fs_i64 i = 0; i < rows; i += 4) {
        const int R = rows - i < 4 ? (int)(rows - i) : 4;
        /* Rows past R repeat row i and are thrown away. */
        const FS_T *x[4];
        for (int r = 0; r < 4; r++) x[r] = X + (i + (r < R ? r : 0)) * ldx;
        for (fs_i64 j0 = 0; j0 < m; j0 += 2) {
            const int J = m - j0 < 2 ? 1 : 2;
            const FS_T *w0 = Wt + j0 * k, *w1 = J > 1 ? w0 + k : w0;
            FS_V a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0};
            FS_V a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
            if (J == 1) {
                for (fs_i64 t = 0; t < kv; t += FS_VL) {
                    const FS_V v0 = *(const FS_VU *)(w0 + t);
                    a00 += *(const FS_VU *)(x[0] + t) * v0;
                    a10 += *(const FS_VU *)(x[1] + t) * v0;
                    a20 += *(const FS_VU *)(x[2] + t) * v0;
                    a30 += *(const FS_VU *)(x[3] + t) * v0;
                }
            } else {
                for (fs_i64 t = 0; t < kv; t += FS_VL) {
                    const FS_V v0 = *(const FS_VU *)(w0 + t), v1 = *(const FS_VU *)(w1 + t);
                    const FS_V xa = *(const FS_VU *)(x[0] + t), xb = *(const FS_VU *)(x[1] + t);
                    const FS_V xc = *(const FS_VU *)(x[2] + t), xd = *(const FS_VU *)(x[3] + t);
                    a00 += xa * v0; a01 += xa * v1;
                    a10 += xb * v0; a11 += xb * v1;
                    a20 += xc * v0; a21 += xc * v1;
                    a30 += xd * v0; a31 += xd * v1;
                }
            }
            const FS_V acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            const FS_T *w[2] = {w0, w1};
            for (int r = 0; r < R; r++)
                for (int jj = 0; jj < J; jj++) {
                    FS_T s = FS_S(fs_hsum)(acc[r][jj]);
                    for (fs_i64 t = kv; t < k; t++) s += x[r][t] * w[jj][t];
                    C[(i + r) * c_rs + j0 + jj] = (bias ? bias[j0 + jj] : 0) + s;
                }
        }
    }
}

/* dWt[j, c] = sum_i G[i, j] * X[i, c] for c in [k0, k0 + kw) and all m outputs, summed over i in
 * order: blocks of 2 vectors of columns x 4 outputs. */
FS_CLONES static void FS_S(fs_dot_bwd)(const FS_T *X, fs_i64 ldx, fs_i64 n, fs_i64 k0, fs_i64 kw,
                                       const FS_T *G, fs_i64 ldg, fs_i64 m, FS_T *dWt,
                                       fs_i64 ldw)
{
#if FS_HAVE_WIDE
    if (fs_wide()) {
        const FS_S(fs_rows) src = {X, ldx, NULL, FS_ROWS_PLAIN, 1};
        FS_WIDE(fs_dot_bwd, &src, n, k0, kw, G, ldg, m, dWt, ldw, 0);
        return;
    }
#endif
    for (fs_i64 c = k0; c < k0 + kw; c += 2 * FS_VL) {
        const fs_i64 cw = k0 + kw - c < 2 * FS_VL ? k0 + kw - c : 2 * FS_VL;
        for (fs_i64 j0 = 0; j0 < m; j0 += 4) {
            const int J = m - j0 < 4 ? (int)(m - j0) : 4;
            if (cw < 2 * FS_VL) {
                for (int jj = 0; jj < J; jj++)
                    for (fs_i64 cc = c; cc < c + cw; cc++) {
                        FS_T s = 0;
                        for (fs_i64 i = 0; i < n; i++) s += G[i * ldg + j0 + jj] * X[i * ldx + cc];
                        dWt[(j0 + jj) * ldw + cc] = s;
                    }
                continue;
            }
            const fs_i64 g1 = J > 1 ? 1 : 0, g2 = J > 2 ? 2 : 0, g3 = J > 3 ? 3 : 0;
            FS_V a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0};
            FS_V a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
            if (J == 1) {
                for (fs_i64 i = 0; i < n; i++) {
                    const FS_T *x = X + i * ldx + c;
                    const FS_T g = G[i * ldg + j0];
                    a00 += g * *(const FS_VU *)x;
                    a01 += g * *(const FS_VU *)(x + FS_VL);
                }
            } else {
                for (fs_i64 i = 0; i < n; i++) {
                    const FS_T *x = X + i * ldx + c, *g = G + i * ldg + j0;
                    const FS_V xa = *(const FS_VU *)x, xb = *(const FS_VU *)(x + FS_VL);
                    a00 += g[0] * xa; a01 += g[0] * xb;
                    a10 += g[g1] * xa; a11 += g[g1] * xb;
                    a20 += g[g2] * xa; a21 += g[g2] * xb;
                    a30 += g[g3] * xa; a31 += g[g3] * xb;
                }
            }
            const FS_V acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            for (int jj = 0; jj < J; jj++) {
                FS_T *out = dWt + (j0 + jj) * ldw + c;
                memcpy(out, &acc[jj][0], sizeof(FS_V));
                memcpy(out + FS_VL, &acc[jj][1], sizeof(FS_V));
            }
        }
    }
}

/* out (cols x rows) = A^T for a rows x cols matrix A. */
static void FS_S(fs_transpose)(const FS_T *A, fs_i64 rows, fs_i64 cols, FS_T *out)
{
    for (fs_i64 i = 0; i < rows; i++)
        for (fs_i64 j = 0; j < cols; j++) out[j * rows + i] = A[i * cols + j];
}

/* out[j] = sum_i G[i, j], summed over i in order.  One column is summed in a register: through
 * `out` (which could alias G, as far as the compiler knows) every addition waited on a store
 * and a load, and the fused step's one-thread linear-regression epoch took 15% longer. */
static void FS_S(fs_colsum)(const FS_T *G, fs_i64 ldg, fs_i64 n, fs_i64 m, FS_T *out)
{
    if (m == 1) {
        FS_T d = 0;
        for (fs_i64 i = 0; i < n; i++) d += G[i * ldg];
        out[0] = d;
        return;
    }
    for (fs_i64 j = 0; j < m; j++) out[j] = 0;
    for (fs_i64 i = 0; i < n; i++)
        for (fs_i64 j = 0; j < m; j++) out[j] += G[i * ldg + j];
}

/* ---- softmax and cross-entropy ---------------------------------------------------------- */

/* e^(z_j - max_j z) of every row, into O (row stride ldo); each row's maximum into mx and the
 * sum of its exponentials (in column order) into sum. */
FS_INLINE void FS_S(fs_shifted_exp)(const FS_T *Z, fs_i64 ldz, fs_i64 rows, fs_i64 m, FS_T *mx,
                                    FS_T *sum, FS_T *O, fs_i64 ldo)
{
    for (fs_i64 i = 0; i < rows; i++) {
        const FS_T *z = Z + i * ldz;
        FS_T *o = O + i * ldo;
        FS_T top = z[0];
        for (fs_i64 j = 1; j < m; j++) top = z[j] > top ? z[j] : top;
        mx[i] = top;
        for (fs_i64 j = 0; j < m; j++) o[j] = z[j] - top;
#if !FS_VEXP
        for (fs_i64 j = 0; j < m; j++) o[j] = FS_EXP(o[j]);
#endif
    }
#if FS_VEXP
    if (ldo == m) {
        fs_exp_inplace_f32(O, rows * m);
    } else {
        for (fs_i64 i = 0; i < rows; i++) fs_exp_inplace_f32(O + i * ldo, m);
    }
#endif
    for (fs_i64 i = 0; i < rows; i++) {
        const FS_T *o = O + i * ldo;
        FS_T s = 0;
        for (fs_i64 j = 0; j < m; j++) s += o[j];
        sum[i] = s;
    }
}

/* Rows per block of the softmax kernels: the maxima of one block live on the stack. */
#define FS_SOFTMAX_BLOCK 64
/* The float kernels are cloned per ISA for fs_vexpf; the double ones are not, so that their
 * arithmetic (no FMA contraction of the label-smoothing terms) stays what it was. */
#if FS_VEXP
#define FS_SOFTMAX_CLONES FS_CLONES
#else
#define FS_SOFTMAX_CLONES
#endif

#if FS_HAVE_WIDE && FS_VEXP
/* fs_softmax_xent_rows for up to 16 classes, sixteen rows at a time with a row in each lane of
 * AVX-512 registers: every value goes through the operations of the loops below, in their
 * order (so the results are the same bits; NaN comes out in the same places, but where two NaNs
 * meet in one operation, the one that survives, and so its sign, follows the operand order the
 * compiler picked, which differs between vectors and scalars), where those loops spent their
 * time in each row's chains of dependent steps (its maximum, its sum; about 160 cycles a row).
 * With `hit`, also whether each row's first largest value is at its label, as
 * fs_fused_loss_rows counts hits.  Rows past `rows` in the last block are computed from zeros
 * and dropped (masked loads and stores touch only real rows). */
FS_V4_TARGET static void fs_softmax_xent_rows_v4_f32(const float *Z, fs_i64 ldz, fs_i64 rows,
                                                     fs_i64 m, const fs_i64 *y, float smooth,
                                                     float *loss, float *G, fs_i64 ldg,
                                                     fs_i64 *hit)
{
    const float off = smooth / (float)m;
    const fs_v16f zero = {0};
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i zix = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)ldz));
    const __m512i gix = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)ldg));
    for (fs_i64 i0 = 0; i0 < rows; i0 += 16) {
        const int nr = rows - i0 < 16 ? (int)(rows - i0) : 16;
        const __mmask16 km = (__mmask16)((1u << nr) - 1);
        const float *z = Z + i0 * ldz;
        float *g = G + i0 * ldg;
        int32_t yl[16] = {0};
        for (int r = 0; r < nr; r++) yl[r] = (int32_t)y[i0 + r];
        const __m512i yv = _mm512_loadu_si512(yl);
        fs_v16f zt[16], et[16];  /* column j of the block's Z, and its exponentials */
        zt[0] = (fs_v16f)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), km, zix, z, 4);
        fs_v16f top = zt[0];
        __m512i best = _mm512_setzero_si512();
        for (fs_i64 j = 1; j < m; j++) {
            zt[j] = (fs_v16f)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), km, zix, z + j, 4);
            const __mmask16 gt = _mm512_cmp_ps_mask((__m512)zt[j], (__m512)top, _CMP_GT_OQ);
            top = (fs_v16f)_mm512_mask_mov_ps((__m512)top, gt, (__m512)zt[j]);
            best = _mm512_mask_mov_epi32(best, gt, _mm512_set1_epi32((int)j));
        }
        fs_v16f sum = zero, zy = zero;
        for (fs_i64 j = 0; j < m; j++) {
            et[j] = fs_vexpf(zt[j] - top);
            sum += et[j];
            const __mmask16 at = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32((int)j));
            zy = (fs_v16f)_mm512_mask_mov_ps((__m512)zy, at, (__m512)zt[j]);
        }
        float sums[16], logs[16] = {0};
        memcpy(sums, &sum, sizeof sums);
        for (int r = 0; r < nr; r++) logs[r] = logf(sums[r]);
        fs_v16f log_s;
        memcpy(&log_s, logs, sizeof log_s);
        const fs_v16f inv_s = (zero + 1) / sum;
        fs_v16f l = (1 - smooth) * ((top - zy) + log_s);
        if (smooth != 0) {
            fs_v16f spread = zero;
            for (fs_i64 j = 0; j < m; j++) spread += (top - zt[j]) + log_s;
            l += off * spread;
        }
        _mm512_mask_storeu_ps(loss + i0, km, (__m512)l);
        for (fs_i64 j = 0; j < m; j++) {
            fs_v16f gj = et[j] * inv_s - off;
            const __mmask16 at = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32((int)j));
            gj = (fs_v16f)_mm512_mask_sub_ps((__m512)gj, at, (__m512)gj,
                                             _mm512_set1_ps(1 - smooth));
            _mm512_mask_i32scatter_ps(g + j, km, gix, (__m512)gj, 4);
        }
        if (hit) {
            const __mmask16 h = _mm512_cmpeq_epi32_mask(best, yv);
            for (int r = 0; r < nr; r++) hit[i0 + r] = (h >> r) & 1;
        }
    }
}

/* The same on AVX2, eight rows a block, for m = M classes (a constant, so that the loops over
 * the classes unroll), up to FS_XENT_V3_ROWS rows a pass.  AVX2 has no masked gathers or
 * scatters worth having, so each column of a block is built from the rows' values in registers
 * (rows past `rows` read zeros) and each column of G goes back through the stack.  (Columns built
 * in a stack buffer by scalar stores took 1.4x as long: every vector load of them waited on the
 * stores.)  The pass takes every block's exponentials first, then the logarithms of all the
 * rows' sums, then the losses and G: logf calls clobber every vector register, and made inside
 * each block they spilled and reloaded its columns around them (the classes' loops then did not
 * unroll either, and the running sum went through memory).  On Zen 2, in cache, 10 classes:
 * 47 ns a row for the loops, 19.5 for the blocks one at a time, 16 for this pass; in a
 * two-thread Fashion-MNIST epoch, 3.0 against 3.7 us per thread a minibatch. */
#define FS_XENT_V3_ROWS 64

/* Column j of a block: its rows' values, in registers. */
FS_V3_TARGET FS_INLINE fs_v8f fs_xent_column_v3_f32(const float *const zr[8], int j)
{
    return (fs_v8f){zr[0][j], zr[1][j], zr[2][j], zr[3][j], zr[4][j], zr[5][j], zr[6][j], zr[7][j]};
}

FS_V3_TARGET FS_INLINE void fs_softmax_xent_pass_v3_f32(const float *Z, fs_i64 ldz, int rows,
                                                        const int M, const fs_i64 *y,
                                                        float smooth, float *loss, float *G,
                                                        fs_i64 ldg, fs_i64 *hit)
{
    enum { NB = FS_XENT_V3_ROWS / 8 };
    static const float zeros[16];
    const float off = smooth / (float)M;
    const fs_v8f zero = {0};
    const int nb = (rows + 7) / 8;
    fs_v8f et[NB][16], top[NB], sum[NB], zy[NB];  /* each block's exponentials (column j) */
    fs_v8i best[NB], yv[NB];
    float sums[FS_XENT_V3_ROWS], logs[FS_XENT_V3_ROWS];
    for (int b = 0; b < nb; b++) {
        const int nr = rows - 8 * b < 8 ? rows - 8 * b : 8;
        const float *zr[8];
        int32_t yl[8] = {0};
        for (int r = 0; r < 8; r++) zr[r] = r < nr ? Z + (8 * b + r) * ldz : zeros;
        for (int r = 0; r < nr; r++) yl[r] = (int32_t)y[8 * b + r];
        memcpy(&yv[b], yl, sizeof yl);
        fs_v8f zt[16];  /* column j of the block's Z */
#pragma GCC unroll 16
        for (int j = 0; j < M; j++) zt[j] = fs_xent_column_v3_f32(zr, j);
        fs_v8f t = zt[0];
        fs_v8i bi = {0};
#pragma GCC unroll 16
        for (int j = 1; j < M; j++) {
            const fs_v8i gt = zt[j] > t;
            t = (fs_v8f)(((fs_v8i)zt[j] & gt) | ((fs_v8i)t & ~gt));
            bi = (bi & ~gt) | ((int32_t)j & gt);
        }
        fs_v8f sm = zero, zl = zero;
#pragma GCC unroll 16
        for (int j = 0; j < M; j++) {
            et[b][j] = fs_vexpf8(zt[j] - t);
            sm += et[b][j];
            const fs_v8i at = yv[b] == (int32_t)j;
            zl = (fs_v8f)(((fs_v8i)zt[j] & at) | ((fs_v8i)zl & ~at));
        }
        top[b] = t;
        best[b] = bi;
        sum[b] = sm;
        zy[b] = zl;
        _mm256_storeu_ps(sums + 8 * b, (__m256)sm);
    }
    for (int r = 0; r < rows; r++) logs[r] = logf(sums[r]);
    for (int r = rows; r < 8 * nb; r++) logs[r] = 0;
    for (int b = 0; b < nb; b++) {
        const int nr = rows - 8 * b < 8 ? rows - 8 * b : 8;
        const fs_v8f log_s = (fs_v8f)_mm256_loadu_ps(logs + 8 * b);
        const fs_v8f inv_s = (zero + 1) / sum[b];
        fs_v8f l = (1 - smooth) * ((top[b] - zy[b]) + log_s);
        if (smooth != 0) {
            const float *zr[8];
            for (int r = 0; r < 8; r++) zr[r] = r < nr ? Z + (8 * b + r) * ldz : zeros;
            fs_v8f spread = zero;
            for (int j = 0; j < M; j++)
                spread += (top[b] - fs_xent_column_v3_f32(zr, j)) + log_s;
            l += off * spread;
        }
        float ls[8];
        _mm256_storeu_ps(ls, (__m256)l);
        for (int r = 0; r < nr; r++) loss[8 * b + r] = ls[r];
        float cols[16][8] __attribute__((aligned(32)));
#pragma GCC unroll 16
        for (int j = 0; j < M; j++) {
            const fs_v8f gj = et[b][j] * inv_s - off;
            const fs_v8f gl = gj - (1 - smooth);
            const fs_v8i at = yv[b] == (int32_t)j;
            _mm256_store_ps(cols[j], (__m256)(fs_v8f)(((fs_v8i)gl & at) | ((fs_v8i)gj & ~at)));
        }
        float *g = G + 8 * b * ldg;
        for (int r = 0; r < nr; r++)
            for (int j = 0; j < M; j++) g[r * ldg + j] = cols[j][r];
        if (hit) {
            int32_t h[8];
            const fs_v8i eq = best[b] == yv[b];
            memcpy(h, &eq, sizeof h);
            for (int r = 0; r < nr; r++) hit[8 * b + r] = h[r] != 0;
        }
    }
}

#define FS_XENT_CASE(MM)                                                                      \
    case MM:                                                                                  \
        fs_softmax_xent_pass_v3_f32(Z + i0 * ldz, ldz, nr, MM, y + i0, smooth, loss + i0,     \
                                    G + i0 * ldg, ldg, hit ? hit + i0 : NULL);                \
        break;
FS_V3_TARGET static void fs_softmax_xent_rows_v3_f32(const float *Z, fs_i64 ldz, fs_i64 rows,
                                                     fs_i64 m, const fs_i64 *y, float smooth,
                                                     float *loss, float *G, fs_i64 ldg,
                                                     fs_i64 *hit)
{
    for (fs_i64 i0 = 0; i0 < rows; i0 += FS_XENT_V3_ROWS) {
        const int nr = rows - i0 < FS_XENT_V3_ROWS ? (int)(rows - i0) : FS_XENT_V3_ROWS;
        switch (m) {
        FS_XENT_CASE(1) FS_XENT_CASE(2) FS_XENT_CASE(3) FS_XENT_CASE(4) FS_XENT_CASE(5)
        FS_XENT_CASE(6) FS_XENT_CASE(7) FS_XENT_CASE(8) FS_XENT_CASE(9) FS_XENT_CASE(10)
        FS_XENT_CASE(11) FS_XENT_CASE(12) FS_XENT_CASE(13) FS_XENT_CASE(14) FS_XENT_CASE(15)
        default: FS_XENT_CASE(16)
        }
    }
}
#undef FS_XENT_CASE
#undef FS_XENT_V3_ROWS

/* Runs the rows through the kernel for this CPU above and returns 1 when there is one (up to 16
 * classes; AVX-512's lane offsets are 32-bit), else returns 0. */
FS_INLINE int fs_softmax_xent_lanes_f32(const float *Z, fs_i64 ldz, fs_i64 rows, fs_i64 m,
                                        const fs_i64 *y, float smooth, float *loss, float *G,
                                        fs_i64 ldg, fs_i64 *hit)
{
    if (m > 16) return 0;
    if (fs_use_v4() && ldz <= INT32_MAX / 16 && ldg <= INT32_MAX / 16) {
        fs_softmax_xent_rows_v4_f32(Z, ldz, rows, m, y, smooth, loss, G, ldg, hit);
        return 1;
    }
    if (fs_use_v3()) {
        fs_softmax_xent_rows_v3_f32(Z, ldz, rows, m, y, smooth, loss, G, ldg, hit);
        return 1;
    }
    return 0;
}
#endif

/* Per row: loss = sum_j q_j * (lse - z_j), the cross-entropy between the smoothed one-hot target
 * q (1 - smooth on the label, smooth / m spread over all classes) and softmax(z), and its gradient
 * dL/dz = softmax(z) - q.  Shifting by the row maximum keeps exp() in [0, 1] and every
 * (lse - z_j) a finite non-negative number for any finite logits. */
FS_SOFTMAX_CLONES static void FS_S(fs_softmax_xent_rows)(const FS_T *Z, fs_i64 ldz,
                                                         fs_i64 rows, fs_i64 m, const fs_i64 *y,
                                                         FS_T smooth, FS_T *loss, FS_T *G,
                                                         fs_i64 ldg)
{
#if FS_HAVE_WIDE && FS_VEXP
    if (fs_softmax_xent_lanes_f32(Z, ldz, rows, m, y, smooth, loss, G, ldg, NULL)) return;
#endif
    const FS_T off = smooth / (FS_T)m;
    FS_T mx[FS_SOFTMAX_BLOCK], sum[FS_SOFTMAX_BLOCK];
    for (fs_i64 i0 = 0; i0 < rows; i0 += FS_SOFTMAX_BLOCK) {
        const fs_i64 nb = rows - i0 < FS_SOFTMAX_BLOCK ? rows - i0 : FS_SOFTMAX_BLOCK;
        FS_S(fs_shifted_exp)(Z + i0 * ldz, ldz, nb, m, mx, sum, G + i0 * ldg, ldg);
        for (fs_i64 i = i0; i < i0 + nb; i++) {
            const FS_T *z = Z + i * ldz;
            FS_T *g = G + i * ldg;
            const FS_T s = sum[i - i0];
            const FS_T log_s = FS_LOG(s), inv_s = 1 / s, top = mx[i - i0];
            const fs_i64 yi = y[i];
            FS_T l = (FS_T)(1 - smooth) * ((top - z[yi]) + log_s);
            if (smooth != 0) {
                FS_T spread = 0;
                for (fs_i64 j = 0; j < m; j++) spread += (top - z[j]) + log_s;
                l += off * spread;
            }
            loss[i] = l;
            for (fs_i64 j = 0; j < m; j++) g[j] = g[j] * inv_s - off;
            g[yi] -= (FS_T)(1 - smooth);
        }
    }
}

/* Row-wise softmax (log_out == 0) or log-softmax (log_out != 0). */
FS_SOFTMAX_CLONES static void FS_S(fs_softmax_rows)(const FS_T *Z, fs_i64 ldz, fs_i64 rows,
                                                    fs_i64 m, int log_out, FS_T *O, fs_i64 ldo)
{
    FS_T mx[FS_SOFTMAX_BLOCK], sum[FS_SOFTMAX_BLOCK];
    for (fs_i64 i0 = 0; i0 < rows; i0 += FS_SOFTMAX_BLOCK) {
        const fs_i64 nb = rows - i0 < FS_SOFTMAX_BLOCK ? rows - i0 : FS_SOFTMAX_BLOCK;
        /* the exponentials go to O first: their sum is all log-softmax needs of them */
        FS_S(fs_shifted_exp)(Z + i0 * ldz, ldz, nb, m, mx, sum, O + i0 * ldo, ldo);
        for (fs_i64 i = i0; i < i0 + nb; i++) {
            const FS_T *z = Z + i * ldz;
            FS_T *o = O + i * ldo;
            const FS_T s = sum[i - i0];
            if (log_out) {
                const FS_T log_s = FS_LOG(s), top = mx[i - i0];
                for (fs_i64 j = 0; j < m; j++) o[j] = (z[j] - top) - log_s;
            } else {
                const FS_T inv_s = 1 / s;
                for (fs_i64 j = 0; j < m; j++) o[j] *= inv_s;
            }
        }
    }
}

#undef FS_SOFTMAX_CLONES

/* ---- parameter update ------------------------------------------------------------------- */

/* Minibatch SGD on n contiguous values: d = grad / batch_size + weight_decay * param; with a
 * velocity buffer v = momentum * v + d and param -= lr * v, else param -= lr * d. */
FS_CLONES static void FS_S(fs_sgd)(FS_T *p, const FS_T *g, fs_i64 n, FS_T lr, FS_T batch_size,
                                   FS_T momentum, FS_T wd, FS_T *v)
{
    if (v) {
#pragma omp simd
        for (fs_i64 i = 0; i < n; i++) {
            FS_T d = g[i] / batch_size + wd * p[i];
            v[i] = momentum * v[i] + d;
            p[i] -= lr * v[i];
        }
    } else {
#pragma omp simd
        for (fs_i64 i = 0; i < n; i++) p[i] -= lr * (g[i] / batch_size + wd * p[i]);
    }
}

/* ---- fused minibatch SGD ---------------------------------------------------------------- */

/* One update of one parameter value, the same arithmetic as fs_sgd. */
FS_INLINE void FS_S(fs_sgd_one)(FS_T *p, FS_T g, FS_T lr, FS_T bs, FS_T mom, FS_T wd, FS_T *v)
{
    FS_T d = g / bs + wd * *p;
    if (v) {
        *v = mom * *v + d;
        *p -= lr * *v;
    } else {
        *p -= lr * d;
    }
}

/* Rows [r0, r1) of X picked by idx (or in order when idx is NULL), converted to FS_T and
 * multiplied by scale, into dst (row stride k).  Random rows are latency bound: every cache line
 * of the row FS_PREFETCH_ROWS ahead is requested while this one is converted (a row of 784
 * bytes spans 13 lines; the hardware prefetcher alone only catches up within a row). */
FS_INLINE void FS_S(fs_prefetch_row)(const void *X, int x_u8, fs_i64 ldx, fs_i64 k, fs_i64 row)
{
    const char *p = x_u8 ? (const char *)((const uint8_t *)X + row * ldx)
                         : (const char *)((const FS_T *)X + row * ldx);
    fs_prefetch_span(p, 0, k * (x_u8 ? 1 : (fs_i64)sizeof(FS_T)));
}

FS_INLINE void FS_S(fs_gather)(const void *X, int x_u8, fs_i64 ldx, fs_i64 k, FS_T scale,
                               const fs_i64 *idx, fs_i64 r0, fs_i64 r1, fs_i64 rmax, FS_T *dst,
                               const fs_i64 *next, fs_i64 nnext, int requested)
{
    /* Rows `requested` a minibatch ago (see `next`) need no requests now. */
    if (idx && !requested)
        for (fs_i64 r = r0; r < r0 + FS_PREFETCH_ROWS && r < rmax; r++)
            FS_S(fs_prefetch_row)(X, x_u8, ldx, k, idx[r]);
    for (fs_i64 r = r0; r < r1; r++) {
        fs_i64 row = idx ? idx[r] : r;
        if (idx && !requested && r + FS_PREFETCH_ROWS < rmax)
            FS_S(fs_prefetch_row)(X, x_u8, ldx, k, idx[r + FS_PREFETCH_ROWS]);
        /* The same rows of the next minibatch, `next`, go to the same task (static schedule):
         * request them a whole minibatch ahead, so no chunk starts cold. */
        if (r - r0 < nnext)
            FS_S(fs_prefetch_row)(X, x_u8, ldx, k, next[r - r0]);
        FS_T *d = dst + (r - r0) * k;
        if (x_u8) {
            const uint8_t *s = (const uint8_t *)X + row * ldx;
#pragma omp simd
            for (fs_i64 j = 0; j < k; j++) d[j] = (FS_T)s[j] * scale;
        } else if (scale == (FS_T)1) {  /* a plain copy: memcpy moves it fastest */
            memcpy(d, (const FS_T *)X + row * ldx, sizeof(FS_T) * (size_t)k);
        } else {
            const FS_T *s = (const FS_T *)X + row * ldx;
#pragma omp simd
            for (fs_i64 j = 0; j < k; j++) d[j] = s[j] * scale;
        }
    }
}

/* The public gather: rows [r0, r1) of one task, written to out + r0 * k. */
FS_CLONES static void FS_S(fs_gather_rows)(const void *X, int x_u8, fs_i64 ldx, fs_i64 k,
                                           FS_T scale, const fs_i64 *idx, fs_i64 r0, fs_i64 r1,
                                           fs_i64 n, FS_T *out)
{
    FS_S(fs_gather)(X, x_u8, ldx, k, scale, idx, r0, r1, n, out + r0 * k, NULL, 0, 0);
}


/* The public regression loss: rows [r0, r1) of P and T (both rows x m, contiguous). */
static void FS_S(fs_regression_rows)(const FS_T *P, const FS_T *T, fs_i64 r0, fs_i64 r1,
                                     fs_i64 m, int huber, FS_T delta, FS_T *loss, FS_T *G)
{
    for (fs_i64 r = r0; r < r1; r++)
        loss[r] = FS_S(fs_regression_row)(P + r * m, T + r * m, m, huber, delta, G + r * m);
}

/* Loss, gradient and hit of `rows` rows of Z (labels / targets at positions pos[0..rows)). */
FS_INLINE void FS_S(fs_fused_loss_rows)(const FS_S(fs_fused_args) *a, fs_i64 r0, fs_i64 rows,
                                        const fs_i64 *pos)
{
    const fs_i64 m = a->m;
    FS_T *Z = a->Z + r0 * m, *G = a->G + r0 * m;
    if (a->loss == FS_LOSS_SOFTMAX_XENT) {
        fs_i64 y[FS_FUSED_CHUNK];  /* rows <= FS_FUSED_CHUNK: every caller's chunks */
        if (a->labels8)
            for (fs_i64 r = 0; r < rows; r++) y[r] = a->labels8[pos[r]];
        else
            for (fs_i64 r = 0; r < rows; r++) y[r] = a->labels[pos[r]];
#if FS_HAVE_WIDE && FS_VEXP
        if (fs_softmax_xent_lanes_f32(Z, m, rows, m, y, a->smooth, a->rowloss + r0, G, m,
                                      a->rowhit + r0))  /* the hits too */
            return;
#endif
        for (fs_i64 r = 0; r < rows; r++) {
            const FS_T *z = Z + r * m;
            fs_i64 best = 0;
            for (fs_i64 j = 1; j < m; j++) best = z[j] > z[best] ? j : best;
            a->rowhit[r0 + r] = best == y[r];
        }
        FS_S(fs_softmax_xent_rows)(Z, m, rows, m, y, a->smooth, a->rowloss + r0, G, m);
    } else {
        for (fs_i64 r = 0; r < rows; r++) {
            a->rowloss[r0 + r] = FS_S(fs_regression_row)(Z + r * m, a->targets + pos[r] * m, m,
                                                         a->loss == FS_LOSS_HUBER, a->delta,
                                                         G + r * m);
            a->rowhit[r0 + r] = 0;
        }
    }
}


/* Phase 1 of a minibatch, batch rows [r0, r0 + rows): forward, loss and gradient of the outputs
 * (and the gradient's panel copy for phase 2); with shares (sr > 0; rows is then one chunk of sr
 * rows) also the chunk's share of the weight gradient, while its rows are in this core's cache. */
FS_CLONES static void FS_S(fs_fused_rows)(const FS_S(fs_fused_args) *a, fs_i64 sr,
                                          const fs_i64 *pos, fs_i64 bn, fs_i64 r0, fs_i64 rows,
                                          const fs_i64 *next, fs_i64 nnext)
{
    const fs_i64 k = a->k, m = a->m;
    FS_T *share = sr ? a->dW + (r0 / sr) * m * k : NULL;
#if FS_HAVE_WIDE
    if (!a->panel && fs_wide()) {
        /* The products read the examples in place, converting in registers: no gathered copy
         * (writing it, 4 bytes per uint8 pixel, cost as much as either product). */
        const int mode = FS_S(fs_rows_mode)(a->x_u8, a->scale);
        const FS_S(fs_rows) src = {a->X, a->ldx, pos + r0, mode, a->scale};
        const FS_S(fs_rows) ahead = {a->X, a->ldx, next, mode, a->scale};
        if (pos == a->perm)  /* the epoch's first minibatch: nothing requested its rows yet */
            for (fs_i64 r = 0; r < rows; r++) {
                fs_prefetch_span((const char *)FS_S(fs_row)(&src, mode, r), 0,
                                 k * (a->x_u8 ? 1 : (fs_i64)sizeof(FS_T)));
            }
        if (share && FS_WIDE(fs_fused_one, a, &src, r0, rows, pos + r0, &ahead, nnext, share))
            return;
        FS_WIDE(fs_dot_fwd, &src, rows, k, a->Wp, m, a->b, a->Z + r0 * m, m, &ahead, nnext);
        FS_S(fs_fused_loss_rows)(a, r0, rows, pos + r0);
        if (share)  /* rows the forward just read: in cache */
            FS_WIDE(fs_dot_bwd, &src, rows, 0, k, a->G + r0 * m, m, m, share, k, 0);
        return;
    }
#endif
    FS_T *xb = a->Xb + r0 * k;
    FS_S(fs_gather)(a->X, a->x_u8, a->ldx, k, a->scale, pos, r0, r0 + rows, bn, xb, next, nnext,
                    /* every minibatch but the epoch's first was requested by the one before */
                    pos != a->perm);
    if (a->panel)
        FS_S(fs_gemm_rows)(xb, k, 1, rows, k, a->Wp, m, a->b, a->Z + r0 * m, m);
    else
        FS_S(fs_dot_fwd)(xb, k, rows, k, a->Wp, m, a->b, a->Z + r0 * m, m);
    FS_S(fs_fused_loss_rows)(a, r0, rows, pos + r0);
    if (a->panel)
        for (fs_i64 r = r0; r < r0 + rows; r++)
            for (fs_i64 j = 0; j < m; j++)
                a->Gp[((j / FS_PW) * bn + r) * FS_PW + j % FS_PW] = a->G[r * m + j];
    else if (share)
        FS_S(fs_dot_bwd)(xb, k, rows, 0, k, a->G + r0 * m, m, m, share, k);
}

/* Phase 2 of a minibatch, weight rows [k0, k0 + kw): their gradient, summed over all bn rows
 * of the batch in order (as the per-batch matmul_bias_backward sums it), and update. */
FS_CLONES static void FS_S(fs_fused_cols)(const FS_S(fs_fused_args) *a, const fs_i64 *pos,
                                          fs_i64 bn, fs_i64 k0, fs_i64 kw, FS_T lr)
{
    const fs_i64 k = a->k, m = a->m;
    const FS_T fbn = (FS_T)bn;
    if (kw <= 0) return;
    if (a->panel) {
        FS_S(fs_gemm_rows)(a->Xb + k0, 1, k, kw, bn, a->Gp, m, NULL, a->dW + k0 * m, m);
        for (fs_i64 kk = k0; kk < k0 + kw; kk++)
            for (fs_i64 j = 0; j < m; j++) {
                fs_i64 at = ((j / FS_PW) * k + kk) * FS_PW + j % FS_PW;
                FS_S(fs_sgd_one)(a->Wp + at, a->dW[kk * m + j], lr, fbn, a->momentum, a->wd,
                                 a->V ? a->V + at : NULL);
            }
        return;
    }
    /* dW is kept transposed like the weights (m x k). */
#if FS_HAVE_WIDE
    if (fs_wide()) {  /* the examples in place, as phase 1 read them */
        const int mode = FS_S(fs_rows_mode)(a->x_u8, a->scale);
        const FS_S(fs_rows) src = {a->X, a->ldx, pos, mode, a->scale};
        FS_WIDE(fs_dot_bwd, &src, bn, k0, kw, a->G, m, m, a->dW, k, k0 + kw);
    } else
#endif
        FS_S(fs_dot_bwd)(a->Xb, k, bn, k0, kw, a->G, m, m, a->dW, k);
    for (fs_i64 j = 0; j < m; j++)
        FS_S(fs_sgd)(a->Wp + j * k + k0, a->dW + j * k + k0, kw, lr, fbn, a->momentum, a->wd,
                     a->V ? a->V + j * k + k0 : NULL);
}

/* The loss of batch rows [r0, r1), summed in order; their hits into *hits. */
FS_INLINE double FS_S(fs_row_totals)(const FS_S(fs_fused_args) *a, fs_i64 r0, fs_i64 r1,
                                     fs_i64 *hits)
{
    double s = 0;
    fs_i64 h = 0;
    for (fs_i64 r = r0; r < r1; r++) {
        s += a->rowloss[r];
        h += a->rowhit[r];
    }
    *hits = h;
    return s;
}

/* acc = from + shares[c0] + shares[c0 + 1] + ... + shares[c1 - 1] (n values each, stride
 * apart), added in that order; from NULL starts at shares[c0] (then c0 < c1). */
FS_INLINE void FS_S(fs_chain_add)(FS_T *acc, const FS_T *from, const FS_T *shares, fs_i64 stride,
                                  fs_i64 c0, fs_i64 c1, fs_i64 n)
{
    if (!from) from = shares + c0++ * stride;
    if (c0 == c1) {
        memcpy(acc, from, sizeof(FS_T) * n);
        return;
    }
    const FS_T *s0 = shares + c0 * stride;
#pragma omp simd
    for (fs_i64 q = 0; q < n; q++) acc[q] = from[q] + s0[q];
    for (fs_i64 c = c0 + 1; c < c1; c++) {
        const FS_T *sc = shares + c * stride;
#pragma omp simd
        for (fs_i64 q = 0; q < n; q++) acc[q] += sc[q];
    }
}

/* fs_fused_sgd when phase 1 leaves shares (sr > 0), without a barrier.  The minibatch's
 * gradient is its chunks' shares added in chunk order, and thread i runs phase 1 on chunks
 * [c_i, c_i+1), after those of threads 0..i-1; so the threads add them up as a chain: thread i
 * takes the running sums (shares, bias shares, loss, hits) of thread i - 1, adds its own
 * chunks', in cache, and passes them on (a flag per thread); the last one's are the
 * minibatch's, which every thread then applies to a copy of the weights of its own (thread 0's
 * is the caller's).  The same additions in the same order as one thread makes, so the same
 * bits; between cores only the running sums move, once per thread, where a barrier and every
 * thread adding all the shares moved each share to every core.  The running sums alternate
 * between two buffers by minibatch, so a thread already in the next minibatch never overwrites
 * ones still being read.  Returns as fs_fused_sgd, or -2 when out of memory. */
static fs_i64 FS_S(fs_fused_sgd_chain)(const FS_S(fs_fused_args) *a, fs_i64 sr, fs_i64 t0,
                                       fs_i64 t1)
{
    const fs_i64 k = a->k, m = a->m, B = a->batch, mk = m * k;
    const fs_i64 nchmax = (B + sr - 1) / sr;
    const int nt = a->nt > 1 ? a->nt : 1;
    const int mom = a->V != NULL;
    const size_t sums = fs_round64(sizeof(FS_T) * (size_t)(mk + m));
    const size_t slot = sums + fs_round64(sizeof(fs_chain_tail));
    /* a thread's copies of weights, bias (and momentum), whole lines apart */
    const size_t own = fs_round64(sizeof(FS_T) * (size_t)((mk + m) * (1 + mom))) / sizeof(FS_T);
    /* a 64-byte line per thread's flag; two slots of running sums per thread; the copies */
    char *block = aligned_alloc(64, 64 * (size_t)nt + 2 * slot * (size_t)nt +
                                        sizeof(FS_T) * own * (size_t)nt);
    if (!block) return -2;
    memset(block, 0, 64 * (size_t)nt);
    char *slots = block + 64 * (size_t)nt;
    FS_T *copies = (FS_T *)(slots + 2 * slot * (size_t)nt);
#define FS_READY(i) ((int64_t *)(block + 64 * (size_t)(i)))
#define FS_SLOT(p, i) (slots + ((size_t)(p) * (size_t)nt + (size_t)(i)) * slot)
    fs_i64 bad = -1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int team = nt > 1 ? omp_get_num_threads() : 1;
        const int me = team > 1 ? omp_get_thread_num() : 0;
        FS_S(fs_fused_args) my = *a;
        if (me > 0) {
            my.Wp = copies + me * own;
            my.b = my.Wp + mk;
            memcpy(my.Wp, a->Wp, sizeof(FS_T) * mk);
            memcpy(my.b, a->b, sizeof(FS_T) * m);
            if (mom) {
                my.V = my.b + m;
                my.vb = my.V + mk;
                memcpy(my.V, a->V, sizeof(FS_T) * mk);
                memcpy(my.vb, a->vb, sizeof(FS_T) * m);
            }
        }
        FS_T *dbs = a->dW + nchmax * mk;  /* the bias shares, after the weight shares */
        /* every thread rebalances from the same timings: the same split */
        double speed[team], cum[team + 1], secs[team], work[team];
        for (int i = 0; i <= team; i++) {
            cum[i] = (double)i / team;
            if (i < team) speed[i] = 0;
        }
        fs_i64 mybad = -1;
        for (fs_i64 t = t0; t < t1; t++) {
            const fs_i64 *pos = a->perm + t * B;
            const fs_i64 bn = a->n - t * B < B ? a->n - t * B : B;
            const fs_i64 seq = t - t0 + 1;
            const int p = (int)(t & 1);
            const double start = team > 1 ? omp_get_wtime() : 0;

            /* phase 1: whole chunks [lo, hi) */
            const fs_i64 lo = fs_split_at(cum, me, team, bn, sr);
            const fs_i64 hi = fs_split_at(cum, me + 1, team, bn, sr);
            for (fs_i64 r0 = lo; r0 < hi; r0 += sr) {
                const fs_i64 rows = hi - r0 < sr ? hi - r0 : sr, c = r0 / sr;
                const fs_i64 left = a->n - (t + 1) * B - r0;
                FS_S(fs_fused_rows)(&my, sr, pos, bn, r0, rows, left > 0 ? pos + B + r0 : NULL,
                                    left > 0 ? (left < rows ? left : rows) : 0);
                FS_S(fs_colsum)(my.G + r0 * m, m, rows, m, dbs + c * m);
                a->chunk_loss[c] = FS_S(fs_row_totals)(a, r0, r0 + rows, a->chunk_hits + c);
            }

            const double took = team > 1 ? omp_get_wtime() - start : 0;

            /* the chain: thread me - 1's running sums plus my chunks' */
            FS_T *acc = (FS_T *)FS_SLOT(p, me);
            fs_chain_tail *tail = (fs_chain_tail *)(FS_SLOT(p, me) + sums);
            /* Every thread computes the same split, so rows before mine went to threads before
             * me: thread me - 1 holds running sums exactly when lo > 0. */
            const FS_T *from = lo > 0 ? (const FS_T *)FS_SLOT(p, me - 1) : NULL;
            fs_chain_tail run = {0, 0, 0, 0};
            if (me > 0) {
                fs_wait_for(FS_READY(me - 1), seq);
                run = *(const fs_chain_tail *)(FS_SLOT(p, me - 1) + sums);
            }
            fs_i64 c0 = fs_chunk_at(lo, sr);
            const fs_i64 c1 = fs_chunk_at(hi, sr);
            if (from || c0 < c1) {  /* a thread without chunks passes the sums on as they came */
                FS_S(fs_chain_add)(acc, from, a->dW, mk, c0, c1, mk);
                FS_S(fs_chain_add)(acc + mk, from ? from + mk : NULL, dbs, m, c0, c1, m);
            }
            /* Totals start at 0 before the first chunk: 0 + x is x, as a chunk's loss, summed
             * from +0, is never -0. */
            for (; c0 < c1; c0++) {
                run.loss += a->chunk_loss[c0];
                run.hits += a->chunk_hits[c0];
            }
            run.secs = took;  /* phase 1 alone: the wait above is another thread's time */
            run.work = (double)(hi - lo);
            *tail = run;
            __atomic_store_n(FS_READY(me), seq, __ATOMIC_RELEASE);

            /* the last thread's sums are the minibatch's */
            if (me < team - 1) fs_wait_for(FS_READY(team - 1), seq);
            const FS_T *g = (const FS_T *)FS_SLOT(p, team - 1);
            const fs_chain_tail *total = (const fs_chain_tail *)(FS_SLOT(p, team - 1) + sums);
            const FS_T fbn = (FS_T)bn;
            for (fs_i64 j = 0; j < m; j++) {
                FS_S(fs_sgd)(my.Wp + j * k, g + j * k, k, a->lrs[t], fbn, a->momentum, a->wd,
                             mom ? my.V + j * k : NULL);
                FS_S(fs_sgd_one)(my.b + j, g[mk + j], a->lrs[t], fbn, a->momentum, a->wd,
                                 mom ? my.vb + j : NULL);
            }
            const double s = total->loss;
            if (me == 0) {
                a->batch_loss[t] = s;
                a->batch_hits[t] = total->hits;
            }
            if (team > 1) {
                for (int i = 0; i < team; i++) {
                    const fs_chain_tail *ti = (const fs_chain_tail *)(FS_SLOT(p, i) + sums);
                    secs[i] = ti->secs;
                    work[i] = ti->work;
                }
                fs_rebalance(speed, work, secs, cum, team);
            }
            if (!isfinite(s)) {  /* every thread sees the same sum */
                mybad = t;
                break;
            }
        }
        if (me == 0) bad = mybad;
    }
#undef FS_READY
#undef FS_SLOT
    free(block);
    return bad;
}

/* Batches [t0, t1) of one epoch: for each, forward + loss + gradient of the outputs (phase 1,
 * split by rows), then weight gradient + update (phase 2, split by weight rows), with one OpenMP
 * team for the whole segment and a barrier after each phase.  Every value is produced by one
 * thread in a fixed order, whichever thread that is, so the split is free: each phase is split
 * in proportion to how fast each thread ran it in the minibatches before (the two cores of a
 * virtual machine can differ in speed by a third for minutes; an even split waited for the
 * slower one at every barrier), and the result still does not depend on the thread count.
 * When phase 1 leaves shares of the weight gradient, fs_fused_sgd_chain runs the batches
 * instead.  Returns the index of the first batch whose loss was not finite (training stops
 * after its update), or -1.
 * Where a second thread's time goes (Fashion-MNIST, phases timed per thread in one process, 10
 * epochs each way): phase 1 ran 1.7-2.0x and phase 2 1.45-1.65x as fast as on one thread, and
 * each thread waited 0.3-0.85 ms an epoch at each barrier.  Phase 2 reads half of its rows from
 * the other core's cache, and the weights each thread updates there go to the other core for the
 * next phase 1: the cost of splitting by rows, then by weight rows (a pure multiply-add loop
 * runs 1.93-2.01x as fast on two threads here: `machine_bounds fma`).  Tried, 2 threads, epochs
 * alternating in one process: requesting in phase 1 the parts of the other thread's rows that
 * phase 2 reads moved the time instead of saving it (phase 2 0.2-0.95 ms an epoch shorter, phase
 * 1 0.15-0.85 ms longer: 0.94-1.03 of the time as one burst a chunk, 1.04-1.05 spread over the
 * rows); requesting the other thread's weights at the start of phase 1, 1.00 into L2 and 1.13
 * into L1; pushing lines the other core reads next out to the shared cache (CLDEMOTE) after
 * writing or reading them: the rows 1.05, the weights 1.01, the output gradients 0.97-1.01.  A
 * stand-alone prototype that splits the weight rows in both phases instead (each thread reads
 * only its fixed half of every example and keeps its half of the weights; the partial outputs
 * cross once a minibatch, one barrier) took 1.08-1.25x as long on 2 threads and 0.93-1.09x on
 * one: no rows cross, but fixed halves cannot follow the cores' speeds (its faster thread waited
 * 5 ms an epoch).  Even with its split following the cores' speeds, which would make the bits
 * depend on the split (so only as a bound), it took 0.975-1.07x as long on 2 threads.  Handing
 * out each phase's work in pieces from an atomic counter instead of in measured shares (same
 * bits; 16 to 64 rows, 32 to 112 weight rows a piece) took 1.10-1.37x as long on 2 threads
 * (three in-process A/Bs of 21 epochs each), presumably because a thread's pieces then change
 * from minibatch to minibatch, so more of what it reads was last touched by the other core.
 * A relay in place of phase 2 (same bits): each thread carries every weight's chain of sums on
 * through its own phase-1 rows, still in its cache, starting from the sums the thread before it
 * left (block by block of weights, behind a flag), and the first thread applies the update as
 * the last thread's sums come in.  Only sums and weights cross, about 94 KB a minibatch against
 * 141 KB here, and the threads waited only 0.2-0.4 ms an epoch; yet 2 threads took 0.96-1.06x as
 * long and 1 thread 1.01-1.13x (four in-process A/Bs of 15 epochs each).  Besides this kernel,
 * a one-epoch fs.train spends 1.5-2 ms (the order, the labels' copy, the set-up) that does not
 * shrink with threads, and its test accuracy's forward pass scales as phase 1 does. */
static fs_i64 FS_S(fs_fused_sgd)(const FS_S(fs_fused_args) *a, fs_i64 t0, fs_i64 t1)
{
    const fs_i64 k = a->k, m = a->m, B = a->batch;
    const fs_i64 sr = fs_fused_share_rows(B, m, a->panel,
                                          a->x_u8 ? 1 : (fs_i64)sizeof(FS_T), sizeof(FS_T));
    if (sr) return FS_S(fs_fused_sgd_chain)(a, sr, t0, t1);
    const fs_i64 chunk = FS_FUSED_CHUNK;  /* rows per phase-1 call */
    const int nt = a->nt > 1 ? a->nt : 1;
    volatile fs_i64 bad = -1;
    /* per phase: each thread's speed, its work and time in the last minibatch, the shares */
    double speed1[nt], work1[nt], secs1[nt], cum1[nt + 1];
    double speed2[nt], work2[nt], secs2[nt], cum2[nt + 1];
    for (int i = 0; i <= nt; i++) {
        cum1[i] = cum2[i] = (double)i / nt;
        if (i < nt) speed1[i] = speed2[i] = work1[i] = work2[i] = secs1[i] = secs2[i] = 0;
    }
    int64_t arrived[FS_ARRIVED_STRIDE * nt] __attribute__((aligned(64)));  /* fs_team_barrier */
    memset(arrived, 0, sizeof arrived);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        /* the team the runtime gave (OMP_THREAD_LIMIT, OMP_DYNAMIC, nesting, a serial build
         * can make it smaller than nt): every split below is over it */
        const int team = nt > 1 ? omp_get_num_threads() : 1;
        const int me = team > 1 ? omp_get_thread_num() : 0;
        const int spin = team <= omp_get_num_procs();  /* see fs_team_barrier */
        if (team != nt) {
#pragma omp single
            for (int i = 0; i <= team; i++) cum1[i] = cum2[i] = (double)i / team;
        }
        for (fs_i64 t = t0; t < t1; t++) {
            if (bad >= 0) break;
            const fs_i64 *pos = a->perm + t * B;
            const fs_i64 bn = a->n - t * B < B ? a->n - t * B : B;
            const FS_T lr = a->lrs[t];

            /* phase 1: rows [lo, hi) */
            /* A team of one needs no timings and no barriers (libgomp's barrier made a system
             * call even then, and two a minibatch were most of an epoch of the book's
             * 10-example minibatches). */
            double start = team > 1 ? omp_get_wtime() : 0;
            if (me == 0 && t > t0 && team > 1) fs_rebalance(speed2, work2, secs2, cum2, team);
            fs_i64 lo = fs_split_at(cum1, me, team, bn, 4);
            fs_i64 hi = fs_split_at(cum1, me + 1, team, bn, 4);
            for (fs_i64 r0 = lo; r0 < hi; r0 += chunk) {
                const fs_i64 rows = hi - r0 < chunk ? hi - r0 : chunk;
                /* these rows' places in the next minibatch, if there is one */
                const fs_i64 left = a->n - (t + 1) * B - r0;
                FS_S(fs_fused_rows)(a, 0, pos, bn, r0, rows, left > 0 ? pos + B + r0 : NULL,
                                    left > 0 ? (left < rows ? left : rows) : 0);
            }
            work1[me] = (double)(hi - lo);
            if (team > 1) {
                secs1[me] = omp_get_wtime() - start;
                fs_team_barrier(arrived, me, team, 2 * (t - t0) + 1, spin);
            }

            /* phase 2: weight rows [lo, hi) */
            if (team > 1) start = omp_get_wtime();
            if (me == 0 && team > 1) fs_rebalance(speed1, work1, secs1, cum1, team);
            lo = fs_split_at(cum2, me, team, k, FS_FUSED_COLS);
            hi = fs_split_at(cum2, me + 1, team, k, FS_FUSED_COLS);
            FS_S(fs_fused_cols)(a, pos, bn, lo, hi - lo, lr);
            if (me == 0) {
                /* The bias and the batch's totals: small, serial, in a fixed order. */
                FS_S(fs_colsum)(a->G, m, bn, m, a->db);
                for (fs_i64 j = 0; j < m; j++)
                    FS_S(fs_sgd_one)(a->b + j, a->db[j], lr, (FS_T)bn, a->momentum, a->wd,
                                     a->vb ? a->vb + j : NULL);
                const double s = FS_S(fs_row_totals)(a, 0, bn, a->batch_hits + t);
                a->batch_loss[t] = s;
                if (!isfinite(s)) bad = t;
            }
            work2[me] = (double)(hi - lo) + (me == 0 ? 1 : 0);
            if (team > 1) {
                secs2[me] = omp_get_wtime() - start;
                fs_team_barrier(arrived, me, team, 2 * (t - t0) + 2, spin);
            }
        }
    }
    return bad;
}

/* How many of rows [0, rows) of Z (m columns) have their largest value in column labels[r],
 * the column NumPy's argmax picks: the first largest, or the first NaN (NaN counts as
 * largest).  The first largest is picked by selects, not branches (which of ten logits is the
 * largest so far is a coin toss for the branch predictor: 10000 rows of ten took 0.33 ms that
 * way, 0.065 ms this way); a row whose sum is NaN, and only such a row can hold a NaN, is looked
 * at again value by value. */
static fs_i64 FS_S(fs_argmax_hits)(const FS_T *Z, fs_i64 rows, fs_i64 m, const fs_i64 *labels)
{
    fs_i64 hits = 0;
    for (fs_i64 r = 0; r < rows; r++) {
        const FS_T *z = Z + r * m;
        fs_i64 best = 0;
        FS_T top = z[0], sum = z[0];
        for (fs_i64 j = 1; j < m; j++) {
            const int above = z[j] > top;
            top = above ? z[j] : top;
            best = above ? j : best;
            sum += z[j];
        }
        if (isnan(sum)) {
            best = 0;
            if (!isnan(z[0]))
                for (fs_i64 j = 1; j < m; j++) {
                    if (isnan(z[j])) {
                        best = j;
                        break;
                    }
                    if (z[j] > z[best]) best = j;
                }
        }
        hits += best == labels[r];
    }
    return hits;
}

/* Rows [r0, r1) of scale * X[idx] @ W + b (idx NULL: of X in order), a chunk at a time: gather
 * and forward in one pass, the weights in the working layout of fs_fused_sgd; xb is scratch for
 * FS_FUSED_CHUNK rows.  With `keep`, row r's outputs go to Z + (r - r0) * m; without, Z holds one
 * chunk's outputs, overwritten by the next.  With labels (labels[r - r0] for row r), returns how
 * many rows' argmax is their label (fs_argmax_hits), counted while each chunk's outputs are in
 * cache; else 0. */
static fs_i64 FS_S(fs_fused_forward)(const void *X, int x_u8, fs_i64 ldx, fs_i64 k, FS_T scale,
                                     const fs_i64 *idx, fs_i64 r0, fs_i64 r1, const FS_T *Wp,
                                     int panel, const FS_T *b, fs_i64 m, FS_T *xb, FS_T *Z,
                                     int keep, const fs_i64 *labels)
{
    fs_i64 hits = 0;
#if FS_HAVE_WIDE
    if (!panel && fs_wide()) {  /* in place, as in fs_fused_rows */
        const int mode = FS_S(fs_rows_mode)(x_u8, scale);
        const FS_S(fs_rows) all = {X, ldx, idx, mode, scale};
        const fs_i64 D = FS_PREFETCH_ROWS;
        /* Rows are requested D rows ahead, rows in order too, and across the chunks of the
         * range: with the hardware's prefetcher alone, the 10000 Fashion-MNIST test images
         * took 1.05-1.1 times as long. */
        for (fs_i64 r = r0; r < r0 + D && r < r1; r++)
            fs_prefetch_span((const char *)FS_S(fs_row)(&all, mode, r), 0,
                             k * (x_u8 ? 1 : (fs_i64)sizeof(FS_T)));
        for (fs_i64 s = r0; s < r1; s += FS_FUSED_CHUNK) {
            const fs_i64 e = r1 - s < FS_FUSED_CHUNK ? r1 : s + FS_FUSED_CHUNK;
            FS_T *z = keep ? Z + (s - r0) * m : Z;
            /* rows s.. and s + D.. of X, or of idx */
            const fs_i64 left = r1 - s - D;  /* rows past D ahead of this chunk's first */
            const fs_i64 npf = left > 0 ? (left < e - s ? left : e - s) : 0;
            const FS_S(fs_rows) src = {idx ? X : FS_S(fs_row)(&all, mode, s), ldx,
                                       idx ? idx + s : NULL, mode, scale};
            const FS_S(fs_rows) ahead = {idx || !npf ? X : FS_S(fs_row)(&all, mode, s + D), ldx,
                                         idx ? idx + s + D : NULL, mode, scale};
            FS_WIDE(fs_dot_fwd, &src, e - s, k, Wp, m, b, z, m, &ahead, npf);
            if (labels) hits += FS_S(fs_argmax_hits)(z, e - s, m, labels + (s - r0));
        }
        return hits;
    }
#endif
    for (fs_i64 s = r0; s < r1; s += FS_FUSED_CHUNK) {
        fs_i64 e = r1 - s < FS_FUSED_CHUNK ? r1 : s + FS_FUSED_CHUNK;
        FS_T *z = keep ? Z + (s - r0) * m : Z;
        if (idx) {
            FS_S(fs_gather)(X, x_u8, ldx, k, scale, idx, s, e, r1, xb, NULL, 0, 0);
        } else {
            /* in order: gather from X + s * ldx as rows 0.. */
            if (x_u8)
                FS_S(fs_gather)((const uint8_t *)X + s * ldx, 1, ldx, k, scale, NULL, 0, e - s,
                                e - s, xb, NULL, 0, 0);
            else
                FS_S(fs_gather)((const FS_T *)X + s * ldx, 0, ldx, k, scale, NULL, 0, e - s, e - s,
                                xb, NULL, 0, 0);
        }
        if (panel)
            FS_S(fs_gemm_rows)(xb, k, 1, e - s, k, Wp, m, b, z, m);
        else
            FS_S(fs_dot_fwd)(xb, k, e - s, k, Wp, m, b, z, m);
        if (labels) hits += FS_S(fs_argmax_hits)(z, e - s, m, labels + (s - r0));
    }
    return hits;
}
