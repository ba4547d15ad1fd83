/* The hand-blocked products for few outputs (m <= FS_DOT_MAX, weights transposed) and the
 * fused step's one-output rows, written once for two vector widths: fs_kernels_impl.h includes
 * this file once for AVX-512 (suffix _v4) and once for AVX2 (_v3), per element type, with
 *   FS_X(name)      the function name with its suffix,      FS_X_TARGET  its target attribute,
 *   FS_XV, FS_XVU   the vector type and its unaligned twin, FS_XL        its lanes,
 *   FS_XR           rows per forward block (5 outputs each: FS_XR * 5 accumulators),
 *   FS_XACC         the most accumulators a gradient block keeps (up to 10 outputs x 4, 2 or
 *                   1 vectors of columns: the most that fit; without FS_XGB only),
 *   FS_XONE         the most vectors of a row the fused one-output rows hold (8 or 16),
 *   FS_XREG(v)      what keeps a loaded weight vector in a register (AVX2; nothing on AVX-512),
 *   FS_XGB          1 for the weight gradient over G broadcast ahead (AVX2), 0 for the one
 *                   broadcasting each value of G as it goes (AVX-512, whose multiply-adds take a
 *                   broadcast operand),
 *   FS_XU8FMA       1 when the float forward scales uint8 rows by FS_X(fs_load_u8_scaled)'s
 *                   multiply-add (AVX2), 0 when it converts and multiplies them (AVX-512),
 * and the helpers FS_X(fs_hsum), FS_X(fs_load_first), FS_X(fs_store_first), FS_X(fs_load_u8),
 * FS_X(fs_load_u8_scaled), FS_X(fs_scale_first).  The parameters are undefined at the end,
 * ready for the next set.
 * Blocking never changes a sum: every lane sums its terms in the same order, so only the vector
 * width (the lanes each sum is split into), and in the gradient of scaled rows where the scale
 * is applied (FS_XGB), tell the two sets' results apart.
 * No include guard on purpose. */

/* The vector at p, or with n > 0 its first n values (the other lanes zero, nothing past them
 * read); and its store, all of it or its first n lanes. */
FS_X_TARGET FS_INLINE FS_XV FS_X(fs_load_part)(const FS_T *p, const unsigned n)
{
    return n ? FS_X(fs_load_first)(p, n) : *(const FS_XVU *)p;
}

FS_X_TARGET FS_INLINE void FS_X(fs_store_part)(FS_T *p, const unsigned n, FS_XV v)
{
    if (n)
        FS_X(fs_store_first)(p, n, v);
    else
        memcpy(p, &v, sizeof v);
}

/* Elements [t, t + FS_XL) of a row as stored (uint8 values converted, not scaled); with n > 0
 * only the first n of them, the other lanes zero (nothing past them is read).  And the same
 * scaled (fs_row_load), as a gather scales each value, so that the fused forward gives the bits
 * of the per-batch path.  Scaling the sums instead (once an output, not once a pixel) would
 * save the multiply: a Fashion-MNIST epoch took 0.93-0.98x as long with it skipped (AVX-512;
 * A/B, 21 epochs of each, 1 and 2 threads, twice), too little to give up those bits.  (The
 * AVX2 gradient, held to no such bits, scales its output gradients instead: FS_XGB.) */
FS_X_TARGET FS_INLINE FS_XV FS_X(fs_row_load_raw)(const void *row, const int u8, fs_i64 t,
                                                  const unsigned n)
{
    if (u8) return FS_X(fs_load_u8)((const uint8_t *)row + t, n);
    return FS_X(fs_load_part)((const FS_T *)row + t, n);
}

FS_X_TARGET FS_INLINE FS_XV FS_X(fs_row_load)(const void *row, const int mode, fs_i64 t,
                                              const unsigned n, FS_XV scale)
{
    const FS_XV v = FS_X(fs_row_load_raw)(row, mode == FS_ROWS_U8, t, n);
    if (mode == FS_ROWS_PLAIN) return v;
    return n ? FS_X(fs_scale_first)(v, scale, n) : v * scale;
}

/* Rows x[0..R) against outputs w[0..J): acc[r][j] over the first kv columns and, when `tail`,
 * the last partial vector by masked loads (a scalar tail cost as much as the vectors when k is
 * about 100).  Each step also requests the same part of rows ahead[0..R) (ahead NULL: none),
 * so the rows wanted next arrive at the pace these are read (a burst of requests stalled on
 * full fill buffers).  With `keep`, every row vector read is also stored, as read, at
 * keep + r * ks + t (the partial one zero-padded), for the passes over the other outputs.
 * With `u8fma` (uint8 rows), the full vectors are scaled by FS_X(fs_load_u8_scaled). */
FS_X_TARGET FS_INLINE void FS_X(fs_dot_fwd_block)(const void *const *x,
                                                  const char *const *ahead, const int mode,
                                                  const int u8fma, FS_XV s, FS_XV shift,
                                                  const FS_T *w0, fs_i64 k,
                                                  fs_i64 kv, int tail, const int R,
                                                  const int J, FS_XV acc[FS_XR][5], FS_T *keep,
                                                  fs_i64 ks)
{
    const fs_i64 esize = mode == FS_ROWS_U8 ? 1 : (fs_i64)sizeof(FS_T);
    FS_XV a[FS_XR][5];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) a[r][j] = (FS_XV){0};
    for (fs_i64 t = 0; t < kv; t += FS_XL) {
        FS_XV xv[FS_XR];
        for (int r = 0; r < R; r++) {
            xv[r] = u8fma ? FS_X(fs_load_u8_scaled)((const uint8_t *)x[r] + t, s, shift)
                          : FS_X(fs_row_load)(x[r], mode, t, 0, s);
            if (keep) *(FS_XV *)(keep + r * ks + t) = xv[r];
            if (ahead) FS_PREFETCH(ahead[r] + t * esize);
        }
        for (int j = 0; j < J; j++) {
            FS_XV v = *(const FS_XVU *)(w0 + j * k + t);
            FS_XREG(v);
            for (int r = 0; r < R; r++) a[r][j] += xv[r] * v;
        }
    }
    if (ahead)  /* the rest of each row ahead, past the last full vector */
        for (int r = 0; r < R; r++) fs_prefetch_span(ahead[r], kv * esize, k * esize);
    if (tail) {
        const unsigned n = (unsigned)(k - kv);
        FS_XV xv[FS_XR];
        for (int r = 0; r < R; r++) {
            xv[r] = FS_X(fs_row_load)(x[r], mode, kv, n, s);
            if (keep) *(FS_XV *)(keep + r * ks + kv) = xv[r];
        }
        for (int j = 0; j < J; j++) {
            const FS_XV v = FS_X(fs_load_first)(w0 + j * k + kv, n);
            for (int r = 0; r < R; r++) a[r][j] += xv[r] * v;
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) acc[r][j] = a[r][j];
}

/* A constant J lets the compiler keep every accumulator in a register.  Rows that are converted
 * as they are read (uint8 or scaled) are converted in the first pass over the outputs only, and
 * kept (in `kept`, FS_XR rows of ks values) for the others: the conversion shares the
 * multiply-add units, and in a Fashion-MNIST epoch the forward took 0.93 of the time converting
 * twice.  (Blocks of 2 rows x 10 outputs, one pass converting once, ran no faster in the epoch.) */
#define FS_FWD_CASE(JJ)                                                                       \
    case JJ:                                                                                  \
        if (j0 > 0 && kept)                                                                   \
            FS_X(fs_dot_fwd_block)(xk, NULL, FS_ROWS_PLAIN, 0, s, s, w0, k, kv, tail, FS_XR,  \
                                   JJ, acc, NULL, 0);                                         \
        else                                                                                  \
            FS_X(fs_dot_fwd_block)(x, req, mode, u8fma, s, shift, w0, k, kv, tail, FS_XR, JJ, \
                                   acc, kept, ks);                                            \
        break;
FS_X_TARGET FS_INLINE void FS_X(fs_dot_fwd_body)(const FS_S(fs_rows) *src, const int mode,
                                                 const int u8fma, fs_i64 rows, fs_i64 k,
                                                 const FS_T *Wt, fs_i64 m, const FS_T *bias,
                                                 FS_T *C, fs_i64 c_rs,
                                                 const FS_S(fs_rows) *pf, fs_i64 npf,
                                                 FS_T *kept, fs_i64 ks)
{
    const fs_i64 kv = k - k % FS_XL;
    const FS_XV s = (FS_XV){0} + src->scale;
    const FS_XV shift = s * (FS_T)-0x1p23;  /* for FS_X(fs_load_u8_scaled) */
    /* Rows shorter than a vector are summed in order, as NumPy does (so 1e30 - 1e30 + 1 stays
     * 1); longer ones take their last partial vector by masked loads. */
    const int tail = kv > 0 && kv < k;
    const void *xk[FS_XR];  /* the kept rows */
    for (int r = 0; r < FS_XR; r++) xk[r] = kept ? kept + r * ks : NULL;
    for (fs_i64 i = 0; i < rows; i += FS_XR) {
        const int R = rows - i < FS_XR ? (int)(rows - i) : FS_XR;
        const void *x[FS_XR];  /* rows past R repeat row i and are thrown away */
        const char *ahead[FS_XR];
        for (int r = 0; r < FS_XR; r++) {
            x[r] = FS_S(fs_row)(src, mode, i + (r < R ? r : 0));
            /* no row to request: request this one again, which is in cache */
            ahead[r] = (const char *)(i + r < npf ? FS_S(fs_row)(pf, mode, i + r) : x[r]);
        }
        for (fs_i64 j0 = 0; j0 < m; j0 += 5) {
            const int J = m - j0 < 5 ? (int)(m - j0) : 5;
            const FS_T *w0 = Wt + j0 * k;
            /* the rows ahead are requested in the first pass over these rows only */
            const char *const *req = j0 == 0 && i < npf ? ahead : NULL;
            FS_XV acc[FS_XR][5];
            switch (J) {
            FS_FWD_CASE(5) FS_FWD_CASE(4) FS_FWD_CASE(3) FS_FWD_CASE(2) default: FS_FWD_CASE(1)
            }
            for (int r = 0; r < R; r++)
                for (int jj = 0; jj < J; jj++) {
                    FS_T v = FS_X(fs_hsum)(acc[r][jj]);
                    if (kv == 0) {  /* explicit multiply-adds: the same for every mode */
                        const FS_T *w = w0 + jj * k;
                        for (fs_i64 t = 0; t < k; t++)
                            v = FS_FMA(FS_S(fs_row_value)(x[r], mode, t, src->scale), w[t], v);
                    }
                    C[(i + r) * c_rs + j0 + jj] = (bias ? bias[j0 + jj] : 0) + v;
                }
        }
    }
}
#undef FS_FWD_CASE

/* C[i, j] = bias[j] + row i . Wt[j, :] for `rows` rows of src and all m outputs; rows [0, npf)
 * of pf (NULL: none) are requested from memory on the way. */
FS_X_TARGET static void FS_X(fs_dot_fwd)(const FS_S(fs_rows) *src, fs_i64 rows, fs_i64 k,
                                         const FS_T *Wt, fs_i64 m, const FS_T *bias,
                                         FS_T *C, fs_i64 c_rs, const FS_S(fs_rows) *pf,
                                         fs_i64 npf)
{
    if (!pf) npf = 0;
    /* Converted rows are kept for a second pass over the outputs when there is one and a block
     * of them (the vectors past the last full one included) fits in the buffer, on the stack
     * and in L1 beside the weights of one pass (5 x 784 floats for Fashion-MNIST). */
    FS_T kept[FS_FWD_KEEP / sizeof(FS_T)] __attribute__((aligned(64)));
    const fs_i64 ks = (k + FS_XL - 1) / FS_XL * FS_XL;
    FS_T *const keep = m > 5 && k >= FS_XL && FS_XR * ks * (fs_i64)sizeof(FS_T) <= FS_FWD_KEEP
                           ? kept : NULL;
    /* One copy of the loops per way of reading rows, so none tests the mode per element. */
    switch (src->mode) {
    case FS_ROWS_U8:
        if (FS_XU8FMA && sizeof(FS_T) == 4 && src->scale > 0 && src->scale < (FS_T)0x1p104)
            FS_X(fs_dot_fwd_body)(src, FS_ROWS_U8, 1, rows, k, Wt, m, bias, C, c_rs, pf, npf,
                                  keep, ks);
        else
            FS_X(fs_dot_fwd_body)(src, FS_ROWS_U8, 0, rows, k, Wt, m, bias, C, c_rs, pf, npf,
                                  keep, ks);
        break;
    case FS_ROWS_SCALED:
        FS_X(fs_dot_fwd_body)(src, FS_ROWS_SCALED, 0, rows, k, Wt, m, bias, C, c_rs, pf, npf,
                              keep, ks);
        break;
    default:  /* nothing to convert */
        FS_X(fs_dot_fwd_body)(src, FS_ROWS_PLAIN, 0, rows, k, Wt, m, bias, C, c_rs, pf, npf,
                              NULL, ks);
        break;
    }
}

#if !FS_XGB
/* dWt[j0 + j, c ..) (+)= sum_i G[i, j0 + j] * X[i, c ..] over V vectors of columns, i in order;
 * with `tail` > 0 the one vector (V = 1) covers only `tail` columns, by masked loads and
 * stores.  Each lane is one element's own chain of sums, so how columns are blocked never
 * changes a result; blocks give J * V (up to FS_XACC) independent chains, which few outputs need:
 * one output and one vector would wait on a single chain of dependent multiply-adds. */
FS_X_TARGET FS_INLINE void FS_X(fs_dot_bwd_block)(const FS_S(fs_rows) *src, const int mode,
                                                  FS_XV s, fs_i64 n, fs_i64 c, const FS_T *G,
                                                  fs_i64 ldg, fs_i64 j0, const int J,
                                                  const int V, const unsigned tail,
                                                  FS_T *dWt, fs_i64 ldw, fs_i64 pf_end)
{
    /* With pf_end > 0 (phase 2: rows come from anywhere, from another core's cache when another
     * thread read them in phase 1) each row's part two blocks of columns on, if it is before
     * column pf_end, and this block's part of the row FS_BWD_ROWS_AHEAD rows on are requested
     * into L1 on the way.  Measured in one process on Fashion-MNIST (2 threads, medians of 11
     * alternating epochs): the row ahead alone 0.91 of the time with parts four blocks on,
     * 0.89 with two (1, 3: the same; eight 1.09); 0.97 on 1 thread.  (Into L2 instead of L1,
     * the epoch ran about 15% slower; past the row, requests only cost bandwidth.) */
    const fs_i64 esize = mode == FS_ROWS_U8 ? 1 : (fs_i64)sizeof(FS_T);
    int ask[4];
    for (int v = 0; v < V; v++) ask[v] = c + (2 * V + v) * FS_XL < pf_end;
    FS_XV a[10][4];
    for (int j = 0; j < 10; j++)
        for (int v = 0; v < 4; v++) a[j][v] = (FS_XV){0};
    for (fs_i64 i = 0; i < n; i++) {
        const void *x = FS_S(fs_row)(src, mode, i);
        const FS_T *g = G + i * ldg + j0;
        FS_XV xv[4];
        for (int v = 0; v < V; v++) {
            xv[v] = FS_X(fs_row_load)(x, mode, c + v * FS_XL, tail, s);
            if (ask[v])
                __builtin_prefetch((const char *)x + (c + (2 * V + v) * FS_XL) * esize, 0, 3);
        }
        if (pf_end && i + FS_BWD_ROWS_AHEAD < n) {
            const char *next = (const char *)FS_S(fs_row)(src, mode, i + FS_BWD_ROWS_AHEAD);
            for (int v = 0; v < V; v++) __builtin_prefetch(next + (c + v * FS_XL) * esize, 0, 3);
        }
        for (int j = 0; j < J; j++)
            for (int v = 0; v < V; v++) a[j][v] += g[j] * xv[v];
    }
    for (int j = 0; j < J; j++)
        for (int v = 0; v < V; v++)
            FS_X(fs_store_part)(dWt + (j0 + j) * ldw + c + v * FS_XL, tail, a[j][v]);
}

#define FS_BWD_CASE(JJ, V, T)                                                                 \
    case JJ: FS_X(fs_dot_bwd_block)(src, mode, s, n, c, G, ldg, j0, JJ, V, T, dWt, ldw,        \
                                    pf_end); break;
#define FS_BWD_CASES(V, T)                                                                    \
    switch (J) {                                                                              \
    FS_BWD_CASE(10, V, T) FS_BWD_CASE(9, V, T) FS_BWD_CASE(8, V, T) FS_BWD_CASE(7, V, T)      \
    FS_BWD_CASE(6, V, T) FS_BWD_CASE(5, V, T) FS_BWD_CASE(4, V, T) FS_BWD_CASE(3, V, T)       \
    FS_BWD_CASE(2, V, T) default: FS_X(fs_dot_bwd_block)(src, mode, s, n, c, G, ldg, j0, 1,   \
                                                         V, T, dWt, ldw, pf_end); break;      \
    }

FS_X_TARGET FS_INLINE void FS_X(fs_dot_bwd_body)(const FS_S(fs_rows) *src, const int mode,
                                                 fs_i64 n, fs_i64 k0, fs_i64 kw,
                                                 const FS_T *G, fs_i64 ldg, fs_i64 m,
                                                 FS_T *dWt, fs_i64 ldw, fs_i64 pf_end)
{
    const fs_i64 end = k0 + kw;
    const FS_XV s = (FS_XV){0} + src->scale;
    for (fs_i64 j0 = 0; j0 < m; j0 += 10) {
        const int J = m - j0 < 10 ? (int)(m - j0) : 10;
        fs_i64 c = k0;
        if (4 * J <= FS_XACC)
            for (; c + 4 * FS_XL <= end; c += 4 * FS_XL) FS_BWD_CASES(4, 0)
        if (2 * J <= FS_XACC)
            for (; c + 2 * FS_XL <= end; c += 2 * FS_XL) FS_BWD_CASES(2, 0)
        for (; c + FS_XL <= end; c += FS_XL) FS_BWD_CASES(1, 0)
        if (c < end) {
            const unsigned tail = (unsigned)(end - c);
            FS_BWD_CASES(1, tail)
        }
    }
}
#undef FS_BWD_CASE
#undef FS_BWD_CASES
#else
/* The weight gradient on AVX2, which has no broadcast operand: each g[i, j] * x[i, c..] of the
 * blocks above took a broadcast of its own, besides the conversion and scaling of x.  Here the
 * values of G are broadcast once, FS_GB_ROWS rows at a time, into gb (in L1), and a block of up
 * to 5 outputs x 2 vectors of columns runs over those rows: each row's vectors are loaded and
 * converted once per 5 outputs, each broadcast value loaded once per 2 vectors.  The scale of
 * scaled or uint8 rows goes into the broadcast values (g * scale, once a row and output)
 * rather than into every pixel (x * scale), which leaves the multiply-add units to the
 * multiply-adds.  So the products are (g * scale) * x where the blocks above compute
 * g * (x * scale): the same sums in the same order, one rounding apart in each term (the
 * forward, which the per-batch path must match to the bit, still scales the pixels).  From
 * cache, uint8 rows of Fashion-MNIST: 1.3x as fast as the blocks above (37 against 28.5 billion
 * multiply-adds a second on one core of an AMD EPYC, Zen 2), of which the scale moved into gb
 * 1.2x; the epoch 0.90 of the time on one thread, 0.93 on two.  Chunks of 16 rows ran 1.1x as
 * long, 64 the same as 32.  The sums go from chunk to chunk through a buffer on the stack, a
 * panel of columns at a time, and into dWt once at the end.  Carried in dWt itself, they made
 * the epoch 1.2-1.3x as long as with the previous gradient at times (for minutes on end, as the
 * host placed the two cores), when two threads ran this product alone at 44-46 billion
 * multiply-adds a second together, against 69 writing separate arrays: presumably as lines
 * next to each other in dWt belong to different threads.  The function's stack frame is then
 * about 38 KB (gb, sums and the row pointers), within any thread's stack here. */
#define FS_GB_ROWS 32
#define FS_GB_SUMS 32768 /* bytes of a panel's sums (fs_dot_bwd_body) */
FS_X_TARGET FS_INLINE void FS_X(fs_dot_bwd_gb_block)(const void *const *x, const int u8,
                                                     const int rows, fs_i64 c, const FS_XV *gb,
                                                     const int J, const int V,
                                                     const unsigned tail, FS_T *S, fs_i64 lds,
                                                     fs_i64 j0, const int first,
                                                     const fs_i64 ask_at)
{
    FS_XV a[5][2];
    for (int j = 0; j < J; j++)
        for (int v = 0; v < V; v++)
            a[j][v] = first ? (FS_XV){0}
                            : FS_X(fs_load_part)(S + (j0 + j) * lds + c + v * FS_XL, tail);
    for (int r = 0; r < rows; r++) {
        FS_XV xv[2];
        if (ask_at >= 0) __builtin_prefetch((const char *)x[r] + ask_at, 0, 3);
        for (int v = 0; v < V; v++) xv[v] = FS_X(fs_row_load_raw)(x[r], u8, c + v * FS_XL, tail);
        for (int j = 0; j < J; j++) {
            FS_XV g = gb[r * 5 + j];
            FS_XREG(g);
            for (int v = 0; v < V; v++) a[j][v] += g * xv[v];
        }
    }
    for (int j = 0; j < J; j++)
        for (int v = 0; v < V; v++)
            FS_X(fs_store_part)(S + (j0 + j) * lds + c + v * FS_XL, tail, a[j][v]);
}

/* A constant J and V, as in the forward.  With pf_end > 0 (phase 2: rows read by another thread
 * in phase 1 come from its core's cache), the first pass over a chunk of rows requests each
 * row's part 4 blocks on, if it is before column pf_end: about 1.02x as fast on two threads. */
#define FS_GB_CASE(JJ, V, T)                                                                  \
    case JJ:                                                                                  \
        FS_X(fs_dot_bwd_gb_block)(xc, u8, rows, c, gb, JJ, V, T, sums, pw, j0, i0 == 0,      \
                                  j0 == 0 && p0 + c + 8 * FS_XL < pf_end                      \
                                      ? (c + 8 * FS_XL) * esize : -1);                        \
        break;
#define FS_GB_CASES(V, T)                                                                     \
    switch (J) {                                                                              \
    FS_GB_CASE(5, V, T) FS_GB_CASE(4, V, T) FS_GB_CASE(3, V, T) FS_GB_CASE(2, V, T)           \
    default: FS_GB_CASE(1, V, T)                                                              \
    }
FS_X_TARGET FS_INLINE void FS_X(fs_dot_bwd_body)(const FS_S(fs_rows) *src, const int mode,
                                                 fs_i64 n, fs_i64 k0, fs_i64 kw,
                                                 const FS_T *G, fs_i64 ldg, fs_i64 m,
                                                 FS_T *dWt, fs_i64 ldw, fs_i64 pf_end)
{
    const int u8 = mode == FS_ROWS_U8;
    const fs_i64 esize = u8 ? 1 : (fs_i64)sizeof(FS_T);
    const FS_T scale = src->scale;
    FS_XV gb[FS_GB_ROWS * 5];
    FS_T sums[FS_GB_SUMS / sizeof(FS_T)] __attribute__((aligned(64)));
    const void *x[FS_GB_ROWS], *xc[FS_GB_ROWS];
    /* columns per panel: all m outputs' sums of a panel fit `sums` (m x pw) */
    const fs_i64 P = (fs_i64)(FS_GB_SUMS / sizeof(FS_T)) / m / (2 * FS_XL) * (2 * FS_XL);
    for (fs_i64 p0 = k0; p0 < k0 + kw; p0 += P) {
        const fs_i64 pw = k0 + kw - p0 < P ? k0 + kw - p0 : P;
        if (n == 0) memset(sums, 0, sizeof(FS_T) * (size_t)(m * pw));  /* an empty sum */
        for (fs_i64 i0 = 0; i0 < n; i0 += FS_GB_ROWS) {
            const int rows = n - i0 < FS_GB_ROWS ? (int)(n - i0) : FS_GB_ROWS;
            for (int r = 0; r < rows; r++) {
                x[r] = FS_S(fs_row)(src, mode, i0 + r);
                xc[r] = (const char *)x[r] + p0 * esize;  /* the panel's first column */
            }
            for (fs_i64 j0 = 0; j0 < m; j0 += 5) {
                const int J = m - j0 < 5 ? (int)(m - j0) : 5;
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < J; j++) {
                        const FS_T g = G[(i0 + r) * ldg + j0 + j];
                        gb[r * 5 + j] = (FS_XV){0} + (mode == FS_ROWS_PLAIN ? g : g * scale);
                    }
                fs_i64 c = 0;  /* columns from p0 */
                for (; c + 2 * FS_XL <= pw; c += 2 * FS_XL) FS_GB_CASES(2, 0)
                for (; c + FS_XL <= pw; c += FS_XL) FS_GB_CASES(1, 0)
                if (c < pw) {
                    const unsigned tail = (unsigned)(pw - c);
                    FS_GB_CASES(1, tail)
                }
            }
        }
        for (fs_i64 j = 0; j < m; j++)
            memcpy(dWt + j * ldw + p0, sums + j * pw, sizeof(FS_T) * (size_t)pw);
    }
}
#undef FS_GB_CASE
#undef FS_GB_CASES
#undef FS_GB_ROWS
#undef FS_GB_SUMS
#endif

/* dWt[j, c] = sum_i G[i, j] * (row i of src)[c] for c in [k0, k0 + kw), i in order; rows'
 * columns before pf_end (rows not in cache: k0 + kw; else 0) are requested ahead. */
FS_X_TARGET static void FS_X(fs_dot_bwd)(const FS_S(fs_rows) *src, fs_i64 n, fs_i64 k0,
                                         fs_i64 kw, const FS_T *G, fs_i64 ldg, fs_i64 m,
                                         FS_T *dWt, fs_i64 ldw, fs_i64 pf_end)
{
    switch (src->mode) {
    case FS_ROWS_U8:
        FS_X(fs_dot_bwd_body)(src, FS_ROWS_U8, n, k0, kw, G, ldg, m, dWt, ldw, pf_end);
        break;
    case FS_ROWS_SCALED:
        FS_X(fs_dot_bwd_body)(src, FS_ROWS_SCALED, n, k0, kw, G, ldg, m, dWt, ldw, pf_end);
        break;
    default:
        FS_X(fs_dot_bwd_body)(src, FS_ROWS_PLAIN, n, k0, kw, G, ldg, m, dWt, ldw, pf_end);
        break;
    }
}

/* Shuffled chunks of fs_fused_one_body (below), in two passes.  First the outputs and losses,
 * two rows at a time (each row's sum as in fs_dot_fwd, the two sums' steps interleaved), each row
 * requesting the one FS_ONE_AHEAD rows further on, with its target: past the chunk's end, the
 * same places in the next minibatch (pf, rows [0, npf)), so that every chunk's first rows were
 * requested a minibatch before.  Then the chunk's gradient share, rows in order, from cache. */
#define FS_ONE_AHEAD 8
/* The lanes of a row's last vector, all of them (FS_XL) when k fills it: that vector is loaded
 * and stored through the same mask either way, with no test of k in the loops. */
FS_X_TARGET FS_INLINE unsigned FS_X(fs_last_lanes)(fs_i64 k)
{
    return k % FS_XL ? (unsigned)(k % FS_XL) : FS_XL;
}

FS_X_TARGET FS_INLINE void FS_X(fs_one_request)(const FS_S(fs_rows) *src,
                                                const FS_S(fs_rows) *pf, const int mode,
                                                const FS_T *targets, fs_i64 r, fs_i64 rows,
                                                fs_i64 npf, fs_i64 row_bytes, const int NV)
{
    if (r >= rows) {
        r -= rows;
        if (r >= npf) return;
        src = pf;
    }
    const char *p = (const char *)FS_S(fs_row)(src, mode, r);
    /* fs_prefetch_span with a count known at compile time, so the loop unrolls (this pass's
     * instructions are what its rows wait on besides memory): lines 64 q for q < NV vectors'
     * bytes / 64, all of them below (NV - 1) vectors' bytes < row_bytes, then the last byte. */
    for (int q = 0; q < (NV * (int)sizeof(FS_XV) + 63) / 64; q++) FS_PREFETCH(p + 64 * q);
    FS_PREFETCH(p + row_bytes - 1);
    FS_PREFETCH(targets + src->idx[r]);
}

FS_X_TARGET FS_INLINE void FS_X(fs_one_forward)(const FS_S(fs_fused_args) *a,
                                                const FS_S(fs_rows) *src,
                                                const FS_S(fs_rows) *pf, const int mode,
                                                const fs_i64 *pos, fs_i64 r, const int R,
                                                fs_i64 rows, fs_i64 npf, const FS_XV *w,
                                                FS_XV s, unsigned last, FS_T bias, FS_T *Z,
                                                FS_T *G, FS_T *rowloss, fs_i64 *rowhit,
                                                const int NV)
{
    const fs_i64 row_bytes = a->k * (fs_i64)sizeof(FS_T);
    const void *x[2];
    FS_XV acc[2];
    for (int i = 0; i < R; i++) {
        x[i] = FS_S(fs_row)(src, mode, r + i);
        acc[i] = (FS_XV){0};
        FS_X(fs_one_request)(src, pf, mode, a->targets, r + i + FS_ONE_AHEAD, rows, npf,
                             row_bytes, NV);
    }
    for (int v = 0; v < NV; v++)
        for (int i = 0; i < R; i++)
            acc[i] += FS_X(fs_row_load)(x[i], mode, v * FS_XL, v == NV - 1 ? last : 0,
                                        s) * w[v];
    for (int i = 0; i < R; i++) {
        Z[r + i] = bias + FS_X(fs_hsum)(acc[i]);
        rowloss[r + i] = FS_S(fs_regression_row)(Z + r + i, a->targets + pos[r + i], 1,
                                                 a->loss == FS_LOSS_HUBER, a->delta, G + r + i);
        rowhit[r + i] = 0;
    }
}

/* The loops over the vectors unroll early (the pragmas): otherwise GCC kept the sums in memory,
 * loading and storing each one for every row (39 instructions a row of 100 floats against 14,
 * callgrind). */
FS_X_TARGET FS_INLINE void FS_X(fs_one_gradient)(const FS_S(fs_rows) *src, const int mode,
                                                 fs_i64 rows, const FS_T *G, FS_XV s,
                                                 unsigned last, FS_T *share, const int NV)
{
    const FS_T *X = (const FS_T *)src->X;
    const fs_i64 ldx = src->ldx, *idx = src->idx;
    FS_XV sum[FS_XONE];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) sum[v] = (FS_XV){0};
    for (fs_i64 r = 0; r < rows; r++) {
        const FS_T *x = X + idx[r] * ldx;
        const FS_T g = G[r];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            sum[v] += g * FS_X(fs_row_load)(x, mode, v * FS_XL, v == NV - 1 ? last : 0,
                                            s);
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++)
        FS_X(fs_store_part)(share + v * FS_XL, v == NV - 1 ? last : 0, sum[v]);
}

FS_X_TARGET FS_INLINE void FS_X(fs_fused_one_shuffled)(const FS_S(fs_fused_args) *a,
                                                       const FS_S(fs_rows) *src,
                                                       const int mode, fs_i64 r0, fs_i64 rows,
                                                       const fs_i64 *pos,
                                                       const FS_S(fs_rows) *pf, fs_i64 npf,
                                                       FS_T *share, const int NV)
{
    const fs_i64 k = a->k;
    const unsigned last = FS_X(fs_last_lanes)(k);
    const FS_XV s = (FS_XV){0} + src->scale;
    const FS_T bias = a->b[0];
    FS_T *Z = a->Z + r0, *G = a->G + r0, *rowloss = a->rowloss + r0;
    fs_i64 *rowhit = a->rowhit + r0;
    FS_XV w[FS_XONE];
    for (int v = 0; v < NV; v++)
        w[v] = FS_X(fs_load_part)(a->Wp + v * FS_XL, v == NV - 1 ? last : 0);
    fs_i64 r = 0;
    for (; r + 2 <= rows; r += 2)
        FS_X(fs_one_forward)(a, src, pf, mode, pos, r, 2, rows, npf, w, s, last, bias, Z, G,
                             rowloss, rowhit, NV);
    if (r < rows)
        FS_X(fs_one_forward)(a, src, pf, mode, pos, r, 1, rows, npf, w, s, last, bias, Z, G,
                             rowloss, rowhit, NV);
    FS_X(fs_one_gradient)(src, mode, rows, G, s, last, share, NV);
}

/* Phase 1 of the chunk rows [r0, r0 + rows) for one output and a regression loss: each row's
 * output, loss and part of the chunk's share of the weight gradient.  The sums are those of
 * fs_dot_fwd here, term for term, and so are the bits (and those of the gradient blocks without
 * FS_XGB; with it, scaled rows' terms are one rounding apart, see there: which of the two runs
 * depends only on k and m, never on the threads).
 * Rows in order (an epoch without shuffling) are read once, held in registers (NV vectors, the
 * last one partial when k is not a multiple of the vector), each row's successor in the next
 * minibatch requested on the way with its target; the hardware's prefetcher follows them too.
 * Shuffled rows wait on memory, whose random lines come in at a rate set by how many requests
 * are in flight; the loop's own instructions there stall it more than their count suggests.
 * So they take fs_fused_one_shuffled: a forward pass of few instructions a row that requests
 * rows 8 ahead, then the gradient from cache.  On the 1,000,000 x 100 epoch (C harness, AMD EPYC
 * Zen 2, medians of 5 turns of 5 epochs, bits unchanged): 84.7 ms on one thread against 95.1
 * for one pass, 46.4 against 49.3 on two; the rows in order took 45-48 ms in two passes against
 * 34 in one.  Each change alone gave less: the two passes requesting a minibatch ahead
 * 0.98-0.99x, one pass requesting 16 rows ahead 0.96-0.99x.  Against 8 rows ahead, 12, 16 or 24
 * took 1.01-1.04x as long; with requests 16 ahead on two threads, rows one at a time 1.13x and
 * three at a time 1.06x of two; requests spread over the vectors' loads 1.15-1.19x.  The loop in
 * benches/native/machine_bounds.c (one pass, requests a minibatch ahead, only the arithmetic)
 * took 44.2-44.7 ms on two threads and 88 on one in the same hour: the compiled epoch, which
 * took 0.90-1.16x that loop's time before, now takes 1.04x on two threads and 0.96x on one.
 * Tried before, with one pass for every chunk: reading each row once rather than three passes
 * over the chunk, a fifth faster; requesting each row's successor in the next minibatch with
 * its target, up to 6% faster.  In that loop, requests a minibatch ahead into L1 instead took
 * 1.27-1.31x as long (fill buffers), for the first line or two of each row only (leaving the
 * rest to the hardware prefetcher) 1.4x, non-temporal ones 8 to 32 rows ahead 1.24-1.77x, none
 * at all 1.8x; also requesting each row into L1 4 rows before its use, 0.98-1.04x; rows in
 * pairs 0.94-0.97x there, but 0.99-1.02x in the one pass here.
 * SHORT rows (k < FS_XL, NV 1: the book's two features) are summed as fs_dot_fwd_body and
 * fs_dot_bwd_body sum them, which ran them before (same bits): those functions' blocks of rows
 * and outputs cost 3600 instructions a minibatch of the book's 1000 x 2 in tens (callgrind)
 * against 1600 here, and an epoch 35 us on one thread against 13 (a C harness, in turns). */
FS_X_TARGET FS_INLINE void FS_X(fs_fused_one_body)(const FS_S(fs_fused_args) *a,
                                                   const FS_S(fs_rows) *src, const int mode,
                                                   fs_i64 r0, fs_i64 rows, const fs_i64 *pos,
                                                   const FS_S(fs_rows) *pf, fs_i64 npf,
                                                   FS_T *share, const int NV,
                                                   const int SHORT)
{
    if (!SHORT && !fs_idx_in_order(src->idx, rows)) {
        FS_X(fs_fused_one_shuffled)(a, src, mode, r0, rows, pos, pf, npf, share, NV);
        return;
    }
    const fs_i64 k = a->k;
    const unsigned tail = (unsigned)(k % FS_XL);
    const fs_i64 row_bytes = k * (mode == FS_ROWS_U8 ? 1 : (fs_i64)sizeof(FS_T));
    /* locals, not a->...: the stores below could alias the arguments as far as the compiler
     * knows, and it would read them again for every row */
    const FS_T scale = src->scale, bias = a->b[0], delta = a->delta, *w0 = a->Wp;
    const FS_XV s = (FS_XV){0} + scale;
    const int huber = a->loss == FS_LOSS_HUBER;
    const FS_T *targets = a->targets;
    FS_T *Z = a->Z + r0, *G = a->G + r0, *rowloss = a->rowloss + r0;
    fs_i64 *rowhit = a->rowhit + r0;
    FS_XV w[FS_XONE], sum[FS_XONE];
    for (int v = 0; v < NV; v++) {
        w[v] = FS_X(fs_load_part)(w0 + v * FS_XL, v == NV - 1 ? tail : 0);
        sum[v] = (FS_XV){0};
    }
    for (fs_i64 r = 0; r < rows; r++) {
        const void *x = FS_S(fs_row)(src, mode, r);
        if (r < npf) {  /* and its target, a random place in an array of n */
            fs_prefetch_span((const char *)FS_S(fs_row)(pf, mode, r), 0, row_bytes);
            FS_PREFETCH(targets + pf->idx[r]);
        }
        FS_XV xv[FS_XONE];
        if (SHORT) {  /* fs_dot_fwd_body's sum in order */
            FS_T z = 0;
            for (fs_i64 t = 0; t < k; t++)
                z = FS_FMA(FS_S(fs_row_value)(x, mode, t, scale), w0[t], z);
            Z[r] = bias + z;
        } else {
            FS_XV acc = (FS_XV){0};
            for (int v = 0; v < NV; v++) {
                xv[v] = FS_X(fs_row_load)(x, mode, v * FS_XL, tail && v == NV - 1 ? tail : 0,
                                          s);
                acc += xv[v] * w[v];
            }
            Z[r] = bias + FS_X(fs_hsum)(acc);
        }
        rowloss[r] = FS_S(fs_regression_row)(Z + r, targets + pos[r], 1, huber, delta, G + r);
        rowhit[r] = 0;
        const FS_T g = G[r];
        if (SHORT) {  /* fs_dot_bwd_body's partial vector */
#if FS_XGB
            FS_XV gv = (FS_XV){0} + (mode == FS_ROWS_PLAIN ? g : g * scale);
            FS_XREG(gv);
            sum[0] += gv * FS_X(fs_row_load_raw)(x, 0, 0, tail);
#else
            sum[0] += g * FS_X(fs_row_load)(x, mode, 0, tail, s);
#endif
        } else {
            for (int v = 0; v < NV; v++) sum[v] += g * xv[v];
        }
    }
    for (int v = 0; v < NV; v++)
        FS_X(fs_store_part)(share + v * FS_XL, v == NV - 1 ? tail : 0, sum[v]);
}

/* The above for rows of up to FS_XONE vectors (128 floats, 64 doubles), with NV, SHORT and the
 * row mode as constants, so that every loop unrolls; returns 0 (nothing done) for other shapes.
 * uint8 rows are among those: they never take shares (fs_fused_share_rows), so they never come
 * here. */
#define FS_ONE_CASE(NV)                                                                       \
    case NV: FS_X(fs_fused_one_body)(a, src, MODE, r0, rows, pos, pf, npf, share, NV, 0); break;
#if FS_XONE > 8
#define FS_ONE_CASES_PAST_8                                                                   \
    FS_ONE_CASE(8) FS_ONE_CASE(9) FS_ONE_CASE(10) FS_ONE_CASE(11) FS_ONE_CASE(12)             \
    FS_ONE_CASE(13) FS_ONE_CASE(14) FS_ONE_CASE(15) default: FS_ONE_CASE(16)
#else
#define FS_ONE_CASES_PAST_8 default: FS_ONE_CASE(8)
#endif
#define FS_ONE_MODE(M)                                                                        \
    {                                                                                         \
        const int MODE = M;                                                                   \
        switch (nv) {                                                                         \
        FS_ONE_CASE(1) FS_ONE_CASE(2) FS_ONE_CASE(3) FS_ONE_CASE(4) FS_ONE_CASE(5)            \
        FS_ONE_CASE(6) FS_ONE_CASE(7) FS_ONE_CASES_PAST_8                                     \
        }                                                                                     \
    }
FS_X_TARGET static int FS_X(fs_fused_one)(const FS_S(fs_fused_args) *a,
                                          const FS_S(fs_rows) *src, fs_i64 r0, fs_i64 rows,
                                          const fs_i64 *pos, const FS_S(fs_rows) *pf,
                                          fs_i64 npf, FS_T *share)
{
    const fs_i64 nv = (a->k + FS_XL - 1) / FS_XL;
    if (a->m != 1 || a->loss == FS_LOSS_SOFTMAX_XENT || a->k < 1 || nv > FS_XONE ||
        src->mode == FS_ROWS_U8)
        return 0;
    if (a->k < FS_XL) {
        if (src->mode == FS_ROWS_SCALED)
            FS_X(fs_fused_one_body)(a, src, FS_ROWS_SCALED, r0, rows, pos, pf, npf, share, 1, 1);
        else
            FS_X(fs_fused_one_body)(a, src, FS_ROWS_PLAIN, r0, rows, pos, pf, npf, share, 1, 1);
    } else if (src->mode == FS_ROWS_SCALED)
        FS_ONE_MODE(FS_ROWS_SCALED)
    else
        FS_ONE_MODE(FS_ROWS_PLAIN)
    return 1;
}
#undef FS_ONE_MODE
#undef FS_ONE_CASES_PAST_8
#undef FS_ONE_CASE

#undef FS_X
#undef FS_X_TARGET
#undef FS_XV
#undef FS_XVU
#undef FS_XL
#undef FS_XR
#undef FS_XACC
#undef FS_XONE
#undef FS_XREG
#undef FS_XGB
#undef FS_XU8FMA
