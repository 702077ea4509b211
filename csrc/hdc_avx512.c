/* hdc_avx512.c: the AVX-512 (F/BW/VL/VPOPCNTDQ) kernel set.
 *
 * Every function here is compiled with the target pragma below (gcc applies it to each
 * function as a target attribute), so the file builds with the default -march and the
 * code only runs after hdc_core.c's CPUID + XGETBV check chose this level.
 *
 * Hamming matrix, vertical layout: a block of 32 stored rows is copied transposed, so one
 * zmm register holds the same word of 8 rows (T[w * 32 + r]). For 4 queries x 32 rows per
 * step: broadcast one query word, XOR with the 4 row vectors, VPOPCNTQ, add into 16
 * per-(query, 8 rows) int64 accumulators. No horizontal reductions, no tail masks, every
 * load of T aligned: 3 vector ops per 512 bits of pair work.
 */
#include "hdc_internal.h"

#if HDC_X86

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,avx,popcnt,bmi,bmi2")

#include <immintrin.h>
#include <string.h>

#include "hdc_internal.h"

#define SFX(name) name##_avx512
#define HDC_VW 8
#define HDC_LEVEL HDC_ISA_AVX512
#include "kernels_generic.inc"

#define R512 HDC_BLOCK_ROWS_512
#ifndef HDC_FEW_QUERIES
#define HDC_FEW_QUERIES 5 /* below this many queries one horizontal pass beats the transpose */
#endif

/* out = a ^ b; outputs past 4 MiB bypass the cache (streaming stores), like a large memcpy */
static void bind_nt_avx512(const uint64_t *a, const uint64_t *b, uint64_t *out, int64_t n) {
    if (n < ((int64_t)1 << 19)) {
        bind_avx512(a, b, out, n);
        return;
    }
    HDC_RAN(HDC_LEVEL);
    int64_t i = 0;
    while (i < n && ((uintptr_t)(out + i) & 63) != 0) {
        out[i] = a[i] ^ b[i];
        i++;
    }
    for (; i + 8 <= n; i += 8)
        _mm512_stream_si512((void *)(out + i), _mm512_xor_si512(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i)));
    for (; i < n; i++) out[i] = a[i] ^ b[i];
    _mm_sfence();
}

/* bitwise_count(a ^ b).sum() of one row pair (b == NULL: of a alone); tail by masked loads */
static inline uint64_t row_pop(const uint64_t *a, const uint64_t *b, int64_t W) {
    __m512i acc = _mm512_setzero_si512(), acc2 = _mm512_setzero_si512();
    int64_t w = 0;
    if (b) {
        for (; w + 16 <= W; w += 16) {
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(
                _mm512_xor_si512(_mm512_loadu_si512(a + w), _mm512_loadu_si512(b + w))));
            acc2 = _mm512_add_epi64(acc2, _mm512_popcnt_epi64(
                _mm512_xor_si512(_mm512_loadu_si512(a + w + 8), _mm512_loadu_si512(b + w + 8))));
        }
        for (; w + 8 <= W; w += 8)
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(
                _mm512_xor_si512(_mm512_loadu_si512(a + w), _mm512_loadu_si512(b + w))));
        if (w < W) {
            __mmask8 k = (__mmask8)((1u << (W - w)) - 1);
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(
                _mm512_xor_si512(_mm512_maskz_loadu_epi64(k, a + w), _mm512_maskz_loadu_epi64(k, b + w))));
        }
    } else {
        for (; w + 8 <= W; w += 8)
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_loadu_si512(a + w)));
        if (w < W) {
            __mmask8 k = (__mmask8)((1u << (W - w)) - 1);
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_maskz_loadu_epi64(k, a + w)));
        }
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(acc, acc2));
}

static void popcount_v_avx512(const uint64_t *x, int64_t rows, int64_t W, int64_t *out) {
    HDC_RAN(HDC_LEVEL);
    for (int64_t r = 0; r < rows; r++) out[r] = (int64_t)row_pop(x + r * W, NULL, W);
}

static void hamming_rows_v_avx512(const uint64_t *a, const uint64_t *b, int64_t rows, int64_t W, int64_t *out) {
    HDC_RAN(HDC_LEVEL);
    for (int64_t r = 0; r < rows; r++) out[r] = (int64_t)row_pop(a + r * W, b + r * W, W);
}

/* Few queries: no transpose to amortize. NQ (1..4, a constant after inlining) queries
 * share each loaded stored word (one pass over x), one horizontal reduction per pair. */
static inline __attribute__((always_inline)) void few_group(const uint64_t *q0, int64_t W, const uint64_t *x,
                                                            int64_t r0, int64_t r1, int32_t *out, int64_t stride,
                                                            const int NQ) {
    int64_t wfull = W & ~(int64_t)7;
    __mmask8 tail = (__mmask8)((1u << (W - wfull)) - 1);
    const uint64_t *q1 = NQ > 1 ? q0 + W : q0, *q2 = NQ > 2 ? q0 + 2 * W : q0, *q3 = NQ > 3 ? q0 + 3 * W : q0;
    for (int64_t j = r0; j < r1; j++) {
        const uint64_t *row = x + j * W;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
#define FEW_STEP(V, LOADQ)                                                                   \
        a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(V, LOADQ(q0))));    \
        if (NQ > 1) a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_xor_si512(V, LOADQ(q1)))); \
        if (NQ > 2) a2 = _mm512_add_epi64(a2, _mm512_popcnt_epi64(_mm512_xor_si512(V, LOADQ(q2)))); \
        if (NQ > 3) a3 = _mm512_add_epi64(a3, _mm512_popcnt_epi64(_mm512_xor_si512(V, LOADQ(q3))));
        for (int64_t w = 0; w < wfull; w += 8) {
            __m512i v = _mm512_loadu_si512(row + w);
#define LOAD_FULL(p) _mm512_loadu_si512((p) + w)
            FEW_STEP(v, LOAD_FULL)
#undef LOAD_FULL
        }
        if (tail) {
            __m512i v = _mm512_maskz_loadu_epi64(tail, row + wfull);
#define LOAD_TAIL(p) _mm512_maskz_loadu_epi64(tail, (p) + wfull)
            FEW_STEP(v, LOAD_TAIL)
#undef LOAD_TAIL
        }
#undef FEW_STEP
        int32_t *o = out + j;
        o[0] = (int32_t)_mm512_reduce_add_epi64(a0);
        if (NQ > 1) o[stride] = (int32_t)_mm512_reduce_add_epi64(a1);
        if (NQ > 2) o[2 * stride] = (int32_t)_mm512_reduce_add_epi64(a2);
        if (NQ > 3) o[3 * stride] = (int32_t)_mm512_reduce_add_epi64(a3);
    }
}

static void hmat_few_avx512(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                            int32_t *out, int64_t stride) {
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
        const uint64_t *q0 = q + i0 * W;
        int32_t *o = out + i0 * stride;
        switch (m - i0 < 4 ? m - i0 : 4) {
            case 1: few_group(q0, W, x, r0, r1, o, stride, 1); break;
            case 2: few_group(q0, W, x, r0, r1, o, stride, 2); break;
            case 3: few_group(q0, W, x, r0, r1, o, stride, 3); break;
            default: few_group(q0, W, x, r0, r1, o, stride, 4); break;
        }
    }
}

static int64_t hmat_scratch_avx512(int64_t W) { return W * R512 + 8; }

/* 16 accumulators a<query><row group>: distances of queries q0..q3 to the 32 rows of T. */
#define TILE_4x32(T, W, q0, q1, q2, q3)                                                   \
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;                \
    __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00;                                    \
    __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;                                    \
    __m512i a30 = a00, a31 = a00, a32 = a00, a33 = a00;                                    \
    for (int64_t w = 0; w < (W); w++) {                                                    \
        const uint64_t *t_ = (T) + w * R512;                                               \
        __m512i t0 = _mm512_load_si512(t_), t1 = _mm512_load_si512(t_ + 8);                \
        __m512i t2 = _mm512_load_si512(t_ + 16), t3 = _mm512_load_si512(t_ + 24);          \
        __m512i b_ = _mm512_set1_epi64((long long)(q0)[w]);                               \
        a00 = _mm512_add_epi64(a00, _mm512_popcnt_epi64(_mm512_xor_si512(t0, b_)));        \
        a01 = _mm512_add_epi64(a01, _mm512_popcnt_epi64(_mm512_xor_si512(t1, b_)));        \
        a02 = _mm512_add_epi64(a02, _mm512_popcnt_epi64(_mm512_xor_si512(t2, b_)));        \
        a03 = _mm512_add_epi64(a03, _mm512_popcnt_epi64(_mm512_xor_si512(t3, b_)));        \
        b_ = _mm512_set1_epi64((long long)(q1)[w]);                                       \
        a10 = _mm512_add_epi64(a10, _mm512_popcnt_epi64(_mm512_xor_si512(t0, b_)));        \
        a11 = _mm512_add_epi64(a11, _mm512_popcnt_epi64(_mm512_xor_si512(t1, b_)));        \
        a12 = _mm512_add_epi64(a12, _mm512_popcnt_epi64(_mm512_xor_si512(t2, b_)));        \
        a13 = _mm512_add_epi64(a13, _mm512_popcnt_epi64(_mm512_xor_si512(t3, b_)));        \
        b_ = _mm512_set1_epi64((long long)(q2)[w]);                                       \
        a20 = _mm512_add_epi64(a20, _mm512_popcnt_epi64(_mm512_xor_si512(t0, b_)));        \
        a21 = _mm512_add_epi64(a21, _mm512_popcnt_epi64(_mm512_xor_si512(t1, b_)));        \
        a22 = _mm512_add_epi64(a22, _mm512_popcnt_epi64(_mm512_xor_si512(t2, b_)));        \
        a23 = _mm512_add_epi64(a23, _mm512_popcnt_epi64(_mm512_xor_si512(t3, b_)));        \
        b_ = _mm512_set1_epi64((long long)(q3)[w]);                                       \
        a30 = _mm512_add_epi64(a30, _mm512_popcnt_epi64(_mm512_xor_si512(t0, b_)));        \
        a31 = _mm512_add_epi64(a31, _mm512_popcnt_epi64(_mm512_xor_si512(t1, b_)));        \
        a32 = _mm512_add_epi64(a32, _mm512_popcnt_epi64(_mm512_xor_si512(t2, b_)));        \
        a33 = _mm512_add_epi64(a33, _mm512_popcnt_epi64(_mm512_xor_si512(t3, b_)));        \
    }

/* store 8 distances (int64 lanes -> int32) of rows [8g, 8g + 8) of the block, nr valid rows */
static inline void store8(int32_t *dst, __m512i acc, int64_t g, int64_t nr) {
    __m256i v = _mm512_cvtepi64_epi32(acc);
    int64_t valid = nr - 8 * g;
    if (valid >= 8) _mm256_storeu_si256((__m256i *)dst, v);
    else if (valid > 0) _mm256_mask_storeu_epi32(dst, (__mmask8)((1u << valid) - 1), v);
}

#define STORE_Q(i, a0, a1, a2, a3)                                           \
    if ((i) < nq) {                                                          \
        int32_t *d_ = out + (qi + (i)) * stride + r;                         \
        store8(d_, a0, 0, nr); store8(d_ + 8, a1, 1, nr);                    \
        store8(d_ + 16, a2, 2, nr); store8(d_ + 24, a3, 3, nr);              \
    }

static void hmat_range_avx512(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                              int32_t *out, int64_t stride, uint64_t *T) {
    HDC_RAN(HDC_LEVEL);
    if (m < HDC_FEW_QUERIES) {
        hmat_few_avx512(q, m, x, r0, r1, W, out, stride);
        return;
    }
    for (int64_t r = r0; r < r1; r += R512) {
        int64_t nr = r1 - r < R512 ? r1 - r : R512;
        hdc_transpose_block(x, r, nr, R512, W, T);
        for (int64_t qi = 0; qi < m; qi += 4) {
            int64_t nq = m - qi < 4 ? m - qi : 4;
            const uint64_t *q0 = q + qi * W;
            const uint64_t *q1 = nq > 1 ? q0 + W : q0;
            const uint64_t *q2 = nq > 2 ? q0 + 2 * W : q0;
            const uint64_t *q3 = nq > 3 ? q0 + 3 * W : q0;
            TILE_4x32(T, W, q0, q1, q2, q3)
            STORE_Q(0, a00, a01, a02, a03)
            STORE_Q(1, a10, a11, a12, a13)
            STORE_Q(2, a20, a21, a22, a23)
            STORE_Q(3, a30, a31, a32, a33)
        }
    }
}

/* Offer the 32 distances of one query to its running top-k. One compare per 8 rows
 * against the list's threshold rejects almost every block; survivors go in row order. */
static inline void offer(hdc_topk_list *L, __m512i a0, __m512i a1, __m512i a2, __m512i a3, int64_t r,
                         uint32_t valid_mask) {
    __m512i thr = _mm512_set1_epi64(L->thr);
    uint32_t hit = (uint32_t)_mm512_cmplt_epi64_mask(a0, thr) | ((uint32_t)_mm512_cmplt_epi64_mask(a1, thr) << 8) |
                   ((uint32_t)_mm512_cmplt_epi64_mask(a2, thr) << 16) |
                   ((uint32_t)_mm512_cmplt_epi64_mask(a3, thr) << 24);
    hit &= valid_mask;
    if (!hit) return;
    int64_t d[R512] __attribute__((aligned(64)));
    _mm512_store_si512(d, a0);
    _mm512_store_si512(d + 8, a1);
    _mm512_store_si512(d + 16, a2);
    _mm512_store_si512(d + 24, a3);
    while (hit) {
        int j = __builtin_ctz(hit);
        hit &= hit - 1;
        if (d[j] < L->thr) hdc_topk_push(L, d[j], r + j);
    }
}

static void topk_range_avx512(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                              hdc_topk_list *lists, uint64_t *T) {
    HDC_RAN(HDC_LEVEL);
    for (int64_t r = r0; r < r1; r += R512) {
        int64_t nr = r1 - r < R512 ? r1 - r : R512;
        uint32_t valid_mask = nr >= 32 ? 0xFFFFFFFFu : ((1u << nr) - 1);
        hdc_transpose_block(x, r, nr, R512, W, T);
        for (int64_t qi = 0; qi < m; qi += 4) {
            int64_t nq = m - qi < 4 ? m - qi : 4;
            const uint64_t *q0 = q + qi * W;
            const uint64_t *q1 = nq > 1 ? q0 + W : q0;
            const uint64_t *q2 = nq > 2 ? q0 + 2 * W : q0;
            const uint64_t *q3 = nq > 3 ? q0 + 3 * W : q0;
            TILE_4x32(T, W, q0, q1, q2, q3)
            offer(&lists[qi], a00, a01, a02, a03, r, valid_mask);
            if (nq > 1) offer(&lists[qi + 1], a10, a11, a12, a13, r, valid_mask);
            if (nq > 2) offer(&lists[qi + 2], a20, a21, a22, a23, r, valid_mask);
            if (nq > 3) offer(&lists[qi + 3], a30, a31, a32, a33, r, valid_mask);
        }
    }
}

/* Causal top-k scan of one query (the generic causal_scan, vectorised): 32 keys per step in
 * 4 zmm accumulators, word w of key lo + r at kt[w * stride + r] (consecutive keys are
 * consecutive words), VPOPCNTQ, tails by masked loads. One VPCMPQ per 8 keys against the
 * k-th kept cost rejects almost every block; survivors enter the list in key order with
 * <=, so among equal costs the newer key wins. OV (a constant after inlining): overlap. */
static inline __attribute__((always_inline)) void causal_scan_t_avx512(const uint64_t *qrow, const uint64_t *kt,
                                                                      int64_t stride, int64_t W, int64_t lo,
                                                                      int64_t cnt, hdc_ctopk_list *L,
                                                                      int32_t *buf, const int OV) {
    const __m512i top = _mm512_set1_epi64(64 * W);
    for (int64_t r = 0; r < cnt; r += 32) {
        int64_t nr = cnt - r < 32 ? cnt - r : 32;
        uint32_t valid = nr >= 32 ? 0xFFFFFFFFu : ((1u << nr) - 1);
        __mmask8 m0 = (__mmask8)valid, m1 = (__mmask8)(valid >> 8), m2 = (__mmask8)(valid >> 16),
                 m3 = (__mmask8)(valid >> 24);
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t w = 0; w < W; w++) {
            const uint64_t *t = kt + w * stride + r;
            __m512i b = _mm512_set1_epi64((long long)qrow[w]);
            __m512i v0 = _mm512_maskz_loadu_epi64(m0, t), v1 = _mm512_maskz_loadu_epi64(m1, t + 8);
            __m512i v2 = _mm512_maskz_loadu_epi64(m2, t + 16), v3 = _mm512_maskz_loadu_epi64(m3, t + 24);
            if (OV) {
                v0 = _mm512_and_si512(v0, b); v1 = _mm512_and_si512(v1, b);
                v2 = _mm512_and_si512(v2, b); v3 = _mm512_and_si512(v3, b);
            } else {
                v0 = _mm512_xor_si512(v0, b); v1 = _mm512_xor_si512(v1, b);
                v2 = _mm512_xor_si512(v2, b); v3 = _mm512_xor_si512(v3, b);
            }
            a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(v0));
            a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(v1));
            a2 = _mm512_add_epi64(a2, _mm512_popcnt_epi64(v2));
            a3 = _mm512_add_epi64(a3, _mm512_popcnt_epi64(v3));
        }
        if (OV) {
            a0 = _mm512_sub_epi64(top, a0); a1 = _mm512_sub_epi64(top, a1);
            a2 = _mm512_sub_epi64(top, a2); a3 = _mm512_sub_epi64(top, a3);
        }
        if (buf) {
            _mm256_mask_storeu_epi32(buf + r, m0, _mm512_cvtepi64_epi32(a0));
            _mm256_mask_storeu_epi32(buf + r + 8, m1, _mm512_cvtepi64_epi32(a1));
            _mm256_mask_storeu_epi32(buf + r + 16, m2, _mm512_cvtepi64_epi32(a2));
            _mm256_mask_storeu_epi32(buf + r + 24, m3, _mm512_cvtepi64_epi32(a3));
            continue;
        }
        __m512i thr = _mm512_set1_epi64(L->thr);
        uint32_t hit = (uint32_t)_mm512_cmple_epi64_mask(a0, thr) |
                       ((uint32_t)_mm512_cmple_epi64_mask(a1, thr) << 8) |
                       ((uint32_t)_mm512_cmple_epi64_mask(a2, thr) << 16) |
                       ((uint32_t)_mm512_cmple_epi64_mask(a3, thr) << 24);
        hit &= valid;
        if (!hit) continue;
        int64_t d[32] __attribute__((aligned(64)));
        _mm512_store_si512(d, a0);
        _mm512_store_si512(d + 8, a1);
        _mm512_store_si512(d + 16, a2);
        _mm512_store_si512(d + 24, a3);
        while (hit) {
            int j = __builtin_ctz(hit);
            hit &= hit - 1;
            if (d[j] <= L->thr) hdc_ctopk_push(L, d[j], lo + r + j);  /* thr falls as the list fills */
        }
    }
}

static void causal_scan_v_avx512(const uint64_t *qrow, const uint64_t *kt, int64_t stride, int64_t W, int64_t lo,
                                 int64_t cnt, int overlap, hdc_ctopk_list *L, int32_t *buf) {
    HDC_RAN(HDC_LEVEL);
    if (overlap) causal_scan_t_avx512(qrow, kt, stride, W, lo, cnt, L, buf, 1);
    else causal_scan_t_avx512(qrow, kt, stride, W, lo, cnt, L, buf, 0);
}

const hdc_kernels hdc_kernels_avx512 = {
    .bind = bind_nt_avx512,
    .popcount = popcount_v_avx512,
    .hamming_rows = hamming_rows_v_avx512,
    .hmat_range = hmat_range_avx512,
    .hmat_scratch_words = hmat_scratch_avx512,
    .topk_range = topk_range_avx512,
    .permute = permute_avx512,
    .slice_count = slice_count_avx512,
    .col_width = 8,
    .causal_scan = causal_scan_v_avx512,
};

/* 16 independent (xor, popcnt, add) chains per step: the best case of the hamming tile */
int64_t hdc_calibrate_slices_avx512(int64_t iters);
int64_t hdc_calibrate_slices_avx512(int64_t iters) {
    __m512i a0 = _mm512_set1_epi64(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m512i a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    __m512i t0 = _mm512_set1_epi64(0x5555), t1 = _mm512_set1_epi64(0x3333), t2 = _mm512_set1_epi64(0x0f0f),
            t3 = _mm512_set1_epi64(0x00ff);
    __m512i b0 = _mm512_set1_epi64(7), b1 = _mm512_set1_epi64(11), b2 = _mm512_set1_epi64(13),
            b3 = _mm512_set1_epi64(17);
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile("" : "+v"(t0), "+v"(t1), "+v"(t2), "+v"(t3), "+v"(b0), "+v"(b1), "+v"(b2), "+v"(b3));
#define CAL(acc, t, b) acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(t, b)))
        CAL(a0, t0, b0); CAL(a1, t1, b0); CAL(a2, t2, b0); CAL(a3, t3, b0);
        CAL(a4, t0, b1); CAL(a5, t1, b1); CAL(a6, t2, b1); CAL(a7, t3, b1);
        CAL(a8, t0, b2); CAL(a9, t1, b2); CAL(a10, t2, b2); CAL(a11, t3, b2);
        CAL(a12, t0, b3); CAL(a13, t1, b3); CAL(a14, t2, b3); CAL(a15, t3, b3);
#undef CAL
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                                 _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
    s = _mm512_add_epi64(s, _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a8, a9), _mm512_add_epi64(a10, a11)),
                                             _mm512_add_epi64(_mm512_add_epi64(a12, a13), _mm512_add_epi64(a14, a15))));
    return _mm512_reduce_add_epi64(s);
}

#pragma GCC pop_options

#endif /* HDC_X86 */
