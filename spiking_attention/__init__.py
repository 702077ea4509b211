"""Components of the brain-inspired models (hdspike): neurons, surrogates, k-WTA, attention layers.

Components only: nothing here imports :mod:`models` (imports run bench -> models ->
spiking_attention -> hdc). Submodules: :mod:`.surrogate`, :mod:`.neurons` (pure step
functions), :mod:`.kwta`, :mod:`.attention` (spiking k-WTA, top-k softmax, dense/window),
:mod:`.packed` (packed-bit inference layers), :mod:`.stats` (the stats protocol every layer
reports through), :mod:`.accounting` (firing rates, SOPs, energy estimate), :mod:`.plots`
(matplotlib; imported on demand).
"""
from .surrogate import SURROGATES, get_surrogate, heaviside, spike
from .neurons import (IFNeuron, LIF, MemoryModule, adaptive_spike_count, if_step, lif_multi_step, lif_step,
                      multilevel_spike)
from .kwta import KWTA, causal_mask, kwta, kwta_mask, resolve_k
from .attention import (DenseCausalAttention, SpikingKWTAAttention, TopKSoftmaxAttention, allowed_keys,
                        brain_prior_mask)
from .stats import ReportsStats, StatsMixin, reporting_layers
from .accounting import ENERGY_PRESETS, account_model, energy_estimate, write_report
from .packed import KVCache, PackedSpikingAttention, pack_codes, packed_scores, select_winners

__all__ = [
    "SURROGATES", "get_surrogate", "heaviside", "spike",
    "IFNeuron", "LIF", "MemoryModule", "adaptive_spike_count", "if_step", "lif_multi_step", "lif_step",
    "multilevel_spike",
    "KWTA", "causal_mask", "kwta", "kwta_mask", "resolve_k",
    "DenseCausalAttention", "SpikingKWTAAttention", "TopKSoftmaxAttention", "allowed_keys", "brain_prior_mask",
    "ReportsStats", "StatsMixin", "reporting_layers",
    "ENERGY_PRESETS", "account_model", "energy_estimate", "write_report",
    "KVCache", "PackedSpikingAttention", "pack_codes", "packed_scores", "select_winners",
]
