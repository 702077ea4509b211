/* hdc_x86v2.c: the x86-64-v2 kernel set (SSE4.2 + POPCNT), for x86-64 CPUs without AVX2.
 *
 * Compiled per function through the target pragma (never -march), run only after hdc_core.c's
 * CPUID check found POPCNT and SSE4.2. The generic kernels get the POPCNT instruction here
 * instead of the portable bit-twiddling popcount (about 12 operations per word).
 *
 * Hamming matrix: scalar POPCNT in a register tile. A block of 8 stored rows is copied
 * transposed (T[w * 8 + r], as at AVX2), so the 4 rows of a tile are one pointer and 4
 * displacements; 2 queries x 4 rows = 8 int64 accumulators, 2 query words, 1 row word and 4
 * pointers/counters fit the 16 general registers. Per word: 6 loads for 8 (XOR, POPCNT, ADD)
 * triples, so the loop is bound by the ALU ports, not by loads (one query x one row would
 * spend 2 loads per triple).
 */
#include "hdc_internal.h"

#if HDC_X86

#pragma GCC push_options
#pragma GCC target("popcnt,sse4.2,sse4.1,ssse3")

#include "hdc_internal.h"

#define SFX(name) name##_x86v2
#define HDC_VW 2
#define HDC_LEVEL HDC_ISA_X86V2
#include "kernels_generic.inc"

#define RV2 HDC_BLOCK_ROWS_256

static int64_t hmat_scratch_x86v2(int64_t W) { return W * RV2 + 4; }

static void hmat_range_x86v2(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1, int64_t W,
                             int32_t *out, int64_t stride, uint64_t *T) {
    HDC_RAN(HDC_LEVEL);
    if (m < 2) {
        hmat_horizontal_x86v2(q, m, x, r0, r1, W, out, stride);
        return;
    }
    for (int64_t r = r0; r < r1; r += RV2) {
        int64_t nr = r1 - r < RV2 ? r1 - r : RV2;
        hdc_transpose_block(x, r, nr, RV2, W, T);
        for (int64_t qi = 0; qi < m; qi += 2) {
            int64_t nq = m - qi < 2 ? m - qi : 2;
            const uint64_t *q0 = q + qi * W;
            const uint64_t *q1 = nq > 1 ? q0 + W : q0;
            for (int g = 0; g < RV2; g += 4) {
                if (g >= nr) break;
                const uint64_t *t = T + g;
                uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
                for (int64_t w = 0; w < W; w++, t += RV2) {
                    uint64_t u = q0[w], v = q1[w];
                    uint64_t x0 = t[0], x1 = t[1], x2 = t[2], x3 = t[3];
                    a0 += (uint64_t)__builtin_popcountll(u ^ x0);
                    a1 += (uint64_t)__builtin_popcountll(u ^ x1);
                    a2 += (uint64_t)__builtin_popcountll(u ^ x2);
                    a3 += (uint64_t)__builtin_popcountll(u ^ x3);
                    b0 += (uint64_t)__builtin_popcountll(v ^ x0);
                    b1 += (uint64_t)__builtin_popcountll(v ^ x1);
                    b2 += (uint64_t)__builtin_popcountll(v ^ x2);
                    b3 += (uint64_t)__builtin_popcountll(v ^ x3);
                }
                int64_t d[2][4] = {{(int64_t)a0, (int64_t)a1, (int64_t)a2, (int64_t)a3},
                                   {(int64_t)b0, (int64_t)b1, (int64_t)b2, (int64_t)b3}};
                for (int i = 0; i < nq; i++) {
                    int32_t *dst = out + (qi + i) * stride + r + g;
                    for (int64_t j = 0; j < 4 && g + j < nr; j++) dst[j] = (int32_t)d[i][j];
                }
            }
        }
    }
}

const hdc_kernels hdc_kernels_x86v2 = {
    .bind = bind_x86v2,
    .popcount = popcount_x86v2,
    .hamming_rows = hamming_rows_x86v2,
    .hmat_range = hmat_range_x86v2,
    .hmat_scratch_words = hmat_scratch_x86v2,
    .topk_range = NULL,
    .permute = permute_x86v2,
    .slice_count = slice_count_x86v2,
    .col_width = 2,
    .causal_scan = causal_scan_x86v2,
};

/* The floor of this level: 128 independent-ish (XOR, POPCNT, ADD) word triples per step (16
 * pair-slices of 512 bits) on registers, 8 accumulators as in the tile. */
int64_t hdc_calibrate_slices_x86v2(int64_t iters);
int64_t hdc_calibrate_slices_x86v2(int64_t iters) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    uint64_t t0 = 0x5555, t1 = 0x3333, t2 = 0x0f0f, t3 = 0x00ff, u = 7, v = 11;
    for (int64_t i = 0; i < iters; i++) {
        for (int j = 0; j < 16; j++) {
            __asm__ volatile("" : "+r"(t0), "+r"(t1), "+r"(t2), "+r"(t3), "+r"(u), "+r"(v));
            a0 += (uint64_t)__builtin_popcountll(u ^ t0);
            a1 += (uint64_t)__builtin_popcountll(u ^ t1);
            a2 += (uint64_t)__builtin_popcountll(u ^ t2);
            a3 += (uint64_t)__builtin_popcountll(u ^ t3);
            a4 += (uint64_t)__builtin_popcountll(v ^ t0);
            a5 += (uint64_t)__builtin_popcountll(v ^ t1);
            a6 += (uint64_t)__builtin_popcountll(v ^ t2);
            a7 += (uint64_t)__builtin_popcountll(v ^ t3);
        }
    }
    return (int64_t)(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7);
}

#pragma GCC pop_options

#endif /* HDC_X86 */
