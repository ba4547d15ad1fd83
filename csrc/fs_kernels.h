/* fastshallow's C inner loops, included by src/fastshallow/_kernels.pyx.
 *
 * These functions trust their caller: the Python wrappers in fastshallow/kernels.py have already
 * checked shapes, dtypes, index ranges and sizes.  Nothing here allocates or fails.
 *
 * Threading lives in the Cython caller (prange over fixed-size chunks), so every function below
 * works on one chunk and is deterministic on its own: the bits of a result never depend on how
 * many threads ran.
 *
 * The float and double versions are stamped out from fs_kernels_impl.h ("C templates").
 */
#ifndef FS_KERNELS_H
#define FS_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>

#ifdef _OPENMP
#include <omp.h>
#define FS_OPENMP 1
#else
#define FS_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_procs(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline double omp_get_wtime(void) { return 0; }
#endif

/* Run-time ISA dispatch: the hot loops are compiled three times, for x86-64-v4 (AVX-512),
 * x86-64-v3 (AVX2 + FMA) and the baseline, and the loader picks one (an ifunc) by the CPU's
 * features.  Wheels stay portable without -march=native.  ("arch=haswell" would not do: its
 * resolver asks for that CPU model, so newer CPUs fall back to the baseline.)  The v4 clones
 * made a Fashion-MNIST epoch about 7% faster and a loader epoch 10-20% faster here than the
 * v3 ones.  The few-output matrix products and the fused step's reads besides have
 * hand-blocked kernels for each of v4 and v3 (fs_kernels_wide.h), chosen by fs_use_v4 and
 * fs_use_v3; the panel products have an AVX-512 one.  All of it needs GCC 12 or later on
 * x86-64 (FS_HAVE_WIDE); other builds run the portable loops as compiled. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FS_HAVE_WIDE 1
#else
#define FS_HAVE_WIDE 0
#endif
#if FS_HAVE_WIDE
#define FS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FS_CLONES
#endif
#define FS_INLINE static inline __attribute__((always_inline))

/* The hand-blocked kernels, chosen at run time: AVX-512 (x86-64-v4) where the CPU has it and
 * FASTSHALLOW_NO_AVX512 is not set, else AVX2 (x86-64-v3) where the CPU has that and
 * FASTSHALLOW_NO_AVX2 is not set (which keeps both out: the portable loops run, in the clone
 * target_clones picks for the CPU).  The tests set these to run the paths below the CPU's. */
#if FS_HAVE_WIDE
#define FS_V4_TARGET __attribute__((target("arch=x86-64-v4")))
#include <immintrin.h> /* usable in FS_V4_TARGET and FS_V3_TARGET functions only */
#include <stdlib.h>
static int fs_env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v && *v != '0';
}
static int fs_v4_state = -1, fs_v3_state = -1;
static int fs_use_v3(void)
{
    if (fs_v3_state < 0) {
        __builtin_cpu_init();
        fs_v3_state = __builtin_cpu_supports("x86-64-v3") && !fs_env_set("FASTSHALLOW_NO_AVX2");
    }
    return fs_v3_state;
}
static int fs_use_v4(void)
{
    if (fs_v4_state < 0)
        fs_v4_state = fs_use_v3() && __builtin_cpu_supports("x86-64-v4") &&
                      !fs_env_set("FASTSHALLOW_NO_AVX512");
    return fs_v4_state;
}
#else
static int fs_use_v4(void) { return 0; }
static int fs_use_v3(void) { return 0; }
#endif
/* Whether a hand-blocked kernel set runs here; FS_WIDE(fn, ...) calls its fn. */
static inline int fs_wide(void) { return fs_use_v4() || fs_use_v3(); }
#define FS_WIDE(fn, ...) (fs_use_v4() ? FS_S(fn##_v4)(__VA_ARGS__) : FS_S(fn##_v3)(__VA_ARGS__))

/* Which instruction set the matrix products run with on this CPU. */
static const char *fs_isa(void)
{
    if (fs_use_v4()) return "x86-64-v4 (AVX-512)";
    if (fs_use_v3()) return "x86-64-v3 (AVX2, FMA)";
#if FS_HAVE_WIDE
    /* a switch kept the kernels out: the portable loops' clone for this CPU runs */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 clones of the portable loops";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 clones of the portable loops";
#endif
    return "baseline";
}

/* Random row gathers request every line of the row FS_PREFETCH_ROWS ahead, into L2 (locality 1:
 * more requests can be in flight there than L1's fill buffers allow).  Measured here: 16 rows
 * ahead into L2 read 1,000,000 random 400-byte rows in about two thirds of the time 4 rows ahead
 * into L1 took. */
#define FS_PREFETCH_ROWS 16
#if defined(__GNUC__)
#define FS_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 1)
#else
#define FS_PREFETCH(p) ((void)0)
#endif

typedef int64_t fs_i64;

/* Request the cache lines of bytes [p + from, p + to), 0 <= from <= to, to > 0: one request
 * every 64 bytes and one for byte to - 1 (bytes that do not start on a line boundary end in one
 * more line; with from == to, the line holding byte to - 1 is all that is requested). */
static inline void fs_prefetch_span(const char *p, fs_i64 from, fs_i64 to)
{
    for (fs_i64 off = from; off < to; off += 64) FS_PREFETCH(p + off);
    FS_PREFETCH(p + to - 1);
}

/* Whether idx[0..n) are consecutive (the examples of an epoch in order; NULL: all are). */
static inline int fs_idx_in_order(const int64_t *idx, int64_t n)
{
    if (!idx) return 1;
    for (int64_t r = 1; r < n; r++)
        if (idx[r] != idx[0] + r) return 0;
    return 1;
}

/* Rows per register block in the matrix-product micro-kernel. */
#define FS_MR 4
/* Up to this many outputs, products run along the contraction (transposed weights) rather than
 * over padded panels of outputs. */
#define FS_DOT_MAX 16

/* Fused training: the losses it knows, and its fixed task sizes. */
enum { FS_LOSS_SOFTMAX_XENT = 0, FS_LOSS_L2 = 1, FS_LOSS_HUBER = 2 };
/* How the hand-blocked products read their rows: values as they are, values times a scale, or
 * uint8 values times a scale, converted in registers exactly as a gather into FS_T would convert them
 * (one rounding: (FS_T)x * scale), so the fused step can read the examples in place. */
enum { FS_ROWS_PLAIN = 0, FS_ROWS_SCALED = 1, FS_ROWS_U8 = 2 };
/* Bytes of the stack buffer in which the hand-blocked forward keeps a block of converted rows:
 * 4 on AVX-512 (k <= 1024 floats, 512 doubles), 2 on AVX2 (k <= 2048 floats, 1024 doubles). */
#define FS_FWD_KEEP 16384
#define FS_FUSED_CHUNK 64 /* batch rows per phase-1 call */
#define FS_BWD_ROWS_AHEAD 8 /* see fs_dot_bwd_block in fs_kernels_wide.h (4 to 12 ran alike) */
/* Few outputs (m <= FS_DOT_MAX): phase 2 can compute the weight gradient of its weight rows from
 * every row of the batch, reading the rows other threads read in phase 1 from their cores'
 * caches; or phase 1 can leave each chunk of FS_SHARE_ROWS rows a share of it, computed while
 * those rows are in cache, for the threads to add up (fs_fused_sgd_chain).  Shares move
 * nshares * m values per weight row where the rows move a batch of row elements, so they win
 * when they are small against the rows: one output (linear regression) ran about 10% faster
 * with them; ten (Fashion-MNIST) would make sixteen 7840-value shares a minibatch, more than
 * the rows.  Measured with shares forced on (medians of 11 epochs, alternating in one process):
 * Fashion-MNIST took 1.36, 1.16, 1.05 and 1.01 times as long with shares of 16, 32, 64 and 128
 * rows on 2 threads (128: 1.03 on one); with the AVX2 kernels (AMD EPYC, Zen 2), shares of 64
 * rows 0.99 on 2 threads and 1.03 on one (in turns with the shareless build, 5 and 3 turns);
 * with its gradient over G broadcast ahead (FS_XGB), 1.02 for 64 rows and 0.98 for 128 on 2
 * threads (126 turns of a C harness), 128 rows leaving two threads no finer split to balance.
 * One output takes longer shares when the batch has more than 4 x 16 + 3 rows: a quarter of it,
 * rounded down (a fifth, short share holds what is left), up to FS_FUSED_CHUNK rows (the most
 * fs_fused_loss_rows takes).  Each share costs the one-output rows path (fs_fused_one) loading
 * the weights, storing the sums and adding them into the chain.  An epoch of 1,000,000 x 100
 * rows in batches of 256 took 0.94 of the time with shares of 64 rows as with 16, on 2 threads
 * and on 1 (a C harness, 10 turns; the benchmark's epoch 52.7 against 55.2 ms, 4 turns).  The
 * bits depend on the share size, so on the batch, never on the threads.  Returns the rows per
 * share, or 0 for none. */
#define FS_SHARE_ROWS 16
static inline int64_t fs_fused_share_rows(int64_t batch, int64_t m, int panel, int64_t row_esize,
                                          int64_t esize)
{
    const int64_t nshares = (batch + FS_SHARE_ROWS - 1) / FS_SHARE_ROWS;
    if (panel || 8 * nshares * m * esize > batch * row_esize) return 0;
    if (m > 1 || batch / 4 <= FS_SHARE_ROWS) return FS_SHARE_ROWS;
    return batch / 4 < FS_FUSED_CHUNK ? batch / 4 : FS_FUSED_CHUNK;
}
#define FS_FUSED_COLS 16  /* phase 2 splits the weight rows at multiples of this */

/* What a thread passes down the chain of fs_fused_sgd_chain besides the running sums of the
 * shares: the running loss and hits, and its phase-1 timing. */
typedef struct {
    double loss, secs, work;
    int64_t hits;
} fs_chain_tail;

static inline size_t fs_round64(size_t n) { return (n + 63) / 64 * 64; }

/* Wait until *flag (written by another thread with release order) reaches v: pause-spinning
 * for 256 pauses (about 5 us here), as the waits of a minibatch's chain take one or two; then
 * yielding the core at every check, so that a thread waiting for a descheduled one lets it run.
 * (With 16384 pauses, about 0.3 ms, two threads on one core took 50 times as long as one.) */
static inline void fs_wait_for(const int64_t *flag, int64_t v)
{
    for (unsigned spins = 0; __atomic_load_n(flag, __ATOMIC_ACQUIRE) < v; spins++) {
        if (spins < (1u << 8)) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* The barrier between fs_fused_sgd's phases: thread `me` of `team` posts that it reached
 * barrier number `n` (counting from 1 in each call) in its own cache line of `arrived`, and
 * waits for every other thread to post it (release and acquire order: what each thread wrote
 * before its barrier is seen after it).  In place of `#pragma omp barrier`, whose last thread in
 * makes a futex system call to wake the others even when they are spinning: 0.15-0.2 against
 * 0.35-0.5 us a barrier between two threads doing nothing else, and a two-thread Fashion-MNIST
 * epoch (a C harness over fs_fused_sgd, 6 turns) 0.995 of the time.  The array holds
 * FS_ARRIVED_STRIDE values a thread.  With `spin` 0 (the caller's team has more threads than
 * processors), libgomp's barrier instead: its threads wait for threads that are not running,
 * and spinning, then yielding, waited about a scheduler time slice a barrier where libgomp's
 * sleeps (4 epochs of 30000 Fashion-MNIST-sized rows, 3 threads on 2 cores beside a busy
 * process: 7.2-7.5 s, against 0.09 s).  Called inside the team's parallel region. */
#define FS_ARRIVED_STRIDE 8
static inline void fs_team_barrier(int64_t *arrived, int me, int team, int64_t n, int spin)
{
    if (!spin) {
#pragma omp barrier
        return;
    }
    __atomic_store_n(&arrived[FS_ARRIVED_STRIDE * me], n, __ATOMIC_RELEASE);
    for (int i = 0; i < team; i++)
        if (i != me) fs_wait_for(&arrived[FS_ARRIVED_STRIDE * i], n);
}

/* Fused training's split of each phase among the threads (see fs_fused_sgd): thread `i` of nt
 * takes [at(i), at(i + 1)) of n items, cut at multiples of `unit`, where cum[i] is the share of
 * the threads before it (cum[0] = 0, cum[nt] = 1). */
static inline fs_i64 fs_split_at(const double *cum, int i, int nt, fs_i64 n, fs_i64 unit)
{
    if (i >= nt) return n;
    const fs_i64 at = ((fs_i64)(cum[i] * (double)n + 0.5 * (double)unit) / unit) * unit;
    return at < n ? at : n;
}

/* The first of the chunks of `unit` items (the last one partial) that starts at or after item
 * `at` of a split by fs_split_at, so that a thread's items [lo, hi) are the chunks
 * [fs_chunk_at(lo), fs_chunk_at(hi)).  Rounding up matters at n when n is not a multiple of
 * the unit: a thread left with [n, n) has no chunk, while rounding lo down gave it the partial
 * last chunk too, which the thread before it had already added to the sums. */
static inline fs_i64 fs_chunk_at(fs_i64 at, fs_i64 unit) { return (at + unit - 1) / unit; }

/* New shares (cumulative, into cum) in proportion to each thread's speed, work[i] / secs[i],
 * smoothed over minibatches; a thread without a timing keeps its speed.  No thread gets less
 * than an eighth of the fastest one's share: one that was descheduled for a moment would
 * otherwise be given nothing, never be timed again, and sit idle for the rest of the call. */
static inline void fs_rebalance(double *speed, const double *work, const double *secs,
                                double *cum, int nt)
{
    double fastest = 0;
    for (int i = 0; i < nt; i++) {
        if (work[i] > 0 && secs[i] > 0)
            speed[i] = speed[i] > 0 ? 0.75 * speed[i] + 0.25 * (work[i] / secs[i])
                                    : work[i] / secs[i];
        fastest = speed[i] > fastest ? speed[i] : fastest;
    }
    if (!(fastest > 0)) return;
    const double least = fastest / 8;
    double total = 0;
    for (int i = 0; i < nt; i++) total += speed[i] > least ? speed[i] : least;
    double c = 0;
    for (int i = 0; i < nt; i++) {
        cum[i] = c / total;
        c += speed[i] > least ? speed[i] : least;
    }
    cum[nt] = 1;
}

static const char *fs_compiler(void) {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown";
#endif
}

/* 32-byte vectors (one AVX2 register; two SSE registers on the baseline clone), and their
 * unaligned twins for loads from numpy buffers. */
typedef float fs_v8f __attribute__((vector_size(32)));
typedef float fs_v8f_u __attribute__((vector_size(32), aligned(4)));
typedef double fs_v4d __attribute__((vector_size(32)));
typedef double fs_v4d_u __attribute__((vector_size(32), aligned(8)));
typedef float fs_v16f __attribute__((vector_size(64)));
typedef float fs_v16f_u __attribute__((vector_size(64), aligned(4)));
typedef double fs_v8d __attribute__((vector_size(64)));
typedef double fs_v8d_u __attribute__((vector_size(64), aligned(8)));

/* e^x lane by lane for x <= 0 (softmax arguments), within 1 ulp of the true value (the
 * scalar expf is correctly rounded more often, so the two differ in the last bit here and
 * there): x = n ln2 + r with |r| <= ln2 / 2 (the two-part ln2 of Cephes), e^r by Cephes'
 * degree-7 polynomial, 2^n added to the exponent bits.  Below ln(2^-126) the result is 0 (e^x
 * is not a normal float there, and exactly at that point a subnormal close to it comes out; the
 * scalar expf returns subnormals, which change no softmax sum), e^-inf = 0 and NaN stays NaN.
 * Sixteen lanes at a time: one AVX-512 register, two AVX2 or four SSE ones, as the clone
 * compiles it; and eight (fs_vexpf8, for the AVX2 softmax kernel), with the same arithmetic
 * in every lane.  One expf call per value took several percent of a Fashion-MNIST step. */
typedef int32_t fs_v16i __attribute__((vector_size(64)));
typedef int32_t fs_v8i __attribute__((vector_size(32)));
#define FS_VEXPF(VF, VI)                                                                       \
    {                                                                                          \
        const VF zero = {0};                                                                   \
        const VF lo = zero - 87.33654475f;    /* ln(2^-126) */                                 \
        const VF magic = zero + 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */ \
        const VI under = x < lo;              /* false for NaN */                              \
        const VF xc = (VF)(((VI)x & ~under) | ((VI)lo & under));                               \
        const VF t = xc * 1.44269504088896341f + magic;                                        \
        const VF n = t - magic;                                                                \
        const VI ni = (VI)t - (VI)magic;                                                       \
        VF r = xc - n * 0.693359375f;                                                          \
        r = r - n * -2.12194440e-4f;                                                           \
        VF p = zero + 1.9875691500e-4f;                                                        \
        p = p * r + 1.3981999507e-3f;                                                          \
        p = p * r + 8.3334519073e-3f;                                                          \
        p = p * r + 4.1665795894e-2f;                                                          \
        p = p * r + 1.6666665459e-1f;                                                          \
        p = p * r + 5.0000001201e-1f;                                                          \
        p = p * (r * r) + r + 1.0f;                                                            \
        const VI nan = x != x;                                                                 \
        return (VF)((((VI)p + (ni << 23)) & ~under) | ((VI)x & nan));                          \
    }
FS_INLINE fs_v16f fs_vexpf(fs_v16f x) FS_VEXPF(fs_v16f, fs_v16i)
FS_INLINE fs_v8f fs_vexpf8(fs_v8f x) FS_VEXPF(fs_v8f, fs_v8i)
#undef FS_VEXPF

/* g[0..n) = e^g[0..n) for arguments <= 0, sixteen at a time (the last few through a padded
 * copy, so every value gets the same arithmetic wherever it sits). */
FS_INLINE void fs_exp_inplace_f32(float *g, int64_t n)
{
    int64_t i = 0;
    fs_v16f v;
    for (; i + 16 <= n; i += 16) {
        memcpy(&v, g + i, sizeof v);
        v = fs_vexpf(v);
        memcpy(g + i, &v, sizeof v);
    }
    if (i < n) {
        float buf[16] = {0};
        memcpy(buf, g + i, sizeof(float) * (size_t)(n - i));
        memcpy(&v, buf, sizeof v);
        v = fs_vexpf(v);
        memcpy(buf, &v, sizeof v);
        memcpy(g + i, buf, sizeof(float) * (size_t)(n - i));
    }
}

/* The next value of the SplitMix64 stream whose state is *s. */
static inline uint64_t fs_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The seed of sub-stream `key` of `seed`: a far-off state, so that the tasks of a parallel
 * permutation draw independent numbers whichever thread runs them. */
static inline uint64_t fs_substream(uint64_t seed, uint64_t key)
{
    uint64_t s = seed ^ (key * 0xD1B54A32D192ED03ULL);
    return fs_splitmix(&s);
}

/* a[0..n) shuffled in place (Fisher-Yates) by the SplitMix64 stream from `seed`; the bounded
 * draws use a multiply-shift (bias below n / 2^64). */
static void fs_shuffle(int64_t *a, int64_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)(((unsigned __int128)fs_splitmix(&s) * (uint64_t)(i + 1)) >> 64);
        const int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* out = a uniformly random permutation of 0..n-1 driven by `seed`, on one core (the large
 * ones run in parallel passes, below). */
static void fs_permutation(int64_t *out, int64_t n, uint64_t seed)
{
    for (int64_t i = 0; i < n; i++) out[i] = i;
    fs_shuffle(out, n, seed);
}

/* Large permutations run in three parallel passes (Sanders' shuffle), as one Fisher-Yates over
 * megabytes is a chain of cache misses that one core runs alone: every index draws one of
 * 2^log_nb buckets (fs_perm_draw, per block of indices), is copied into its bucket
 * (fs_perm_scatter), and every bucket, now small enough for L2, is shuffled (fs_shuffle).  The
 * result is uniform: given the bucket sizes, every assignment of indices to places has the
 * same probability.  Blocks and buckets are fixed by n, not by the thread count. */
static void fs_perm_draw(uint8_t *bucket, int64_t *count, int64_t i0, int64_t i1, int log_nb,
                         uint64_t seed)
{
    const uint64_t mask = ((uint64_t)1 << log_nb) - 1;
    uint64_t s = seed, z = 0;
    int left = 0;
    for (int64_t i = i0; i < i1; i++) {
        if (left == 0) {  /* one 64-bit draw gives 64 / log_nb buckets */
            z = fs_splitmix(&s);
            left = 64 / log_nb;
        }
        const uint8_t b = (uint8_t)(z & mask);
        z >>= log_nb;
        left--;
        bucket[i] = b;
        count[b]++;
    }
}

/* Indices i0..i1-1 to their buckets' places: next[b] is where the block's next index of
 * bucket b goes. */
static void fs_perm_scatter(const uint8_t *bucket, int64_t *next, int64_t i0, int64_t i1,
                            int64_t *out)
{
    for (int64_t i = i0; i < i1; i++) out[next[bucket[i]]++] = i;
}

/* FS_PW, the panel width, is the number of output columns one micro-kernel step covers: two
 * vectors, so 16 floats (ten Fashion-MNIST classes fit one panel) or 8 doubles. */
#define FS_VEXP 1 /* the softmax kernels take their exponentials from fs_vexpf */
#define FS_T float
#define FS_S(name) name##_f32
#define FS_V fs_v8f
#define FS_VU fs_v8f_u
#define FS_VL 8
#define FS_EXP expf /* not exp: a float argument would be computed (slower) in double */
#define FS_LOG logf
#define FS_FMA fmaf
#define FS_PW 16
#define FS_W fs_v16f
#define FS_WU fs_v16f_u
#include "fs_kernels_impl.h"
#undef FS_VEXP
#undef FS_W
#undef FS_WU
#undef FS_T
#undef FS_S
#undef FS_V
#undef FS_VU
#undef FS_VL
#undef FS_EXP
#undef FS_LOG
#undef FS_FMA
#undef FS_PW

#define FS_VEXP 0
#define FS_T double
#define FS_S(name) name##_f64
#define FS_V fs_v4d
#define FS_VU fs_v4d_u
#define FS_VL 4
#define FS_EXP exp
#define FS_LOG log
#define FS_FMA fma
#define FS_PW 8
#define FS_W fs_v8d
#define FS_WU fs_v8d_u
#include "fs_kernels_impl.h"
#undef FS_VEXP
#undef FS_W
#undef FS_WU
#undef FS_T
#undef FS_S
#undef FS_V
#undef FS_VU
#undef FS_VL
#undef FS_EXP
#undef FS_LOG
#undef FS_FMA
#undef FS_PW

#endif
