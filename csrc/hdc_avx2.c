/* hdc_avx2.c: the AVX2 kernel set (compiled per function through the target pragma;
 * runs only after hdc_core.c's CPUID + XGETBV check chose this level).
 *
 * Hamming matrix and fused top-k in the vertical layout (see hdc_avx512.c) with 8 stored
 * rows per block: one ymm holds one word of 4 rows. AVX2 has no vector popcount. Counting each
 * XOR by the nibble lookup (vpshufb on the low and high nibbles, Mula's method) costs about 8
 * operations per 256 bits; instead the words go through a Harley-Seal carry-save adder tree
 * (Mula, Kurz, Lemire, "Faster Population Counts Using AVX2 Instructions", Computer Journal
 * 2018): 16 words of a (query, 4 rows) pair enter 15 carry-save adders (5 logic operations
 * each) that keep bit-sliced counters ones/twos/fours/eights in registers, and only the
 * "sixteens" output, once per 16 words, is counted with the nibble lookup and folded into
 * int64 lanes by vpsadbw. About 6 operations per 256 bits, all on the 4 vector ALU ports.
 * One tile is one query x 4 rows: 4 counter registers, 1 accumulator and 3 constants leave
 * 8 of the 16 ymm registers for the tree's temporaries, so nothing spills. The Hamming matrix
 * scores 2 blocks (16 rows) per pass over the queries, so each query's distances leave as one
 * 64-byte run (hmat_range_avx2 says why).
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

/* The Hamming matrix takes 2 transposed blocks at a time (HS_ROWS rows): see hmat_range_avx2 */
#define HS_ROWS (2 * R256)
static int64_t hmat_scratch_avx2(int64_t W) { return 2 * W * R256 + 4; }

static inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low4) {
    __m256i lo = _mm256_and_si256(v, low4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* Carry-save adder (a full adder on 256 lanes): h:l = a + b + c, bit-sliced. */
#define HS_CSA(h, l, a, b, c)                                                                  \
    do {                                                                                       \
        __m256i u_ = _mm256_xor_si256((a), (b));                                               \
        (h) = _mm256_or_si256(_mm256_and_si256((a), (b)), _mm256_and_si256(u_, (c)));          \
        (l) = _mm256_xor_si256(u_, (c));                                                       \
    } while (0)

/* Distances of one query (words qw[0..W)) to the 4 rows of the transposed block whose word w
 * is t[w * R256 .. + 4): 4 int64 lanes, one per row. */
static inline __attribute__((always_inline)) __m256i hs_distance4(const uint64_t *t, const uint64_t *qw,
                                                                  int64_t W, __m256i lut, __m256i low4) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i ones = zero, twos = zero, fours = zero, eights = zero, acc16 = zero;
#define HS_IN(i) _mm256_xor_si256(_mm256_load_si256((const __m256i *)(t + (w + (i)) * R256)), \
                                  _mm256_set1_epi64x((long long)qw[w + (i)]))
/* 8 words from w + base through the lower levels of the tree (ones, twos, fours take them in);
 * `carry` is what they pass to the eights */
#define HS_TREE8(carry, base)                                                                  \
    do {                                                                                       \
        __m256i twosA_, twosB_, foursA_, foursB_;                                              \
        HS_CSA(twosA_, ones, ones, HS_IN(base), HS_IN(base + 1));                              \
        HS_CSA(twosB_, ones, ones, HS_IN(base + 2), HS_IN(base + 3));                          \
        HS_CSA(foursA_, twos, twos, twosA_, twosB_);                                           \
        HS_CSA(twosA_, ones, ones, HS_IN(base + 4), HS_IN(base + 5));                          \
        HS_CSA(twosB_, ones, ones, HS_IN(base + 6), HS_IN(base + 7));                          \
        HS_CSA(foursB_, twos, twos, twosA_, twosB_);                                           \
        HS_CSA(carry, fours, fours, foursA_, foursB_);                                         \
    } while (0)
    int64_t w = 0;
    for (; w + 16 <= W; w += 16) {
        __m256i eightsA, eightsB, sixteens;
        HS_TREE8(eightsA, 0);
        HS_TREE8(eightsB, 8);
        HS_CSA(sixteens, eights, eights, eightsA, eightsB);
        acc16 = _mm256_add_epi64(acc16, _mm256_sad_epu8(popcnt_bytes(sixteens, lut, low4), zero));
    }
    /* 8 of the < 16 remaining words through half the tree; its eights count with weight 8 below */
    __m256i eights8 = zero, tail = zero;
    if (w + 8 <= W) {
        HS_TREE8(eights8, 0);
        w += 8;
    }
    /* the < 8 words left by the lookup alone */
    for (; w < W; w++) tail = _mm256_add_epi8(tail, popcnt_bytes(HS_IN(0), lut, low4));
#undef HS_TREE8
#undef HS_IN
    /* value = 16 * acc16 + the byte sums of 8 (|eights| + |eights8|) + 4 |fours| + 2 |twos| + |ones|
     * + tail, at most 8 * 16 + 4 * 8 + 2 * 8 + 8 + 7 * 8 = 240 per byte: one vpsadbw for all */
    __m256i b = _mm256_add_epi8(popcnt_bytes(eights, lut, low4), popcnt_bytes(eights8, lut, low4));
    b = _mm256_add_epi8(_mm256_add_epi8(b, b), popcnt_bytes(fours, lut, low4));
    b = _mm256_add_epi8(_mm256_add_epi8(b, b), popcnt_bytes(twos, lut, low4));
    b = _mm256_add_epi8(_mm256_add_epi8(b, b), popcnt_bytes(ones, lut, low4));
    b = _mm256_add_epi8(b, tail);
    return _mm256_add_epi64(_mm256_slli_epi64(acc16, 4), _mm256_sad_epu8(b, zero));
}

#define HS_CONSTS                                                                              \
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,       \
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);      \
    const __m256i low4 = _mm256_set1_epi8(0x0f)

/* The next block's rows (contiguous in x), prefetched a few lines per query while this block is
 * scored: read at once by its transpose they cost about 3% of the time at 200 queries (the
 * transpose waits on L2/L3, which no hardware prefetcher foresees for a short burst). */
typedef struct {
    const char *next;
    int64_t lines, per_query;
} hs_prefetch;

/* rows [next, next + block) of x, clipped to r1 */
static inline hs_prefetch hs_prefetch_plan(const uint64_t *x, int64_t next, int64_t block, int64_t r1, int64_t W,
                                           int64_t m) {
    int64_t rows = r1 - next;
    rows = rows < 0 ? 0 : rows > block ? block : rows;
    hs_prefetch pf = {(const char *)(x + next * W), (rows * W * 8 + 63) / 64, 0};
    pf.per_query = (pf.lines + m - 1) / m;
    return pf;
}

static inline void hs_prefetch_step(hs_prefetch pf, int64_t qi) {
    int64_t end = (qi + 1) * pf.per_query < pf.lines ? (qi + 1) * pf.per_query : pf.lines;
    for (int64_t l = qi * pf.per_query; l < end; l++) _mm_prefetch(pf.next + l * 64, _MM_HINT_T0);
}

/* The low halves of the int64 distances of rows 0-3 (a) and 4-7 (b), in row order */
static inline __m256i hs_pack32(__m256i a, __m256i b) {
    return _mm256_permutevar8x32_epi32(_mm256_blend_epi32(a, _mm256_slli_epi64(b, 32), 0xAA),
                                       _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}

/* Two transposed 8-row blocks per pass, so each query's distances leave as 64 contiguous bytes:
 * with 8 rows (32 bytes) per pass, an output that starts 16 or 48 bytes into a cache line (as
 * often from malloc) has every other store group straddle two lines, each line is taken from L2
 * for 2.5 passes instead of 2, and the whole kernel ran 7-9% slower than with a 32-byte aligned
 * output (200 x 4,000 at dim 8,192 and 10,000, one thread); with 16 rows per pass no alignment
 * is slower than the aligned case was. */
static void hmat_range_avx2(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                            int32_t *out, int64_t stride, uint64_t *T) {
    HDC_RAN(HDC_LEVEL);
    if (m < 2) {
        hmat_horizontal_avx2(q, m, x, r0, r1, W, out, stride);
        return;
    }
    HS_CONSTS;
    uint64_t *T1 = T + W * R256; /* rows 8-15 of the pass */
    for (int64_t r = r0; r < r1; r += HS_ROWS) {
        int64_t nr = r1 - r < HS_ROWS ? r1 - r : HS_ROWS;
        hdc_transpose_block(x, r, nr < R256 ? nr : R256, R256, W, T);
        if (nr > R256) hdc_transpose_block(x, r + R256, nr - R256, R256, W, T1);
        hs_prefetch pf = hs_prefetch_plan(x, r + HS_ROWS, HS_ROWS, r1, W, m);
        for (int64_t qi = 0; qi < m; qi++) {
            const uint64_t *qw = q + qi * W;
            hs_prefetch_step(pf, qi);
            const __m256i zero = _mm256_setzero_si256();
            __m256i lo = hs_pack32(hs_distance4(T, qw, W, lut, low4),
                                   nr > 4 ? hs_distance4(T + 4, qw, W, lut, low4) : zero);
            __m256i hi = nr > R256 ? hs_pack32(hs_distance4(T1, qw, W, lut, low4),
                                               nr > 12 ? hs_distance4(T1 + 4, qw, W, lut, low4) : zero)
                                   : zero;
            int32_t *dst = out + qi * stride + r;
            if (nr == HS_ROWS) {
                _mm256_storeu_si256((__m256i *)dst, lo);
                _mm256_storeu_si256((__m256i *)(dst + R256), hi);
            } else {
                int32_t d[HS_ROWS] __attribute__((aligned(32)));
                _mm256_store_si256((__m256i *)d, lo);
                _mm256_store_si256((__m256i *)(d + R256), hi);
                for (int64_t j = 0; j < nr; j++) dst[j] = d[j];
            }
        }
    }
}

/* Fused top-k: the same tile; a query's 8 distances are compared with its running k-th
 * distance (one vpcmpgtq per 4 rows), survivors enter its list in row order with a strict <,
 * so equal distances keep the lower index. */
static void topk_range_avx2(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                            hdc_topk_list *lists, uint64_t *T) {
    HDC_RAN(HDC_LEVEL);
    HS_CONSTS;
    for (int64_t r = r0; r < r1; r += R256) {
        int64_t nr = r1 - r < R256 ? r1 - r : R256;
        uint32_t valid = (1u << nr) - 1;
        hdc_transpose_block(x, r, nr, R256, W, T);
        hs_prefetch pf = hs_prefetch_plan(x, r + R256, R256, r1, W, m);
        for (int64_t qi = 0; qi < m; qi++) {
            const uint64_t *qw = q + qi * W;
            hs_prefetch_step(pf, qi);
            hdc_topk_list *L = &lists[qi];
            __m256i d0 = hs_distance4(T, qw, W, lut, low4);
            __m256i d1 = nr > 4 ? hs_distance4(T + 4, qw, W, lut, low4) : _mm256_set1_epi64x(INT64_MAX);
            __m256i thr = _mm256_set1_epi64x(L->thr);
            uint32_t hit = (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(thr, d0))) |
                           ((uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(thr, d1))) << 4);
            hit &= valid;
            if (!hit) continue;
            int64_t d[R256] __attribute__((aligned(32)));
            _mm256_store_si256((__m256i *)d, d0);
            _mm256_store_si256((__m256i *)(d + 4), d1);
            while (hit) {
                int j = __builtin_ctz(hit);
                hit &= hit - 1;
                if (d[j] < L->thr) hdc_topk_push(L, d[j], r + j); /* thr falls as the list fills */
            }
        }
    }
}

/* Causal top-k scan of one query (the generic causal_scan, vectorised): 16 keys per step in
 * 4 ymm, word w of key lo + r at kt[w * stride + r]; nibble-LUT byte counts fold into int64
 * lanes every 31 words; tails by vpmaskmovq. This scan stays on the lookup: it streams every
 * key once per query through strided loads and is bound by them, not by the ALU (a Harley-Seal
 * tree per 4 keys, tried, ran no faster: 0.131 s against 0.127 s for 2,048 causal queries of
 * 10,048 bits, since each pass then uses half of each 64-byte line). One compare per 4 keys against the k-th kept
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
    .topk_range = topk_range_avx2,
    .permute = permute_avx2,
    .slice_count = slice_count_avx2,
    .col_width = 4,
    .causal_scan = causal_scan_v_avx2,
};

/* The floor of this level: 16 pair-slices of 512 bits per step = 2 x 16 ymm inputs (XOR with
 * a broadcast word) through the Harley-Seal tree above, on registers (no loads). */
int64_t hdc_calibrate_slices_avx2(int64_t iters);
int64_t hdc_calibrate_slices_avx2(int64_t iters) {
    HS_CONSTS;
    const __m256i zero = _mm256_setzero_si256();
    __m256i t0 = _mm256_set1_epi64x(0x5555), t1 = _mm256_set1_epi64x(0x3333), b0 = _mm256_set1_epi64x(7),
            b1 = _mm256_set1_epi64x(11);
    __m256i ones = zero, twos = zero, fours = zero, eights = zero, acc16 = zero;
    for (int64_t i = 0; i < 2 * iters; i++) {
        __asm__ volatile("" : "+x"(t0), "+x"(t1), "+x"(b0), "+x"(b1));
        __m256i twosA, twosB, foursA, foursB, eightsA, eightsB, sixteens;
/* a barrier per pair makes every input a fresh XOR (no common subexpressions) */
#define CSA_IN(h, l)                                                                           \
        __asm__ volatile("" : "+x"(b0), "+x"(b1));                                             \
        HS_CSA(h, l, l, _mm256_xor_si256(t0, b0), _mm256_xor_si256(t1, b1))
        CSA_IN(twosA, ones);
        CSA_IN(twosB, ones);
        HS_CSA(foursA, twos, twos, twosA, twosB);
        CSA_IN(twosA, ones);
        CSA_IN(twosB, ones);
        HS_CSA(foursB, twos, twos, twosA, twosB);
        HS_CSA(eightsA, fours, fours, foursA, foursB);
        CSA_IN(twosA, ones);
        CSA_IN(twosB, ones);
        HS_CSA(foursA, twos, twos, twosA, twosB);
        CSA_IN(twosA, ones);
        CSA_IN(twosB, ones);
        HS_CSA(foursB, twos, twos, twosA, twosB);
        HS_CSA(eightsB, fours, fours, foursA, foursB);
        HS_CSA(sixteens, eights, eights, eightsA, eightsB);
#undef CSA_IN
        acc16 = _mm256_add_epi64(acc16, _mm256_sad_epu8(popcnt_bytes(sixteens, lut, low4), zero));
    }
    __m256i s = _mm256_add_epi64(acc16, _mm256_add_epi64(_mm256_add_epi64(ones, twos), _mm256_add_epi64(fours, eights)));
    int64_t v[4] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)v, s);
    return v[0] + v[1] + v[2] + v[3];
}

#pragma GCC pop_options

#endif /* HDC_X86 */
