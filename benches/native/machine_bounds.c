/* What this machine allows, to set the fused kernels' times against (not part of the package
 * or its tests).  Build and run:
 *
 *   gcc -O3 -fopenmp -o /tmp/machine_bounds benches/native/machine_bounds.c
 *   /tmp/machine_bounds gather 2    # the reads of a linear-regression epoch, on 2 threads
 *   /tmp/machine_bounds fma         # multiply-adds alone: 2 threads against 1
 *
 * gather: the reads of one epoch of linear regression, 1,000,000 x 100 float32 rows, batch 256,
 * made in one pass as the fused step made them before it read shuffled chunks in two (rows in a
 * shuffled order, each minibatch split between the threads, every row's successor in the next
 * minibatch requested into L2 with its target; see fs_fused_one_body in csrc/) with
 * only the arithmetic that uses every value read (a dot product and a gradient share); the same
 * without that arithmetic (the loads only added up); then the rows read in order.  Epochs of
 * the three kinds in turns, medians of 9.  Compare with the linear-regression row of
 * `python -m pytest benches/bench_training.py --benchmark-only`, run just before or after.
 *
 * fma: 12 independent chains of multiply-adds (about 20 ms of work), on one thread and then
 * split over two, 41 times in turns; prints the quartiles of the two-thread speed-up and the
 * median rates in float32 multiply-adds a second: the peak to set an epoch's count of
 * multiply-adds against (softmax regression on Fashion-MNIST: 60000 x 784 x 10, twice, for the
 * forward pass and the weight gradient).
 *
 * Both use 512-bit vectors where the CPU has AVX-512, else 256-bit ones (AVX2 and FMA). */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define N 1000000
#define K 100
#define B 256
#define AVX512 __attribute__((target("avx512f")))

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Every line of [p, p + bytes), into L2: prefetcht2, the library's FS_PREFETCH. */
static void request(const char *p, int bytes)
{
    for (int off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T2);
    _mm_prefetch(p + bytes - 1, _MM_HINT_T2);
}

/* One epoch over the rows in `order`; returns its seconds.  With `arith` 0, the loads are only
 * added up: the same reads, requests and barriers without the dot product and gradient share. */
AVX512 static double epoch(const float *X, const float *Y, const int64_t *order, int nt,
                           int arith)
{
    double total = 0;
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        __m512 w[7], share[7];
        for (int v = 0; v < 7; v++) {
            w[v] = _mm512_set1_ps(0.01f);
            share[v] = _mm512_setzero_ps();
        }
        for (int64_t t = 0; t * B < N; t++) {
            const int64_t *pos = order + t * B;
            const int64_t bn = N - t * B < B ? N - t * B : B, left = N - (t + 1) * B;
            for (int64_t r = bn * me / team; r < bn * (me + 1) / team; r++) {
                if (r < left) {
                    request((const char *)(X + pos[B + r] * K), K * (int)sizeof(float));
                    _mm_prefetch((const char *)(Y + pos[B + r]), _MM_HINT_T2);
                }
                const float *x = X + pos[r] * K;
                if (!arith) {
                    __m512 sum = _mm512_maskz_loadu_ps(0xF, x + 96);
                    for (int v = 0; v < 6; v++)
                        sum = _mm512_add_ps(sum, _mm512_loadu_ps(x + 16 * v));
                    share[0] = _mm512_add_ps(share[0], sum);
                    total += Y[pos[r]];
                    continue;
                }
                __m512 xv[7], acc = _mm512_setzero_ps();
                for (int v = 0; v < 7; v++) {  /* 100 = 6 vectors of 16 and 4 values */
                    xv[v] = v < 6 ? _mm512_loadu_ps(x + 16 * v)
                                  : _mm512_maskz_loadu_ps(0xF, x + 96);
                    acc = _mm512_fmadd_ps(xv[v], w[v], acc);
                }
                const float g = _mm512_reduce_add_ps(acc) - Y[pos[r]];
                for (int v = 0; v < 7; v++)
                    share[v] = _mm512_fmadd_ps(_mm512_set1_ps(g * 1e-9f), xv[v], share[v]);
                total += g;
            }
#pragma omp barrier
        }
        for (int v = 0; v < 7; v++) total += _mm512_reduce_add_ps(share[v]);
    }
    if (total == 0.123) puts("");  /* keeps the sums alive */
    return omp_get_wtime() - t0;
}

/* The same epoch with AVX2 vectors (100 = 12 vectors of 8 and 4 values). */
#define AVX2 __attribute__((target("avx2,fma")))
AVX2 static double epoch256(const float *X, const float *Y, const int64_t *order, int nt,
                            int arith)
{
    double total = 0;
    const double t0 = omp_get_wtime();
    const __m256i four = _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0);
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        __m256 w[13], share[13];
        for (int v = 0; v < 13; v++) {
            w[v] = _mm256_set1_ps(0.01f);
            share[v] = _mm256_setzero_ps();
        }
        for (int64_t t = 0; t * B < N; t++) {
            const int64_t *pos = order + t * B;
            const int64_t bn = N - t * B < B ? N - t * B : B, left = N - (t + 1) * B;
            for (int64_t r = bn * me / team; r < bn * (me + 1) / team; r++) {
                if (r < left) {
                    request((const char *)(X + pos[B + r] * K), K * (int)sizeof(float));
                    _mm_prefetch((const char *)(Y + pos[B + r]), _MM_HINT_T2);
                }
                const float *x = X + pos[r] * K;
                __m256 xv[13];
                for (int v = 0; v < 13; v++)
                    xv[v] = v < 12 ? _mm256_loadu_ps(x + 8 * v) : _mm256_maskload_ps(x + 96, four);
                if (!arith) {
                    __m256 sum = xv[12];
                    for (int v = 0; v < 12; v++) sum = _mm256_add_ps(sum, xv[v]);
                    share[0] = _mm256_add_ps(share[0], sum);
                    total += Y[pos[r]];
                    continue;
                }
                __m256 acc = _mm256_setzero_ps();
                for (int v = 0; v < 13; v++) acc = _mm256_fmadd_ps(xv[v], w[v], acc);
                float lanes[8];
                _mm256_storeu_ps(lanes, acc);
                const float g = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] +
                                lanes[6] + lanes[7] - Y[pos[r]];
                for (int v = 0; v < 13; v++)
                    share[v] = _mm256_fmadd_ps(_mm256_set1_ps(g * 1e-9f), xv[v], share[v]);
                total += g;
            }
#pragma omp barrier
        }
        float lanes[8];
        for (int v = 0; v < 13; v++) {
            _mm256_storeu_ps(lanes, share[v]);
            for (int l = 0; l < 8; l++) total += lanes[l];
        }
    }
    if (total == 0.123) puts("");  /* keeps the sums alive */
    return omp_get_wtime() - t0;
}

static int gather(int nt)
{
    const size_t bytes = (size_t)N * K * sizeof(float), huge = (size_t)2 << 20;
    float *X = aligned_alloc(huge, (bytes + huge - 1) / huge * huge);
    float *Y = malloc(sizeof(float) * N);
    int64_t *shuffled = malloc(sizeof(int64_t) * N), *in_order = malloc(sizeof(int64_t) * N);
    if (!X || !Y || !shuffled || !in_order) return fputs("out of memory\n", stderr), 1;
    madvise(X, bytes, MADV_HUGEPAGE);  /* as NumPy asks for its large arrays */
    for (size_t i = 0; i < (size_t)N * K; i++) X[i] = (float)(i % 7) * 0.1f;
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < N; i++) {
        Y[i] = (float)(i % 5);
        shuffled[i] = in_order[i] = i;
    }
    for (int64_t i = N - 1; i > 0; i--) {  /* Fisher-Yates, xorshift64 */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const int64_t j = (int64_t)(s % (uint64_t)(i + 1)), tmp = shuffled[i];
        shuffled[i] = shuffled[j];
        shuffled[j] = tmp;
    }
    double (*run)(const float *, const float *, const int64_t *, int, int) =
        __builtin_cpu_supports("avx512f") ? epoch : epoch256;
    double ts[9], tr[9], tq[9];
    for (int rep = 0; rep < 9; rep++) {
        ts[rep] = run(X, Y, shuffled, nt, 1);
        tr[rep] = run(X, Y, shuffled, nt, 0);
        tq[rep] = run(X, Y, in_order, nt, 1);
    }
    qsort(ts, 9, sizeof(double), cmp);
    qsort(tr, 9, sizeof(double), cmp);
    qsort(tq, 9, sizeof(double), cmp);
    printf("linear-regression reads, %d thread(s): shuffled %.1f ms (the reads alone %.1f), "
           "in order %.1f ms (medians of 9 epochs)\n", nt, 1e3 * ts[4], 1e3 * tr[4], 1e3 * tq[4]);
    return 0;
}

AVX512 static float chains512(long steps)
{
    __m512 a[12];
    const __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i * 0.001f);
    for (long t = 0; t < steps; t++)
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    float sum = 0;
    for (int i = 0; i < 12; i++) sum += _mm512_reduce_add_ps(a[i]);
    return sum;
}

__attribute__((target("avx2,fma"))) static float chains256(long steps)
{
    __m256 a[12];
    const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i * 0.001f);
    for (long t = 0; t < steps; t++)
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    float lanes[8], sum = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(lanes, a[i]);
        for (int l = 0; l < 8; l++) sum += lanes[l];
    }
    return sum;
}

static int multiply_adds(void)
{
    const int wide = __builtin_cpu_supports("avx512f");
    float (*chains)(long) = wide ? chains512 : chains256;
    const long steps = wide ? 4000000 : 8000000;
    const double macs = 2.0 * steps * 12 * (wide ? 16 : 8);  /* each run's float32 multiply-adds */
    double ratio[41], rate1[41], rate2[41];
    for (int rep = 0; rep < 41; rep++) {
        float sum = 0;
        double t = omp_get_wtime();
        sum += chains(2 * steps);
        const double one = omp_get_wtime() - t;
        t = omp_get_wtime();
#pragma omp parallel num_threads(2) reduction(+ : sum)
        sum += chains(steps);
        const double two = omp_get_wtime() - t;
        ratio[rep] = one / two;
        rate1[rep] = macs / one;
        rate2[rep] = macs / two;
        if (sum == 0.123f) puts("");
    }
    qsort(ratio, 41, sizeof(double), cmp);
    qsort(rate1, 41, sizeof(double), cmp);
    qsort(rate2, 41, sizeof(double), cmp);
    printf("multiply-adds, 2 threads against 1 (41 turns): quartiles %.2f %.2f %.2f, "
           "range %.2f-%.2f\n", ratio[10], ratio[20], ratio[30], ratio[0], ratio[40]);
    printf("float32 multiply-adds a second (medians, %s): %.1f G on 1 thread, %.1f G on 2\n",
           wide ? "AVX-512" : "AVX2", 1e-9 * rate1[20], 1e-9 * rate2[20]);
    return 0;
}

int main(int argc, char **argv)
{
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return fputs("this needs AVX2 and FMA\n", stderr), 1;
    if (argc >= 2 && !strcmp(argv[1], "fma")) return multiply_adds();
    if (argc >= 2 && !strcmp(argv[1], "gather")) return gather(argc >= 3 ? atoi(argv[2]) : 2);
    fputs("usage: machine_bounds gather [threads] | machine_bounds fma\n", stderr);
    return 2;
}
