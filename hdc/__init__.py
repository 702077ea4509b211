"""hdc: packed binary hypervectors and the operations of hyperdimensional computing.

Bits live in uint64 words (bit i in word i // 64, bit i % 64; pad bits past ``dim`` zero).
The functional API below is the core; :class:`HV` and :class:`ItemMemory` delegate to it.
Kernels come from one registry (:mod:`hdc.backends`): C (AVX-512 / AVX2 / portable, picked
at run time), Numba, or the NumPy reference.
"""
from __future__ import annotations

from . import backends
from .backends import (
    BackendUnavailable,
    available_backends,
    get_backend_name,
    get_num_threads,
    set_backend,
    set_num_threads,
    use_backend,
)
from .functional import (
    TIE_SEED,
    BundleAccumulator,
    bind,
    bundle,
    causal_topk,
    check_words,
    from_bipolar,
    from_bitarray,
    from_bool,
    hamming,
    hamming_matrix,
    permute,
    popcount,
    random,
    similarity,
    tie_vector,
    to_bipolar,
    to_bitarray,
    to_bool,
    topk,
    weighted_bundle,
)
from .hv import HV
from .memory import ItemMemory
from .packing import WORD_BITS, n_words_for, pack_bits, pad_mask, unpack_bits

__version__ = "0.1.0"


def backend_info() -> dict:
    """What is in use: backend, available backends, C ISA level(s), threads, load errors."""
    name = get_backend_name()
    info = {
        "backend": name,
        "available": available_backends(),
        "threads": get_num_threads(),
        "load_errors": backends.load_errors(),
    }
    choice, reason = backends.auto_choice()
    info["auto"] = {"backend": choice, "reason": reason}
    try:
        c = backends.load_backend("c")
        info["c_isa"] = c.get_isa()
        info["c_isa_levels"] = c.isa_levels()
        info["c"] = c.info()
    except BackendUnavailable:
        info["c_isa"] = None
    return info


__all__ = [
    "HV", "ItemMemory", "BundleAccumulator", "BackendUnavailable", "TIE_SEED", "WORD_BITS",
    "backends", "backend_info", "available_backends", "get_backend_name", "set_backend",
    "use_backend", "get_num_threads", "set_num_threads",
    "random", "bind", "bundle", "weighted_bundle", "permute", "hamming", "similarity",
    "hamming_matrix", "topk", "causal_topk", "popcount", "tie_vector", "check_words",
    "to_bool", "from_bool", "to_bipolar", "from_bipolar", "to_bitarray", "from_bitarray",
    "n_words_for", "pack_bits", "unpack_bits", "pad_mask",
]
