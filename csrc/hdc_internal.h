/* hdc_internal.h: shared declarations of the kernel translation units (not read by cffi). */
#ifndef HDC_INTERNAL_H
#define HDC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "hdc.h"

/* x86-64 SIMD levels are compiled unless HDC_PORTABLE_ONLY is defined (or on other CPUs) */
#if defined(__x86_64__) && !defined(HDC_PORTABLE_ONLY)
#define HDC_X86 1
#else
#define HDC_X86 0
#endif
/* arm64 levels (NEON; SVE where the compiler has arm_sve.h) likewise */
#if defined(__aarch64__) && !defined(HDC_PORTABLE_ONLY)
#define HDC_ARM64 1
#if defined(__has_include)
/* GCC >= 11 compiles SVE intrinsics in one function under `#pragma GCC target("+sve")` */
#if __has_include(<arm_sve.h>) && !defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11
#define HDC_SVE 1
#endif
#endif
#else
#define HDC_ARM64 0
#endif
#ifndef HDC_SVE
#define HDC_SVE 0
#endif

#define HDC_OK 0
#define HDC_EINVAL (-1)       /* a size, stride or pointer argument is invalid */
#define HDC_ENOMEM (-2)       /* scratch allocation failed */
#define HDC_ELIMIT (-3)       /* past a documented limit (e.g. int32 distances) */
#define HDC_EUNSUPPORTED (-4) /* ISA level not supported by this CPU/OS or not compiled */

/* Level ids are stable (tests and saved benchmark results name them); they are not an order
 * of speed: hdc_core.c's preference list says which supported level is chosen. */
enum {
    HDC_ISA_PORTABLE = 0,
    HDC_ISA_AVX2 = 1,
    HDC_ISA_AVX512 = 2,
    HDC_ISA_X86V2 = 3, /* x86-64-v2: SSE4.2 + POPCNT (scalar hardware popcount) */
    HDC_ISA_NEON = 4,  /* arm64 Advanced SIMD (CNT per byte) */
    HDC_ISA_SVE = 5,   /* arm64 SVE (CNT per 64-bit lane, any vector length) */
    HDC_N_ISA = 6
};
enum { K_BIND, K_POPCOUNT, K_HROWS, K_HMAT, K_TOPK, K_PERMUTE, K_BITCOUNTS, K_BUNDLE, K_CAUSAL, HDC_N_KERNELS };

/* Proof of what ran, counted inside the kernels rather than at dispatch: the calling
 * thread's kernel id (set by the dispatcher, carried to helper threads by parallel_for)
 * and, per (kernel id, level), how many kernel bodies of that level executed. Every
 * per-level kernel function starts with HDC_RAN(its level). */
extern __thread int hdc_tl_kid;
extern uint64_t hdc_ran[HDC_N_KERNELS][HDC_N_ISA];
#define HDC_RAN(level) __atomic_fetch_add(&hdc_ran[hdc_tl_kid][(level)], 1, __ATOMIC_RELAXED)

/* Rows of one transposed block (the vertical layout): T[w * rows + r] = x[r][w]. */
#define HDC_BLOCK_ROWS_512 32
#define HDC_BLOCK_ROWS_256 8
/* Fused top-k keeps a sorted list per query; above this k the selection runs on a
 * distance buffer with a counting select instead (insertion would cost O(k) each). */
#define HDC_TOPK_FUSED_MAX 128

/* Per-query running top-k: sorted ascending by (dist, idx); thr = dist of the k-th
 * entry once full (a candidate must be strictly smaller: it has the larger index). */
typedef struct {
    int32_t *dist; /* (k,) */
    int64_t *idx;  /* (k,) */
    int64_t count;
    int64_t k;
    int64_t thr;
} hdc_topk_list;

static inline void hdc_topk_push(hdc_topk_list *L, int64_t d, int64_t i) {
    /* caller guarantees d < L->thr; rows arrive in increasing i within one list */
    int64_t pos = L->count < L->k ? L->count : L->k - 1;
    while (pos > 0 && L->dist[pos - 1] > d) {
        L->dist[pos] = L->dist[pos - 1];
        L->idx[pos] = L->idx[pos - 1];
        pos--;
    }
    L->dist[pos] = (int32_t)d;
    L->idx[pos] = i;
    if (L->count < L->k) L->count++;
    if (L->count == L->k) L->thr = L->dist[L->k - 1];
}

/* Running causal top-k of one query: sorted ascending by cost (distance, or 64 W - overlap),
 * and among equal costs by descending index. Keys arrive in increasing index, so a key with
 * cost <= thr (the k-th cost once full) beats every kept key of equal cost: it enters before
 * them. That is the model's rule: ties go to the more recent key. */
typedef struct {
    int32_t *cost; /* (k,) */
    int64_t *idx;  /* (k,) */
    int64_t count;
    int64_t k;
    int64_t thr;
} hdc_ctopk_list;

static inline void hdc_ctopk_push(hdc_ctopk_list *L, int64_t c, int64_t j) {
    /* caller guarantees c <= L->thr and j > every index in the list. Locals with restrict:
     * the build has -fno-strict-aliasing, so stores through L->cost would otherwise make the
     * compiler reload every field of L in the shift loop. */
    int32_t *restrict cost = L->cost;
    int64_t *restrict idx = L->idx;
    int64_t count = L->count, k = L->k;
    int64_t pos = count < k ? count : k - 1;
    while (pos > 0 && cost[pos - 1] >= c) {
        cost[pos] = cost[pos - 1];
        idx[pos] = idx[pos - 1];
        pos--;
    }
    cost[pos] = (int32_t)c;
    idx[pos] = j;
    if (count < k) L->count = ++count;
    if (count == k) L->thr = cost[k - 1];
}

/* A kernel set for one ISA level. Ranges are in rows (or word columns) so the
 * threading layer can split work without knowing the level. */
typedef struct {
    void (*bind)(const uint64_t *a, const uint64_t *b, uint64_t *out, int64_t n_words_total);
    void (*popcount)(const uint64_t *x, int64_t rows, int64_t W, int64_t *out);
    void (*hamming_rows)(const uint64_t *a, const uint64_t *b, int64_t rows, int64_t W, int64_t *out);
    /* distances of all m queries against rows [r0, r1) of x; scratch from hmat_scratch_words */
    void (*hmat_range)(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1,
                       int64_t W, int32_t *out, int64_t stride, uint64_t *scratch);
    int64_t (*hmat_scratch_words)(int64_t W);
    /* fused top-k over rows [r0, r1) into lists[m]; NULL when the level has none */
    void (*topk_range)(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1,
                       int64_t W, hdc_topk_list *lists, uint64_t *scratch);
    void (*permute)(const uint64_t *x, int64_t rows, int64_t W, int64_t dim, int64_t shift, uint64_t *out);
    /* bit-sliced column counts: word columns [c0, c1) over all rows into planes[L][c1-c0] */
    void (*slice_count)(const uint64_t *x, int64_t rows, int64_t W, int64_t c0, int64_t c1,
                        uint64_t *planes, int L);
    int col_width; /* word columns per vector: slice_count ranges are multiples of it */
    /* causal top-k of one query over keys lo .. lo + cnt - 1, word w of key lo + r at
     * kt[w * stride + r]: costs (distance, or 64 W - overlap) enter L in increasing key order;
     * with buf != NULL the costs go to buf[r] instead (L unused) */
    void (*causal_scan)(const uint64_t *qrow, const uint64_t *kt, int64_t stride, int64_t W, int64_t lo,
                        int64_t cnt, int overlap, hdc_ctopk_list *L, int32_t *buf);
} hdc_kernels;

extern const hdc_kernels hdc_kernels_portable;
#if HDC_X86
extern const hdc_kernels hdc_kernels_avx2;
extern const hdc_kernels hdc_kernels_avx512;
extern const hdc_kernels hdc_kernels_x86v2;
#endif
#if HDC_ARM64
extern const hdc_kernels hdc_kernels_neon;
#endif
#if HDC_SVE
extern const hdc_kernels hdc_kernels_sve;
#endif

/* Shared scalar helpers (hdc_core.c). */
void hdc_transpose_block(const uint64_t *x, int64_t r0, int64_t nrows, int64_t R, int64_t W, uint64_t *T);
void hdc_hmat_horizontal(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1,
                         int64_t W, int32_t *out, int64_t stride);

#endif
