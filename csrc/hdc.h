/* hdc.h: the C kernels of hdspike, as plain prototypes (read verbatim by cffi's ffi.cdef).
 *
 * Layout: a batch of hypervectors is a C-contiguous uint64 array (n_rows, n_words);
 * bit i of a vector is bit i % 64 of word i / 64. Every function returns 0 on success
 * or a negative HDC_E* code (see hdc_internal.h); it never writes outside the buffers
 * its sizes describe. threads >= 1 is the number of threads a call may use (the caller
 * included); results never depend on it, nor on the ISA level.
 *
 * Limits: n_rows, n, m < 2^62; hamming_matrix/topk need 64 * n_words < 2^31 (int32
 * distances); bit_counts/bundle take any n_rows < 2^62 (int64 counters).
 *
 * Each function equals the NumPy reference composition named beside it
 * (hdc/backends/numpy_ref.py).
 */

/* out = a ^ b over n_rows * n_words words. */
int hdc_bind(const uint64_t *a, const uint64_t *b, uint64_t *out,
             int64_t n_rows, int64_t n_words, int threads);

/* out[r] = bitwise_count(x[r]).sum() */
int hdc_popcount(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t *out, int threads);

/* out[r] = bitwise_count(a[r] ^ b[r]).sum() */
int hdc_hamming_rows(const uint64_t *a, const uint64_t *b, int64_t n_rows, int64_t n_words,
                     int64_t *out, int threads);

/* out[i * out_stride + j] = bitwise_count(q[i] ^ x[j]).sum(), i < m, j < n (out_stride >= n). */
int hdc_hamming_matrix(const uint64_t *q, int64_t m, const uint64_t *x, int64_t n,
                       int64_t n_words, int32_t *out, int64_t out_stride, int threads);

/* The k smallest distances per query, ascending, ties by lower index (1 <= k <= n). */
int hdc_topk(const uint64_t *q, int64_t m, const uint64_t *x, int64_t n, int64_t n_words,
             int64_t k, int32_t *out_dist, int64_t *out_idx, int threads);

/* Cyclic rotation of the dim valid bits of each row: bit j -> bit (j + shift) % dim, 0 <= shift < dim. */
int hdc_permute(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t dim, int64_t shift,
                uint64_t *out, int threads);

/* counts[j] += number of rows with bit j set, j < dim (pad bits ignored). */
int hdc_bit_counts(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t dim,
                   int64_t *counts, int threads);

/* out bit j = 2*count_j > n_rows, or tie bit j where 2*count_j == n_rows; pad bits 0. */
int hdc_bundle_majority(const uint64_t *x, int64_t n_rows, int64_t n_words, int64_t dim,
                        const uint64_t *tie, uint64_t *out, int threads);

/* Causal top-k over a sequence: query i sits at position p = q_start + i and sees keys j in
 * [lo, p - skip_recent], lo = max(0, p - window + 1) (window = 0: no window, lo = 0). Score:
 * bitwise_count(q ^ key).sum() ascending (overlap = 0) or bitwise_count(q & key).sum()
 * descending (overlap = 1); equal scores: the larger j first. Rows with fewer than k allowed
 * keys end in score = idx = -1. Needs k >= 1, 0 <= q_start <= n - m, window, skip_recent >= 0. */
int hdc_causal_topk(const uint64_t *q, int64_t m, const uint64_t *keys, int64_t n, int64_t n_words,
                    int64_t k, int64_t q_start, int64_t window, int64_t skip_recent, int overlap,
                    int32_t *out_score, int64_t *out_idx, int threads);

/* ISA levels: 0 = portable C, 1 = AVX2, 2 = AVX-512 (F/BW/VL/VPOPCNTDQ), 3 = x86-64-v2
 * (SSE4.2 + POPCNT), 4 = arm64 NEON, 5 = arm64 SVE. Ids are names, not a speed order. */
int hdc_isa_supported(int level);   /* 1 if this build, CPU and OS can run the level */
int hdc_detected_isa(void);         /* preferred supported level (CPUID + XGETBV, or HWCAP) */
int hdc_get_isa(void);              /* level in use now */
int hdc_set_isa(int level);         /* 0, or HDC_EUNSUPPORTED / HDC_EINVAL */
/* How many calls of kernel (0 bind, 1 popcount, 2 hamming_rows, 3 hamming_matrix, 4 topk,
 * 5 permute, 6 bit_counts, 7 bundle_majority, 8 causal_topk) ran at level. */
uint64_t hdc_call_count(int kernel, int level);
/* Proof of what ran, counted inside the code that ran (not at dispatch): kernel bodies of
 * `level` executed for `kernel`; ranges of `kernel` run on helper threads (0 when a call
 * stayed on the caller's thread); hamming-matrix helper ranges split by stored rows
 * (by_rows = 1) or by queries (by_rows = 0). */
uint64_t hdc_ran_count(int kernel, int level);
uint64_t hdc_helper_ranges(int kernel);
uint64_t hdc_hmat_split_count(int by_rows);
/* 1 when SIMD levels were compiled in (x86-64 or arm64; 0: other CPUs or -DHDC_PORTABLE_ONLY). */
int hdc_simd_compiled(void);
/* 1 when compiled with -fsanitize (the HDC_SANITIZE build). */
int hdc_sanitized(void);

/* Calibration for benchmarks (the compute floor, measured rather than assumed).
 * hdc_calibrate_slices: `threads` threads each run `iters` steps of 16 independent
 * (XOR, VPOPCNTQ, ADD) triples on registers (16 pair-slices per step); returns the total
 * pair-slices done, or HDC_EUNSUPPORTED without AVX-512. Time it to get slices/s.
 * hdc_calibrate_clock: a chain of `iters` dependent 1-cycle integer adds (times 8);
 * time it to get the core clock. Returns a value that depends on the chain. */
int64_t hdc_calibrate_slices(int64_t iters, int threads);
uint64_t hdc_calibrate_clock(int64_t iters);
/* The floor of one level: `threads` threads each run `iters` steps of that level's inner loop
 * of the Hamming tile on registers (no loads), 16 pair-slices of 512 bits per step; returns the
 * pair-slices done, or HDC_EUNSUPPORTED when the level cannot run here. */
int64_t hdc_calibrate_level(int level, int64_t iters, int threads);
