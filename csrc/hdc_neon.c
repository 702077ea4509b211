/* hdc_neon.c: the arm64 Advanced SIMD (NEON) kernel set. NEON is part of every AArch64 CPU's
 * base ISA, but the level is still chosen at run time (getauxval(AT_HWCAP) & HWCAP_ASIMD in
 * hdc_core.c) like the others, and can be pinned off for testing.
 *
 * Hamming matrix in the vertical layout (see hdc_avx512.c): a block of 8 stored rows is copied
 * transposed, so one 128-bit register holds word w of 2 rows. CNT (vcntq_u8) counts each
 * byte; the byte counts of up to 31 words add up in uint8 lanes (31 * 8 = 248 < 256), then
 * fold into uint64 lanes by the pairwise widening adds UADDLP (8 -> 16 -> 32 bits) and UADALP
 * (32 -> 64, accumulating). Tile: 2 queries x 8 rows = 8 byte accumulators + 8 uint64
 * accumulators + 4 row vectors + 2 query vectors, within the 32 vector registers.
 */
#include "hdc_internal.h"

#if HDC_ARM64

#include <arm_neon.h>

#define SFX(name) name##_neon
#define HDC_VW 2
#define HDC_LEVEL HDC_ISA_NEON
#include "kernels_generic.inc"

#define RN HDC_BLOCK_ROWS_256

static int64_t hmat_scratch_neon(int64_t W) { return W * RN + 4; }

static inline uint8x16_t cnt_xor(uint64x2_t a, uint64x2_t b) {
    return vcntq_u8(vreinterpretq_u8_u64(veorq_u64(a, b)));
}

static inline uint64x2_t fold_bytes(uint64x2_t acc, uint8x16_t c) {
    return vpadalq_u32(acc, vpaddlq_u16(vpaddlq_u8(c)));
}

static void hmat_range_neon(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                            int32_t *out, int64_t stride, uint64_t *T) {
    HDC_RAN(HDC_LEVEL);
    if (m < 2) {
        hmat_horizontal_neon(q, m, x, r0, r1, W, out, stride);
        return;
    }
    for (int64_t r = r0; r < r1; r += RN) {
        int64_t nr = r1 - r < RN ? r1 - r : RN;
        hdc_transpose_block(x, r, nr, RN, W, T);
        for (int64_t qi = 0; qi < m; qi += 2) {
            int64_t nq = m - qi < 2 ? m - qi : 2;
            const uint64_t *q0 = q + qi * W;
            const uint64_t *q1 = nq > 1 ? q0 + W : q0;
            uint64x2_t s00 = vdupq_n_u64(0), s01 = s00, s02 = s00, s03 = s00;
            uint64x2_t s10 = s00, s11 = s00, s12 = s00, s13 = s00;
            for (int64_t w0 = 0; w0 < W; w0 += 31) {
                int64_t w1 = W - w0 < 31 ? W : w0 + 31;
                uint8x16_t c00 = vdupq_n_u8(0), c01 = c00, c02 = c00, c03 = c00;
                uint8x16_t c10 = c00, c11 = c00, c12 = c00, c13 = c00;
                for (int64_t w = w0; w < w1; w++) {
                    const uint64_t *t = T + w * RN;
                    uint64x2_t t0 = vld1q_u64(t), t1 = vld1q_u64(t + 2), t2 = vld1q_u64(t + 4), t3 = vld1q_u64(t + 6);
                    uint64x2_t b = vdupq_n_u64(q0[w]);
                    c00 = vaddq_u8(c00, cnt_xor(t0, b));
                    c01 = vaddq_u8(c01, cnt_xor(t1, b));
                    c02 = vaddq_u8(c02, cnt_xor(t2, b));
                    c03 = vaddq_u8(c03, cnt_xor(t3, b));
                    b = vdupq_n_u64(q1[w]);
                    c10 = vaddq_u8(c10, cnt_xor(t0, b));
                    c11 = vaddq_u8(c11, cnt_xor(t1, b));
                    c12 = vaddq_u8(c12, cnt_xor(t2, b));
                    c13 = vaddq_u8(c13, cnt_xor(t3, b));
                }
                s00 = fold_bytes(s00, c00); s01 = fold_bytes(s01, c01);
                s02 = fold_bytes(s02, c02); s03 = fold_bytes(s03, c03);
                s10 = fold_bytes(s10, c10); s11 = fold_bytes(s11, c11);
                s12 = fold_bytes(s12, c12); s13 = fold_bytes(s13, c13);
            }
            uint64_t d[2][RN];
            vst1q_u64(d[0], s00); vst1q_u64(d[0] + 2, s01); vst1q_u64(d[0] + 4, s02); vst1q_u64(d[0] + 6, s03);
            vst1q_u64(d[1], s10); vst1q_u64(d[1] + 2, s11); vst1q_u64(d[1] + 4, s12); vst1q_u64(d[1] + 6, s13);
            for (int i = 0; i < nq; i++) {
                int32_t *dst = out + (qi + i) * stride + r;
                for (int64_t j = 0; j < nr; j++) dst[j] = (int32_t)d[i][j];
            }
        }
    }
}

const hdc_kernels hdc_kernels_neon = {
    .bind = bind_neon,
    .popcount = popcount_neon,
    .hamming_rows = hamming_rows_neon,
    .hmat_range = hmat_range_neon,
    .hmat_scratch_words = hmat_scratch_neon,
    .topk_range = NULL,
    .permute = permute_neon,
    .slice_count = slice_count_neon,
    .col_width = 2,
    .causal_scan = causal_scan_neon,
};

/* The floor of this level: 16 pair-slices of 512 bits = 64 (EOR, CNT, ADD) quads per step on
 * registers, 8 byte accumulators as in the tile, folded every 31 steps' worth. */
int64_t hdc_calibrate_slices_neon(int64_t iters);
int64_t hdc_calibrate_slices_neon(int64_t iters) {
    uint64x2_t t0 = vdupq_n_u64(0x5555), t1 = vdupq_n_u64(0x3333), t2 = vdupq_n_u64(0x0f0f), t3 = vdupq_n_u64(0xff);
    uint64x2_t b0 = vdupq_n_u64(7), b1 = vdupq_n_u64(11);
    uint64x2_t s = vdupq_n_u64(0);
    for (int64_t i = 0; i < iters;) {
        int64_t n = iters - i < 3 ? iters - i : 3; /* 3 steps = 24 adds of <= 8 per byte < 256 */
        uint8x16_t c0 = vdupq_n_u8(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
        for (int64_t j = 0; j < 8 * n; j++) {
            __asm__ volatile("" : "+w"(t0), "+w"(t1), "+w"(t2), "+w"(t3), "+w"(b0), "+w"(b1));
            c0 = vaddq_u8(c0, cnt_xor(t0, b0)); c1 = vaddq_u8(c1, cnt_xor(t1, b0));
            c2 = vaddq_u8(c2, cnt_xor(t2, b0)); c3 = vaddq_u8(c3, cnt_xor(t3, b0));
            c4 = vaddq_u8(c4, cnt_xor(t0, b1)); c5 = vaddq_u8(c5, cnt_xor(t1, b1));
            c6 = vaddq_u8(c6, cnt_xor(t2, b1)); c7 = vaddq_u8(c7, cnt_xor(t3, b1));
        }
        s = fold_bytes(s, c0); s = fold_bytes(s, c1); s = fold_bytes(s, c2); s = fold_bytes(s, c3);
        s = fold_bytes(s, c4); s = fold_bytes(s, c5); s = fold_bytes(s, c6); s = fold_bytes(s, c7);
        i += n;
    }
    return (int64_t)(vgetq_lane_u64(s, 0) + vgetq_lane_u64(s, 1));
}

#endif /* HDC_ARM64 */
