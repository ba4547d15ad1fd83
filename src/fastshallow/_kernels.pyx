# distutils: language = c
"""Raw compiled kernels.  They trust their caller: use fastshallow.kernels, which validates.

Work is split into chunks of a fixed number of rows (or columns) that never depends on the thread
count, and each output element is produced by one chunk summing in a fixed order, so 1 and N
threads give identical bits.  `nt` is the number of OpenMP threads; 1 runs without starting any.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.float cimport FLT_MAX
from libc.math cimport fabs, isfinite
from libc.stdlib cimport free

cdef extern from "<stdlib.h>" nogil:
    void *aligned_alloc(size_t alignment, size_t size)  # C11; freed by free()

import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef extern from "fs_kernels.h" nogil:
    ctypedef int64_t fs_i64
    int FS_OPENMP
    int FS_DOT_MAX
    void FS_PREFETCH(const void *p)
    int FS_PREFETCH_ROWS
    const char *fs_compiler()
    const char *fs_isa()
    void fs_permutation(int64_t *out, int64_t n, uint64_t seed)
    uint64_t fs_substream(uint64_t seed, uint64_t key)
    void fs_shuffle(int64_t *a, int64_t n, uint64_t seed)
    void fs_perm_draw(uint8_t *bucket, int64_t *count, int64_t i0, int64_t i1, int log_nb,
                      uint64_t seed)
    void fs_perm_scatter(const uint8_t *bucket, int64_t *next, int64_t i0, int64_t i1,
                         int64_t *out)
    int omp_get_max_threads()
    int omp_get_num_procs()
    void fs_pack_panels_f32(const float *W, fs_i64 ldw, fs_i64 k, fs_i64 m, float *P)
    void fs_pack_panels_f64(const double *W, fs_i64 ldw, fs_i64 k, fs_i64 m, double *P)
    void fs_gemm_rows_f32(const float *A, fs_i64 a_rs, fs_i64 a_ts, fs_i64 rows, fs_i64 tlen,
                          const float *P, fs_i64 m, const float *init, float *C, fs_i64 c_rs)
    void fs_gemm_rows_f64(const double *A, fs_i64 a_rs, fs_i64 a_ts, fs_i64 rows, fs_i64 tlen,
                          const double *P, fs_i64 m, const double *init, double *C, fs_i64 c_rs)
    void fs_dot_fwd_f32(const float *X, fs_i64 ldx, fs_i64 rows, fs_i64 k, const float *Wt,
                        fs_i64 m, const float *bias, float *C, fs_i64 c_rs)
    void fs_dot_fwd_f64(const double *X, fs_i64 ldx, fs_i64 rows, fs_i64 k, const double *Wt,
                        fs_i64 m, const double *bias, double *C, fs_i64 c_rs)
    void fs_dot_bwd_f32(const float *X, fs_i64 ldx, fs_i64 n, fs_i64 k0, fs_i64 kw,
                        const float *G, fs_i64 ldg, fs_i64 m, float *dWt, fs_i64 ldw)
    void fs_dot_bwd_f64(const double *X, fs_i64 ldx, fs_i64 n, fs_i64 k0, fs_i64 kw,
                        const double *G, fs_i64 ldg, fs_i64 m, double *dWt, fs_i64 ldw)
    void fs_transpose_f32(const float *A, fs_i64 rows, fs_i64 cols, float *out)
    void fs_transpose_f64(const double *A, fs_i64 rows, fs_i64 cols, double *out)
    void fs_colsum_f32(const float *G, fs_i64 ldg, fs_i64 n, fs_i64 m, float *out)
    void fs_colsum_f64(const double *G, fs_i64 ldg, fs_i64 n, fs_i64 m, double *out)
    void fs_softmax_xent_rows_f32(const float *Z, fs_i64 ldz, fs_i64 rows, fs_i64 m,
                                  const fs_i64 *y, float smooth, float *loss, float *G, fs_i64 ldg)
    void fs_softmax_xent_rows_f64(const double *Z, fs_i64 ldz, fs_i64 rows, fs_i64 m,
                                  const fs_i64 *y, double smooth, double *loss, double *G,
                                  fs_i64 ldg)
    void fs_softmax_rows_f32(const float *Z, fs_i64 ldz, fs_i64 rows, fs_i64 m, int log_out,
                             float *O, fs_i64 ldo)
    void fs_softmax_rows_f64(const double *Z, fs_i64 ldz, fs_i64 rows, fs_i64 m, int log_out,
                             double *O, fs_i64 ldo)
    void fs_sgd_f32(float *p, const float *g, fs_i64 n, float lr, float batch_size,
                    float momentum, float wd, float *v)
    void fs_sgd_f64(double *p, const double *g, fs_i64 n, double lr, double batch_size,
                    double momentum, double wd, double *v)
    void fs_regression_rows_f32(const float *P, const float *T, fs_i64 r0, fs_i64 r1, fs_i64 m,
                                int huber, float delta, float *loss, float *G)
    void fs_regression_rows_f64(const double *P, const double *T, fs_i64 r0, fs_i64 r1,
                                fs_i64 m, int huber, double delta, double *loss, double *G)
    void fs_gather_rows_f32(const void *X, int x_u8, fs_i64 ldx, fs_i64 k, float scale,
                            const fs_i64 *idx, fs_i64 r0, fs_i64 r1, fs_i64 n, float *out)
    void fs_gather_rows_f64(const void *X, int x_u8, fs_i64 ldx, fs_i64 k, double scale,
                            const fs_i64 *idx, fs_i64 r0, fs_i64 r1, fs_i64 n, double *out)

# Chunk sizes: fixed, so that results never depend on the number of threads.
cdef enum:
    ROW_CHUNK = 32      # rows of X per task in row-wise kernels
    COL_CHUNK = 16      # rows of dW (columns of X) per task in the panel weight gradient
    DOT_COL_CHUNK = 64  # the same for few outputs: vectors enough for independent sums
    VEC_CHUNK = 8192    # elements per task in element-wise kernels


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FS_OPENMP)


def compiler():
    """The compiler that built the kernels, with its version."""
    return fs_compiler().decode()


def isa():
    """The instruction set the matrix products use on this CPU (chosen at run time)."""
    return fs_isa().decode()


def max_threads():
    """OpenMP's default team size in the calling thread (OMP_NUM_THREADS, lowered or raised by
    omp_set_num_threads, as threadpoolctl calls it); 1 in a serial build."""
    return omp_get_max_threads()


cdef inline fs_i64 _nchunks(fs_i64 n, fs_i64 chunk) noexcept nogil:
    return (n + chunk - 1) // chunk


# The def functions below take ndarrays and read their data pointers: acquiring typed
# memoryviews costs about 0.3 us per argument, and entering an OpenMP region (even one that
# runs on one thread) about 1 us -- more than a minibatch-sized kernel takes.  So one thread
# runs a plain loop, and the per-chunk work sits in an inline function both loops call.

cdef inline bint _f32(cnp.ndarray a) noexcept:
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void *_data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline fs_i64 _panel_width(floating *unused) noexcept nogil:
    return 16 if floating is float else 8


cdef floating *_scratch(fs_i64 count, floating *unused) except NULL:
    """Scratch memory for `count` values (far cheaper than an ndarray per call), on a 64-byte
    boundary like to_working_layout's weights: the products' vector loads of a transposed
    weight row then stay within cache lines."""
    cdef size_t size = (max(count, 1) * sizeof(floating) + 63) // 64 * 64
    cdef floating *p = <floating *>aligned_alloc(64, size)
    if p == NULL:
        raise MemoryError(f"cannot allocate {count * sizeof(floating)} bytes of scratch memory")
    return p


# Permutations of this many rows and more run in parallel passes (see fs_perm_draw), on two
# cores 1.4x (at 2^19) to 1.9x (10^6) faster than one Fisher-Yates; on one core the passes
# cost about 20% more, and below 2^19 they gain nothing.  PERM_BLOCK indices per pass-1 task.
PERM_BUCKETED = 1 << 19
PERM_BLOCK = 1 << 16


def permutation(int64_t n, uint64_t seed, int nt=1, int64_t bucketed_from=PERM_BUCKETED,
                int64_t block=PERM_BLOCK):
    """A random permutation of range(n) as int64, determined by `seed` (n >= 0) and, for n of
    `bucketed_from` or more, by `block` (never by `nt`)."""
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    cdef cnp.ndarray out = np.empty(n, np.int64)
    cdef int64_t *p = <int64_t *>cnp.PyArray_DATA(out)
    if n < 2 or n < bucketed_from:
        with nogil:
            fs_permutation(p, n, seed)
        return out
    # 2^log_nb buckets, 16 to 256: about 32768 indices each (256 KB, shuffled within L2) up to
    # 2^23 rows, n / 256 beyond.
    cdef int log_nb = 4
    while log_nb < 8 and (n >> (log_nb + 15)) > 0:
        log_nb += 1
    cdef int64_t nb = 1 << log_nb, nblk = (n - 1) // block + 1, t, b, pos = 0, c
    cdef cnp.ndarray bucket = np.empty(n, np.uint8)
    cdef cnp.ndarray counts = np.zeros(nblk * nb, np.int64), start = np.empty(nb + 1, np.int64)
    cdef uint8_t *bk = <uint8_t *>cnp.PyArray_DATA(bucket)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(counts)
    cdef int64_t *st = <int64_t *>cnp.PyArray_DATA(start)
    with nogil:
        for t in prange(nblk, num_threads=nt, schedule='static'):
            fs_perm_draw(bk, cnt + t * nb, t * block, min(n, (t + 1) * block), log_nb,
                         fs_substream(seed, 2 * t))
        # Each (block, bucket) count becomes that block's first place in the bucket: buckets in
        # order, and within one the blocks in order.
        for b in range(nb):
            st[b] = pos
            for t in range(nblk):
                c = cnt[t * nb + b]
                cnt[t * nb + b] = pos
                pos += c
        st[nb] = n
        for t in prange(nblk, num_threads=nt, schedule='static'):
            fs_perm_scatter(bk, cnt + t * nb, t * block, min(n, (t + 1) * block), p)
        for b in prange(nb, num_threads=nt, schedule='static'):
            fs_shuffle(p + st[b], st[b + 1] - st[b], fs_substream(seed, 2 * b + 1))
    return out


# ---- X @ W + b ---------------------------------------------------------------------------------

cdef inline void _fwd_chunk(fs_i64 c, const floating *X, fs_i64 n, fs_i64 k, const floating *Wop,
                            fs_i64 m, bint panel, const floating *bias,
                            floating *out) noexcept nogil:
    cdef fs_i64 r0 = c * ROW_CHUNK
    cdef fs_i64 rows = min(<fs_i64>ROW_CHUNK, n - r0)
    if floating is float:
        if panel:
            fs_gemm_rows_f32(X + r0 * k, k, 1, rows, k, Wop, m, bias, out + r0 * m, m)
        else:
            fs_dot_fwd_f32(X + r0 * k, k, rows, k, Wop, m, bias, out + r0 * m, m)
    else:
        if panel:
            fs_gemm_rows_f64(X + r0 * k, k, 1, rows, k, Wop, m, bias, out + r0 * m, m)
        else:
            fs_dot_fwd_f64(X + r0 * k, k, rows, k, Wop, m, bias, out + r0 * m, m)


cdef int _matmul_bias(const floating *X, const floating *W, const floating *bias, floating *out,
                      fs_i64 n, fs_i64 k, fs_i64 m, int nt) except -1:
    cdef fs_i64 c, nch = _nchunks(n, ROW_CHUNK), pw = _panel_width(out)
    cdef floating *tmp = NULL
    cdef const floating *Wop = W  # one output: W (k x 1) is its own transpose
    cdef bint panel = m > FS_DOT_MAX
    try:
        if panel:
            tmp = _scratch(_nchunks(m, pw) * pw * k, out)
            if floating is float:
                fs_pack_panels_f32(W, m, k, m, tmp)
            else:
                fs_pack_panels_f64(W, m, k, m, tmp)
            Wop = tmp
        elif m > 1:
            tmp = _scratch(k * m, out)
            if floating is float:
                fs_transpose_f32(W, k, m, tmp)
            else:
                fs_transpose_f64(W, k, m, tmp)
            Wop = tmp
        with nogil:
            if nt > 1:
                for c in prange(nch, num_threads=nt, schedule='static'):
                    _fwd_chunk(c, X, n, k, Wop, m, panel, bias, out)
            else:
                for c in range(nch):
                    _fwd_chunk(c, X, n, k, Wop, m, panel, bias, out)
    finally:
        free(tmp)
    return 0


def matmul_bias(cnp.ndarray X, cnp.ndarray W, object b, cnp.ndarray out, int nt):
    """out = X @ W + b (b may be None): C-contiguous float32/float64 arrays of one dtype with
    matching shapes and all sizes > 0, as checked by the caller."""
    cdef fs_i64 n = X.shape[0], k = X.shape[1], m = W.shape[1]
    if _f32(X):
        _matmul_bias(<const float *>_data(X), <const float *>_data(W), <const float *>_data(b),
                     <float *>_data(out), n, k, m, nt)
    else:
        _matmul_bias(<const double *>_data(X), <const double *>_data(W),
                     <const double *>_data(b), <double *>_data(out), n, k, m, nt)


cdef inline bint _native(cnp.ndarray a) noexcept:
    """C-contiguous, aligned and in the machine's byte order: memory the kernels can read as
    their own type (a byte-swapped array has the same type number)."""
    return (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline int _float_type(object a):
    """a's type number when it is a float32 or float64 ndarray, else -1."""
    if not cnp.PyArray_Check(a):
        return -1
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>a)
    return t if t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64 else -1


cdef inline bint _plain(object a, int ndim, int typenum):
    """An ndarray of this rank and type, native (see _native) and non-empty.  Subclasses (such
    as the library's Tensor) count: only their memory is read, as np.asarray would."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_NDIM(arr) == ndim and cnp.PyArray_TYPE(arr) == typenum
            and _native(arr) and cnp.PyArray_SIZE(arr) > 0)


cdef inline bint _apart(cnp.ndarray a, object other):
    """`a` and `other` (a contiguous array or None) occupy disjoint memory."""
    if other is None:
        return True
    cdef char *p = <char *>cnp.PyArray_DATA(a)
    cdef char *q = <char *>cnp.PyArray_DATA(<cnp.ndarray>other)
    return (p + cnp.PyArray_NBYTES(a) <= q
            or q + cnp.PyArray_NBYTES(<cnp.ndarray>other) <= p)


cdef object _out_or_new(object out, fs_i64 n, fs_i64 m, int typenum):
    """`out` when it is a writeable C-contiguous (n, m) array of this type, a new one when it is
    None, else None (the caller then validates).  Whether it overlaps an input is the caller's
    to check."""
    cdef cnp.npy_intp dims[2]
    if out is None:
        dims[0] = n
        dims[1] = m
        return cnp.PyArray_EMPTY(2, dims, typenum, 0)
    if not (_plain(out, 2, typenum) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)):
        return None
    if (<cnp.ndarray>out).shape[0] != n or (<cnp.ndarray>out).shape[1] != m:
        return None
    return out


def matmul_bias_if_plain(object X, object W, object b, object out, int nt, int64_t serial_work):
    """X @ W + b (into `out` when given) when the arguments are exactly what the kernel takes --
    2-D C-contiguous float arrays of one type with matching, non-zero shapes, and an `out` that
    is writeable and shares no memory with them -- else None, and the caller validates.  For
    minibatch-sized products the Python-level checks would cost as much as the product."""
    cdef int typenum = _float_type(X)
    if typenum < 0 or not (_plain(X, 2, typenum) and _plain(W, 2, typenum)):
        return None
    cdef fs_i64 n = (<cnp.ndarray>X).shape[0], k = (<cnp.ndarray>X).shape[1]
    if (<cnp.ndarray>W).shape[0] != k:
        return None
    cdef fs_i64 m = (<cnp.ndarray>W).shape[1]
    if b is not None and not (_plain(b, 1, typenum) and (<cnp.ndarray>b).shape[0] == m):
        return None
    res = _out_or_new(out, n, m, typenum)
    if res is None or (out is not None and not (
            _apart(res, X) and _apart(res, W) and _apart(res, b))):
        return None
    matmul_bias(X, W, b, res, 1 if n * k * m < serial_work else nt)
    return res


# ---- its gradient: X^T G and the column sums of G ------------------------------------------------

cdef inline void _bwd_chunk(fs_i64 c, const floating *X, fs_i64 n, fs_i64 k, const floating *G,
                            const floating *Gp, fs_i64 m, floating *dW,
                            floating *dWt) noexcept nogil:
    cdef fs_i64 width = COL_CHUNK if Gp != NULL else DOT_COL_CHUNK
    cdef fs_i64 k0 = c * width
    cdef fs_i64 kw = min(width, k - k0)
    if Gp != NULL:
        # dW rows are X columns: the micro-kernel walks X^T (row step 1, contraction step k).
        if floating is float:
            fs_gemm_rows_f32(X + k0, 1, k, kw, n, Gp, m, NULL, dW + k0 * m, m)
        else:
            fs_gemm_rows_f64(X + k0, 1, k, kw, n, Gp, m, NULL, dW + k0 * m, m)
    else:
        if floating is float:
            fs_dot_bwd_f32(X, k, n, k0, kw, G, m, m, dWt, k)
        else:
            fs_dot_bwd_f64(X, k, n, k0, kw, G, m, m, dWt, k)


cdef int _matmul_bias_backward(const floating *X, const floating *G, floating *dW, floating *db,
                               fs_i64 n, fs_i64 k, fs_i64 m, int nt) except -1:
    cdef fs_i64 c, pw = _panel_width(dW)
    cdef fs_i64 nch = _nchunks(k, COL_CHUNK if m > FS_DOT_MAX else DOT_COL_CHUNK)
    cdef floating *tmp = NULL
    cdef floating *dWt = dW  # one output: dW (k x 1) is its own transpose
    cdef const floating *Gp = NULL
    try:
        if m > FS_DOT_MAX:
            tmp = _scratch(_nchunks(m, pw) * pw * n, dW)
            if floating is float:
                fs_pack_panels_f32(G, m, n, m, tmp)
            else:
                fs_pack_panels_f64(G, m, n, m, tmp)
            Gp = tmp
        elif m > 1:
            tmp = _scratch(k * m, dW)
            dWt = tmp
        with nogil:
            if nt > 1:
                for c in prange(nch, num_threads=nt, schedule='static'):
                    _bwd_chunk(c, X, n, k, G, Gp, m, dW, dWt)
            else:
                for c in range(nch):
                    _bwd_chunk(c, X, n, k, G, Gp, m, dW, dWt)
            if Gp == NULL and m > 1:
                if floating is float:
                    fs_transpose_f32(dWt, m, k, dW)
                else:
                    fs_transpose_f64(dWt, m, k, dW)
            if db != NULL:
                if floating is float:
                    fs_colsum_f32(G, m, n, m, db)
                else:
                    fs_colsum_f64(G, m, n, m, db)
    finally:
        free(tmp)
    return 0


cdef inline int _backward(cnp.ndarray X, cnp.ndarray G, cnp.ndarray dW, object db,
                          int nt) except -1:
    """matmul_bias_backward, called from C by the recognizers below (a call of the def function
    would be a Python call)."""
    cdef fs_i64 n = X.shape[0], k = X.shape[1], m = G.shape[1]
    if _f32(X):
        _matmul_bias_backward(<const float *>_data(X), <const float *>_data(G),
                              <float *>_data(dW), <float *>_data(db), n, k, m, nt)
    else:
        _matmul_bias_backward(<const double *>_data(X), <const double *>_data(G),
                              <double *>_data(dW), <double *>_data(db), n, k, m, nt)
    return 0


def matmul_bias_backward(cnp.ndarray X, cnp.ndarray G, cnp.ndarray dW, object db, int nt):
    """dW = X.T @ G and db = G.sum(axis=0) (db may be None).  All sizes > 0."""
    _backward(X, G, dW, db, nt)


def matmul_bias_backward_into_if_plain(object X, object G, object dW, object db, int nt):
    """dW = X.T @ G and db = G.sum(axis=0) written into dW and db (None: no bias) and True, when
    all are exactly what the kernel takes -- X (n, k) and G (n, m) 2-D C-contiguous native
    arrays of one float type, n, k, m > 0, and dW (k, m) and db (m,) writeable ones of that
    type, apart from X and G -- else False, and the caller finds out what is wrong.  A layer's
    backward writes its parameters' gradient buffers so: the caller holds them and the input,
    and may have resized, reshaped, retyped or frozen any of them in place since the forward
    pass."""
    cdef int typenum = _float_type(X)
    if typenum < 0 or not (_plain(X, 2, typenum) and _plain(G, 2, typenum)
                           and _plain(dW, 2, typenum)):
        return False
    cdef cnp.ndarray x = <cnp.ndarray>X, g = <cnp.ndarray>G, w = <cnp.ndarray>dW
    cdef fs_i64 n = x.shape[0], k = x.shape[1], m = g.shape[1]
    if (g.shape[0] != n or w.shape[0] != k or w.shape[1] != m
            or not cnp.PyArray_ISWRITEABLE(w) or not (_apart(w, x) and _apart(w, g))):
        return False
    if db is not None and not (
            _plain(db, 1, typenum) and (<cnp.ndarray>db).shape[0] == m
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>db) and _apart(<cnp.ndarray>db, x)
            and _apart(<cnp.ndarray>db, g) and _apart(w, db)):
        return False
    _backward(x, g, w, db, nt)
    return True


def matmul_bias_backward_if_plain(object X, object G, int nt, int64_t serial_work):
    """(X.T @ G, G.sum(axis=0)) when X and G are 2-D C-contiguous float arrays of one type with
    n, k, m > 0 and matching rows, else None, and the caller validates (as
    matmul_bias_if_plain, for the same reason)."""
    cdef int typenum = _float_type(X)
    if typenum < 0 or not (_plain(X, 2, typenum) and _plain(G, 2, typenum)):
        return None
    cdef cnp.ndarray x = <cnp.ndarray>X, g = <cnp.ndarray>G
    if g.shape[0] != x.shape[0]:
        return None
    cdef cnp.npy_intp dims[2]
    dims[0] = x.shape[1]
    dims[1] = g.shape[1]
    # Both are overwritten in full by the kernel.
    cdef cnp.ndarray dW = cnp.PyArray_EMPTY(2, dims, typenum, 0)
    cdef cnp.ndarray db = cnp.PyArray_EMPTY(1, &dims[1], typenum, 0)
    _backward(x, g, dW, db, 1 if x.shape[0] * x.shape[1] * g.shape[1] < serial_work else nt)
    return dW, db


# ---- softmax and cross-entropy -------------------------------------------------------------------

cdef inline void _xent_chunk(fs_i64 c, fs_i64 chunk, const floating *Z, fs_i64 n, fs_i64 m,
                             const fs_i64 *y, double smooth, floating *loss,
                             floating *G) noexcept nogil:
    cdef fs_i64 r0 = c * chunk
    cdef fs_i64 rows = min(chunk, n - r0)
    if floating is float:
        fs_softmax_xent_rows_f32(Z + r0 * m, m, rows, m, y + r0, <float>smooth, loss + r0,
                                 G + r0 * m, m)
    else:
        fs_softmax_xent_rows_f64(Z + r0 * m, m, rows, m, y + r0, smooth, loss + r0,
                                 G + r0 * m, m)


cdef void _softmax_cross_entropy(const floating *Z, const fs_i64 *y, double smooth,
                                 floating *loss, floating *G, fs_i64 n, fs_i64 m,
                                 int nt, fs_i64 chunk) noexcept:
    cdef fs_i64 c, nch = _nchunks(n, chunk)
    with nogil:
        if nt > 1:
            for c in prange(nch, num_threads=nt, schedule='static'):
                _xent_chunk(c, chunk, Z, n, m, y, smooth, loss, G)
        else:
            for c in range(nch):
                _xent_chunk(c, chunk, Z, n, m, y, smooth, loss, G)


def softmax_cross_entropy(cnp.ndarray Z, cnp.ndarray y, double smooth, cnp.ndarray loss,
                          cnp.ndarray G, int nt, fs_i64 chunk=ROW_CHUNK):
    """Per-row loss and dL/dZ of softmax cross-entropy with int64 labels in [0, m), `chunk`
    (> 0) rows per call of the C kernel: the results do not depend on it, and tests reach the
    calls of up to 64 rows the fused step makes with it."""
    cdef fs_i64 n = Z.shape[0], m = Z.shape[1]
    cdef const fs_i64 *yp = <const fs_i64 *>_data(y)
    if chunk < 1:
        raise ValueError(f"chunk must be > 0, got {chunk}")
    if _f32(Z):
        _softmax_cross_entropy(<const float *>_data(Z), yp, smooth, <float *>_data(loss),
                               <float *>_data(G), n, m, nt, chunk)
    else:
        _softmax_cross_entropy(<const double *>_data(Z), yp, smooth, <double *>_data(loss),
                               <double *>_data(G), n, m, nt, chunk)


cdef inline void _softmax_chunk(fs_i64 c, const floating *Z, fs_i64 n, fs_i64 m, int log,
                                floating *out) noexcept nogil:
    cdef fs_i64 r0 = c * ROW_CHUNK
    cdef fs_i64 rows = min(<fs_i64>ROW_CHUNK, n - r0)
    if floating is float:
        fs_softmax_rows_f32(Z + r0 * m, m, rows, m, log, out + r0 * m, m)
    else:
        fs_softmax_rows_f64(Z + r0 * m, m, rows, m, log, out + r0 * m, m)


cdef void _softmax(const floating *Z, floating *out, fs_i64 n, fs_i64 m, int log,
                   int nt) noexcept:
    cdef fs_i64 c, nch = _nchunks(n, ROW_CHUNK)
    with nogil:
        if nt > 1:
            for c in prange(nch, num_threads=nt, schedule='static'):
                _softmax_chunk(c, Z, n, m, log, out)
        else:
            for c in range(nch):
                _softmax_chunk(c, Z, n, m, log, out)


def softmax(cnp.ndarray Z, cnp.ndarray out, bint log, int nt):
    """Row-wise softmax, or log-softmax when `log`."""
    cdef fs_i64 n = Z.shape[0], m = Z.shape[1]
    if _f32(Z):
        _softmax(<const float *>_data(Z), <float *>_data(out), n, m, log, nt)
    else:
        _softmax(<const double *>_data(Z), <double *>_data(out), n, m, log, nt)


# ---- the SGD update ----------------------------------------------------------------------------

cdef inline void _sgd_chunk(fs_i64 c, floating *p, const floating *g, fs_i64 n, double lr,
                            double bs, double mom, double wd, floating *v) noexcept nogil:
    cdef fs_i64 i0 = c * VEC_CHUNK
    cdef fs_i64 cnt = min(<fs_i64>VEC_CHUNK, n - i0)
    if floating is float:
        fs_sgd_f32(p + i0, g + i0, cnt, <float>lr, <float>bs, <float>mom, <float>wd,
                   v + i0 if v != NULL else NULL)
    else:
        fs_sgd_f64(p + i0, g + i0, cnt, lr, bs, mom, wd, v + i0 if v != NULL else NULL)


cdef void _sgd(floating *p, const floating *g, fs_i64 n, double lr, double bs, double mom,
               double wd, floating *v, int nt) noexcept:
    cdef fs_i64 c, nch = _nchunks(n, VEC_CHUNK)
    with nogil:
        if nt > 1:
            for c in prange(nch, num_threads=nt, schedule='static'):
                _sgd_chunk(c, p, g, n, lr, bs, mom, wd, v)
        else:
            for c in range(nch):
                _sgd_chunk(c, p, g, n, lr, bs, mom, wd, v)


def sgd_update(cnp.ndarray param, cnp.ndarray grad, double lr, double batch_size,
               double momentum, double weight_decay, object velocity, int nt):
    """In place: param -= lr * (grad / batch_size + weight_decay * param), through the velocity
    buffer when one is given.  Contiguous arrays of one dtype and size, validated by the caller."""
    cdef fs_i64 n = cnp.PyArray_SIZE(param)
    if _f32(param):
        _sgd(<float *>_data(param), <const float *>_data(grad), n, lr, batch_size, momentum,
             weight_decay, <float *>_data(velocity), nt)
    else:
        _sgd(<double *>_data(param), <const double *>_data(grad), n, lr, batch_size,
             momentum, weight_decay, <double *>_data(velocity), nt)


cdef inline bint _flat(object a, int typenum):
    """A non-empty native (see _native) ndarray of this type, of any shape."""
    return (cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and _native(<cnp.ndarray>a) and cnp.PyArray_SIZE(<cnp.ndarray>a) > 0)


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd:
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


def sgd_update_if_plain(object param, object grad, object lr, object batch_size,
                        object momentum, object weight_decay, object velocity, int nt,
                        int64_t serial_work):
    """Run sgd_update and return True when every argument is already exactly right -- param
    (writeable), grad and velocity (None, or writeable) non-empty native arrays of one float
    type and shape that share no memory; lr a finite float > 0; batch_size an int > 0;
    momentum a float in [0, 1), 0 without velocity; weight_decay a finite float >= 0; lr and
    weight_decay finite in param's type -- else return False, and the caller validates (as
    matmul_bias_if_plain, for the same reason)."""
    cdef int typenum = _float_type(param)
    if typenum < 0 or not (_flat(param, typenum) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>param)
            and _flat(grad, typenum)):
        return False
    cdef fs_i64 n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    if not _same_shape(<cnp.ndarray>param, <cnp.ndarray>grad) or not _apart(<cnp.ndarray>param,
                                                                             grad):
        return False
    if type(lr) is not float or type(momentum) is not float or type(weight_decay) is not float:
        return False
    if type(batch_size) is not int or batch_size <= 0:
        return False
    cdef double lr_ = lr, mom = momentum, wd = weight_decay
    if not (isfinite(lr_) and lr_ > 0 and 0 <= mom < 1 and isfinite(wd) and wd >= 0):
        return False
    if typenum == cnp.NPY_FLOAT32 and (lr_ > FLT_MAX or wd > FLT_MAX):
        return False
    if velocity is None:
        if mom != 0:
            return False
    elif not (_flat(velocity, typenum) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>velocity)
              and _same_shape(<cnp.ndarray>velocity, <cnp.ndarray>param)
              and _apart(<cnp.ndarray>velocity, param) and _apart(<cnp.ndarray>velocity, grad)):
        return False
    sgd_update(param, grad, lr_, <double>batch_size, mom, wd, velocity,
               1 if n * 4 < serial_work else nt)
    return True


cdef inline void _gather_chunk(fs_i64 c, const void *X, bint u8, fs_i64 k, const fs_i64 *idx,
                               fs_i64 n, void *out, bint f32, double scale) noexcept nogil:
    cdef fs_i64 r0 = c * ROW_CHUNK
    cdef fs_i64 r1 = min(r0 + ROW_CHUNK, n)
    if f32:
        fs_gather_rows_f32(X, u8, k, k, <float>scale, idx, r0, r1, n, <float *>out)
    else:
        fs_gather_rows_f64(X, u8, k, k, scale, idx, r0, r1, n, <double *>out)


def gather_rows(cnp.ndarray src, cnp.ndarray idx, cnp.ndarray out, double scale, int nt):
    """out[i, :] = src[idx[i], :] * scale, converted to out's type; src is uint8 or out's type.
    (Multiplying by exactly 1 changes no bit.)"""
    cdef fs_i64 n = idx.shape[0], k = src.shape[1], c, nch = _nchunks(n, ROW_CHUNK)
    cdef const void *X = _data(src)
    cdef bint u8 = cnp.PyArray_TYPE(src) == cnp.NPY_UINT8, f32 = _f32(out)
    cdef const fs_i64 *ip = <const fs_i64 *>_data(idx)
    cdef void *o = _data(out)
    with nogil:
        if nt > 1:
            for c in prange(nch, num_threads=nt, schedule='static'):
                _gather_chunk(c, X, u8, k, ip, n, o, f32, scale)
        else:
            for c in range(nch):
                _gather_chunk(c, X, u8, k, ip, n, o, f32, scale)


def gather_rows_if_plain(object src, object idx, object out, object scale, int nt,
                        int64_t serial_work):
    """src[idx] * scale as gather_rows computes it, into `out` (allocated when None), when the
    arguments are already exactly right -- src a 2-D C-contiguous uint8 / float32 / float64
    array; idx a non-empty C-contiguous int64 vector of rows of src; out None or a writeable
    C-contiguous (len(idx), k) array of src's float type (float32 for uint8) apart from both;
    scale None or a float finite in the output's type -- else None, and the caller validates
    (as matmul_bias_if_plain, for the same reason)."""
    if not (cnp.PyArray_Check(src) and cnp.PyArray_Check(idx)):
        return None
    cdef cnp.ndarray s = <cnp.ndarray>src, ix = <cnp.ndarray>idx
    cdef int st = cnp.PyArray_TYPE(s)
    if st != cnp.NPY_UINT8 and st != cnp.NPY_FLOAT32 and st != cnp.NPY_FLOAT64:
        return None
    if cnp.PyArray_NDIM(s) != 2 or not _native(s):
        return None
    if not _plain(ix, 1, cnp.NPY_INT64):
        return None
    cdef double sc = 1.0
    if scale is not None:
        if type(scale) is not float:
            return None
        sc = scale
        if not isfinite(sc) or (st != cnp.NPY_FLOAT64 and fabs(sc) > FLT_MAX):
            return None
    cdef fs_i64 rows = s.shape[0], k = s.shape[1], n = ix.shape[0], i
    if k == 0:
        return None
    cdef const int64_t *p = <const int64_t *>cnp.PyArray_DATA(ix)
    for i in range(n):
        if <uint64_t>p[i] >= <uint64_t>rows:  # negative indices wrap to huge
            return None
    res = _out_or_new(out, n, k, cnp.NPY_FLOAT32 if st == cnp.NPY_UINT8 else st)
    if res is None or (out is not None and not (_apart(res, s) and _apart(res, ix))):
        return None
    gather_rows(s, ix, res, sc, 1 if n * k < serial_work else nt)
    return res


# ---- regression losses ---------------------------------------------------------------------------

cdef inline void _regression_chunk(fs_i64 c, const void *P, const void *T, fs_i64 n, fs_i64 m,
                                   bint huber, double delta, void *loss, void *G,
                                   bint f32) noexcept nogil:
    cdef fs_i64 r0 = c * ROW_CHUNK
    cdef fs_i64 r1 = min(r0 + ROW_CHUNK, n)
    if f32:
        fs_regression_rows_f32(<const float *>P, <const float *>T, r0, r1, m, huber,
                               <float>delta, <float *>loss, <float *>G)
    else:
        fs_regression_rows_f64(<const double *>P, <const double *>T, r0, r1, m, huber, delta,
                               <double *>loss, <double *>G)


cdef void _regression(const void *p, const void *t, fs_i64 n, fs_i64 m, bint huber, double delta,
                      void *l, void *g, bint f32, int nt) noexcept:
    cdef fs_i64 c, nch = _nchunks(n, ROW_CHUNK)
    with nogil:
        if nt > 1:
            for c in prange(nch, num_threads=nt, schedule='static'):
                _regression_chunk(c, p, t, n, m, huber, delta, l, g, f32)
        else:
            for c in range(nch):
                _regression_chunk(c, p, t, n, m, huber, delta, l, g, f32)


def regression_loss(cnp.ndarray P, cnp.ndarray T, bint huber, double delta, cnp.ndarray loss,
                    cnp.ndarray G, int nt):
    """Per-row L2 (or Huber) loss of P against T (both n x m, m > 0), averaged over the m
    outputs, and its gradient with respect to P."""
    _regression(_data(P), _data(T), P.shape[0], P.shape[1], huber, delta, _data(loss), _data(G),
                _f32(P), nt)


def regression_loss_if_plain(object P, object T, bint huber, double delta, int nt,
                             int64_t serial_work):
    """(loss, grad) as regression_loss computes them when P is a 1-D or 2-D C-contiguous
    non-empty float array and T a C-contiguous array of its type and size (any shape), else
    None, and the caller validates (as matmul_bias_if_plain, for the same reason)."""
    cdef int typenum = _float_type(P)
    if typenum < 0 or not cnp.PyArray_Check(T):
        return None
    cdef cnp.ndarray p = <cnp.ndarray>P, t = <cnp.ndarray>T
    cdef int nd = cnp.PyArray_NDIM(p)
    if not ((nd == 1 or nd == 2) and _plain(p, nd, typenum)):
        return None
    if not (cnp.PyArray_TYPE(t) == typenum and _native(t)
            and cnp.PyArray_SIZE(t) == cnp.PyArray_SIZE(p)):
        return None
    cdef cnp.npy_intp n = cnp.PyArray_DIM(p, 0)
    cdef fs_i64 m = cnp.PyArray_SIZE(p) // n
    cdef cnp.ndarray loss = cnp.PyArray_EMPTY(1, &n, typenum, 0)
    cdef cnp.ndarray G = cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(p), typenum, 0)
    _regression(_data(p), _data(t), n, m, huber, delta, _data(loss), _data(G),
                typenum == cnp.NPY_FLOAT32, 1 if n * m * 4 < serial_work else nt)
    return loss, G


# ---- fused training ---------------------------------------------------------------------------

cdef extern from "fs_kernels.h" nogil:
    int FS_PW_F32 "16"
    int FS_PW_F64 "8"
    int FS_FUSED_CHUNK
    fs_i64 fs_fused_share_rows(fs_i64 batch, fs_i64 m, int panel, fs_i64 row_esize,
                               fs_i64 esize)
    fs_i64 fs_split_at(const double *cum, int i, int nt, fs_i64 n, fs_i64 unit)
    fs_i64 fs_chunk_at(fs_i64 at, fs_i64 unit)
    ctypedef struct fs_fused_args_f32:
        const void *X
        int x_u8
        fs_i64 ldx, k
        float scale
        const fs_i64 *labels
        const uint8_t *labels8
        const float *targets
        const fs_i64 *perm
        fs_i64 n, batch
        int loss
        float smooth, delta
        fs_i64 m
        int panel
        float *Wp
        float *b
        float *V
        float *vb
        const float *lrs
        float momentum, wd
        float *Xb
        float *Z
        float *G
        float *Gp
        float *dW
        float *db
        float *rowloss
        fs_i64 *rowhit
        double *chunk_loss
        fs_i64 *chunk_hits
        double *batch_loss
        fs_i64 *batch_hits
        int nt
    ctypedef struct fs_fused_args_f64:
        const void *X
        int x_u8
        fs_i64 ldx, k
        double scale
        const fs_i64 *labels
        const uint8_t *labels8
        const double *targets
        const fs_i64 *perm
        fs_i64 n, batch
        int loss
        double smooth, delta
        fs_i64 m
        int panel
        double *Wp
        double *b
        double *V
        double *vb
        const double *lrs
        double momentum, wd
        double *Xb
        double *Z
        double *G
        double *Gp
        double *dW
        double *db
        double *rowloss
        fs_i64 *rowhit
        double *chunk_loss
        fs_i64 *chunk_hits
        double *batch_loss
        fs_i64 *batch_hits
        int nt
    fs_i64 fs_fused_sgd_f32(const fs_fused_args_f32 *a, fs_i64 t0, fs_i64 t1)
    fs_i64 fs_fused_sgd_f64(const fs_fused_args_f64 *a, fs_i64 t0, fs_i64 t1)
    fs_i64 fs_fused_forward_f32(const void *X, int x_u8, fs_i64 ldx, fs_i64 k, float scale,
                                const fs_i64 *idx, fs_i64 r0, fs_i64 r1, const float *Wp,
                                int panel, const float *b, fs_i64 m, float *xb, float *Z,
                                int keep, const fs_i64 *labels)
    fs_i64 fs_fused_forward_f64(const void *X, int x_u8, fs_i64 ldx, fs_i64 k, double scale,
                                const fs_i64 *idx, fs_i64 r0, fs_i64 r1, const double *Wp,
                                int panel, const double *b, fs_i64 m, double *xb, double *Z,
                                int keep, const fs_i64 *labels)


def panel_width(dtype):
    """Output columns per packed weight panel for float32 / float64."""
    return FS_PW_F32 if np.dtype(dtype) == np.float32 else FS_PW_F64


def _aligned_zeros(shape, dtype):
    """Zeros starting on a 64-byte boundary (NumPy promises 16): the kernels' vector loads of a
    weight row then stay within cache lines."""
    dtype = np.dtype(dtype)
    cdef Py_ssize_t nbytes = dtype.itemsize, start
    for s in shape:
        nbytes *= s
    cdef cnp.ndarray buf = np.zeros(nbytes + 64, np.uint8)
    start = (64 - <size_t>cnp.PyArray_DATA(buf) % 64) % 64
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def to_working_layout(W):
    """W (k x m) -> a new array in the layout the fused kernels update, 64-byte aligned: W.T
    when m <= FS_DOT_MAX, else panels."""
    W = np.asarray(W)
    k, m = W.shape
    if m <= FS_DOT_MAX:
        Wt = _aligned_zeros((m, k), W.dtype)
        Wt[...] = W.T
        return Wt
    pw = panel_width(W.dtype)
    npan = (m + pw - 1) // pw
    P = _aligned_zeros((npan, k, pw), W.dtype)
    for p in range(npan):
        cols = W[:, p * pw:(p + 1) * pw]
        P[p, :, :cols.shape[1]] = cols
    return P.reshape(npan * k, pw)


def from_working_layout(P, k, m, out):
    """Inverse of to_working_layout, written into `out` (k x m)."""
    if m <= FS_DOT_MAX:
        out[...] = P.T
        return out
    pw = P.shape[1]
    P3 = P.reshape(-1, k, pw)
    for p in range(P3.shape[0]):
        w = min(pw, m - p * pw)
        out[:, p * pw:p * pw + w] = P3[p, :, :w]
    return out


cdef inline const void *_data_ptr(cnp.ndarray a) except NULL:
    # Never reshape (a reshape of a strided array is a temporary copy, freed before use).
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_SIZE(a) == 0:
        raise ValueError("the compiled kernels need a non-empty C-contiguous array")
    return <const void *>cnp.PyArray_DATA(a)


def _scratch_shapes(fs_i64 batch, fs_i64 k, fs_i64 m, dtype, fs_i64 x_itemsize):
    """The shapes of fused_sgd's work buffers (see fused_scratch), for one full minibatch of
    examples of `x_itemsize` bytes per feature (1: uint8) and weights of `dtype`."""
    dtype = np.dtype(dtype)
    pw = FS_PW_F32 if dtype == np.float32 else FS_PW_F64
    cdef int panel = m > FS_DOT_MAX
    cdef fs_i64 sr = fs_fused_share_rows(batch, m, panel, x_itemsize, dtype.itemsize)
    cdef fs_i64 nch = _nchunks(batch, sr) if sr > 0 else 0
    return ((batch, k),                                   # Xb: the gathered rows
            (batch, m),                                   # Z: outputs
            (batch, m),                                   # G: loss gradient
            (_nchunks(m, pw) * batch * pw if panel else 1,),  # Gp: G in panels
            # the weight gradient: k x m (panels) or m x k; when phase 1 leaves shares
            # (fs_fused_share_rows), one m x k and one m share per chunk of rows
            (nch * (k * m + m) if sr > 0 else k * m,),
            (m,),                                         # db
            (batch,),                                     # per-row loss
            (batch,),                                     # per-row hit (int64)
            (nch if sr > 0 else 1,),                      # with shares: each chunk's loss
            (nch if sr > 0 else 1,))                      # and hits (int64)


def fused_plan(fs_i64 batch, fs_i64 k, fs_i64 m, dtype, fs_i64 x_itemsize):
    """How fused_sgd sums a minibatch's weight gradient for these sizes: "panels" (many
    outputs), "rows" (after a barrier each thread sums its weight rows' gradient over every
    row of the batch) or "shares" (phase 1 leaves each chunk of rows a share, which the threads
    add up as a chain, without a barrier)."""
    dtype = np.dtype(dtype)
    if m > FS_DOT_MAX:
        return "panels"
    return "shares" if fs_fused_share_rows(batch, m, 0, x_itemsize, dtype.itemsize) else "rows"


def fused_split(cum, fs_i64 n, fs_i64 unit):
    """How fused_sgd splits n items (rows, or weight rows) among threads whose shares before
    thread i add up to cum[i] (cum[0] = 0, cum[-1] = 1): for each thread, its items [lo, hi)
    and the chunks of `unit` items [c0, c1) whose sums it adds to the chain."""
    cdef double[::1] c = np.ascontiguousarray(cum, dtype=np.float64)
    cdef int nt = c.shape[0] - 1
    if nt < 1 or unit < 1 or n < 0:
        raise ValueError(f"need at least 2 cumulative shares, unit >= 1 and n >= 0; got "
                         f"{c.shape[0]}, {unit}, {n}")
    out = []
    for i in range(nt):
        lo, hi = fs_split_at(&c[0], i, nt, n, unit), fs_split_at(&c[0], i + 1, nt, n, unit)
        out.append((lo, hi, fs_chunk_at(lo, unit), fs_chunk_at(hi, unit)))
    return out


def fused_scratch(fs_i64 batch, fs_i64 k, fs_i64 m, dtype, fs_i64 x_itemsize):
    """Work buffers for fused_sgd over examples of `x_itemsize` bytes per feature (1: uint8),
    sized for one full minibatch; allocate once, reuse."""
    shapes = _scratch_shapes(batch, k, m, dtype, x_itemsize)
    return (np.empty(shapes[0], dtype), np.empty(shapes[1], dtype), np.empty(shapes[2], dtype),
            np.zeros(shapes[3], dtype),  # the panels' padding is read
            np.empty(shapes[4], dtype), np.empty(shapes[5], dtype), np.empty(shapes[6], dtype),
            np.empty(shapes[7], np.int64), np.empty(shapes[8], np.float64),
            np.empty(shapes[9], np.int64))


def fused_sgd(X, labels, targets, const int64_t[::1] perm, fs_i64 batch, int loss,
              double smooth, double delta, floating[:, ::1] Wp, floating[::1] b, V, vb,
              const floating[::1] lrs, double momentum, double weight_decay, double scale,
              double[::1] batch_loss, int64_t[::1] batch_hits, fs_i64 t0, fs_i64 t1, int nt,
              tuple scratch):
    """Minibatches [t0, t1) of an epoch in one call; see fs_fused_sgd in csrc.  Returns the index
    of the first batch whose loss was not finite, or -1.  The caller has validated everything:
    X is C-contiguous 2-D uint8 or of the weights' dtype, every perm entry indexes a row of X,
    labels (int64, or uint8 for up to 256 outputs) or targets (weights' dtype, n x m) match, and
    all buffers have their sizes.
    `scratch` must come from fused_scratch(batch, k, m, weights' dtype, X.dtype.itemsize):
    that is checked here, since its sizes depend on how the C code sums (see _scratch_shapes)."""
    cdef fs_i64 k = X.shape[1], m = b.shape[0], bad
    cdef bint panel = m > FS_DOT_MAX
    cdef floating[:, ::1] Xb = scratch[0]
    cdef floating[:, ::1] Z = scratch[1]
    cdef floating[:, ::1] G = scratch[2]
    cdef floating[::1] Gp = scratch[3]
    cdef floating[::1] dW = scratch[4]
    cdef floating[::1] db = scratch[5]
    cdef floating[::1] rowloss = scratch[6]
    cdef int64_t[::1] rowhit = scratch[7]
    cdef double[::1] chunk_loss = scratch[8]
    cdef int64_t[::1] chunk_hits = scratch[9]
    cdef const int64_t[::1] lab
    cdef const uint8_t[::1] lab8
    cdef const floating[:, ::1] tgt
    cdef floating[::1] Vv, vbv
    cdef fs_fused_args_f32 a32
    cdef fs_fused_args_f64 a64
    if floating is float:
        a = &a32
    else:
        a = &a64
    want = _scratch_shapes(batch, k, m, np.float32 if floating is float else np.float64,
                           X.dtype.itemsize)
    if len(scratch) != len(want) or any(getattr(buf, "shape", None) != shape
                                        for buf, shape in zip(scratch, want)):
        raise ValueError("the scratch was made by fused_scratch for other sizes or examples")
    a.X = _data_ptr(X)
    a.x_u8 = X.dtype == np.uint8
    a.ldx = k
    a.k = k
    a.scale = scale
    a.labels = NULL
    a.labels8 = NULL
    a.targets = NULL
    if labels is not None and labels.dtype == np.uint8:
        lab8 = labels
        a.labels8 = &lab8[0]
    elif labels is not None:
        lab = labels
        a.labels = &lab[0]
    if targets is not None:
        tgt = targets
        a.targets = &tgt[0, 0]
    a.perm = &perm[0]
    a.n = perm.shape[0]
    a.batch = batch
    a.loss = loss
    a.smooth = smooth
    a.delta = delta
    a.m = m
    a.panel = panel
    a.Wp = &Wp[0, 0]
    a.b = &b[0]
    a.V = NULL
    a.vb = NULL
    if V is not None:
        Vv = V.reshape(-1)
        vbv = vb
        a.V = &Vv[0]
        a.vb = &vbv[0]
    a.lrs = &lrs[0]
    a.momentum = momentum
    a.wd = weight_decay
    a.Xb = &Xb[0, 0]
    a.Z = &Z[0, 0]
    a.G = &G[0, 0]
    a.Gp = &Gp[0]
    a.dW = &dW[0]
    a.db = &db[0]
    a.rowloss = &rowloss[0]
    a.rowhit = <fs_i64 *>&rowhit[0]
    a.chunk_loss = &chunk_loss[0]
    a.chunk_hits = <fs_i64 *>&chunk_hits[0]
    a.batch_loss = &batch_loss[0]
    a.batch_hits = <fs_i64 *>&batch_hits[0]
    a.nt = nt
    with nogil:
        if floating is float:
            bad = fs_fused_sgd_f32(&a32, t0, t1)
        else:
            bad = fs_fused_sgd_f64(&a64, t0, t1)
    if bad == -2:
        raise MemoryError("no memory for the threads' running sums and copies of the weights")
    return bad


def fused_forward(X, const int64_t[::1] idx, const floating[:, ::1] Wp, const floating[::1] b,
                  double scale, floating[:, ::1] out, int nt, const int64_t[::1] labels=None):
    """out = (scale * X[idx]) @ W + b with W in the working layout (idx None: all rows in order).
    With `labels` (one per row), returns how many rows' argmax is their label -- NumPy's argmax:
    the first largest, a NaN counting as largest -- counted chunk by chunk while the chunk's
    outputs are in cache; `out` may then be None, and no outputs are kept.  Validated by the
    caller."""
    cdef fs_i64 k = X.shape[1], m = b.shape[0]
    cdef fs_i64 n = idx.shape[0] if idx is not None else X.shape[0]
    cdef fs_i64 nch = _nchunks(n, FS_FUSED_CHUNK)
    # Each thread takes one run of whole chunks in one call, its rows requested ahead across
    # the chunks' seams, and counting alone keeps no outputs (a new 10000 x 10 array is page
    # faults).  With a call per chunk (each requesting only its own rows ahead) and the outputs
    # kept, fs.train's test accuracy on Fashion-MNIST took 1.49-1.51 ms an epoch against
    # 1.36-1.38 (3 turns).
    cdef fs_i64 p, r0, r1, parts = min(max(nt, 1), nch)
    cdef int panel = m > FS_DOT_MAX, x_u8 = X.dtype == np.uint8, keep = out is not None
    cdef const void *xp = _data_ptr(X)
    cdef const fs_i64 *ip = <const fs_i64 *>&idx[0] if idx is not None else NULL
    cdef const fs_i64 *lp = NULL
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = np.empty((max(parts, 1) * FS_FUSED_CHUNK, k), dtype)
    cdef floating[:, ::1] zs = out if keep else np.empty((max(parts, 1) * FS_FUSED_CHUNK, m),
                                                          dtype)
    cdef int64_t[::1] hits = np.zeros(max(parts, 1), np.int64)
    cdef int tid
    if labels is not None and n:
        lp = <const fs_i64 *>&labels[0]
    for p in prange(parts, nogil=True, num_threads=parts, use_threads_if=parts > 1,
                    schedule='static'):
        r0 = p * nch // parts * FS_FUSED_CHUNK
        r1 = min((p + 1) * nch // parts * FS_FUSED_CHUNK, n)
        tid = threadid()
        if floating is float:
            hits[p] = fs_fused_forward_f32(
                xp, x_u8, k, k, <float>scale, ip, r0, r1, &Wp[0, 0], panel, &b[0], m,
                &scratch[tid * FS_FUSED_CHUNK, 0],
                &zs[r0 if keep else tid * FS_FUSED_CHUNK, 0], keep,
                lp + r0 if lp != NULL else NULL)
        else:
            hits[p] = fs_fused_forward_f64(
                xp, x_u8, k, k, scale, ip, r0, r1, &Wp[0, 0], panel, &b[0], m,
                &scratch[tid * FS_FUSED_CHUNK, 0],
                &zs[r0 if keep else tid * FS_FUSED_CHUNK, 0], keep,
                lp + r0 if lp != NULL else NULL)
    return int(np.asarray(hits).sum()) if labels is not None else None
