"""Spiking neurons, surrogate gradients, k-WTA and spiking k-WTA attention (hdspike).

Submodules: :mod:`.surrogate`, :mod:`.neurons`, :mod:`.kwta`, :mod:`.attention`,
:mod:`.packed` (packed-bit inference), :mod:`.accounting` (firing rates, SOPs, energy
estimate), :mod:`.plots` (matplotlib; imported on demand). The language model lives in :mod:`.model` (imported on demand).
"""
from .surrogate import SURROGATES, get_surrogate, heaviside, spike
from .neurons import (IFNeuron, LIF, MemoryModule, adaptive_spike_count, if_step, lif_multi_step, lif_step,
                      multilevel_spike)
from .kwta import KWTA, causal_mask, kwta, kwta_mask, resolve_k
from .attention import SpikingKWTAAttention, TopKSoftmaxAttention, allowed_keys, brain_prior_mask
from .accounting import ENERGY_PRESETS, account_model, energy_estimate, write_report
from .packed import PackedSpikingAttention, pack_codes, packed_model, packed_scores, select_winners

__all__ = [
    "SURROGATES", "get_surrogate", "heaviside", "spike",
    "IFNeuron", "LIF", "MemoryModule", "adaptive_spike_count", "if_step", "lif_multi_step", "lif_step",
    "multilevel_spike",
    "KWTA", "causal_mask", "kwta", "kwta_mask", "resolve_k",
    "SpikingKWTAAttention", "TopKSoftmaxAttention", "allowed_keys", "brain_prior_mask",
    "ENERGY_PRESETS", "account_model", "energy_estimate", "write_report",
    "PackedSpikingAttention", "pack_codes", "packed_model", "packed_scores", "select_winners",
]
