/* hdc_sve.c: the arm64 SVE kernel set, compiled where the compiler has SVE intrinsics (GCC >= 11)
 * under `#pragma GCC target("+sve")` and run only when getauxval(AT_HWCAP) has HWCAP_SVE.
 *
 * SVE counts bits per 64-bit lane (CNT .D), so a Hamming sum needs no byte folding, and one
 * loop serves every vector length (128 to 2048 bits) through WHILELT predicates: the tail of
 * a row is the last, partial predicate, never a scalar loop. The Hamming matrix is horizontal:
 * 4 queries share each loaded stored vector (one pass over x per 4 queries), 4 accumulators,
 * one horizontal add (UADDV) per (query, row) pair. Everything else is the generic C compiled
 * for SVE (the compiler vectorizes the popcount loops with CNT).
 */
#include "hdc_internal.h"

#if HDC_SVE

#pragma GCC push_options
#pragma GCC target("+sve")

#include <arm_sve.h>

#define SFX(name) name##_sve
#define HDC_VW 2
#define HDC_LEVEL HDC_ISA_SVE
#include "kernels_generic.inc"

static int64_t hmat_scratch_sve(int64_t W) { (void)W; return 0; }

static void hmat_range_sve(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                           int32_t *out, int64_t stride, uint64_t *scratch) {
    (void)scratch;
    HDC_RAN(HDC_LEVEL);
    const int64_t vl = (int64_t)svcntd();
    const svbool_t all = svptrue_b64();
    for (int64_t j = r0; j < r1; j++) {
        const uint64_t *row = x + j * W;
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) {
            const uint64_t *q0 = q + i * W, *q1 = q0 + W, *q2 = q1 + W, *q3 = q2 + W;
            svuint64_t a0 = svdup_u64(0), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t w = 0; w < W; w += vl) {
                svbool_t pg = svwhilelt_b64(w, W);
                svuint64_t v = svld1_u64(pg, row + w);
                a0 = svadd_u64_m(pg, a0, svcnt_u64_x(pg, sveor_u64_x(pg, v, svld1_u64(pg, q0 + w))));
                a1 = svadd_u64_m(pg, a1, svcnt_u64_x(pg, sveor_u64_x(pg, v, svld1_u64(pg, q1 + w))));
                a2 = svadd_u64_m(pg, a2, svcnt_u64_x(pg, sveor_u64_x(pg, v, svld1_u64(pg, q2 + w))));
                a3 = svadd_u64_m(pg, a3, svcnt_u64_x(pg, sveor_u64_x(pg, v, svld1_u64(pg, q3 + w))));
            }
            out[i * stride + j] = (int32_t)svaddv_u64(all, a0);
            out[(i + 1) * stride + j] = (int32_t)svaddv_u64(all, a1);
            out[(i + 2) * stride + j] = (int32_t)svaddv_u64(all, a2);
            out[(i + 3) * stride + j] = (int32_t)svaddv_u64(all, a3);
        }
        for (; i < m; i++) {
            const uint64_t *q0 = q + i * W;
            svuint64_t a0 = svdup_u64(0);
            for (int64_t w = 0; w < W; w += vl) {
                svbool_t pg = svwhilelt_b64(w, W);
                a0 = svadd_u64_m(pg, a0, svcnt_u64_x(pg, sveor_u64_x(pg, svld1_u64(pg, row + w), svld1_u64(pg, q0 + w))));
            }
            out[i * stride + j] = (int32_t)svaddv_u64(all, a0);
        }
    }
}

const hdc_kernels hdc_kernels_sve = {
    .bind = bind_sve,
    .popcount = popcount_sve,
    .hamming_rows = hamming_rows_sve,
    .hmat_range = hmat_range_sve,
    .hmat_scratch_words = hmat_scratch_sve,
    .topk_range = NULL,
    .permute = permute_sve,
    .slice_count = slice_count_sve,
    .col_width = 2,
    .causal_scan = causal_scan_sve,
};

/* The floor of this level: one step = 16 pair-slices of 512 bits = 8192 bits of (EOR, CNT,
 * ADD) on registers, i.e. 8192 / VL vector triples whatever the vector length. */
int64_t hdc_calibrate_slices_sve(int64_t iters);
int64_t hdc_calibrate_slices_sve(int64_t iters) {
    const svbool_t all = svptrue_b64();
    const int64_t per_step = 8192 / (64 * (int64_t)svcntd()); /* vectors per step (>= 4) */
    svuint64_t t0 = svdup_u64(0x5555), t1 = svdup_u64(0x3333), b0 = svdup_u64(7), b1 = svdup_u64(11);
    svuint64_t a0 = svdup_u64(0), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < iters; i++) {
        for (int64_t j = 0; j < per_step; j += 4) {
            __asm__ volatile("" : "+w"(t0), "+w"(t1), "+w"(b0), "+w"(b1));
            a0 = svadd_u64_x(all, a0, svcnt_u64_x(all, sveor_u64_x(all, t0, b0)));
            a1 = svadd_u64_x(all, a1, svcnt_u64_x(all, sveor_u64_x(all, t1, b0)));
            a2 = svadd_u64_x(all, a2, svcnt_u64_x(all, sveor_u64_x(all, t0, b1)));
            a3 = svadd_u64_x(all, a3, svcnt_u64_x(all, sveor_u64_x(all, t1, b1)));
        }
    }
    return (int64_t)svaddv_u64(all, svadd_u64_x(all, svadd_u64_x(all, a0, a1), svadd_u64_x(all, a2, a3)));
}

#pragma GCC pop_options

#endif /* HDC_SVE */
