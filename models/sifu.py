"""Family ``sifu``: BriLLM's signal-flow graph language model (SiFu; Zhao et al. 2025, arXiv 2503.11299).

Every token is a node of a directed graph; the edge u -> c carries its own d x d matrix
``W_uc`` and bias ``b_uc``. A signal starts at the first token as ``GELU(1 + node_bias[u_0] +
PE(0))`` and flows along the sequence:

    h_i     = sum_{j <= i} alpha_{i-j} e_j            (softmax over the learned mixing logits)
    e_{i+1} = GELU(h_i W_{u_i, u_{i+1}} + b_{u_i, u_{i+1}} + PE(i + 1))

and the energy of candidate c after position i is ``|| GELU(h_i W_{u_i, c} + b_{u_i, c} +
PE(i + 1)) ||_2``: the next token is the node whose edge carries the most energy. Training is
cross-entropy over the energies (divided by ``temperature`` *before* the softmax), over the full
vocabulary (characters), or over the batch's targets plus the ``n_negatives`` most frequent
tokens (large vocabularies).

Storage is sparse in the way the paper intends: only the bigrams seen in the training text
own an edge; every other edge shares ONE matrix and bias (``shared_weight``/``shared_bias``,
trainable only when ``train_shared``). All owned edges live in one tensor ``edge_weight``
(n_edges, d, d) indexed through ``edge_index`` (V, V) int64 (-1 = shared): the hot path is
tensor indexing, no Python dict.

Deviations from BriLLM, each for a stated reason:

* the mixing weights are per *distance* (``mix_range`` learned logits, the last one shared by
  every older signal) instead of one per absolute position, so the parameter count does not
  depend on the context length and decoding keeps O(1) state (``mix_range - 1`` recent signals
  plus a running sum of the older ones);
* BriLLM's known bugs are avoided: padding is masked (targets ``-1`` or ``pad_id``), the
  shared edge's trainability is a real flag, and temperature divides the energies before the
  softmax.

Where the observed bigrams come from (``graph``):

* ``"tinyshakespeare"``: the training split (first 90%) of the harness's corpus, tokenised
  as :func:`models.train.prepare_data` does, when the model is built outside the harness;
  the harness calls the family's :func:`fit_config` hook, which replaces it by ``"bigrams"``
  filled from the text the run actually trains on;
* ``"bigrams"``: the explicit list ``bigrams`` of ``[u, c]`` pairs (tests, other corpora);
* ``"dense"``: every pair owns an edge (the dense reference for the parameter count).

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size) (= energies / temperature); loss a scalar.

Example:
    >>> cfg = SiFuConfig(vocab_size=5, block_size=8, d=4, graph="bigrams", bigrams=[[0, 1], [1, 2]])
    >>> m = SiFuLM(cfg)
    >>> logits, loss = m(torch.tensor([[0, 1, 2]]), torch.tensor([[1, 2, 3]]))
    >>> logits.shape
    torch.Size([1, 3, 5])
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from spiking_attention.stats import StatsMixin

from .base import adamw_decay_matrices, check_choice, check_generate_args, check_int, sample_next

__all__ = ["SiFuConfig", "SiFuLM", "SiFuDecoder", "GRAPHS", "fit_config", "observed_bigrams",
           "edge_energy_trace", "plot_edge_energies"]

GRAPHS = ("tinyshakespeare", "bigrams", "dense")


@dataclass
class SiFuConfig:
    vocab_size: int = 65
    block_size: int = 64               # training/evaluation context; the model's size does not depend on it
    d: int = 32                        # signal width; each edge holds a d x d matrix and a d bias
    graph: str = "tinyshakespeare"     # where the observed bigrams come from (module docstring)
    bigrams: list | None = None        # [[u, c], ...] when graph == "bigrams"
    train_shared: bool = False         # whether the one shared matrix of unseen edges trains
    mix_range: int = 16                # learned mixing logits for distances 0 .. mix_range-2, one for the rest
    temperature: float = 1.0           # energies / temperature = logits (before the softmax)
    n_negatives: int = 0               # 0: full-vocabulary softmax; > 0: batch targets + this many frequent tokens
    pad_id: int | None = None          # a padding token: its positions and targets are ignored
    init_std: float = 0.02             # edge matrices ~ N(0, init_std) around an identity / sqrt(d)
    seed: int = 0                      # the fixed shared matrix's initialisation

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "d"):
            check_int(name, getattr(self, name))
        check_int("mix_range", self.mix_range, 1)
        check_int("n_negatives", self.n_negatives, 0)
        check_choice("graph", self.graph, GRAPHS)
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {self.temperature!r}")
        if not self.init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {self.init_std!r}")
        if not isinstance(self.train_shared, bool):
            raise ValueError(f"train_shared must be True or False, got {self.train_shared!r}")
        if self.pad_id is not None and not (isinstance(self.pad_id, int) and 0 <= self.pad_id < self.vocab_size):
            raise ValueError(f"pad_id must be None or a token id in [0, {self.vocab_size}), got {self.pad_id!r}")
        if self.graph == "bigrams":
            if self.bigrams is None:
                raise ValueError("graph='bigrams' needs bigrams=[[u, c], ...] (the observed token pairs)")
            arr = np.asarray(self.bigrams)
            if arr.size and (arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"bigrams must be a list of [u, c] integer pairs, got an array of shape "
                                 f"{arr.shape} and dtype {arr.dtype}")
            if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
                raise ValueError(f"bigrams hold token ids outside [0, {self.vocab_size}): "
                                 f"min {arr.min()}, max {arr.max()}")
        elif self.bigrams is not None:
            raise ValueError(f"bigrams is given but graph={self.graph!r}; set graph='bigrams' to use the list")

    @classmethod
    def from_dict(cls, config: dict):
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown SiFuConfig keys {unknown}; allowed: {sorted(names)}")
        return cls(**config)


def observed_bigrams(ids, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (u, c) pairs of consecutive tokens in ``ids`` and the token counts.

    Shapes: ids (N,) -> pairs (n_edges, 2) int64 sorted row-major, counts (vocab_size,) int64.
    """
    ids = np.asarray(ids, dtype=np.int64)
    seen = np.zeros((vocab_size, vocab_size), dtype=bool)
    seen[ids[:-1], ids[1:]] = True
    return np.argwhere(seen).astype(np.int64), np.bincount(ids, minlength=vocab_size).astype(np.int64)


@functools.lru_cache(maxsize=1)
def tinyshakespeare_bigram_counts() -> np.ndarray:
    """(V, V) int64 counts of consecutive token pairs in the harness's tiny-shakespeare train
    split (first 90%, tokenised as :func:`models.train.prepare_data` does)."""
    from .data import CharTokenizer, load_tinyshakespeare, split_train_val

    text = load_tinyshakespeare()
    tok = CharTokenizer.from_text(text)
    train_ids, _ = split_train_val(tok.encode(text), 0.9)
    counts = np.zeros((tok.vocab_size, tok.vocab_size), dtype=np.int64)
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1)
    counts.setflags(write=False)
    return counts


def _tinyshakespeare_graph() -> tuple[int, np.ndarray, np.ndarray]:
    """(vocab size, observed bigrams, token counts) of the harness's tiny-shakespeare train split."""
    counts = tinyshakespeare_bigram_counts()
    return counts.shape[0], np.argwhere(counts > 0).astype(np.int64), counts.sum(0)


def fit_config(config: dict, train_ids) -> dict:
    """The registry's ``fit_config`` hook: a ``graph="tinyshakespeare"`` config becomes
    ``graph="bigrams"`` with the bigrams of ``train_ids``; other graphs are left as they are.

    The harness calls it with the ids it trains on before building the model and stores the
    returned dict in the checkpoint, so the graph follows whatever text a run trains on
    (held-out splits included: the held-out tail's bigrams are not in it).
    """
    if config.get("graph", "tinyshakespeare") != "tinyshakespeare":
        return config
    pairs, _ = observed_bigrams(train_ids, config["vocab_size"])
    return {**config, "graph": "bigrams", "bigrams": pairs.tolist()}


def sinusoidal_pe(positions: torch.Tensor, d: int) -> torch.Tensor:
    """Vaswani et al. (2017) sinusoidal position code, no parameters. Shapes: (...,) -> (..., d)."""
    half = (d + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) * 2 / max(d, 2))
    ang = positions.to(torch.float32)[..., None] * freq                    # (..., half)
    return torch.cat([torch.sin(ang), torch.cos(ang)], -1)[..., :d]


class SiFuLM(StatsMixin, nn.Module):
    """The SiFu graph language model (see the module docstring).

    It reports through the stats protocol (:mod:`spiking_attention.stats`): its products are
    einsums over gathered edge matrices, not ``nn.Linear`` calls, so accounting would count
    nothing unless the model says what its forward pass did.
    """

    def __init__(self, config: SiFuConfig):
        super().__init__()
        self.config = config
        V, d = config.vocab_size, config.d
        pairs, counts = self._graph(config)
        index = torch.full((V, V), -1, dtype=torch.long)
        index[pairs[:, 0], pairs[:, 1]] = torch.arange(len(pairs))
        self.register_buffer("edge_index", index)                          # (V, V): owned edge id or -1
        self.register_buffer("token_counts", counts)                       # (V,): frequent negatives
        n_edges = len(pairs)
        g = torch.Generator().manual_seed(config.seed)
        # identity plus noise: a signal keeps its scale along any path at init; the noise breaks symmetry
        eye = torch.eye(d)
        self.edge_weight = nn.Parameter(eye + config.init_std * torch.randn(n_edges, d, d, generator=g))
        self.edge_bias = nn.Parameter(torch.zeros(n_edges, d))
        self.shared_weight = nn.Parameter(eye + config.init_std * torch.randn(d, d, generator=g),
                                          requires_grad=config.train_shared)
        self.shared_bias = nn.Parameter(torch.zeros(d), requires_grad=config.train_shared)
        self.node_bias = nn.Parameter(torch.zeros(V, d))
        self.mix_logits = nn.Parameter(torch.zeros(config.mix_range))

    @staticmethod
    def _graph(config: SiFuConfig) -> tuple[torch.Tensor, torch.Tensor]:
        V = config.vocab_size
        if config.graph == "dense":
            pairs = np.argwhere(np.ones((V, V), dtype=bool)).astype(np.int64)
            counts = np.ones(V, dtype=np.int64)
        elif config.graph == "bigrams":
            pairs = np.unique(np.asarray(config.bigrams, dtype=np.int64).reshape(-1, 2), axis=0)
            counts = np.bincount(pairs[:, 1], minlength=V).astype(np.int64)   # in-degree: a frequency proxy
        else:
            v_data, pairs, counts = _tinyshakespeare_graph()
            if v_data != V:
                raise ValueError(f"graph='tinyshakespeare' has a vocabulary of {v_data} characters but "
                                 f"vocab_size={V}; for another text use graph='bigrams' with its bigrams "
                                 f"(models.sifu.fit_config)")
        return torch.from_numpy(pairs), torch.from_numpy(counts)

    # ------------------------------------------------------------------ parameters
    def num_params(self, non_embedding: bool = False) -> int:
        """Every stored number (the fixed shared edge included); ``non_embedding`` drops node biases."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.node_bias.numel() if non_embedding else n

    def param_report(self) -> dict:
        """Parameter count of this shared-sparse graph against the dense graph of the same vocabulary."""
        V, d = self.config.vocab_size, self.config.d
        per_edge = d * d + d
        n_edges = self.edge_weight.shape[0]
        other = self.node_bias.numel() + self.mix_logits.numel()
        return {"vocab_size": V, "d": d, "owned_edges": n_edges, "shared_edges": V * V - n_edges,
                "params_per_edge": per_edge, "sparse_params": n_edges * per_edge + per_edge + other,
                "dense_params": V * V * per_edge + other,
                "trainable_params": sum(p.numel() for p in self.parameters() if p.requires_grad)}

    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.99)):
        """AdamW over the trainable tensors only (the fixed shared edge stays out); no decay on biases."""
        return adamw_decay_matrices(self, weight_decay, lr, betas, min_dim=3)   # decay the (d, d) edges

    # ------------------------------------------------------------------ edges
    def edge_params(self, u: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The matrices and biases of edges u -> c (shared where the bigram was never seen).

        Shapes: u, c broadcastable int64 (...) -> W (..., d, d), b (..., d).
        """
        n = self.edge_weight.shape[0]
        e = self.edge_index[u, c]                                           # (...)
        e = torch.where(e >= 0, e, n)                                       # row n of the table: the shared edge
        # one table [owned edges; the shared edge]: a gather instead of a where over both branches
        W = torch.cat([self.edge_weight, self.shared_weight[None]])[e]
        b = torch.cat([self.edge_bias, self.shared_bias[None]])[e]
        return W, b

    def mix_weights(self, T: int) -> torch.Tensor:
        """The (T, T) causal mixing matrix: row i = softmax over j <= i of mix_logits[min(i - j, R - 1)]."""
        i = torch.arange(T)
        dist = (i[:, None] - i[None, :])                                    # (T, T)
        logits = self.mix_logits[dist.clamp(0, self.config.mix_range - 1)]
        return torch.softmax(logits.masked_fill(dist < 0, float("-inf")), dim=-1)

    def start_signal(self, u0: torch.Tensor) -> torch.Tensor:
        """e_0 = GELU(1 + node_bias[u_0] + PE(0)). Shapes: (B,) -> (B, d)."""
        d = self.config.d
        return F.gelu(1.0 + self.node_bias[u0] + sinusoidal_pe(torch.zeros((), dtype=torch.long), d))

    def candidates(self, targets: torch.Tensor | None) -> torch.Tensor | None:
        """The candidate set of a training batch with sampled negatives, else None (full vocabulary)."""
        k = self.config.n_negatives
        if k == 0 or targets is None or not self.training:
            return None
        frequent = torch.topk(self.token_counts, min(k, self.config.vocab_size)).indices
        t = targets[(targets >= 0)]
        return torch.unique(torch.cat([frequent, t]))

    def energies(self, h: torch.Tensor, u: torch.Tensor, pos: torch.Tensor,
                 cand: torch.Tensor | None = None) -> torch.Tensor:
        """Energy of every candidate edge out of u after signal h at position pos.

        Positions are grouped by their node u, so each group needs one (d, C * d) matrix: the
        edges of one node side by side; a loop over the distinct nodes of the batch.
        Shapes: h (N, d), u (N,), pos (N,) -> (N, C) with C = V (or len(cand)).
        """
        d = self.config.d
        cols = torch.arange(self.config.vocab_size) if cand is None else cand     # (C,)
        C = cols.numel()
        nodes = torch.unique(u)                                              # (U,)
        W, b = self.edge_params(nodes[:, None], cols[None, :])               # (U, C, d, d), (U, C, d)
        # one gather for all nodes, then unbind: the backward stacks the U gradients once instead
        # of scattering a full-size zero tensor per node
        Ws = W.permute(0, 2, 1, 3).reshape(-1, d, C * d).unbind(0)           # U x (d, C * d)
        bs = b.unbind(0)                                                     # U x (C, d)
        pe = sinusoidal_pe(pos + 1, d)                                       # (N, d)
        order = torch.argsort(u, stable=True)                                # positions grouped by node
        sizes = torch.bincount(u, minlength=self.config.vocab_size)[nodes].tolist()
        parts = []
        for Wn, bn, rows in zip(Ws, bs, order.split(sizes)):
            z = (h[rows] @ Wn).view(-1, C, d) + bn + pe[rows, None, :]       # (n, C, d)
            parts.append(F.gelu(z).norm(dim=-1))                             # (n, C)
        out = torch.empty(h.shape[0], C, dtype=h.dtype)
        out = out.index_copy(0, order, torch.cat(parts))                     # back to position order
        return out

    # ------------------------------------------------------------------ forward
    def signals(self, idx: torch.Tensor) -> torch.Tensor:
        """The mixed signals h_i of every position (teacher forcing along the true edges).

        Shapes: idx (B, T) -> h (B, T, d).
        """
        B, T = idx.shape
        M = self.mix_weights(T)                                              # (T, T)
        W, b = self.edge_params(idx[:, :-1], idx[:, 1:])                     # (B, T-1, d, d), (B, T-1, d)
        pe = sinusoidal_pe(torch.arange(T), self.config.d)                   # (T, d)
        # unbind once: slicing W[:, i] in the loop would make each backward scatter into a
        # zero tensor of W's full size
        Ws, bs, Ms = W.unbind(1), b.unbind(1), M.unbind(0)
        e = [self.start_signal(idx[:, 0])]                                   # e_j: (B, d) each
        hs = []
        for i in range(T):
            E = torch.stack(e, 1)                                            # (B, i+1, d)
            h = torch.einsum("j,bjd->bd", Ms[i][:i + 1], E)                  # (B, d)
            hs.append(h)
            if i + 1 < T:
                e.append(F.gelu(torch.einsum("bk,bkd->bd", h, Ws[i]) + bs[i] + pe[i + 1]))
        return torch.stack(hs, 1)                                            # (B, T, d)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.dim() != 2 or idx.size(1) < 1:
            raise ValueError(f"idx must be (B, T) with T >= 1, got shape {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        h = self.signals(idx)                                                # (B, T, d)
        cand = self.candidates(targets)
        pos = torch.arange(T).expand(B, T)
        en = self.energies(h.reshape(-1, self.config.d), idx.reshape(-1), pos.reshape(-1), cand)
        en = en / self.config.temperature
        if cand is None:
            logits = en.view(B, T, -1)                                       # (B, T, V)
        else:
            logits = en.new_full((B * T, self.config.vocab_size), float("-inf"))
            logits = logits.index_copy(1, cand, en).view(B, T, -1)
        C, d = (self.config.vocab_size if cand is None else cand.numel()), self.config.d
        ops = {"energy_mac": float(B * T * C * (d * d + d)),          # every candidate edge's product
               "transition_mac": float(B * (T - 1) * d * d),          # the true edges the signal takes
               "mix_mac": float(B * T * (T + 1) // 2 * d)}            # the mix of every earlier signal
        self._report({"candidates_per_position": float(C)}, {"mac": sum(ops.values()), "ac": 0.0, **ops})
        loss = None
        if targets is not None:
            loss = self.loss(logits, idx, targets)
        return logits, loss

    def loss(self, logits: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the energies; targets -1 and padding (input or target) are ignored."""
        t = targets.clone()
        pad = self.config.pad_id
        if pad is not None:
            t[(idx == pad) | (targets == pad)] = -1
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), t.reshape(-1), ignore_index=-1)

    def explain(self, idx: torch.Tensor, decode, path, *, top: int = 5):
        """The model's own account of a text (the comparison calls it on a generated sample):
        :func:`plot_edge_energies`, which edges carried the most energy at each step."""
        return plot_edge_energies(self, idx, decode, path, top=top)

    # ------------------------------------------------------------------ decoding
    def decoder(self) -> "SiFuDecoder":
        return SiFuDecoder(self)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample through the O(1)-state decoder; the prompt is cropped to block_size, the
        continuation is not (positions past block_size use the sinusoidal code unseen in training).

        Shapes: idx (B, T0) -> (B, T0 + max_new_tokens).
        """
        check_generate_args(idx, temperature)
        was_training = self.training
        self.eval()
        dec = self.decoder()
        logits, state = dec.prefill(idx[:, -self.config.block_size:])
        last = logits[:, -1]
        for _ in range(max_new_tokens):
            nxt = sample_next(last.clone(), temperature, top_k, generator)   # (B, 1)
            idx = torch.cat((idx, nxt), 1)
            last = dec.step(nxt, state)
        self.train(was_training)
        return idx


class SiFuDecoder:
    """Incremental decoding with O(1) state per sequence: the last ``mix_range - 1`` signals, the
    running sum and count of the older ones, the current node, its mixed signal and position.

    ``prefill(idx (B, T)) -> (logits (B, T, V), state)``; ``step(token (B, 1), state) -> logits (B, V)``
    (the state is updated in place).
    """

    def __init__(self, model: SiFuLM):
        self.m = model

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor):
        # the prompt runs through the same O(1)-state recurrence as step(): O(T) time and memory,
        # where rebuilding every signal from the full forward's (T, T) mixing matrix was O(T^2)
        m = self.m
        B, T = idx.shape
        node = idx[:, 0].clone()
        e0 = m.start_signal(node)                                           # (B, d)
        st = {"recent": e0[:, None], "tail_sum": torch.zeros_like(e0), "tail_count": 0, "node": node, "pos": 0}
        st["h"] = self._mix(st)
        first = m.energies(st["h"], node, torch.zeros_like(node)) / m.config.temperature
        logits = [first] + [self.step(idx[:, i:i + 1], st) for i in range(1, T)]
        return torch.stack(logits, 1), st                                   # (B, T, V)

    def _mix(self, st: dict) -> torch.Tensor:
        """h from the recent signals (distance 0 = last) and the tail sum. Shapes: -> (B, d)."""
        w = self.m.mix_logits
        R = w.numel()
        n = st["recent"].shape[1]
        dist = torch.arange(n - 1, -1, -1)                                   # distance of each recent signal
        wr = w[dist.clamp(max=R - 1)]
        top = torch.cat([wr, w[-1:]]).max()
        a = torch.exp(wr - top)                                              # (n,)
        a_tail = torch.exp(w[-1] - top) * st["tail_count"]
        num = torch.einsum("j,bjd->bd", a, st["recent"]) + torch.exp(w[-1] - top) * st["tail_sum"]
        return num / (a.sum() + a_tail)

    @torch.no_grad()
    def step(self, token: torch.Tensor, st: dict) -> torch.Tensor:
        m = self.m
        R = m.config.mix_range
        tok = token.reshape(-1)
        W, b = m.edge_params(st["node"], tok)
        pos = st["pos"] + 1
        e_new = F.gelu(torch.einsum("bk,bkd->bd", st["h"], W) + b + sinusoidal_pe(torch.tensor(pos), m.config.d))
        recent = torch.cat([st["recent"], e_new[:, None]], 1)
        if recent.shape[1] > R - 1:                                          # the oldest joins the tail
            st["tail_sum"] = st["tail_sum"] + recent[:, 0]
            st["tail_count"] += 1
            recent = recent[:, 1:]
        st.update(recent=recent, node=tok.clone(), pos=pos)
        st["h"] = self._mix(st)
        en = m.energies(st["h"], tok, torch.full_like(tok, pos))
        return en / m.config.temperature                                     # (B, V)


@torch.no_grad()
def edge_energy_trace(model: SiFuLM, idx: torch.Tensor, top: int = 5) -> dict:
    """For one sequence, the ``top`` edges of most energy out of each position's node.

    Returns ``{"energy": (T, top) float, "prob": (T, top), "target": (T, top) int64, "node": (T,)
    int64, "chosen_energy": (T - 1,)}``: row i ranks the edges u_i -> c by the energy they
    carried; ``prob`` is each edge's share of the step's softmax over all candidates.
    """
    if idx.dim() != 2 or idx.size(0) != 1:
        raise ValueError(f"edge_energy_trace takes one sequence (1, T), got shape {tuple(idx.shape)}")
    was = model.training
    model.eval()
    logits, _ = model(idx)
    model.train(was)
    en = logits[0] * model.config.temperature                               # (T, V) energies
    val, arg = torch.topk(en, min(top, en.shape[-1]), dim=-1)
    chosen = en[:-1].gather(1, idx[0, 1:, None])[:, 0]
    prob = torch.softmax(logits[0], -1).gather(1, arg)
    return {"energy": val, "prob": prob, "target": arg, "node": idx[0].clone(), "chosen_energy": chosen}


def plot_edge_energies(model: SiFuLM, idx: torch.Tensor, decode, path, *, top: int = 5,
                       title: str | None = None):
    """The interpretability SiFu claims, made concrete: for the sequence ``idx`` (1, T) (e.g. a
    generated text), which edges out of each token carried the most energy, and which one the
    text took. ``decode`` maps a list of ids to a string. Writes a PNG (atomically); returns its path.
    """
    from spiking_attention.plots import ranked_edges

    tr = edge_energy_trace(model, idx, top)
    ch = [decode([int(t)]) for t in idx[0]]
    labels = [[decode([int(t)]) for t in row] for row in tr["target"]]
    chosen = ch[1:] + [None]
    return ranked_edges(tr["prob"], labels, ch, chosen, path, value_name="share of the step's softmax",
                        title=title or f"SiFu: the {top} edges of most energy out of each token "
                                       f"(box: the edge the text took)")
