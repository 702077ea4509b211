"""Every registered variant of every family that offers incremental decoding: prefill + one step
per token gives the full forward pass's logits at every position (the KV cache, packed keys and
recurrent states are exact), at a tiny shape so the whole registry runs in seconds.

The family tests check their own variants in depth; this one makes sure a variant added to the
registry (a new code width, level count or window) cannot ship with a decoder that drifts."""
from __future__ import annotations

import pytest
import torch

from models import FAMILIES
from tests.lm_checks import check_decoder_matches_forward

torch.set_num_threads(1)

# small enough for the whole registry; block_size above every local window a variant names;
# the vocabulary of tiny-shakespeare, which SiFu's graph and the bigram table are built for
TINY = {"vocab_size": 65, "block_size": 40, "n_layer": 2, "n_head": 2, "n_embd": 32}
VARIANTS = [(f, v) for f, fam in FAMILIES.items() for v in fam.variants]


@pytest.mark.parametrize("family,variant", VARIANTS, ids=[f"{f}/{v}" for f, v in VARIANTS])
def test_decoder_equals_full_forward(family, variant):
    fam = FAMILIES[family]
    torch.manual_seed(0)
    model = fam.build(fam.variant_config(variant, **fam.applicable(TINY))).eval()
    if not hasattr(model, "decoder"):
        pytest.skip(f"{family} has no incremental decoder")
    try:
        model.decoder()
    except ValueError as exc:   # a trunk whose layers lack the incremental form says so, by name
        if "no incremental form" not in str(exc):
            raise
        pytest.skip(f"{family}/{variant}: {exc}")
    idx = torch.randint(0, TINY["vocab_size"], (1, TINY["block_size"]), generator=torch.Generator().manual_seed(1))
    check_decoder_matches_forward(model, idx, t0=7, atol=1e-4)
