/* selftest.c: every C kernel at every ISA level this CPU can run, against a plain scalar
 * reference written bit by bit, without Python. It is what runs the kernels on other
 * architectures: .ci/cross.sh cross-compiles it for arm64 (NEON, SVE) and s390x (big-endian)
 * and runs it under qemu-user, where only correctness means anything.
 *
 *   cc -O2 -pthread -Icsrc csrc/selftest.c csrc/hdc_core.c csrc/hdc_avx2.c csrc/hdc_avx512.c \
 *      csrc/hdc_x86v2.c csrc/hdc_neon.c csrc/hdc_sve.c -o selftest && ./selftest [seed] [rounds]
 *
 * The reference reads bit i of a vector as bit i % 64 of word i / 64 (the layout on every
 * platform; the words are native uint64 values, so the byte order of memory never enters).
 * Dims: the word boundaries 1, 63, 64, 65, 127, 128, 129, 511, 512, 513, one vector past
 * 64 KiB (532,387 bits) and random dims. Thread counts 1 and 3 must give the same results.
 * A level passes only if its own code ran (hdc_ran_count rose for that level).
 * Exit status 0: all equal; 1: a difference (printed).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdc_internal.h"

static const char *LEVEL_NAMES[HDC_N_ISA] = {"portable", "avx2", "avx512", "x86-64-v2", "neon", "sve"};
static int g_fail = 0;
static const char *g_level = "";

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            if (g_fail < 20) {                                                    \
                fprintf(stderr, "FAIL [%s] %s:%d: ", g_level, __FILE__, __LINE__); \
                fprintf(stderr, __VA_ARGS__);                                     \
                fputc('\n', stderr);                                              \
            }                                                                     \
            g_fail++;                                                             \
        }                                                                         \
    } while (0)

/* xorshift64* (Vigna 2016): a seeded, platform-independent stream */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
static int64_t rnd_below(int64_t n) { return n > 0 ? (int64_t)(rnd() % (uint64_t)n) : 0; }

static int get_bit(const uint64_t *v, int64_t i) { return (int)((v[i >> 6] >> (i & 63)) & 1u); }
static void set_bit(uint64_t *v, int64_t i, int b) {
    if (b) v[i >> 6] |= (uint64_t)1 << (i & 63);
    else v[i >> 6] &= ~((uint64_t)1 << (i & 63));
}
static int64_t words_for(int64_t dim) { return (dim + 63) / 64; }

/* n rows of dim random bits, pad bits zero; `dense` sets few distinct values (many ties) */
static uint64_t *rand_rows(int64_t n, int64_t dim, int few_values) {
    int64_t W = words_for(dim);
    uint64_t *x = (uint64_t *)calloc((size_t)(n * W + 1), 8);
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < dim; i++) set_bit(x + r * W, i, few_values ? (int)(rnd() % 8 == 0) : (int)(rnd() & 1));
    return x;
}

static int64_t ref_pop(const uint64_t *a, int64_t dim) {
    int64_t s = 0;
    for (int64_t i = 0; i < dim; i++) s += get_bit(a, i);
    return s;
}
static int64_t ref_ham(const uint64_t *a, const uint64_t *b, int64_t dim) {
    int64_t s = 0;
    for (int64_t i = 0; i < dim; i++) s += get_bit(a, i) != get_bit(b, i);
    return s;
}
static int64_t ref_and(const uint64_t *a, const uint64_t *b, int64_t dim) {
    int64_t s = 0;
    for (int64_t i = 0; i < dim; i++) s += get_bit(a, i) & get_bit(b, i);
    return s;
}

static void test_rowwise(int64_t n, int64_t dim, int threads) {
    int64_t W = words_for(dim);
    uint64_t *a = rand_rows(n, dim, 0), *b = rand_rows(n, dim, 0);
    uint64_t *o = (uint64_t *)calloc((size_t)(n * W + 1), 8);
    int64_t *c = (int64_t *)calloc((size_t)n + 1, 8);
    CHECK(hdc_bind(a, b, o, n, W, threads) == 0, "bind rc");
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < 64 * W; i++)
            if (get_bit(o + r * W, i) != (get_bit(a + r * W, i) ^ get_bit(b + r * W, i))) {
                CHECK(0, "bind dim=%" PRId64 " row %" PRId64 " bit %" PRId64, dim, r, i);
                r = n;
                break;
            }
    CHECK(hdc_popcount(a, n, W, c, threads) == 0, "popcount rc");
    for (int64_t r = 0; r < n; r++)
        CHECK(c[r] == ref_pop(a + r * W, dim), "popcount dim=%" PRId64 " row %" PRId64, dim, r);
    CHECK(hdc_hamming_rows(a, b, n, W, c, threads) == 0, "hamming_rows rc");
    for (int64_t r = 0; r < n; r++)
        CHECK(c[r] == ref_ham(a + r * W, b + r * W, dim), "hamming_rows dim=%" PRId64 " row %" PRId64, dim, r);
    free(a); free(b); free(o); free(c);
}

static void test_matrix_topk(int64_t m, int64_t n, int64_t dim, int threads, int few_values) {
    int64_t W = words_for(dim);
    uint64_t *q = rand_rows(m, dim, few_values), *x = rand_rows(n, dim, few_values);
    int64_t stride = n + 3; /* a column slice of a wider matrix */
    int32_t *d = (int32_t *)malloc((size_t)(m * stride + 1) * 4);
    int32_t *ref = (int32_t *)malloc((size_t)(m * n + 1) * 4);
    for (int64_t i = 0; i < m * stride; i++) d[i] = -7;
    CHECK(hdc_hamming_matrix(q, m, x, n, W, d, stride, threads) == 0, "hamming_matrix rc");
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            ref[i * n + j] = (int32_t)ref_ham(q + i * W, x + j * W, dim);
            CHECK(d[i * stride + j] == ref[i * n + j], "hamming_matrix dim=%" PRId64 " m=%" PRId64 " n=%" PRId64
                  " (%" PRId64 ",%" PRId64 "): %d vs %d", dim, m, n, i, j, d[i * stride + j], ref[i * n + j]);
        }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = n; j < stride; j++) CHECK(d[i * stride + j] == -7, "hamming_matrix wrote past n");
    if (n > 0) {
        int64_t ks[4] = {1, n < 10 ? n : 10, n < 129 ? n : 129, n};
        for (int t = 0; t < 4; t++) {
            int64_t k = ks[t];
            int32_t *od = (int32_t *)malloc((size_t)(m * k + 1) * 4);
            int64_t *oi = (int64_t *)malloc((size_t)(m * k + 1) * 8);
            char *used = (char *)malloc((size_t)n);
            CHECK(hdc_topk(q, m, x, n, W, k, od, oi, threads) == 0, "topk rc");
            for (int64_t i = 0; i < m; i++) {
                memset(used, 0, (size_t)n);
                for (int64_t s = 0; s < k; s++) {
                    int64_t best = -1; /* smallest distance, then lowest index */
                    for (int64_t j = 0; j < n; j++)
                        if (!used[j] && (best < 0 || ref[i * n + j] < ref[i * n + best])) best = j;
                    used[best] = 1;
                    CHECK(od[i * k + s] == ref[i * n + best] && oi[i * k + s] == best,
                          "topk dim=%" PRId64 " n=%" PRId64 " k=%" PRId64 " query %" PRId64 " slot %" PRId64
                          ": (%d,%" PRId64 ") vs (%d,%" PRId64 ")", dim, n, k, i, s, od[i * k + s], oi[i * k + s],
                          ref[i * n + best], best);
                }
            }
            free(od); free(oi); free(used);
        }
    }
    free(q); free(x); free(d); free(ref);
}

static void test_permute(int64_t n, int64_t dim, int threads) {
    int64_t W = words_for(dim);
    uint64_t *x = rand_rows(n, dim, 0), *o = (uint64_t *)malloc((size_t)(n * W + 1) * 8);
    int64_t shifts[4] = {0, 1, dim - 1, rnd_below(dim)};
    for (int t = 0; t < 4; t++) {
        int64_t sh = (shifts[t] < 0 ? 0 : shifts[t]) % dim; /* 0 <= shift < dim */
        for (int64_t i = 0; i < n * W; i++) o[i] = 0xABABABABABABABABull;
        CHECK(hdc_permute(x, n, W, dim, sh, o, threads) == 0, "permute rc");
        for (int64_t r = 0; r < n; r++) {
            int bad = 0;
            for (int64_t j = 0; j < dim && !bad; j++)
                bad = get_bit(o + r * W, (j + sh) % dim) != get_bit(x + r * W, j);
            for (int64_t j = dim; j < 64 * W && !bad; j++) bad = get_bit(o + r * W, j);
            CHECK(!bad, "permute dim=%" PRId64 " shift=%" PRId64 " row %" PRId64, dim, sh, r);
        }
    }
    free(x); free(o);
}

static void test_counts_majority(int64_t n, int64_t dim, int threads) {
    int64_t W = words_for(dim);
    uint64_t *x = rand_rows(n, dim, 0), *tie = rand_rows(1, dim, 0);
    uint64_t *o = (uint64_t *)calloc((size_t)W + 1, 8);
    int64_t *cnt = (int64_t *)malloc((size_t)(dim + 1) * 8);
    for (int64_t j = 0; j < dim; j++) cnt[j] = 5; /* counts accumulate */
    CHECK(hdc_bit_counts(x, n, W, dim, cnt, threads) == 0, "bit_counts rc");
    for (int64_t j = 0; j < dim; j++) {
        int64_t c = 0;
        for (int64_t r = 0; r < n; r++) c += get_bit(x + r * W, j);
        CHECK(cnt[j] == 5 + c, "bit_counts dim=%" PRId64 " n=%" PRId64 " bit %" PRId64, dim, n, j);
        cnt[j] = c;
    }
    if (n >= 1) {
        for (int64_t i = 0; i < W; i++) o[i] = ~(uint64_t)0;
        CHECK(hdc_bundle_majority(x, n, W, dim, tie, o, threads) == 0, "bundle_majority rc");
        for (int64_t j = 0; j < 64 * W; j++) {
            int want = j < dim && (2 * cnt[j] > n || (2 * cnt[j] == n && get_bit(tie, j)));
            if (get_bit(o, j) != want) {
                CHECK(0, "bundle_majority dim=%" PRId64 " n=%" PRId64 " bit %" PRId64, dim, n, j);
                break;
            }
        }
    }
    free(x); free(tie); free(o); free(cnt);
}

static void test_causal(int64_t m, int64_t n, int64_t dim, int threads, int few_values) {
    int64_t W = words_for(dim);
    uint64_t *q = rand_rows(m, dim, few_values), *keys = rand_rows(n, dim, few_values);
    int64_t q_start = rnd_below(n - m + 1), window = rnd_below(3) == 0 ? 0 : 1 + rnd_below(n + 2);
    int64_t skip = rnd_below(3), ks[3] = {1, 1 + rnd_below(8), 129 + rnd_below(4)};
    int64_t *cost = (int64_t *)malloc((size_t)(n + 1) * 8);
    char *used = (char *)malloc((size_t)n + 1);
    for (int ov = 0; ov <= 1; ov++)
        for (int t = 0; t < 3; t++) {
            int64_t k = ks[t];
            int32_t *os = (int32_t *)malloc((size_t)(m * k + 1) * 4);
            int64_t *oi = (int64_t *)malloc((size_t)(m * k + 1) * 8);
            CHECK(hdc_causal_topk(q, m, keys, n, W, k, q_start, window, skip, ov, os, oi, threads) == 0, "causal rc");
            for (int64_t i = 0; i < m; i++) {
                int64_t p = q_start + i;
                int64_t lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0, hi = p - skip;
                for (int64_t j = lo; j <= hi; j++)
                    cost[j] = ov ? -ref_and(q + i * W, keys + j * W, dim) : ref_ham(q + i * W, keys + j * W, dim);
                memset(used, 0, (size_t)n + 1);
                for (int64_t s = 0; s < k; s++) {
                    int64_t best = -1; /* smallest cost (largest overlap), then the larger index */
                    for (int64_t j = hi; j >= lo; j--)
                        if (!used[j] && (best < 0 || cost[j] < cost[best])) best = j;
                    int64_t ws = best < 0 ? -1 : (ov ? -cost[best] : cost[best]);
                    if (best >= 0) used[best] = 1;
                    CHECK(os[i * k + s] == ws && oi[i * k + s] == best,
                          "causal dim=%" PRId64 " m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " ov=%d win=%" PRId64
                          " skip=%" PRId64 " q%" PRId64 " slot %" PRId64 ": (%d,%" PRId64 ") vs (%" PRId64 ",%" PRId64 ")",
                          dim, m, n, k, ov, window, skip, i, s, os[i * k + s], oi[i * k + s], ws, best);
                }
            }
            free(os); free(oi);
        }
    free(q); free(keys); free(cost); free(used);
}

static void run_dim(int64_t dim, int big) {
    for (int threads = 1; threads <= 3; threads += 2) {
        int64_t nr = big ? 3 : rnd_below(40);
        test_rowwise(nr, dim, threads);
        test_matrix_topk(big ? 5 : rnd_below(11), big ? 37 : rnd_below(70), dim, threads, 0);
        if (!big) test_matrix_topk(4 + rnd_below(6), 40 + rnd_below(100), dim, threads, 1); /* ties */
        test_permute(big ? 2 : rnd_below(6), dim, threads);
        test_counts_majority(big ? 3 : rnd_below(40), dim, threads);
        int64_t n = big ? 6 : 1 + rnd_below(60);
        test_causal(1 + rnd_below(n), n, dim, threads, !big && (rnd() & 1));
    }
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
    int rounds = argc > 2 ? atoi(argv[2]) : 8;
    g_rng ^= seed * 0xD1B54A32D192ED03ull;
    if (g_rng == 0) g_rng = 1;
    static const int64_t boundary[] = {1, 63, 64, 65, 127, 128, 129, 511, 512, 513};
    const int64_t huge = 524288 + 4099; /* past 64 KiB per vector, not a multiple of 64 */
    int levels_run = 0;
    for (int lvl = 0; lvl < HDC_N_ISA; lvl++) {
        if (!hdc_isa_supported(lvl)) continue;
        g_level = LEVEL_NAMES[lvl];
        if (hdc_set_isa(lvl) != 0) { CHECK(0, "set_isa"); continue; }
        uint64_t ran_before[HDC_N_KERNELS];
        for (int kk = 0; kk < HDC_N_KERNELS; kk++) ran_before[kk] = hdc_ran_count(kk, lvl);
        int fails_before = g_fail;
        for (size_t i = 0; i < sizeof boundary / sizeof boundary[0]; i++) run_dim(boundary[i], 0);
        run_dim(huge, 1);
        for (int r = 0; r < rounds; r++) run_dim(1 + rnd_below(rnd() & 1 ? 300 : 3000), 0);
        for (int kk = 0; kk < HDC_N_KERNELS; kk++)
            CHECK(hdc_ran_count(kk, lvl) > ran_before[kk], "kernel %d never ran at this level", kk);
        printf("%-10s %s\n", g_level, g_fail == fails_before ? "ok" : "FAILED");
        levels_run++;
    }
    printf("%d levels, seed %" PRIu64 ", %s-endian: %s\n", levels_run, seed,
           *(const unsigned char *)&(const uint16_t){1} == 1 ? "little" : "big", g_fail ? "FAILED" : "all kernels equal the reference");
    return g_fail ? 1 : 0;
}
