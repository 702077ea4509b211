"""Popcount kernels vs float matrix products: the Hamming matrix between m queries and n stored
hypervectors, as users run it (public hdc API, 2 threads, warm-up then median of repeats).

Measures in one run (issues #3 and #7):
  - hamming_matrix 1,000 x 100,000 at dim 10,000 and 8,192: C (each ISA level), Numba, NumPy
    bitwise_count, torch float32 / bf16 / int8 matmuls of the +-1 vectors (checked to give the
    same similarities), peers when installed (faiss-cpu, NumKong, SimSIMD, torchhd);
  - the compute floor of this machine, from a calibration in the same run (register-only
    XOR + VPOPCNTQ + ADD throughput on the same threads, and the core clock), no constants;
  - topk k=10 vs the full matrix; bind / permute on 1M vectors vs a large copy (GB/s);
    bundle of 1,000 vectors; the fixed cost of a small call through the public API;
  - time vs n for each backend (log-log plot) and the ratio to the floor;
  - topk over 10M stored vectors streamed from a file on /tmp (peak RSS of a subprocess).

    python bench/hamming.py [--quick] [--out DIR] [--threads 2] [--skip-10m]

Slow baselines (NumPy, portable C, torchhd) run on a slice of the queries and are scaled to
the full size; the table marks them "extrapolated".
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import make_parser, print_table, refuse_dirty, time_it, write_json  # noqa: E402

import hdc  # noqa: E402
from hdc.backends import BackendUnavailable, load_backend  # noqa: E402
from hdc.io import save_figure  # noqa: E402


# ------------------------------------------------------------------ helpers
def rand_words(rng, n, dim):
    W = hdc.n_words_for(dim)
    x = rng.integers(0, 2**64, size=(n, W), dtype=np.uint64)
    x[:, -1] &= hdc.pad_mask(dim)
    return x


def bipolar(words, dim, dtype):
    """+1/-1 rows of ``words`` as a torch tensor of ``dtype`` (chunked to bound temporaries)."""
    import torch
    n = words.shape[0]
    out = torch.empty((n, dim), dtype=dtype)
    for s in range(0, n, 8192):
        bits = np.unpackbits(words[s:s + 8192].view(np.uint8), axis=1, bitorder="little")[:, :dim]
        out[s:s + 8192] = torch.from_numpy(bits.astype(np.int8) * 2 - 1).to(dtype)
    return out


def timed(fn, repeats, warmup=1):
    r = time_it(fn, repeats=repeats, warmup=warmup)
    return r["median_s"]


def vm_hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def calibrate(threads: int, quick: bool) -> dict:
    """Compute floor of this machine, measured now: slices/s of register-only XOR+VPOPCNTQ+ADD."""
    C = load_backend("c")
    lib = C.lib
    it_clock = 50_000_000 if quick else 200_000_000
    clocks = []
    for _ in range(3):
        t0 = time.perf_counter()
        lib.hdc_calibrate_clock(it_clock)
        clocks.append(8 * it_clock / (time.perf_counter() - t0))
    ghz = max(clocks) / 1e9
    res = {"clock_ghz": ghz}
    iters = 20_000_000 if quick else 60_000_000
    for th in sorted({1, threads}):
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            slices = lib.hdc_calibrate_slices(iters, th)
            dt = time.perf_counter() - t0
            if slices < 0:
                return {"clock_ghz": ghz, "error": "no AVX-512 VPOPCNTDQ: floor not measured"}
            rates.append(slices / dt)
        res[f"slices_per_s_{th}t"] = max(rates)
    res["cycles_per_slice_1t"] = ghz * 1e9 / res["slices_per_s_1t"]
    res["floor_slices_per_s"] = res[f"slices_per_s_{threads}t"]
    res["levels"] = calibrate_levels(threads, ghz, quick)
    return res


def calibrate_levels(threads: int, ghz: float, quick: bool) -> dict:
    """The floor of each C level this CPU runs, measured now: its inner loop on registers
    (csrc: hdc_calibrate_level; AVX-512 XOR+VPOPCNTQ+ADD, AVX2 the Harley-Seal tree, x86-64-v2
    XOR+POPCNT+ADD, portable the compiler's generic popcount), in 512-bit pair-slices per second."""
    C = load_backend("c")
    lib = C.lib
    target_s = 0.05 if quick else 0.2
    out = {}
    for isa in C.isa_levels():
        lvl = C.ISA_NAMES.index(isa)
        iters = 1000
        while True:  # grow until one run takes target_s
            t0 = time.perf_counter()
            lib.hdc_calibrate_level(lvl, iters, 1)
            if time.perf_counter() - t0 > target_s / 4 or iters > 1 << 40:
                break
            iters *= 4
        row = {}
        for th in sorted({1, threads}):
            rates = []
            for _ in range(3):
                t0 = time.perf_counter()
                slices = lib.hdc_calibrate_level(lvl, iters, th)
                rates.append(slices / (time.perf_counter() - t0))
            row[f"slices_per_s_{th}t"] = max(rates)
        row["cycles_per_slice_1t"] = ghz * 1e9 / row["slices_per_s_1t"]
        row["floor_slices_per_s"] = row[f"slices_per_s_{threads}t"]
        out[isa] = row
    return out


# Numba compiled for another CPU level than this one's (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, in a
# subprocess with its own cache): what Numba does on a CPU whose best C level is that one. These
# rows are what c_backend.BEATS_NUMBA rests on.
NUMBA_TARGETS = {
    "avx2": ("haswell", "+avx2,+avx,+popcnt,+sse4.2,+sse4.1,+ssse3,+bmi,+bmi2,+fma,+f16c,+lzcnt,+movbe"),
    "x86-64-v2": ("x86-64-v2", "+popcnt,+sse4.2,+sse4.1,+ssse3,+cx16,+sahf"),
}


# NumKong (SimSIMD's successor) runs each call on the best kernel family, "capability", that its
# CPU check found; disable_capability masks one for the whole process, so this AVX-512 machine can
# run the kernels that an older CPU gets. Each level keeps the capabilities named (best: all it
# found) and stands beside the C level those CPUs get: haswell (AVX2) and skylake (AVX-512 without
# VPOPCNTDQ, Skylake-SP .. Cascade Lake) beside C avx2, icelake and best beside C avx512, serial
# beside C x86-64-v2 / portable.
NUMKONG_LEVELS = {
    "serial": ("serial",),
    "haswell": ("serial", "haswell"),
    "skylake": ("serial", "haswell", "skylake"),
    "icelake": ("serial", "haswell", "skylake", "icelake"),
    "best": None,
}


def numkong_levels(nk) -> tuple[dict, str]:
    """The NumKong levels this CPU runs ({name: capabilities kept}) and a note on the pinning."""
    if not hasattr(nk, "disable_capability"):
        return {"best": None}, f"NumKong {nk.__version__} has no disable_capability: only its best level runs"
    on = {c for c, v in nk.get_capabilities().items() if v}
    levels = {lv: keep for lv, keep in NUMKONG_LEVELS.items() if keep is None or set(keep) <= on}
    return levels, (f"NumKong {nk.__version__} pinned with disable_capability; capabilities found: "
                    f"{sorted(on)}; levels run: {list(levels)}")


@contextmanager
def numkong_pinned(nk, keep):
    """NumKong limited to the capabilities in `keep` (None: unchanged) inside the block. Only the
    capabilities it disabled are enabled again: enable_capability also turns on one the CPU lacks
    (NumKong 7.8 enables "turin" on a Zen 4 when asked), whose kernels would fault."""
    off = [] if keep is None else [c for c, v in nk.get_capabilities().items() if v and c not in keep]
    for c in off:
        nk.disable_capability(c)
    try:
        yield
    finally:
        for c in off:
            nk.enable_capability(c)


def bench_levels_cpu_time(dim: int, rounds: int) -> dict:
    """Each C level, Numba and NumKong at each level it can be pinned to (NUMKONG_LEVELS) on one
    thread, by process CPU time, interleaved in rounds (best of `rounds`): on a shared machine the
    wall clock of a 2-thread run swings with other jobs' load, while one thread's CPU time mostly
    does not, so these ratios are the robust ones. Shape: 200 queries x 4,000 stored vectors; the
    portable levels (C portable, NumKong serial) on 20 queries, scaled."""
    C = load_backend("c")
    rng = np.random.default_rng(6)
    q, x = rand_words(rng, 200, dim), rand_words(rng, 4_000, dim)
    out = np.empty((200, 4_000), np.int32)
    ref = np.empty((200, 4_000), np.int32)
    with C.use_isa(C.detected_isa()):
        C.hamming_matrix(q, x, ref, 1)
    runs = {}
    for isa in C.isa_levels():
        sub = 20 if isa == "portable" else 200

        def f(isa=isa, sub=sub):
            with C.use_isa(isa):
                C.hamming_matrix(q[:sub], x, out[:sub], 1)
        runs[f"C {isa}"] = (f, 200 / sub)
    try:
        import numba
        NB = load_backend("numba")
        numba.set_num_threads(1)
        runs["Numba"] = (lambda: NB.hamming_matrix(q, x, out, 1), 1.0)
    except (ImportError, BackendUnavailable):
        pass
    nk_out, nk_note = {}, "NumKong not installed (make peers)"
    try:  # the fastest peer, one call on this thread at each level
        import numkong as nk
        pk = nk.hammings_pack(x.view(np.uint8), dtype="uint1")  # one packing serves every level
        levels, nk_note = numkong_levels(nk)
        for lv, keep in levels.items():
            sub = 20 if lv == "serial" else 200
            o32 = nk_out[lv] = nk.zeros((sub, 4_000), dtype="uint32")

            def f(keep=keep, sub=sub, o32=o32):
                with numkong_pinned(nk, keep):
                    nk.hammings_packed(q[:sub].view(np.uint8), pk, out=o32)
            runs[f"NumKong {lv}"] = (f, 200 / sub)
    except ImportError:
        pass
    best = {name: float("inf") for name in runs}
    for name, (f, _) in runs.items():
        f()  # warm up / JIT
    for _ in range(rounds):
        for name, (f, scale) in runs.items():
            t0 = time.process_time()
            f()
            best[name] = min(best[name], (time.process_time() - t0) * scale)
    ok = bool((out[:20] == ref[:20]).all())
    for o32 in nk_out.values():
        o32 = np.asarray(o32).view(np.int32)
        ok = ok and bool((o32 == ref[:len(o32)]).all())
    base = best.get(f"C {C.detected_isa()}")
    res = {"dim": dim, "m": 200, "n": 4_000, "rounds": rounds, "threads": 1, "check_last": ok,
           "cpu_s": best, "over_best_c": {k: v / base for k, v in best.items()} if base else None,
           "numkong": nk_note}
    try:
        import numba
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    print("levels by CPU time (1 thread):", {k: round(v, 3) for k, v in (res["over_best_c"] or {}).items()},
          flush=True)
    return res


def numba_level_worker(level: str, m: int, n: int, dim: int, threads: int, repeats: int) -> dict:
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    q, x = rand_words(rng, m, dim), rand_words(rng, n, dim)
    NB = load_backend("numba")
    out = np.empty((m, n), np.int32)
    NB.hamming_matrix(q[:4], x[:64], out[:4, :64], threads)
    t = timed(lambda: NB.hamming_matrix(q, x, out, threads), repeats)
    ref = np.empty((2, n), np.int32)
    load_backend("numpy").hamming_matrix(q[:2], x, ref)
    return {"time_s": t, "check": bool((out[:2] == ref).all())}


def bench_numba_levels(m, n, dim, threads, repeats) -> dict:
    import tempfile
    res = {}
    for level, (cpu, feats) in NUMBA_TARGETS.items():
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=feats, NUMBA_CACHE_DIR=cache)
            p = subprocess.run([sys.executable, __file__, "--numba-level-worker", level, "--threads", str(threads),
                                "--nl-shape", f"{m},{n},{dim},{repeats}"], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            res[level] = {"error": p.stderr[-500:]}
            continue
        res[level] = json.loads(p.stdout.strip().splitlines()[-1])
        res[level].update(numba_cpu=cpu)
    # C at each of those levels on the same shape, in this process
    C = load_backend("c")
    rng = np.random.default_rng(0)
    q, x = rand_words(rng, m, dim), rand_words(rng, n, dim)
    out = np.empty((m, n), np.int32)
    for level in res:
        if level not in C.isa_levels() or "time_s" not in res[level]:
            continue
        with C.use_isa(level):
            t = timed(lambda: C.hamming_matrix(q, x, out, threads), repeats)
        res[level].update(c_time_s=t, c_beats_numba=t < res[level]["time_s"], m=m, n=n, dim=dim)
        print(f"  {level:10s} C {t:8.4f} s vs Numba compiled for {res[level]['numba_cpu']}: "
              f"{res[level]['time_s']:8.4f} s", flush=True)
    return res


# ------------------------------------------------------------------ hamming matrix entries
def bench_matrix(q, x, dim, threads, repeats, quick, ref, with_matmul, sub_q) -> list[dict]:
    """All backends on one (q, x); ``ref`` = the C result to check against (computed first)."""
    import torch
    m, n = q.shape[0], x.shape[0]
    rows = []

    def add(name, t, note="", check=None, m_run=m):
        t_full = t * m / m_run
        rows.append({"name": name, "dim": dim, "m": m, "n": n, "time_s": t_full, "pairs_per_s": m * n / t_full,
                     "note": ("extrapolated from %d queries; " % m_run if m_run != m else "") + note,
                     "check": check})
        print(f"  {name:28s} dim={dim:6d} {t_full:9.4f} s  {note}", flush=True)

    C = load_backend("c")
    out = np.empty((m, n), np.int32)
    with hdc.use_backend("c"):
        for isa in C.isa_levels():
            with C.use_isa(isa):
                if isa == "portable":
                    o = np.empty((sub_q, n), np.int32)
                    t = timed(lambda: hdc.hamming_matrix(q[:sub_q], x, out=o, threads=threads), 1)
                    add(f"C {isa}", t, check=bool((o == ref[:sub_q]).all()), m_run=sub_q)
                    continue
                t = timed(lambda: hdc.hamming_matrix(q, x, out=out, threads=threads), repeats)
                add(f"C {isa}", t, "out= preallocated", check=bool((out == ref).all()))
                if isa == C.detected_isa():
                    def fresh():
                        return hdc.hamming_matrix(q, x, threads=threads)
                    t = timed(fresh, repeats)
                    add(f"C {isa} fresh out", t, "new output array per call")
    try:
        load_backend("numba")
        with hdc.use_backend("numba"):
            hdc.hamming_matrix(q[:4], x[:64], threads=threads)  # JIT compile outside the timing
            t = timed(lambda: hdc.hamming_matrix(q, x, out=out, threads=threads), repeats)
        add("Numba", t, "out= preallocated", check=bool((out == ref).all()))
    except BackendUnavailable as exc:
        print("  numba unavailable:", exc)

    # NumPy: bitwise_count of XOR, one query row at a time (the reference kernel)
    o = np.empty((sub_q, n), np.int32)
    R = load_backend("numpy")
    t = timed(lambda: R.hamming_matrix(q[:sub_q], x, o), 1, warmup=0)
    add("NumPy bitwise_count", t, "1 thread", check=bool((o == ref[:sub_q]).all()), m_run=sub_q)

    # peers
    q8, x8 = q.view(np.uint8), x.view(np.uint8)
    try:
        import numkong as nk
        pk = nk.hammings_pack(x8, dtype="uint1")
        o32 = nk.zeros((m, n), dtype="uint32")  # numkong wants its own Tensor as out (numpy views it)
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(threads)

        def nk_run():
            step = (m + threads - 1) // threads
            list(pool.map(lambda s: nk.hammings_packed(q8, pk, out=o32, start_row=s, end_row=min(m, s + step)),
                          range(0, m, step)))
        t = timed(nk_run, repeats)
        add("NumKong hammings_packed", t, f"{threads} Python threads over query rows",
            check=bool((np.asarray(o32).view(np.int32) == ref).all()))
        pool.shutdown()
        del pk, o32
    except ImportError:
        print("  numkong not installed")
    try:
        import simsimd as ss
        o32 = ss.cdist(q8[:2], x8[:2], metric="hamming", dtype="bin8", threads=threads, out_dtype="uint32")
        res = {}

        def ss_run():
            res["o"] = ss.cdist(q8, x8, metric="hamming", dtype="bin8", threads=threads, out_dtype="uint32")
        sq = m if not quick else m
        t = timed(ss_run, 1 if not quick else repeats)
        add("SimSIMD cdist hamming", t, f"threads={threads}",
            check=bool((np.asarray(res["o"]).view(np.int32) == ref).all()), m_run=sq)
        del res
    except ImportError:
        print("  simsimd not installed")
    try:
        import faiss
        faiss.omp_set_num_threads(threads)
        dis = np.empty((m, n), np.int32)
        t = timed(lambda: faiss.hammings(faiss.swig_ptr(q8), faiss.swig_ptr(x8), m, n, x8.shape[1],
                                         faiss.swig_ptr(dis)), 1 if not quick else repeats)
        add("faiss hammings", t, "faiss.hammings (all pairs)", check=bool((dis == ref).all()))
        del dis
    except ImportError:
        print("  faiss not installed")
    try:
        import torchhd
        from torchhd import functional as thf
        sq = max(1, min(m, 4 if not quick else 2))
        sn = min(n, 10_000)
        qb = torch.from_numpy(np.unpackbits(q8[:sq], axis=1, bitorder="little")[:, :dim].astype(bool))
        xb = torch.from_numpy(np.unpackbits(x8[:sn], axis=1, bitorder="little")[:, :dim].astype(bool))
        qh, xh = torchhd.BSCTensor(qb), torchhd.BSCTensor(xb)
        res = {}
        t = timed(lambda: res.__setitem__("s", thf.hamming_similarity(qh, xh)), 1)
        sim = res["s"].numpy()
        ok = bool(((dim - sim) == ref[:sq, :sn]).all())
        rows.append({"name": "torchhd BSC hamming_similarity", "dim": dim, "m": m, "n": n,
                     "time_s": t * (m / sq) * (n / sn), "pairs_per_s": sq * sn / t,
                     "note": f"extrapolated from {sq} x {sn}", "check": ok})
        print(f"  torchhd                      {rows[-1]['time_s']:.4f} s (extrapolated)")
    except ImportError:
        print("  torchhd not installed")

    if with_matmul:
        torch.set_num_threads(threads)
        for label, dtype in (("torch int8 _int_mm", torch.int8), ("torch bf16 matmul", torch.bfloat16),
                             ("torch float32 matmul", torch.float32)):
            a = bipolar(q, dim, dtype)
            b = bipolar(x, dim, dtype)
            res = {}
            if dtype == torch.int8:
                def mm():
                    res["d"] = torch._int_mm(a, b.T)
            else:
                def mm():
                    res["d"] = a @ b.T
            t = timed(mm, max(1, repeats - 1) if not quick else repeats)
            dot = res["d"].to(torch.float64).numpy()
            ham = (dim - dot) / 2  # +-1 dot product = dim - 2 * hamming
            err = float(np.abs(ham - ref).max())
            add(label, t, f"max |hamming error| {err:g}", check=err == 0.0)
            rows[-1]["max_abs_error"] = err
            del a, b, res, dot, ham
            gc.collect()
    return rows


def bench_topk(q, x, threads, repeats, ref, k=10):
    C = load_backend("c")
    res = {}
    order = np.argsort(ref, axis=1, kind="stable")[:, :k]
    want_d = np.take_along_axis(ref, order, 1)
    with hdc.use_backend("c"):
        t_one = timed(lambda: res.__setitem__("a", hdc.topk(q, x, k, chunk_rows=x.shape[0], threads=threads)),
                      repeats)
        t_chunked = timed(lambda: res.__setitem__("b", hdc.topk(q, x, k, threads=threads)), repeats)
    ok = bool((res["a"][0] == want_d).all() and (res["a"][1] == order).all()
              and (res["b"][0] == want_d).all() and (res["b"][1] == order).all())
    return {"k": k, "isa": C.get_isa(), "time_s_one_chunk": t_one, "time_s_default_chunks": t_chunked,
            "check": ok}


def bench_bind_permute(n_vec, dim, threads, repeats):
    rng = np.random.default_rng(1)
    W = hdc.n_words_for(dim)
    a = rand_words(rng, n_vec, dim)
    b = rand_words(rng, n_vec, dim)
    o = np.empty_like(a)
    gb = a.nbytes / 1e9
    t_copy = timed(lambda: np.copyto(o, a), repeats)
    t_np_xor = timed(lambda: np.bitwise_xor(a, b, out=o), repeats)
    out = {"n": n_vec, "dim": dim, "bytes_per_array": a.nbytes,
           "copy": {"time_s": t_copy, "gb_s": 2 * gb / t_copy},
           "numpy_xor": {"time_s": t_np_xor, "gb_s": 3 * gb / t_np_xor}}
    with hdc.use_backend("c"):
        t = timed(lambda: hdc.bind(a, b, out=o, threads=threads), repeats)
        assert (o[:1000] == (a[:1000] ^ b[:1000])).all()
        out["bind"] = {"time_s": t, "gb_s": 3 * gb / t, "gb_s_vs_copy": (3 * gb / t) / (2 * gb / t_copy)}
        out["permute"] = {}
        for shift in (1, 64, 4_097, dim - 1):
            t = timed(lambda: hdc.permute(a, shift, dim, out=o, threads=threads), repeats)
            out["permute"][str(shift)] = {"time_s": t, "gb_s": 2 * gb / t, "time_vs_copy": t / t_copy}
        # NumPy's packed rotation (what a user without kernels writes): word roll + bit carry,
        # exact when dim is a multiple of 64; timed on 1/10 of the rows
        if dim % 64 == 0:
            sub = a[: n_vec // 10]

            def np_perm():
                s = 1
                return (sub << np.uint64(s)) | np.roll(sub >> np.uint64(64 - s), 1, axis=1)
            t = timed(np_perm, 1) * 10
            out["numpy_permute_shift1"] = {"time_s": t, "time_vs_copy": t / t_copy}
    del a, b, o
    gc.collect()
    return out


def bench_bundle(dim, threads, repeats):
    rng = np.random.default_rng(2)
    x = rand_words(rng, 1000, dim)
    tie = rand_words(rng, 1, dim)[0]
    C = load_backend("c")
    R = load_backend("numpy")
    W = x.shape[1]
    o, ref = np.empty(W, np.uint64), np.empty(W, np.uint64)
    res = {"n": 1000, "dim": dim}
    R.bundle_majority(x, dim, tie, ref)
    for isa in C.isa_levels():
        with C.use_isa(isa):
            t = timed(lambda: C.bundle_majority(x, dim, tie, o, threads), 50)
            assert (o == ref).all()
            res[f"c_{isa}_ms"] = t * 1e3
    with hdc.use_backend("c"):
        t = timed(lambda: hdc.bundle(x, dim, threads=threads), 50)
    res["public_hdc_bundle_c_ms"] = t * 1e3
    res["numpy_unpack_sum_ms"] = timed(lambda: R.bundle_majority(x, dim, tie, ref), 5) * 1e3
    res["gb_s_c_best"] = x.nbytes / 1e9 / (res[f"c_{C.detected_isa()}_ms"] / 1e3)
    try:
        import torch
        import torchhd
        xb = torchhd.BSCTensor(torch.from_numpy(hdc.unpack_bits(x, dim)))
        res["torchhd_multibundle_ms"] = timed(lambda: torchhd.functional.multibundle(xb), 3) * 1e3
    except Exception as exc:  # noqa: BLE001 - optional peer
        res["torchhd_multibundle_ms"] = f"unavailable: {exc}"
    return res


def bench_small_call(dim, threads):
    """Fixed cost of one small call (1 query x 1,000 vectors) through the public API."""
    import timeit
    C = load_backend("c")
    rng = np.random.default_rng(3)
    q, x = rand_words(rng, 1, dim), rand_words(rng, 1000, dim)
    out = np.empty((1, 1000), np.int32)
    lib, ffi = C.lib, C.ffi
    pq, px, po = ffi.from_buffer("uint64_t[]", q), ffi.from_buffer("uint64_t[]", x), ffi.from_buffer("int32_t[]", out)
    W = q.shape[1]
    n_loop = 3000

    def best(stmt):
        return min(timeit.repeat(stmt, number=n_loop, repeat=5)) / n_loop

    raw = best(lambda: lib.hdc_hamming_matrix(pq, 1, px, 1000, W, po, 1000, 1))
    with hdc.use_backend("c"):
        kern = best(lambda: C.hamming_matrix(q, x, out, 1))
        pub = best(lambda: hdc.hamming_matrix(q, x, out=out, threads=1))
        pub_alloc = best(lambda: hdc.hamming_matrix(q, x, threads=1))
        pub_default = best(lambda: hdc.hamming_matrix(q, x, out=out))
    return {"m": 1, "n": 1000, "dim": dim, "raw_c_call_us": raw * 1e6, "c_backend_wrapper_us": kern * 1e6,
            "public_api_us": pub * 1e6, "public_api_new_out_us": pub_alloc * 1e6,
            "public_api_default_threads_us": pub_default * 1e6,
            "fixed_cost_public_us": (pub - raw) * 1e6, "fixed_cost_backend_wrapper_us": (kern - raw) * 1e6}


def bench_vs_n(m, ns, dim, threads, repeats, floor_rate):
    """Time against n for the bitwise backends and the matmuls (m queries)."""
    import torch
    rng = np.random.default_rng(4)
    q = rand_words(rng, m, dim)
    xs = rand_words(rng, max(ns), dim)
    C = load_backend("c")
    W = q.shape[1]
    series = {}

    def put(name, n, t):
        series.setdefault(name, []).append({"n": n, "time_s": t, "floor_ratio": t / (m * n * W / 8 / floor_rate)
                                            if floor_rate else None})
    for n in ns:
        x = xs[:n]
        out = np.empty((m, n), np.int32)
        with hdc.use_backend("c"):
            for isa in [lv for lv in C.isa_levels() if lv != "portable"]:
                with C.use_isa(isa):
                    put(f"C {isa}", n, timed(lambda: hdc.hamming_matrix(q, x, out=out, threads=threads), repeats))
            d = {}
            put("C topk k=10", n, timed(lambda: d.__setitem__("r", hdc.topk(q, x, 10, chunk_rows=n, threads=threads)),
                                        repeats))
        try:
            load_backend("numba")
            with hdc.use_backend("numba"):
                put("Numba", n, timed(lambda: hdc.hamming_matrix(q, x, out=out, threads=threads), repeats))
        except BackendUnavailable:
            pass
        q8, x8 = q.view(np.uint8), x.view(np.uint8)
        try:
            import numkong as nk
            pk = nk.hammings_pack(x8, dtype="uint1")
            o32 = nk.zeros((m, n), dtype="uint32")
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(threads) as pool:
                step = (m + threads - 1) // threads
                put("NumKong", n, timed(lambda: list(pool.map(
                    lambda s: nk.hammings_packed(q8, pk, out=o32, start_row=s, end_row=min(m, s + step)),
                    range(0, m, step))), repeats))
        except ImportError:
            pass
        try:
            import simsimd as ss
            put("SimSIMD", n, timed(lambda: ss.cdist(q8, x8, metric="hamming", dtype="bin8", threads=threads,
                                                     out_dtype="uint32"), 1))
        except ImportError:
            pass
        try:
            import faiss
            faiss.omp_set_num_threads(threads)
            put("faiss", n, timed(lambda: faiss.hammings(faiss.swig_ptr(q8), faiss.swig_ptr(x8), m, n, x8.shape[1],
                                                         faiss.swig_ptr(out)), 1))
        except ImportError:
            pass
        torch.set_num_threads(threads)
        if n <= 20_000:  # the full-size matmuls are timed in the main table
            for label, dtype in (("torch int8 _int_mm", torch.int8), ("torch float32 matmul", torch.float32)):
                a, b = bipolar(q, dim, dtype), bipolar(x, dim, dtype)
                f = (lambda: torch._int_mm(a, b.T)) if dtype == torch.int8 else (lambda: a @ b.T)
                put(label, n, timed(f, repeats))
    return series


# ------------------------------------------------------------------ 10M stored vectors from a file
def worker_10m(path: str, n_rows: int, dim: int, m: int, threads: int, mode: str) -> dict:
    """topk over a file of n_rows vectors, in a fresh process so VmHWM is this run's peak."""
    W = hdc.n_words_for(dim)
    rng = np.random.default_rng(5)
    q = rand_words(rng, m, dim)
    chunk = 1 << 16
    t0 = time.perf_counter()
    if mode == "hdc.topk(np.memmap)":
        X = np.memmap(path, dtype=np.uint64, mode="r", shape=(n_rows, W))
        with hdc.use_backend("c"):
            d, i = hdc.topk(q, X, 10, threads=threads)
    else:  # per-chunk memmaps, unmapped after use, merged like hdc.topk does
        C = load_backend("c")
        best_d = best_i = None
        for s in range(0, n_rows, chunk):
            r = min(chunk, n_rows - s)
            xc = np.memmap(path, dtype=np.uint64, mode="r", offset=s * W * 8, shape=(r, W))
            d, i = np.empty((m, 10), np.int32), np.empty((m, 10), np.int64)
            C.topk(q, xc, 10, d, i, threads)
            del xc
            i += s
            if best_d is not None:
                cd, ci = np.concatenate([best_d, d], 1), np.concatenate([best_i, i], 1)
                o = np.lexsort((ci, cd), axis=-1)[:, :10]
                d, i = np.take_along_axis(cd, o, 1), np.take_along_axis(ci, o, 1)
            best_d, best_i = d, i
        d, i = best_d, best_i
    t = time.perf_counter() - t0
    # spot check: the distance of the reported best of query 0 against the file's row
    X = np.memmap(path, dtype=np.uint64, mode="r", shape=(n_rows, W))
    ok = bool(int(np.bitwise_count(q[0] ^ X[int(i[0, 0])]).sum()) == int(d[0, 0]))
    return {"mode": mode, "n": n_rows, "m": m, "dim": dim, "time_s": t, "peak_rss_bytes": vm_hwm_bytes(),
            "peak_rss_gib": vm_hwm_bytes() / 2**30, "check_best_distance": ok}


def bench_10m(n_rows, dim, m, threads, tmpdir="/tmp"):
    import shutil
    W = hdc.n_words_for(dim)
    need = n_rows * W * 8
    free = shutil.disk_usage(tmpdir).free
    if free < need * 1.2:
        return {"skipped": f"needs {need / 1e9:.1f} GB on {tmpdir}, {free / 1e9:.1f} GB free"}
    path = os.path.join(tmpdir, f"hdspike_bench_{n_rows}x{dim}.u64")
    # the file name only: it lives in tmpdir (a machine-specific place) and is removed below
    res = {"file": os.path.basename(path), "file_bytes": need}
    try:
        t0 = time.perf_counter()
        rng = np.random.default_rng(6)
        with open(path + ".tmp", "wb") as f:
            for s in range(0, n_rows, 1 << 17):
                f.write(rand_words(rng, min(1 << 17, n_rows - s), dim).tobytes())
        os.replace(path + ".tmp", path)
        res["write_s"] = time.perf_counter() - t0
        runs = []
        for mode in ("per-chunk memmap", "hdc.topk(np.memmap)"):
            cmd = [sys.executable, __file__, "--worker-10m", path, "--rows-10m", str(n_rows), "--dim-10m", str(dim),
                   "--queries-10m", str(m), "--threads", str(threads), "--mode-10m", mode]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                runs.append({"mode": mode, "error": p.stderr[-2000:]})
            else:
                runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print("  10M:", runs[-1], flush=True)
        res["runs"] = runs
    finally:
        for p in (path, path + ".tmp"):
            if os.path.exists(p):
                os.remove(p)
    return res


# ------------------------------------------------------------------ plots
def plot(out_dir: Path, main_rows, series, floor_time, tag=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in main_rows if r["dim"] == 10_000]
    rows.sort(key=lambda r: r["time_s"])
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.5))
    names = [r["name"] + (" *" if "extrapolated" in r["note"] else "") for r in rows]
    ax.barh(names, [r["time_s"] for r in rows], color=["C0" if r["name"].startswith("C ") else "C1" for r in rows])
    if floor_time:
        ax.axvline(floor_time, color="k", ls="--", lw=1, label=f"compute floor {floor_time:.3f} s (measured)")
        ax.legend(loc="lower right")
    ax.set_xscale("log")
    ax.invert_yaxis()
    m, n = rows[0]["m"], rows[0]["n"]
    ax.set_xlabel(f"seconds, log scale ({m:,} x {n:,} Hamming matrix, dim 10,000; * extrapolated)")
    ax.set_title("bench/hamming.py: time per backend (lower is better)")
    fig.tight_layout()
    save_figure(fig, out_dir / f"hamming_bar{tag}.png", dpi=120)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, pts in series.items():
        ns = [p["n"] for p in pts]
        a1.loglog(ns, [p["time_s"] for p in pts], "o-", label=name)
        if pts[0]["floor_ratio"] is not None:
            a2.semilogx(ns, [p["floor_ratio"] for p in pts], "o-", label=name)
    a1.set_xlabel("stored vectors n")
    a1.set_ylabel("seconds")
    a1.set_title("time vs n (log-log)")
    a1.legend(fontsize=8)
    a2.set_yscale("log")
    a2.axhline(1.0, color="k", ls="--", lw=1)
    a2.set_xlabel("stored vectors n")
    a2.set_ylabel("time / measured compute floor")
    a2.set_title("ratio to the compute floor")
    a2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / f"hamming_vs_n{tag}.png", dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ main
def main():
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-10m", action="store_true", help="skip the 10M-vector file topk")
    p.add_argument("--rows-10m", type=int, default=10_000_000)
    p.add_argument("--dim-10m", type=int, default=10_000)
    p.add_argument("--queries-10m", type=int, default=100)
    p.add_argument("--worker-10m", default=None, help=argparse_suppress())
    p.add_argument("--mode-10m", default="per-chunk memmap", help=argparse_suppress())
    p.add_argument("--numba-level-worker", default=None, help=argparse_suppress())
    p.add_argument("--nl-shape", default="", help=argparse_suppress())
    args = p.parse_args()
    th = args.threads
    if args.numba_level_worker:
        m_, n_, d_, r_ = (int(v) for v in args.nl_shape.split(","))
        print(json.dumps(numba_level_worker(args.numba_level_worker, m_, n_, d_, th, r_)))
        return
    if args.worker_10m:
        print(json.dumps(worker_10m(args.worker_10m, args.rows_10m, args.dim_10m, args.queries_10m, th,
                                    args.mode_10m)))
        return
    refuse_dirty(p, args)   # the worker above writes no results; the parent checked already
    import torch
    torch.set_num_threads(th)
    hdc.set_num_threads(th)
    try:
        import numba
        numba.set_num_threads(min(th, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    t_start = time.perf_counter()
    if args.quick:
        m, n, dims, ns, reps, sub_q, n_bind = 200, 20_000, [10_000], [1_000, 5_000, 20_000], 3, 8, 100_000
    else:
        m, n, dims, ns, reps, sub_q, n_bind = 1_000, 100_000, [10_000, 8_192], [1_000, 10_000, 100_000], 3, 20, 1_000_000
    load = os.getloadavg()
    print(f"load average at start: {load}; threads={th}", flush=True)
    C = load_backend("c")
    cal = calibrate(th, args.quick)
    print("calibration:", cal, flush=True)
    floor_rate = cal.get("floor_slices_per_s")
    levels_cpu = bench_levels_cpu_time(10_000, 5 if args.quick else 9)

    rng = np.random.default_rng(0)
    main_rows, floors = [], {}
    for dim in dims:
        q, x = rand_words(rng, m, dim), rand_words(rng, n, dim)
        W = q.shape[1]
        ref = np.empty((m, n), np.int32)
        with hdc.use_backend("c"):
            hdc.hamming_matrix(q, x, out=ref, threads=th)
        slices = m * n * W / 8
        floors[dim] = {"pair_slices": slices, "floor_s": slices / floor_rate if floor_rate else None,
                       "theoretical_floor_s_0.75cyc": slices * 0.75 / (th * cal["clock_ghz"] * 1e9)}
        print(f"dim {dim}: floor {floors[dim]}", flush=True)
        rows = bench_matrix(q, x, dim, th, reps, args.quick, ref, with_matmul=(dim == 10_000), sub_q=sub_q)
        main_rows += rows
        if dim == 10_000:
            topk_res = bench_topk(q, x, th, reps, ref)
        del q, x, ref
        gc.collect()
    f32 = {r["dim"]: r["time_s"] for r in main_rows if r["name"] == "torch float32 matmul"}
    level_floor = {isa: v["floor_slices_per_s"] for isa, v in cal.get("levels", {}).items()}
    for r in main_rows:
        if r["dim"] in f32:
            r["speedup_vs_f32_matmul"] = f32[r["dim"]] / r["time_s"]
        fl = floors[r["dim"]]["floor_s"]
        r["floor_ratio"] = r["time_s"] / fl if fl else None
        # each C level against its own floor (the best its instructions can do on this CPU)
        isa = r["name"][2:] if r["name"].startswith("C ") else None
        if isa in level_floor:
            r["level_floor_ratio"] = r["time_s"] / (floors[r["dim"]]["pair_slices"] / level_floor[isa])
    numba_levels = {} if args.quick else bench_numba_levels(m, n // 5, 10_000, th, reps)
    best_c = min(r["time_s"] for r in main_rows if r["name"] == f"C {C.detected_isa()}" and r["dim"] == 10_000)
    topk_res["ratio_to_matrix"] = topk_res["time_s_one_chunk"] / best_c
    topk_res["ratio_default_chunks_to_matrix"] = topk_res["time_s_default_chunks"] / best_c
    print("topk:", topk_res, flush=True)

    bp = bench_bind_permute(n_bind, 10_000, th, reps)
    print("bind/permute:", json.dumps(bp), flush=True)
    bundle = bench_bundle(10_000, th, reps)
    bundle_8k = bench_bundle(8_192, th, reps)
    print("bundle:", bundle, bundle_8k, flush=True)
    small = bench_small_call(10_000, th)
    print("small call:", small, flush=True)
    series = bench_vs_n(m, ns, 10_000, th, reps, floor_rate)
    ten_m = {"skipped": "--quick / --skip-10m"} if (args.quick or args.skip_10m) else \
        bench_10m(args.rows_10m, args.dim_10m, args.queries_10m, th)

    def get(name, dim=10_000):
        for r in main_rows:
            if r["name"] == name and r["dim"] == dim:
                return r["time_s"]
        return None

    def cpu_1t(name):
        return levels_cpu["cpu_s"].get(name, float("nan"))
    c_best = get(f"C {C.detected_isa()}")
    ratios = {
        "c_vs_floor": c_best / floors[10_000]["floor_s"] if floors[10_000]["floor_s"] else None,
        "f32_matmul_over_c": (get("torch float32 matmul") or float("nan")) / c_best,
        "bf16_matmul_over_c": (get("torch bf16 matmul") or float("nan")) / c_best,
        "int8_matmul_over_c": (get("torch int8 _int_mm") or float("nan")) / c_best,
        "numba_over_c": (get("Numba") or float("nan")) / c_best,
        **{f"{isa}_over_its_floor": r["level_floor_ratio"] for r in main_rows if r["dim"] == 10_000
           and "level_floor_ratio" in r and not r["name"].endswith("fresh out")
           for isa in [r["name"][2:]]},
        "avx2_over_avx512": (get("C avx2") or float("nan")) / c_best,
        "x86v2_over_avx512": (get("C x86-64-v2") or float("nan")) / c_best,
        "avx2_over_numkong": (get("C avx2") or float("nan")) / (get("NumKong hammings_packed") or float("nan")),
        # 1-thread CPU time in one run (levels_cpu_time_1t): C avx2 against NumKong on the kernels an
        # AVX2-only CPU gets (haswell), and against NumKong's best on this CPU
        "avx2_over_numkong_avx2": cpu_1t("C avx2") / cpu_1t("NumKong haswell"),
        "avx2_over_numkong_best": cpu_1t("C avx2") / cpu_1t("NumKong best"),
        "portable_over_numba": (get("C portable") or float("nan")) / (get("Numba") or float("nan")),
        "numkong_over_c": (get("NumKong hammings_packed") or float("nan")) / c_best,
        "simsimd_over_c": (get("SimSIMD cdist hamming") or float("nan")) / c_best,
        "faiss_over_c": (get("faiss hammings") or float("nan")) / c_best,
        "topk_over_matrix": topk_res["ratio_to_matrix"],
        "bind_gbs_over_copy_gbs": bp["bind"]["gb_s_vs_copy"],
        "permute_worst_time_over_copy": max(v["time_vs_copy"] for v in bp["permute"].values()),
        "bundle_1000x10000_ms": bundle[f"c_{C.detected_isa()}_ms"],
        "small_call_fixed_cost_us": small["fixed_cost_public_us"],
    }
    print()
    cols = ["name", "dim", "time_s", "pairs_per_s", "speedup_vs_f32_matmul", "floor_ratio", "level_floor_ratio",
            "check", "note"]
    print_table(main_rows, cols)
    if numba_levels:
        print()
        print_table([{"level": lv, "numba_s": v.get("time_s"), **v} for lv, v in numba_levels.items()],
                    ["level", "numba_cpu", "numba_s", "c_time_s", "c_beats_numba", "check"])
    print()
    print_table([{"ratio": k, "value": v} for k, v in ratios.items()], ["ratio", "value"])
    payload = {
        "config": {"m": m, "n": n, "dims": dims, "threads": th, "repeats": reps, "quick": args.quick,
                   "ns": ns, "bind_vectors": n_bind},
        "loadavg_start": load, "loadavg_end": os.getloadavg(),
        "calibration": cal, "floors": {str(k): v for k, v in floors.items()},
        "hamming_matrix": main_rows, "levels_cpu_time_1t": levels_cpu, "numba_at_levels": numba_levels, "topk": topk_res, "bind_permute": bp, "bundle": [bundle, bundle_8k],
        "small_call": small, "time_vs_n": series, "topk_10m": ten_m, "ratios": ratios,
        "notes": {"numkong": levels_cpu["numkong"]},
        "wall_s": time.perf_counter() - t_start,
    }
    path = write_json(args.out, "hamming", payload, allow_dirty=args.allow_dirty)
    plot(Path(args.out), main_rows, series, floors[10_000]["floor_s"])
    print(f"\nwrote {path} and hamming_bar.png, hamming_vs_n.png in {args.out} "
          f"({payload['wall_s']:.0f} s, load {load} -> {payload['loadavg_end']})")


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
