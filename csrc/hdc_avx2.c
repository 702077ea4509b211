/* hdc_avx2.c: the AVX2 kernel set (compiled per function through the target pragma;
 * runs only after hdc_core.c's CPUID + XGETBV check chose this level).
 *
 * Hamming matrix in the vertical layout (see hdc_avx512.c) with 8 stored rows per block:
 * one ymm holds one word of 4 rows. AVX2 has no vector popcount, so each byte is counted
 * by the nibble lookup (vpshufb on the low and the high nibbles), byte counts accumulate
 * for up to 31 words (31 * 8 = 248 < 256) and then fold into int64 lanes with vpsadbw.
 */
#include "hdc_internal.h"

#if HDC_X86

#pragma GCC push_options
#pragma GCC target("avx2,avx,popcnt,bmi,bmi2")

#include <immintrin.h>

#include "hdc_internal.h"

#define SFX(name) name##_avx2
#define HDC_VW 4
#define HDC_LEVEL HDC_ISA_AVX2
#include "kernels_generic.inc"

#define R256 HDC_BLOCK_ROWS_256

static int64_t hmat_scratch_avx2(int64_t W) { return W * R256 + 4; }

static inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low4) {
    __m256i lo = _mm256_and_si256(v, low4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

static void hmat_range_avx2(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                            int32_t *out, int64_t stride, uint64_t *T) {
    HDC_RAN(HDC_LEVEL);
    if (m < 4) {
        hmat_horizontal_avx2(q, m, x, r0, r1, W, out, stride);
        return;
    }
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    for (int64_t r = r0; r < r1; r += R256) {
        int64_t nr = r1 - r < R256 ? r1 - r : R256;
        hdc_transpose_block(x, r, nr, R256, W, T);
        /* 2 queries x 8 rows per step: 4 byte accumulators + LUT, mask, 2 row vectors and
         * temporaries fit the 16 ymm registers (4 queries spilled accumulators to the stack) */
        for (int64_t qi = 0; qi < m; qi += 2) {
            int64_t nq = m - qi < 2 ? m - qi : 2;
            const uint64_t *q0 = q + qi * W;
            const uint64_t *q1 = nq > 1 ? q0 + W : q0;
            __m256i s00 = zero, s01 = zero, s10 = zero, s11 = zero;
            for (int64_t w0 = 0; w0 < W; w0 += 31) {
                int64_t w1 = W - w0 < 31 ? W : w0 + 31;
                __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero;
                for (int64_t w = w0; w < w1; w++) {
                    const uint64_t *t = T + w * R256;
                    __m256i t0 = _mm256_load_si256((const __m256i *)t);
                    __m256i t1 = _mm256_load_si256((const __m256i *)(t + 4));
                    __m256i b = _mm256_set1_epi64x((long long)q0[w]);
                    c00 = _mm256_add_epi8(c00, popcnt_bytes(_mm256_xor_si256(t0, b), lut, low4));
                    c01 = _mm256_add_epi8(c01, popcnt_bytes(_mm256_xor_si256(t1, b), lut, low4));
                    b = _mm256_set1_epi64x((long long)q1[w]);
                    c10 = _mm256_add_epi8(c10, popcnt_bytes(_mm256_xor_si256(t0, b), lut, low4));
                    c11 = _mm256_add_epi8(c11, popcnt_bytes(_mm256_xor_si256(t1, b), lut, low4));
                }
                s00 = _mm256_add_epi64(s00, _mm256_sad_epu8(c00, zero));
                s01 = _mm256_add_epi64(s01, _mm256_sad_epu8(c01, zero));
                s10 = _mm256_add_epi64(s10, _mm256_sad_epu8(c10, zero));
                s11 = _mm256_add_epi64(s11, _mm256_sad_epu8(c11, zero));
            }
            int64_t d[2][8] __attribute__((aligned(32)));
            _mm256_store_si256((__m256i *)d[0], s00);
            _mm256_store_si256((__m256i *)(d[0] + 4), s01);
            _mm256_store_si256((__m256i *)d[1], s10);
            _mm256_store_si256((__m256i *)(d[1] + 4), s11);
            for (int i = 0; i < nq; i++) {
                int32_t *dst = out + (qi + i) * stride + r;
                for (int64_t j = 0; j < nr; j++) dst[j] = (int32_t)d[i][j];
            }
        }
    }
}

/* Causal top-k scan of one query (the generic causal_scan, vectorised): 16 keys per step in
 * 4 ymm, word w of key lo + r at kt[w * stride + r]; nibble-LUT byte counts fold into int64
 * lanes every 31 words; tails by vpmaskmovq. One compare per 4 keys against the k-th kept
 * cost; survivors enter the list in key order with <= (newer key wins ties). */
static inline __attribute__((always_inline)) void causal_scan_t_avx2(const uint64_t *qrow, const uint64_t *kt,
                                                                    int64_t stride, int64_t W, int64_t lo,
                                                                    int64_t cnt, hdc_ctopk_list *L,
                                                                    int32_t *buf, const int OV) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i top = _mm256_set1_epi64x(64 * W);
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    for (int64_t r = 0; r < cnt; r += 16) {
        int64_t nr = cnt - r < 16 ? cnt - r : 16;
        uint32_t valid = nr >= 16 ? 0xFFFFu : ((1u << nr) - 1);
        __m256i nrv = _mm256_set1_epi64x(nr);
        __m256i k0 = _mm256_cmpgt_epi64(nrv, lane);
        __m256i k1 = _mm256_cmpgt_epi64(nrv, _mm256_add_epi64(lane, _mm256_set1_epi64x(4)));
        __m256i k2 = _mm256_cmpgt_epi64(nrv, _mm256_add_epi64(lane, _mm256_set1_epi64x(8)));
        __m256i k3 = _mm256_cmpgt_epi64(nrv, _mm256_add_epi64(lane, _mm256_set1_epi64x(12)));
        __m256i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
        for (int64_t w0 = 0; w0 < W; w0 += 31) {
            int64_t w1 = W - w0 < 31 ? W : w0 + 31;
            __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero;
            for (int64_t w = w0; w < w1; w++) {
                const long long *t = (const long long *)(kt + w * stride + r);
                __m256i b = _mm256_set1_epi64x((long long)qrow[w]);
                __m256i v0 = _mm256_maskload_epi64(t, k0), v1 = _mm256_maskload_epi64(t + 4, k1);
                __m256i v2 = _mm256_maskload_epi64(t + 8, k2), v3 = _mm256_maskload_epi64(t + 12, k3);
                if (OV) {
                    v0 = _mm256_and_si256(v0, b); v1 = _mm256_and_si256(v1, b);
                    v2 = _mm256_and_si256(v2, b); v3 = _mm256_and_si256(v3, b);
                } else {
                    v0 = _mm256_xor_si256(v0, b); v1 = _mm256_xor_si256(v1, b);
                    v2 = _mm256_xor_si256(v2, b); v3 = _mm256_xor_si256(v3, b);
                }
                c0 = _mm256_add_epi8(c0, popcnt_bytes(v0, lut, low4));
                c1 = _mm256_add_epi8(c1, popcnt_bytes(v1, lut, low4));
                c2 = _mm256_add_epi8(c2, popcnt_bytes(v2, lut, low4));
                c3 = _mm256_add_epi8(c3, popcnt_bytes(v3, lut, low4));
            }
            s0 = _mm256_add_epi64(s0, _mm256_sad_epu8(c0, zero));
            s1 = _mm256_add_epi64(s1, _mm256_sad_epu8(c1, zero));
            s2 = _mm256_add_epi64(s2, _mm256_sad_epu8(c2, zero));
            s3 = _mm256_add_epi64(s3, _mm256_sad_epu8(c3, zero));
        }
        if (OV) {
            s0 = _mm256_sub_epi64(top, s0); s1 = _mm256_sub_epi64(top, s1);
            s2 = _mm256_sub_epi64(top, s2); s3 = _mm256_sub_epi64(top, s3);
        }
        int64_t d[16] __attribute__((aligned(32)));
        if (buf) {
            _mm256_store_si256((__m256i *)d, s0);
            _mm256_store_si256((__m256i *)(d + 4), s1);
            _mm256_store_si256((__m256i *)(d + 8), s2);
            _mm256_store_si256((__m256i *)(d + 12), s3);
            for (int64_t j = 0; j < nr; j++) buf[r + j] = (int32_t)d[j];
            continue;
        }
        /* cost <= thr  <=>  not (cost > thr) */
        __m256i thr = _mm256_set1_epi64x(L->thr);
        uint32_t gt = (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(s0, thr))) |
                      ((uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(s1, thr))) << 4) |
                      ((uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(s2, thr))) << 8) |
                      ((uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(s3, thr))) << 12);
        uint32_t hit = ~gt & valid;
        if (!hit) continue;
        _mm256_store_si256((__m256i *)d, s0);
        _mm256_store_si256((__m256i *)(d + 4), s1);
        _mm256_store_si256((__m256i *)(d + 8), s2);
        _mm256_store_si256((__m256i *)(d + 12), s3);
        while (hit) {
            int j = __builtin_ctz(hit);
            hit &= hit - 1;
            if (d[j] <= L->thr) hdc_ctopk_push(L, d[j], lo + r + j);  /* thr falls as the list fills */
        }
    }
}

static void causal_scan_v_avx2(const uint64_t *qrow, const uint64_t *kt, int64_t stride, int64_t W, int64_t lo,
                               int64_t cnt, int overlap, hdc_ctopk_list *L, int32_t *buf) {
    HDC_RAN(HDC_LEVEL);
    if (overlap) causal_scan_t_avx2(qrow, kt, stride, W, lo, cnt, L, buf, 1);
    else causal_scan_t_avx2(qrow, kt, stride, W, lo, cnt, L, buf, 0);
}

const hdc_kernels hdc_kernels_avx2 = {
    .bind = bind_avx2,
    .popcount = popcount_avx2,
    .hamming_rows = hamming_rows_avx2,
    .hmat_range = hmat_range_avx2,
    .hmat_scratch_words = hmat_scratch_avx2,
    .topk_range = NULL,
    .permute = permute_avx2,
    .slice_count = slice_count_avx2,
    .col_width = 4,
    .causal_scan = causal_scan_v_avx2,
};

#pragma GCC pop_options

#endif /* HDC_X86 */
