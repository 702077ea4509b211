/* hdc_core.c: ISA detection and dispatch, the threading layer, argument checks, the
 * selection logic of top-k, and the portable kernel set. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hdc_internal.h"

#if HDC_X86
#include <cpuid.h>
#endif

/* ------------------------------------------------------------------ portable kernels */
#define SFX(name) name##_portable
#define HDC_VW 1
#define HDC_LEVEL HDC_ISA_PORTABLE
#include "kernels_generic.inc"
#undef SFX
#undef HDC_VW
#undef HDC_LEVEL

static int64_t hmat_scratch_none(int64_t W) { (void)W; return 0; }

static void hmat_range_portable(const uint64_t *q, int64_t m, const uint64_t *x, int64_t r0, int64_t r1,
                                int64_t W, int32_t *out, int64_t stride, uint64_t *scratch) {
    (void)scratch;
    hmat_horizontal_portable(q, m, x, r0, r1, W, out, stride);
}

const hdc_kernels hdc_kernels_portable = {
    .bind = bind_portable,
    .popcount = popcount_portable,
    .hamming_rows = hamming_rows_portable,
    .hmat_range = hmat_range_portable,
    .hmat_scratch_words = hmat_scratch_none,
    .topk_range = NULL,
    .permute = permute_portable,
    .slice_count = slice_count_portable,
    .col_width = 1,
    .causal_scan = causal_scan_portable,
};

/* ------------------------------------------------------------------ ISA detection */
/* Supported levels as a bit mask (bit = level id), found once; g_detected is the first
 * supported level of the preference list (fastest first on each architecture). */
static const int g_preference[] = {HDC_ISA_AVX512, HDC_ISA_AVX2, HDC_ISA_X86V2, HDC_ISA_SVE, HDC_ISA_NEON,
                                   HDC_ISA_PORTABLE};
static unsigned g_supported = 0;
static int g_detected = -1;
static int g_isa = -1;
static uint64_t g_calls[HDC_N_KERNELS][HDC_N_ISA];  /* dispatched calls */
uint64_t hdc_ran[HDC_N_KERNELS][HDC_N_ISA];         /* kernel bodies that ran (HDC_RAN) */
__thread int hdc_tl_kid;
static uint64_t g_helper_ranges[HDC_N_KERNELS];     /* ranges run on a helper thread */
static uint64_t g_hmat_split[2];                     /* hmat helper ranges: [0] by queries, [1] by rows */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#if HDC_X86
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

#if HDC_ARM64
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_SVE
#define HWCAP_SVE (1 << 22)
#endif
#endif

static void detect(void) {
    unsigned mask = 1u << HDC_ISA_PORTABLE;
#if HDC_X86
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
        /* the OS must save YMM (XCR0 bits 1,2) and, for AVX-512, opmask/ZMM (bits 5,6,7) */
        uint64_t xcr0 = osxsave ? xgetbv0() : 0;
        int ymm_os = (xcr0 & 0x6) == 0x6;
        int zmm_os = (xcr0 & 0xE6) == 0xE6;
        unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0;
        if (__get_cpuid_max(0, NULL) >= 7) __cpuid_count(7, 0, a7, b7, c7, d7);
        int popcnt = (c >> 23) & 1;
        /* x86-64-v2 as the psABI defines it: CMPXCHG16B, LAHF, POPCNT, SSE3, SSE4.1, SSE4.2, SSSE3;
         * the kernels use POPCNT and SSE4.2 code generation, so those are what is checked */
        int sse42 = (c >> 20) & 1, sse41 = (c >> 19) & 1, ssse3 = (c >> 9) & 1;
        int avx2 = (b7 >> 5) & 1;
        int f = (b7 >> 16) & 1, bw = (b7 >> 30) & 1, vl = (b7 >> 31) & 1, vpopcntdq = (c7 >> 14) & 1;
        if (popcnt && sse42 && sse41 && ssse3) mask |= 1u << HDC_ISA_X86V2;
        if (avx && avx2 && popcnt && ymm_os) mask |= 1u << HDC_ISA_AVX2;
        if ((mask >> HDC_ISA_AVX2) & 1 && f && bw && vl && vpopcntdq && zmm_os) mask |= 1u << HDC_ISA_AVX512;
    }
#endif
#if HDC_ARM64
    unsigned long hw = getauxval(AT_HWCAP);
    if (hw & HWCAP_ASIMD) mask |= 1u << HDC_ISA_NEON;
#if HDC_SVE
    if (hw & HWCAP_SVE) mask |= 1u << HDC_ISA_SVE;
#endif
#endif
    g_supported = mask;
    int best = HDC_ISA_PORTABLE;
    for (size_t i = 0; i < sizeof g_preference / sizeof g_preference[0]; i++)
        if ((mask >> g_preference[i]) & 1) { best = g_preference[i]; break; }
    g_detected = best;
    g_isa = best;
}

static void ensure_init(void) { pthread_once(&g_once, detect); }

int hdc_detected_isa(void) { ensure_init(); return g_detected; }

int hdc_isa_supported(int level) {
    ensure_init();
    return level >= 0 && level < HDC_N_ISA && ((g_supported >> level) & 1);
}

int hdc_get_isa(void) { ensure_init(); return __atomic_load_n(&g_isa, __ATOMIC_RELAXED); }

int hdc_set_isa(int level) {
    ensure_init();
    if (level < 0 || level >= HDC_N_ISA) return HDC_EINVAL;
    if (!hdc_isa_supported(level)) return HDC_EUNSUPPORTED;
    __atomic_store_n(&g_isa, level, __ATOMIC_RELAXED);
    return HDC_OK;
}

uint64_t hdc_call_count(int kernel, int level) {
    if (kernel < 0 || kernel >= HDC_N_KERNELS || level < 0 || level >= HDC_N_ISA) return 0;
    return __atomic_load_n(&g_calls[kernel][level], __ATOMIC_RELAXED);
}

uint64_t hdc_ran_count(int kernel, int level) {
    if (kernel < 0 || kernel >= HDC_N_KERNELS || level < 0 || level >= HDC_N_ISA) return 0;
    return __atomic_load_n(&hdc_ran[kernel][level], __ATOMIC_RELAXED);
}

uint64_t hdc_helper_ranges(int kernel) {
    if (kernel < 0 || kernel >= HDC_N_KERNELS) return 0;
    return __atomic_load_n(&g_helper_ranges[kernel], __ATOMIC_RELAXED);
}

uint64_t hdc_hmat_split_count(int by_rows) {
    return __atomic_load_n(&g_hmat_split[by_rows ? 1 : 0], __ATOMIC_RELAXED);
}

int hdc_simd_compiled(void) { return HDC_X86 || HDC_ARM64; }

int hdc_sanitized(void) {
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#else
    return 0;
#endif
}

/* The kernel set of the current level; counts the call for kernel kid, and names kid as
 * this thread's kernel so that HDC_RAN inside the level's code counts under it. */
static const hdc_kernels *kernels_for(int kid) {
    int lvl = hdc_get_isa();
    hdc_tl_kid = kid;
    __atomic_fetch_add(&g_calls[kid][lvl], 1, __ATOMIC_RELAXED);
    switch (lvl) {
#if HDC_X86
        case HDC_ISA_AVX512: return &hdc_kernels_avx512;
        case HDC_ISA_AVX2: return &hdc_kernels_avx2;
        case HDC_ISA_X86V2: return &hdc_kernels_x86v2;
#endif
#if HDC_ARM64
        case HDC_ISA_NEON: return &hdc_kernels_neon;
#endif
#if HDC_SVE
        case HDC_ISA_SVE: return &hdc_kernels_sve;
#endif
        default: return &hdc_kernels_portable;
    }
}

/* ------------------------------------------------------------------ threading */
/* Split [0, n_items) into `threads` contiguous ranges: range t goes to thread t (t = 0 runs
 * on the caller). Threads are created per call, so a call never uses more than it was given.
 * A thread that cannot be created runs its range on the caller instead. */
typedef void (*work_fn)(void *ctx, int64_t begin, int64_t end, int tid);

typedef struct {
    work_fn fn;
    void *ctx;
    int64_t begin, end;
    int tid;
    int kid; /* the caller's kernel id, for HDC_RAN and the helper-range count */
} work_item;

static void *work_trampoline(void *arg) {
    work_item *it = (work_item *)arg;
    hdc_tl_kid = it->kid;
    __atomic_fetch_add(&g_helper_ranges[it->kid], 1, __ATOMIC_RELAXED);
    it->fn(it->ctx, it->begin, it->end, it->tid);
    return NULL;
}

#define HDC_MAX_THREADS 256

static int parallel_for(int64_t n_items, int threads, work_fn fn, void *ctx) {
    if (threads > n_items) threads = (int)(n_items > 0 ? n_items : 1);
    if (threads > HDC_MAX_THREADS) threads = HDC_MAX_THREADS;
    if (threads <= 1) {
        if (n_items > 0) fn(ctx, 0, n_items, 0);
        return 1;
    }
    work_item items[HDC_MAX_THREADS];
    pthread_t tids[HDC_MAX_THREADS];
    int started[HDC_MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        items[t].fn = fn;
        items[t].ctx = ctx;
        items[t].begin = n_items * t / threads;
        items[t].end = n_items * (t + 1) / threads;
        items[t].tid = t;
        items[t].kid = hdc_tl_kid;
        started[t] = 0;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, work_trampoline, &items[t]) == 0;
    fn(ctx, items[0].begin, items[0].end, 0);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else fn(ctx, items[t].begin, items[t].end, t);
    }
    return threads;
}

/* Threads worth using for `work` word-operations: a thread costs ~20 us to start. */
static int threads_for(int threads, double work) {
    const double per_thread_min = 1 << 17;
    if (threads < 1) threads = 1;
    int useful = (int)(work / per_thread_min);
    if (useful < 1) useful = 1;
    return threads < useful ? threads : useful;
}

static void *aligned_calloc64(size_t n_bytes) {
    size_t sz = (n_bytes + 63) & ~(size_t)63;
    if (sz == 0) sz = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, sz) != 0) return NULL;
    memset(p, 0, sz);
    return p;
}

#define CHECK_SIZES(rows, W)                                               \
    do {                                                                    \
        if ((rows) < 0 || (W) < 0 || (rows) > ((int64_t)1 << 62) ||        \
            (W) > ((int64_t)1 << 56)) return HDC_EINVAL;                     \
        if ((W) > 0 && (rows) > (((int64_t)1 << 62) / (W))) return HDC_EINVAL; \
    } while (0)

/* ------------------------------------------------------------------ bind / popcount / hamming rows */
typedef struct {
    const hdc_kernels *k;
    const uint64_t *a, *b;
    uint64_t *out;
    int64_t *out64;
    int64_t W;
} rows_ctx;

static void bind_worker(void *p, int64_t s, int64_t e, int tid) {
    rows_ctx *c = (rows_ctx *)p;
    (void)tid;
    s *= 8;
    e *= 8;
    if (e > c->W) e = c->W; /* W holds the total word count here */
    c->k->bind(c->a + s, c->b + s, c->out + s, e - s);
}

int hdc_bind(const uint64_t *a, const uint64_t *b, uint64_t *out, int64_t n_rows, int64_t n_words, int threads) {
    CHECK_SIZES(n_rows, n_words);
    int64_t total = n_rows * n_words;
    if (total > 0 && (!a || !b || !out)) return HDC_EINVAL;
    rows_ctx c = {kernels_for(K_BIND), a, b, out, NULL, total};
    /* split on 8-word (64-byte) boundaries so threads never share a cache line */
    int64_t units = (total + 7) / 8;
    parallel_for(units, threads_for(threads, (double)total), bind_worker, &c);
    return HDC_OK;
}

static void popcount_worker(void *p, int64_t s, int64_t e, int tid) {
    rows_ctx *c = (rows_ctx *)p;
    (void)tid;
    c->k->popcount(c->a + s * c->W, e - s, c->W, c->out64 + s);
}

int hdc_popcount(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t *out, int threads) {
    CHECK_SIZES(n_rows, n_words);
    if (n_rows > 0 && (!x || !out)) return HDC_EINVAL;
    rows_ctx c = {kernels_for(K_POPCOUNT), x, NULL, NULL, out, n_words};
    parallel_for(n_rows, threads_for(threads, (double)n_rows * n_words), popcount_worker, &c);
    return HDC_OK;
}

static void hrows_worker(void *p, int64_t s, int64_t e, int tid) {
    rows_ctx *c = (rows_ctx *)p;
    (void)tid;
    c->k->hamming_rows(c->a + s * c->W, c->b + s * c->W, e - s, c->W, c->out64 + s);
}

int hdc_hamming_rows(const uint64_t *a, const uint64_t *b, int64_t n_rows, int64_t n_words, int64_t *out,
                     int threads) {
    CHECK_SIZES(n_rows, n_words);
    if (n_rows > 0 && (!a || !b || !out)) return HDC_EINVAL;
    rows_ctx c = {kernels_for(K_HROWS), a, b, NULL, out, n_words};
    parallel_for(n_rows, threads_for(threads, (double)n_rows * n_words), hrows_worker, &c);
    return HDC_OK;
}

/* ------------------------------------------------------------------ hamming matrix */
typedef struct {
    const hdc_kernels *k;
    const uint64_t *q, *x;
    int64_t m, n, W, stride;
    int32_t *out;
    int64_t block;    /* rows per work unit */
    int split_rows;   /* 1: split stored rows among threads; 0: split queries */
    uint64_t *scratch;
    int64_t scratch_words;
    hdc_topk_list *lists; /* topk: [threads][m] */
    int err;
} hmat_ctx;

static void hmat_worker(void *p, int64_t s, int64_t e, int tid) {
    hmat_ctx *c = (hmat_ctx *)p;
    uint64_t *scr = c->scratch + (int64_t)tid * c->scratch_words;
    if (tid > 0) __atomic_fetch_add(&g_hmat_split[c->split_rows], 1, __ATOMIC_RELAXED);
    if (c->split_rows) {
        int64_t r0 = s * c->block, r1 = e * c->block;
        if (r1 > c->n) r1 = c->n;
        c->k->hmat_range(c->q, c->m, c->x, r0, r1, c->W, c->out, c->stride, scr);
    } else {
        c->k->hmat_range(c->q + s * c->W, e - s, c->x, 0, c->n, c->W, c->out + s * c->stride, c->stride, scr);
    }
}

static int hmat_run(const hdc_kernels *k, const uint64_t *q, int64_t m, const uint64_t *x, int64_t n, int64_t W,
                    int32_t *out, int64_t stride, int threads) {
    if (m == 0 || n == 0) return HDC_OK;
    hmat_ctx c;
    memset(&c, 0, sizeof c);
    c.k = k; c.q = q; c.x = x; c.m = m; c.n = n; c.W = W; c.stride = stride; c.out = out;
    c.block = HDC_BLOCK_ROWS_512;
    int64_t n_blocks = (n + c.block - 1) / c.block;
    threads = threads_for(threads, (double)m * n * (W > 0 ? W : 1));
    c.split_rows = n_blocks >= threads || m < threads;
    int64_t units = c.split_rows ? n_blocks : m;
    if (threads > units) threads = (int)units;
    c.scratch_words = k->hmat_scratch_words(W);
    if (c.scratch_words > 0) {
        c.scratch = (uint64_t *)aligned_calloc64((size_t)c.scratch_words * 8 * (size_t)threads);
        if (!c.scratch) return HDC_ENOMEM;
    }
    parallel_for(units, threads, hmat_worker, &c);
    free(c.scratch);
    return HDC_OK;
}

int hdc_hamming_matrix(const uint64_t *q, int64_t m, const uint64_t *x, int64_t n, int64_t n_words, int32_t *out,
                       int64_t out_stride, int threads) {
    CHECK_SIZES(m, n_words);
    CHECK_SIZES(n, n_words);
    if (n_words >= ((int64_t)1 << 25)) return HDC_ELIMIT; /* 64 * n_words must fit int32 */
    if (out_stride < n || (m > 1 && out_stride > (((int64_t)1 << 62) / m))) return HDC_EINVAL;
    if (m > 0 && n > 0 && (!q || !x || !out)) return HDC_EINVAL;
    return hmat_run(kernels_for(K_HMAT), q, m, x, n, n_words, out, out_stride, threads);
}

/* ------------------------------------------------------------------ top-k */
/* Merge sorted lists (dist, idx) lexicographically; each list's rows are a contiguous range. */
static void topk_merge(hdc_topk_list *const *ls, int nl, int64_t k, int32_t *od, int64_t *oi) {
    int64_t pos[HDC_MAX_THREADS] = {0};
    for (int64_t t = 0; t < k; t++) {
        int best = -1;
        for (int l = 0; l < nl; l++) {
            if (pos[l] >= ls[l]->count) continue;
            if (best < 0) { best = l; continue; }
            int32_t d = ls[l]->dist[pos[l]], bd = ls[best]->dist[pos[best]];
            if (d < bd || (d == bd && ls[l]->idx[pos[l]] < ls[best]->idx[pos[best]])) best = l;
        }
        if (best < 0) { od[t] = 0; oi[t] = -1; continue; } /* unreachable when k <= n */
        od[t] = ls[best]->dist[pos[best]];
        oi[t] = ls[best]->idx[pos[best]];
        pos[best]++;
    }
}

typedef struct {
    const hdc_kernels *k;
    const uint64_t *q, *x;
    int64_t m, n, W, kk;
    int64_t block;
    hdc_topk_list *lists;
    uint64_t *scratch;
    int64_t scratch_words;
    int nthreads;
} topk_ctx;

static void topk_fused_worker(void *p, int64_t s, int64_t e, int tid) {
    topk_ctx *c = (topk_ctx *)p;
    int64_t r0 = s * c->block, r1 = e * c->block;
    if (r1 > c->n) r1 = c->n;
    c->k->topk_range(c->q, c->m, c->x, r0, r1, c->W, c->lists + (int64_t)tid * c->m,
                     c->scratch + (int64_t)tid * c->scratch_words);
}

static int topk_fused(const hdc_kernels *k, const uint64_t *q, int64_t m, const uint64_t *x, int64_t n, int64_t W,
                      int64_t kk, int32_t *od, int64_t *oi, int threads) {
    topk_ctx c;
    memset(&c, 0, sizeof c);
    c.k = k; c.q = q; c.x = x; c.m = m; c.n = n; c.W = W; c.kk = kk;
    c.block = HDC_BLOCK_ROWS_512;
    int64_t n_blocks = (n + c.block - 1) / c.block;
    threads = threads_for(threads, (double)m * n * (W > 0 ? W : 1));
    if (threads > n_blocks) threads = (int)n_blocks;
    if (threads < 1) threads = 1;
    c.nthreads = threads;
    c.scratch_words = k->hmat_scratch_words(W);
    size_t nl = (size_t)threads * (size_t)m;
    c.scratch = (uint64_t *)aligned_calloc64((size_t)c.scratch_words * 8 * (size_t)threads);
    c.lists = (hdc_topk_list *)calloc(nl, sizeof(hdc_topk_list));
    int32_t *dbuf = (int32_t *)malloc(nl * (size_t)kk * sizeof(int32_t) + 1);
    int64_t *ibuf = (int64_t *)malloc(nl * (size_t)kk * sizeof(int64_t) + 1);
    int rc = HDC_OK;
    if (!c.scratch || !c.lists || !dbuf || !ibuf) { rc = HDC_ENOMEM; goto done; }
    for (size_t i = 0; i < nl; i++) {
        c.lists[i].dist = dbuf + i * (size_t)kk;
        c.lists[i].idx = ibuf + i * (size_t)kk;
        c.lists[i].k = kk;
        c.lists[i].count = 0;
        c.lists[i].thr = INT64_MAX;
    }
    parallel_for(n_blocks, threads, topk_fused_worker, &c);
    for (int64_t i = 0; i < m; i++) {
        hdc_topk_list *ls[HDC_MAX_THREADS];
        for (int t = 0; t < threads; t++) ls[t] = &c.lists[(size_t)t * m + i];
        topk_merge(ls, threads, kk, od + i * kk, oi + i * kk);
    }
done:
    free(c.scratch);
    free(c.lists);
    free(dbuf);
    free(ibuf);
    return rc;
}

/* Selection on a buffer of distances (one row per query): small k by the threshold list,
 * large k by a counting select over the distance range [0, dmax]. */
typedef struct {
    const int32_t *d;
    int64_t n, kk, dmax;
    int32_t *od;
    int64_t *oi;
    int err;
} select_ctx;

static void select_worker(void *p, int64_t s, int64_t e, int tid) {
    select_ctx *c = (select_ctx *)p;
    (void)tid;
    int64_t *hist = NULL;
    if (c->kk > HDC_TOPK_FUSED_MAX) {
        hist = (int64_t *)malloc((size_t)(c->dmax + 2) * sizeof(int64_t));
        if (!hist) { __atomic_store_n(&c->err, HDC_ENOMEM, __ATOMIC_RELAXED); return; }
    }
    for (int64_t i = s; i < e; i++) {
        const int32_t *d = c->d + i * c->n;
        int32_t *od = c->od + i * c->kk;
        int64_t *oi = c->oi + i * c->kk;
        if (!hist) {
            hdc_topk_list L = {od, oi, 0, c->kk, INT64_MAX};
            for (int64_t j = 0; j < c->n; j++)
                if (d[j] < L.thr) hdc_topk_push(&L, d[j], j);
            continue;
        }
        /* counting sort restricted to the k smallest: hist -> start offsets per distance */
        memset(hist, 0, (size_t)(c->dmax + 2) * sizeof(int64_t));
        for (int64_t j = 0; j < c->n; j++) hist[d[j]]++;
        int64_t acc = 0, cut = c->dmax;
        for (int64_t v = 0; v <= c->dmax; v++) {
            int64_t h = hist[v];
            hist[v] = acc;
            acc += h;
            if (acc >= c->kk) { cut = v; break; }
        }
        for (int64_t j = 0; j < c->n; j++) {
            int32_t v = d[j];
            if (v > cut) continue;
            int64_t slot = hist[v]++;
            if (slot < c->kk) { od[slot] = v; oi[slot] = j; }
        }
    }
    free(hist);
}

int hdc_topk(const uint64_t *q, int64_t m, const uint64_t *x, int64_t n, int64_t n_words, int64_t k,
             int32_t *out_dist, int64_t *out_idx, int threads) {
    CHECK_SIZES(m, n_words);
    CHECK_SIZES(n, n_words);
    if (n_words >= ((int64_t)1 << 25)) return HDC_ELIMIT;
    if (k < 1 || k > n) return HDC_EINVAL;
    if (m > ((int64_t)1 << 62) / k) return HDC_EINVAL;
    const hdc_kernels *kern = kernels_for(K_TOPK);
    if (m == 0) return HDC_OK;
    if (!q || !x || !out_dist || !out_idx) return HDC_EINVAL;
    if (kern->topk_range && k <= HDC_TOPK_FUSED_MAX && m >= 4) {
        /* queries in chunks bound the per-thread lists (threads x chunk x k entries) */
        const int64_t qch = 4096;
        for (int64_t i0 = 0; i0 < m; i0 += qch) {
            int64_t mq = m - i0 < qch ? m - i0 : qch;
            int rc = topk_fused(kern, q + i0 * n_words, mq, x, n, n_words, k, out_dist + i0 * k,
                                out_idx + i0 * k, threads);
            if (rc != HDC_OK) return rc;
        }
        return HDC_OK;
    }
    /* distances for a chunk of queries at a time (<= 64 MiB of int32), then select */
    int64_t qc = ((int64_t)1 << 24) / n;
    if (qc < 1) qc = 1;
    if (qc > m) qc = m;
    int32_t *buf = (int32_t *)malloc((size_t)qc * (size_t)n * sizeof(int32_t));
    if (!buf) return HDC_ENOMEM;
    int rc = HDC_OK;
    for (int64_t i0 = 0; i0 < m && rc == HDC_OK; i0 += qc) {
        int64_t mq = m - i0 < qc ? m - i0 : qc;
        rc = hmat_run(kern, q + i0 * n_words, mq, x, n, n_words, buf, n, threads);
        if (rc != HDC_OK) break;
        select_ctx sc = {buf, n, k, 64 * n_words, out_dist + i0 * k, out_idx + i0 * k, 0};
        parallel_for(mq, threads_for(threads, (double)mq * n), select_worker, &sc);
        rc = sc.err;
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ permute */
typedef struct {
    const hdc_kernels *k;
    const uint64_t *x;
    uint64_t *out;
    int64_t W, dim, shift;
} perm_ctx;

static void perm_worker(void *p, int64_t s, int64_t e, int tid) {
    perm_ctx *c = (perm_ctx *)p;
    (void)tid;
    c->k->permute(c->x + s * c->W, e - s, c->W, c->dim, c->shift, c->out + s * c->W);
}

static int check_dim_words(int64_t dim, int64_t W) {
    return dim >= 1 && W == (dim + 63) / 64;
}

int hdc_permute(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t dim, int64_t shift, uint64_t *out,
                int threads) {
    CHECK_SIZES(n_rows, n_words);
    if (!check_dim_words(dim, n_words) || shift < 0 || shift >= dim) return HDC_EINVAL;
    if (n_rows > 0 && (!x || !out)) return HDC_EINVAL;
    perm_ctx c = {kernels_for(K_PERMUTE), x, out, n_words, dim, shift};
    parallel_for(n_rows, threads_for(threads, (double)n_rows * n_words), perm_worker, &c);
    return HDC_OK;
}

/* ------------------------------------------------------------------ bit counts / majority */
typedef struct {
    const hdc_kernels *k;
    const uint64_t *x, *tie;
    int64_t rows, W, dim;
    int L;
    int64_t *counts;    /* bit_counts */
    uint64_t *out;      /* majority */
    int64_t vw;         /* columns per unit */
    int err;
} slice_ctx;

static void slice_columns(slice_ctx *c, int64_t c0, int64_t c1) {
    int64_t ncols = c1 - c0;
    if (ncols <= 0) return;
    /* full vectors at the level's width, the remainder columns one word at a time */
    int64_t vw = c->k->col_width;
    int64_t cfull = c0 + ncols / vw * vw;
    uint64_t *loc = (uint64_t *)malloc((size_t)c->L * (size_t)ncols * 8);  /* [L][ncols] */
    uint64_t *part = (uint64_t *)malloc((size_t)c->L * (size_t)ncols * 8);
    if (!loc || !part) {
        __atomic_store_n(&c->err, HDC_ENOMEM, __ATOMIC_RELAXED);
        free(loc);
        free(part);
        return;
    }
    if (cfull > c0) {
        c->k->slice_count(c->x, c->rows, c->W, c0, cfull, part, c->L);
        for (int l = 0; l < c->L; l++)
            memcpy(loc + (int64_t)l * ncols, part + (int64_t)l * (cfull - c0), (size_t)(cfull - c0) * 8);
    }
    if (c1 > cfull) {
        slice_count_portable(c->x, c->rows, c->W, cfull, c1, part, c->L);
        for (int l = 0; l < c->L; l++)
            memcpy(loc + (int64_t)l * ncols + (cfull - c0), part + (int64_t)l * (c1 - cfull),
                   (size_t)(c1 - cfull) * 8);
    }
    for (int64_t cc = c0; cc < c1; cc++) {
        int64_t nbits = c->dim - 64 * cc;
        if (nbits > 64) nbits = 64;
        uint64_t valid = nbits == 64 ? ~(uint64_t)0 : (((uint64_t)1 << nbits) - 1);
        if (c->counts) {
            int64_t cnt[64] = {0};
            for (int l = 0; l < c->L; l++) {
                uint64_t pl = loc[(int64_t)l * ncols + (cc - c0)];
                for (int b = 0; b < 64; b++) cnt[b] += (int64_t)((pl >> b) & 1) << l;
            }
            int64_t *dst = c->counts + 64 * cc;
            for (int b = 0; b < nbits; b++) dst[b] += cnt[b];
        } else {
            /* bit-serial compare of each count with half = rows / 2, from the top plane down */
            uint64_t half = (uint64_t)c->rows >> 1, gt = 0, eq = ~(uint64_t)0;
            for (int l = c->L - 1; l >= 0; l--) {
                uint64_t pl = loc[(int64_t)l * ncols + (cc - c0)];
                if ((half >> l) & 1) eq &= pl;
                else { gt |= eq & pl; eq &= ~pl; }
            }
            uint64_t res = gt;
            if ((c->rows & 1) == 0) res |= eq & c->tie[cc];
            c->out[cc] = res & valid;
        }
    }
    free(loc);
    free(part);
}

static void slice_worker(void *p, int64_t s, int64_t e, int tid) {
    slice_ctx *c = (slice_ctx *)p;
    (void)tid;
    int64_t c0 = s * c->vw, c1 = e * c->vw;
    if (c1 > c->W) c1 = c->W;
    slice_columns(c, c0, c1);
}

static int slice_run(const hdc_kernels *k, const uint64_t *x, int64_t rows, int64_t W, int64_t dim,
                     const uint64_t *tie, int64_t *counts, uint64_t *out, int threads) {
    slice_ctx c;
    memset(&c, 0, sizeof c);
    c.k = k; c.x = x; c.rows = rows; c.W = W; c.dim = dim; c.tie = tie; c.counts = counts; c.out = out;
    int L = 0;
    while (L < 63 && ((uint64_t)rows >> L) != 0) L++;
    c.L = L < 4 ? 4 : L;
    c.vw = k->col_width;
    int64_t units = (W + c.vw - 1) / c.vw;
    parallel_for(units, threads_for(threads, (double)rows * W), slice_worker, &c);
    return c.err;
}

int hdc_bit_counts(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t dim, int64_t *counts, int threads) {
    CHECK_SIZES(n_rows, n_words);
    if (!check_dim_words(dim, n_words)) return HDC_EINVAL;
    if (!counts || (n_rows > 0 && !x)) return HDC_EINVAL;
    const hdc_kernels *k = kernels_for(K_BITCOUNTS);
    if (n_rows == 0) return HDC_OK;
    return slice_run(k, x, n_rows, n_words, dim, NULL, counts, NULL, threads);
}

int hdc_bundle_majority(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t dim, const uint64_t *tie,
                        uint64_t *out, int threads) {
    CHECK_SIZES(n_rows, n_words);
    if (!check_dim_words(dim, n_words) || n_rows < 1) return HDC_EINVAL;
    if (!x || !tie || !out) return HDC_EINVAL;
    return slice_run(kernels_for(K_BUNDLE), x, n_rows, n_words, dim, tie, NULL, out, threads);
}

/* ------------------------------------------------------------------ causal top-k */
/* Past this many kept keys a running list costs too much per insertion (O(k)): the row's
 * costs go to a buffer and are sorted instead. */
#define HDC_CAUSAL_LIST_MAX 128
#define HDC_CAUSAL_QUERY_BLOCK 8 /* queries per unit of work; units go round robin to threads */
#define HDC_CAUSAL_FEW_QUERIES 2 /* up to this many queries, multi-word keys are scored in place */

typedef struct {
    const hdc_kernels *k;
    const uint64_t *q, *kt; /* kt: word w of key j at kt[w * stride + (j - j0)] */
    int64_t m, W, stride, j0, kk, q_start, window, skip;
    int overlap, nthreads, err;
    int32_t *os;
    int64_t *oi;
} causal_ctx;

typedef struct { int64_t cost, j; } causal_pair;

static int causal_pair_cmp(const void *pa, const void *pb) {
    const causal_pair *a = (const causal_pair *)pa, *b = (const causal_pair *)pb;
    if (a->cost != b->cost) return a->cost < b->cost ? -1 : 1;
    return a->j > b->j ? -1 : (a->j < b->j); /* equal cost: the more recent key first */
}

/* The allowed keys of query i: lo .. lo + cnt - 1 (cnt may be 0). */
static void causal_range(const causal_ctx *c, int64_t i, int64_t *lo, int64_t *cnt) {
    int64_t p = c->q_start + i;
    int64_t l = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
    int64_t h = p - c->skip + 1; /* exclusive */
    *lo = l;
    *cnt = h > l ? h - l : 0;
}

/* The ks best of the costs buf[0..cnt) of keys lo .. lo + cnt - 1 into os/oi (the tie rule of
 * hdc_ctopk_list: equal costs go to the more recent key). */
static void causal_select(const int32_t *buf, int64_t lo, int64_t cnt, int64_t ks, int32_t *os, int64_t *oi,
                          causal_pair *pairs) {
    if (ks <= HDC_CAUSAL_LIST_MAX) {
        hdc_ctopk_list L = {os, oi, 0, ks, INT64_MAX};
        for (int64_t r = 0; r < cnt; r++)
            if (buf[r] <= L.thr) hdc_ctopk_push(&L, buf[r], lo + r);
        return;
    }
    for (int64_t r = 0; r < cnt; r++) {
        pairs[r].cost = buf[r];
        pairs[r].j = lo + r;
    }
    qsort(pairs, (size_t)cnt, sizeof(causal_pair), causal_pair_cmp);
    for (int64_t t = 0; t < ks; t++) {
        os[t] = (int32_t)pairs[t].cost;
        oi[t] = pairs[t].j;
    }
}

/* Slots ks .. kk - 1 of a query with fewer than kk allowed keys: -1 (the documented padding). */
static void causal_pad(int32_t *os, int64_t *oi, int64_t ks, int64_t kk) {
    for (int64_t t = ks; t < kk; t++) {
        os[t] = -1;
        oi[t] = -1;
    }
}

static void causal_query(causal_ctx *c, int64_t i, int32_t *buf, causal_pair *pairs) {
    int64_t lo, cnt;
    causal_range(c, i, &lo, &cnt);
    int32_t *os = c->os + i * c->kk;
    int64_t *oi = c->oi + i * c->kk;
    int64_t ks = cnt < c->kk ? cnt : c->kk;
    const uint64_t *qrow = c->q + i * c->W;
    const uint64_t *kt = c->W > 0 && cnt > 0 ? c->kt + (lo - c->j0) : NULL;
    if (ks > 0 && ks <= HDC_CAUSAL_LIST_MAX) {
        hdc_ctopk_list L = {os, oi, 0, ks, INT64_MAX};
        c->k->causal_scan(qrow, kt, c->stride, c->W, lo, cnt, c->overlap, &L, NULL);
    } else if (ks > 0) {
        c->k->causal_scan(qrow, kt, c->stride, c->W, lo, cnt, c->overlap, NULL, buf);
        causal_select(buf, lo, cnt, ks, os, oi, pairs);
    }
    if (c->overlap)
        for (int64_t t = 0; t < ks; t++) os[t] = (int32_t)(64 * c->W - os[t]);
    causal_pad(os, oi, ks, c->kk);
}

static void causal_worker(void *p, int64_t s, int64_t e, int tid) {
    causal_ctx *c = (causal_ctx *)p;
    (void)s; (void)e;
    int32_t *buf = NULL;
    causal_pair *pairs = NULL;
    if (c->kk > HDC_CAUSAL_LIST_MAX) {
        int64_t span = c->stride; /* no query sees more keys than the span */
        buf = (int32_t *)malloc((size_t)span * sizeof(int32_t) + 4);
        pairs = (causal_pair *)malloc((size_t)span * sizeof(causal_pair) + 16);
        if (!buf || !pairs) {
            __atomic_store_n(&c->err, HDC_ENOMEM, __ATOMIC_RELAXED);
            free(buf);
            free(pairs);
            return;
        }
    }
    /* query blocks round robin: causal rows grow with i, so contiguous ranges would not balance */
    int64_t nb = (c->m + HDC_CAUSAL_QUERY_BLOCK - 1) / HDC_CAUSAL_QUERY_BLOCK;
    for (int64_t b = tid; b < nb; b += c->nthreads) {
        int64_t i1 = (b + 1) * HDC_CAUSAL_QUERY_BLOCK;
        if (i1 > c->m) i1 = c->m;
        for (int64_t i = b * HDC_CAUSAL_QUERY_BLOCK; i < i1; i++) causal_query(c, i, buf, pairs);
    }
    free(buf);
    free(pairs);
}

/* Few queries over multi-word keys (decoding: one query per step against the whole cache).
 * causal_scan reads keys word-major, and transposing every cached key to that layout on
 * every step costs more than the scan (8,192 keys of 9 words: ~190 us against ~15 us of
 * popcounts). So score the key rows where they lie with the level's Hamming-matrix kernel,
 * one query at a time on one thread, and select from the costs with the same tie rule.
 * Hamming only: an overlap cost needs the keys' popcounts as well. */
static int causal_rows(causal_ctx *c, const uint64_t *keys, int64_t span) {
    int64_t scratch_words = c->k->hmat_scratch_words(c->W);
    int32_t *buf = (int32_t *)malloc((size_t)span * sizeof(int32_t) + 4);
    causal_pair *pairs = c->kk > HDC_CAUSAL_LIST_MAX ? (causal_pair *)malloc((size_t)span * sizeof(causal_pair) + 16)
                                                     : NULL;
    uint64_t *scratch = scratch_words > 0 ? (uint64_t *)aligned_calloc64((size_t)scratch_words * 8) : NULL;
    int err = !buf || (c->kk > HDC_CAUSAL_LIST_MAX && !pairs) || (scratch_words > 0 && !scratch) ? HDC_ENOMEM
                                                                                                  : HDC_OK;
    for (int64_t i = 0; i < c->m && err == HDC_OK; i++) {
        int64_t lo, cnt;
        causal_range(c, i, &lo, &cnt);
        int64_t ks = cnt < c->kk ? cnt : c->kk;
        int32_t *os = c->os + i * c->kk;
        int64_t *oi = c->oi + i * c->kk;
        if (ks > 0) {
            c->k->hmat_range(c->q + i * c->W, 1, keys + lo * c->W, 0, cnt, c->W, buf, cnt, scratch);
            causal_select(buf, lo, cnt, ks, os, oi, pairs);
        }
        causal_pad(os, oi, ks, c->kk);
    }
    free(buf);
    free(pairs);
    free(scratch);
    return err;
}

int hdc_causal_topk(const uint64_t *q, int64_t m, const uint64_t *keys, int64_t n, int64_t n_words, int64_t k,
                    int64_t q_start, int64_t window, int64_t skip_recent, int overlap, int32_t *out_score,
                    int64_t *out_idx, int threads) {
    CHECK_SIZES(m, n_words);
    CHECK_SIZES(n, n_words);
    if (n_words >= ((int64_t)1 << 25)) return HDC_ELIMIT; /* 64 * n_words must fit int32 */
    if (k < 1 || m > ((int64_t)1 << 62) / k) return HDC_EINVAL;
    if (q_start < 0 || q_start > n - m || window < 0 || skip_recent < 0 || (overlap != 0 && overlap != 1))
        return HDC_EINVAL;
    const hdc_kernels *kern = kernels_for(K_CAUSAL);
    if (m == 0) return HDC_OK;
    if (!out_score || !out_idx || (n_words > 0 && (!q || !keys))) return HDC_EINVAL;
    causal_ctx c;
    memset(&c, 0, sizeof c);
    c.k = kern; c.q = q; c.m = m; c.W = n_words; c.kk = k; c.q_start = q_start; c.window = window;
    c.skip = skip_recent; c.overlap = overlap; c.os = out_score; c.oi = out_idx;
    /* every query's keys lie in [j0, j1): lo and hi only grow with the position */
    int64_t cnt_last, j1;
    causal_range(&c, 0, &c.j0, &cnt_last);
    causal_range(&c, m - 1, &j1, &cnt_last);
    j1 += cnt_last;
    int64_t span = j1 > c.j0 ? j1 - c.j0 : 0;
    c.stride = span;
    if (!overlap && n_words > 1 && m <= HDC_CAUSAL_FEW_QUERIES && span > 0)
        return causal_rows(&c, keys, span);
    uint64_t *kt = NULL;
    if (n_words == 1) {
        c.kt = keys + c.j0; /* one word per key: the rows already are the word-major layout */
    } else if (n_words > 1 && span > 0) {
        kt = (uint64_t *)aligned_calloc64((size_t)span * (size_t)n_words * 8);
        if (!kt) return HDC_ENOMEM;
        for (int64_t j = 0; j < span; j++) {
            const uint64_t *row = keys + (c.j0 + j) * n_words;
            for (int64_t w = 0; w < n_words; w++) kt[w * span + j] = row[w];
        }
        c.kt = kt;
    }
    double work = 0;
    for (int64_t i = 0; i < m; i++) {
        int64_t lo, cnt;
        causal_range(&c, i, &lo, &cnt);
        work += (double)cnt * (double)(n_words > 0 ? n_words : 1);
    }
    int64_t nb = (m + HDC_CAUSAL_QUERY_BLOCK - 1) / HDC_CAUSAL_QUERY_BLOCK;
    int nt = threads_for(threads, work);
    if (nt > nb) nt = (int)nb;
    c.nthreads = nt;
    parallel_for(nt, nt, causal_worker, &c);
    free(kt);
    return c.err;
}

/* ------------------------------------------------------------------ shared scalar helpers */
void hdc_transpose_block(const uint64_t *x, int64_t r0, int64_t nrows, int64_t R, int64_t W, uint64_t *T) {
    /* T[w * R + r] = x[r0 + r][w]; rows past nrows are zero so they add nothing */
    for (int64_t r = 0; r < R; r++) {
        if (r < nrows) {
            const uint64_t *row = x + (r0 + r) * W;
            for (int64_t w = 0; w < W; w++) T[w * R + r] = row[w];
        } else {
            for (int64_t w = 0; w < W; w++) T[w * R + r] = 0;
        }
    }
}

/* ------------------------------------------------------------------ calibration */
/* Each level's register-only inner loop: `iters` steps of 16 pair-slices of 512 bits each
 * (the level's own file says what one step is); returns a value that depends on the work. */
#if HDC_X86
int64_t hdc_calibrate_slices_avx512(int64_t iters);
int64_t hdc_calibrate_slices_avx2(int64_t iters);
int64_t hdc_calibrate_slices_x86v2(int64_t iters);
#endif
#if HDC_ARM64
int64_t hdc_calibrate_slices_neon(int64_t iters);
#endif
#if HDC_SVE
int64_t hdc_calibrate_slices_sve(int64_t iters);
#endif
int64_t hdc_calibrate_slices_portable(int64_t iters);

typedef struct { int64_t iters; int level; volatile int64_t sink[HDC_MAX_THREADS]; } cal_ctx;

static void cal_worker(void *p, int64_t s, int64_t e, int tid) {
    cal_ctx *c = (cal_ctx *)p;
    (void)s; (void)e;
    int64_t v = 0;
    switch (c->level) {
#if HDC_X86
        case HDC_ISA_AVX512: v = hdc_calibrate_slices_avx512(c->iters); break;
        case HDC_ISA_AVX2: v = hdc_calibrate_slices_avx2(c->iters); break;
        case HDC_ISA_X86V2: v = hdc_calibrate_slices_x86v2(c->iters); break;
#endif
#if HDC_ARM64
        case HDC_ISA_NEON: v = hdc_calibrate_slices_neon(c->iters); break;
#endif
#if HDC_SVE
        case HDC_ISA_SVE: v = hdc_calibrate_slices_sve(c->iters); break;
#endif
        default: v = hdc_calibrate_slices_portable(c->iters); break;
    }
    c->sink[tid] = v;
}

int64_t hdc_calibrate_level(int level, int64_t iters, int threads) {
    if (level < 0 || level >= HDC_N_ISA || iters < 0 || threads < 1) return HDC_EINVAL;
    if (!hdc_isa_supported(level)) return HDC_EUNSUPPORTED;
    cal_ctx c;
    memset(&c, 0, sizeof c);
    c.iters = iters;
    c.level = level;
    int used = parallel_for(threads, threads, cal_worker, &c);
    return (int64_t)used * iters * 16;
}

int64_t hdc_calibrate_slices(int64_t iters, int threads) {
    return hdc_calibrate_level(HDC_ISA_AVX512, iters, threads);
}

/* The portable floor: 128 (xor, popcount, add) word triples per step with the compiler's
 * generic popcount (no POPCNT instruction at the default x86-64 target). */
int64_t hdc_calibrate_slices_portable(int64_t iters) {
    uint64_t acc[8] = {0}, t[8] = {1, 3, 5, 7, 11, 13, 17, 19}, b[16];
    for (int j = 0; j < 16; j++) b[j] = 0x9E3779B97F4A7C15ull * (uint64_t)(j + 1);
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile("" : "+m"(t), "+m"(b));
        for (int j = 0; j < 16; j++)
            for (int l = 0; l < 8; l++) acc[l] += (uint64_t)__builtin_popcountll(t[l] ^ b[j]);
    }
    uint64_t s = 0;
    for (int l = 0; l < 8; l++) s += acc[l];
    return (int64_t)s;
}

uint64_t hdc_calibrate_clock(int64_t iters) {
    uint64_t v = 1;
    for (int64_t i = 0; i < iters; i++) {
#if HDC_X86
        /* 8 dependent adds: one cycle each on every x86-64 core; asm keeps them unfused */
        __asm__ volatile("add %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\t"
                         "add %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\tadd %0, %0" : "+r"(v));
#else
        __asm__ volatile("" : "+r"(v));
        v += v;
#endif
    }
    return v;
}
