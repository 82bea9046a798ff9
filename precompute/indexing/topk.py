"""Streaming top-k and activation statistics for every expert of every routing group, vectorised.

The whole state is a handful of tensors on the model's device, indexed by `slot` = group * E*E +
expert, so memory is bounded by experts x (K + samples) whatever the corpus size. Each batch
arrives as flat sparse activations (slot, weight, address); there is no Python loop per activation:

- statistics: index_add_ / scatter_reduce_ into sum, max, histogram [slots, bins] and per-domain
  sums [slots, domains]; the activation count is the histogram's row sum (every activation falls in
  exactly one bin), so it costs no pass of its own; a per-vocabulary count of every token processed
  (the background the labels measure an expert's tokens against);
- top-K contexts (`ExampleBank` ranked by weight): a candidate can only enter where its weight
  reaches the slot's current K-th weight (the "bar", one small tensor), so after warm-up almost
  every activation is dropped by one gather + compare. Survivors are reduced among themselves by a
  few stable sorts, then merged row-wise with their slots' rows: deduplicate by window hash (same
  window text = same context, the heavier one stays), order by (weight desc, place key asc), keep
  the first K. The place key (`place_key`) is a pseudo-random bijection of (doc, position), so
  contexts of equal weight are a uniform sample of all the equals, not the first ones in corpus
  order (a saturated expert has hundreds of contexts at weight 1). The order is a pure function of
  each candidate, so the result is exactly the top-K of the deduplicated stream, independent of
  batch boundaries, resume points and shard splits;
- a uniform sample per expert (`ExampleBank` ranked by priority): bottom-k by a hash of
  (doc, position, slot), which is exactly mergeable; quantile examples are drawn from it.

Window weights (the expert's weight on each token around an example, for highlighting) are only
computed for candidates that survive a merge, through a callback.

That vectorised update suits a GPU. On a CPU, `ExpertState.add` hands each batch to a compiled loop
(precompute.indexing.topk_cpu) that inserts every entering activation where it lands, by the same rules;
the two give the same state tensor for tensor (tests/precompute/test_index_topk.py).
"""

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

ADDRESS_SHIFT = 32  # address = doc << 32 | position: one int64 that orders by (doc, position)
EMPTY_ADDRESS = -1
NO_PRIORITY = 1 << 62  # larger than any priority (priorities are < 2**62)
_PRIME = (1 << 31) - 1  # Mersenne prime: every product below stays < 2**62, no int64 overflow
_MULTIPLIERS = (1_000_003, 69_069, 48_271, 1_103_515_245 % _PRIME)
# Slots merged at once when a shard's state is absorbed: a merge's temporaries are some K^2 bytes and K x window
# bytes per slot, several GiB for all 1.57M slots of the published shapes (it ran out of 24 GiB); 2^17 slots
# keep them to a few hundred MiB and cost no more time
ABSORB_SLOTS = 1 << 17


def make_address(doc, position):
    """doc << 32 | position: one int64 per place that orders by (doc, position). Torch tensors or numpy arrays.

    Positions lie below 2**32, so `address + k` is position + k in the same document."""
    if isinstance(doc, torch.Tensor):
        return (doc.long() << ADDRESS_SHIFT) | position.long()
    return (np.asarray(doc, dtype=np.int64) << ADDRESS_SHIFT) | np.asarray(position, dtype=np.int64)


def split_address(address):
    """(doc, position) of addresses: the inverse of make_address, for tensors or numpy arrays."""
    return address >> ADDRESS_SHIFT, address & ((1 << ADDRESS_SHIFT) - 1)


def _polynomial_hash(columns: torch.Tensor, multiplier: int) -> torch.Tensor:
    """Row-wise polynomial hash mod 2**31-1 of an int64 [n, W] tensor (negative entries allowed)."""
    h = torch.zeros(columns.shape[0], dtype=torch.long, device=columns.device)
    for c in range(columns.shape[1]):
        h = (h * multiplier + torch.remainder(columns[:, c], _PRIME)) % _PRIME
    return h


def window_hash(window_tokens: torch.Tensor) -> torch.Tensor:
    """62-bit hash of each row of token ids [n, W] (-1 = outside the document): equal text, equal hash."""
    return (_polynomial_hash(window_tokens, _MULTIPLIERS[0]) << 31) | _polynomial_hash(window_tokens, _MULTIPLIERS[1])


def sample_priority(address: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Pseudo-random 62-bit priority of an activation, a pure function of (doc, position, slot)."""
    doc, position = split_address(address)
    halves = []
    for m in _MULTIPLIERS[2:]:
        # the polynomial hash of the row (doc, position, slot), written out: all three lie in [0, 2**31 - 1)
        h = ((doc * m + position) % _PRIME * m + slot) % _PRIME
        halves.append((h * h + 12_345) % _PRIME)  # squaring breaks the linearity of the polynomial hash
    return (halves[0] << 31) | halves[1]


def _place_round(x, multiplier: int):
    """One Feistel round function on [0, 2**31 - 1): nonlinear (a square), every product below 2**62."""
    return ((x * x) % _PRIME * multiplier + 91_138_233) % _PRIME


def place_key(address):
    """62-bit pseudo-random key of each place (doc, position), the tie-break of equal weights in the top-K.

    Three Feistel rounds over (doc, position) mod 2**31 - 1: a bijection there, so two places never share a
    key (for doc and position below 2**31 - 1) and the key alone orders ties totally. Torch tensors or numpy."""
    doc, position = split_address(address)
    left, right = doc % _PRIME, position % _PRIME
    right = (right + _place_round(left, _MULTIPLIERS[0])) % _PRIME
    left = (left + _place_round(right, _MULTIPLIERS[1])) % _PRIME
    right = (right + _place_round(left, _MULTIPLIERS[2])) % _PRIME
    return (left << 31) | right


def quantise_window(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, W] float weights -> (uint8 [n, W] as round(255 * w / max), max [n] float32)."""
    window_max = weights.float().amax(dim=1)
    scaled = weights.float() / window_max.clamp_min(1e-30)[:, None] * 255
    return scaled.round().clamp(0, 255).to(torch.uint8), window_max


def _lexsort(*keys: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by keys[0], then keys[1], ... (stable sorts from the least significant key)."""
    order = torch.arange(keys[0].shape[0], device=keys[0].device)
    for key in reversed(keys):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


def _rank_in_segment(sorted_segment: torch.Tensor) -> torch.Tensor:
    """For a sorted segment-id tensor, each element's 0-based index inside its segment."""
    starts = torch.searchsorted(sorted_segment, sorted_segment)
    return torch.arange(sorted_segment.shape[0], device=sorted_segment.device) - starts


WindowsOf = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ExampleBank:
    """Per slot, `capacity` examples (weight, address, key, window weights) in rank order.

    by_weight=True: rank by (weight desc, place_key(address) asc), `key` is the window hash, duplicates
    of a key keep only their best entry. by_weight=False: rank by (key asc, address asc) with `key` the
    sample priority (a bottom-k sample).
    """

    def __init__(
        self, n_slots: int, capacity: int, window: int, by_weight: bool, device="cpu", stage_limit: int | None = None
    ):
        self.capacity, self.by_weight = capacity, by_weight
        shape = (n_slots, capacity)
        self._rows = {
            "weight": torch.zeros(shape, device=device),
            "address": torch.full(shape, EMPTY_ADDRESS, dtype=torch.long, device=device),
            "key": torch.full(shape, 0 if by_weight else NO_PRIORITY, dtype=torch.long, device=device),
            "window": torch.zeros((*shape, window), dtype=torch.uint8, device=device),
            "window_max": torch.zeros(shape, device=device),
        }
        self._empty = {name: tensor[0, 0].clone() for name, tensor in self._rows.items()}  # fresh-entry values
        # Staged candidates (already reduced per batch, windows taken at batch time) not yet merged into the rows
        self.stage_limit = n_slots if stage_limit is None else stage_limit
        self._stage: list[dict[str, torch.Tensor]] = []
        self._staged = 0
        self.refresh_bar()

    def tensors(self) -> dict[str, torch.Tensor]:
        """The rows, with every staged candidate merged in first (every reader goes through here)."""
        self.flush()
        return self._rows

    weight = property(lambda self: self.tensors()["weight"], lambda self, v: self._rows.__setitem__("weight", v))
    address = property(lambda self: self.tensors()["address"], lambda self, v: self._rows.__setitem__("address", v))
    key = property(lambda self: self.tensors()["key"], lambda self, v: self._rows.__setitem__("key", v))
    window = property(lambda self: self.tensors()["window"], lambda self, v: self._rows.__setitem__("window", v))
    window_max = property(
        lambda self: self.tensors()["window_max"], lambda self, v: self._rows.__setitem__("window_max", v)
    )

    def stage(self, slot, weight, address, key, windows_of: WindowsOf) -> None:
        """Keep one batch's candidates for a later bulk merge (or merge now when staging is off).

        While banks fill, almost every activation passes the bar, and merging each batch would rewrite nearly
        every row. Instead the batch's candidates are reduced among themselves (at most `capacity` per slot,
        one per window text), their windows taken now (the batch's context is gone later) and appended; the
        rows are merged in bulk once `stage_limit` entries wait, or when anything reads the bank. The bar
        stays as of the last merge, lower than the true one: a superset filter, so the result is the same."""
        if slot.numel() == 0:
            return
        if self.stage_limit <= 0:
            self.merge(slot, weight, address, key, windows_of)
            return
        order, _ = self._best_per_slot(slot, weight.float(), address, key)
        window, window_max = windows_of(order)
        self._stage.append(
            {
                "slot": slot[order],
                "weight": weight[order].float(),
                "address": address[order],
                "key": key[order],
                "window": window,
                "window_max": window_max,
            }
        )
        self._staged += order.numel()
        if self._staged > self.stage_limit:
            self.flush()

    def flush(self) -> None:
        """Merge every staged candidate into the rows, ABSORB_SLOTS slots at a time (bounded temporaries)."""
        if not self._stage:
            return
        staged = {name: torch.cat([part[name] for part in self._stage]) for name in self._stage[0]}
        self._stage, self._staged = [], 0
        by_slot = torch.argsort(staged["slot"], stable=True)
        staged = {name: tensor[by_slot] for name, tensor in staged.items()}
        n_slots = self._rows["weight"].shape[0]
        starts = torch.arange(0, n_slots + ABSORB_SLOTS, ABSORB_SLOTS, device=by_slot.device)
        bounds = torch.searchsorted(staged["slot"], starts).tolist()
        for low, high in zip(bounds[:-1], bounds[1:], strict=True):
            if high > low:
                part = {name: tensor[low:high] for name, tensor in staged.items()}
                self.merge(
                    part["slot"],
                    part["weight"],
                    part["address"],
                    part["key"],
                    lambda kept, e=part: (e["window"][kept], e["window_max"][kept]),
                )

    def refresh_bar(self) -> None:
        """The bar a candidate must reach to enter a slot: its last entry's weight (or key); open while not full.

        Kept in a small contiguous tensor, so the per-activation test reads 4 or 8 bytes per slot."""
        rows = self._rows
        self.bar = self._bar_of(rows["weight"][:, -1], rows["address"][:, -1], rows["key"][:, -1])

    def _bar_of(self, last_weight, last_address, last_key) -> torch.Tensor:
        full = last_address != EMPTY_ADDRESS
        if self.by_weight:
            return torch.where(full, last_weight, float("-inf"))
        return torch.where(full, last_key, NO_PRIORITY)

    def could_enter(self, slot: torch.Tensor, weight: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        """Mask of candidates that may enter (a superset: ties pass); everything else never can."""
        return weight >= self.bar[slot] if self.by_weight else key <= self.bar[slot]

    def _best_per_slot(self, slot, weight, address, key) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, rank): the candidates that can matter, at most `capacity` per slot, in rank order."""
        if self.by_weight:  # among the candidates, one per window text: the best
            tie = place_key(address)
            order = _lexsort(slot, key, -weight, tie)
            first = torch.ones_like(order, dtype=torch.bool)
            first[1:] = (slot[order][1:] != slot[order][:-1]) | (key[order][1:] != key[order][:-1])
            kept = order[first]
            order = kept[_lexsort(slot[kept], -weight[kept], tie[kept])]
        else:
            order = _lexsort(slot, key, address)
        rank = _rank_in_segment(slot[order])
        return order[rank < self.capacity], rank[rank < self.capacity]

    def merge(self, slot, weight, address, key, windows_of: WindowsOf) -> None:
        """Merge candidates into their slots' rows; `windows_of(candidate_indices)` gives their windows.

        Candidates are first reduced among themselves (a sort of the few that passed the bar); then each
        touched slot's row and its candidates sit side by side in a small [slots, K + m] block that is
        deduplicated and sorted row-wise: the rows already in the state are never sorted globally."""
        if slot.numel() == 0:
            return
        C, device = self.capacity, slot.device
        order, rank = self._best_per_slot(slot, weight.float(), address, key)
        touched, row = torch.unique_consecutive(slot[order], return_inverse=True)
        u, m = len(touched), int(rank.max()) + 1
        old = {name: tensor.index_select(0, touched) for name, tensor in self._rows.items()}  # [u, C, ...]
        new = {name: self._empty[name].expand(u, m, *self._empty[name].shape).clone() for name in old}
        new["weight"][row, rank] = weight[order].float()
        new["address"][row, rank] = address[order]
        new["key"][row, rank] = key[order]
        source = torch.full((u, m), -1, dtype=torch.long, device=device)  # candidate index of each new entry
        source[row, rank] = order
        joined = {name: torch.cat([old[name], new[name]], dim=1) for name in ("weight", "address", "key")}
        valid = joined["address"] != EMPTY_ADDRESS
        if self.by_weight:  # a window already in the row: of the two entries, the better one stays
            tie = place_key(joined["address"])
            new_tie, old_tie = tie[:, C:, None], tie[:, None, :C]
            same = new["key"][:, :, None] == old["key"][:, None, :]
            same &= (new["address"] != EMPTY_ADDRESS)[:, :, None] & (old["address"] != EMPTY_ADDRESS)[:, None, :]
            new_w, old_w = new["weight"][:, :, None], old["weight"][:, None, :]
            new_better = (new_w > old_w) | ((new_w == old_w) & (new_tie < old_tie))
            valid &= ~torch.cat([(same & new_better).any(1), (same & ~new_better).any(2)], dim=1)
            primary, secondary = torch.where(valid, -joined["weight"], float("inf")), tie
        else:
            primary, secondary = torch.where(valid, joined["key"], torch.iinfo(torch.long).max), joined["address"]
        by_secondary = torch.where(valid, secondary, torch.iinfo(torch.long).max).argsort(dim=1, stable=True)
        ranked = by_secondary.gather(1, primary.gather(1, by_secondary).argsort(dim=1, stable=True))[:, :C]
        picked_valid = valid.gather(1, ranked)

        result = {name: tensor.gather(1, ranked) for name, tensor in joined.items()}
        W = self._rows["window"].shape[-1]
        result["window"] = old["window"].gather(1, ranked.clamp(max=C - 1)[..., None].expand(-1, -1, W))
        result["window_max"] = old["window_max"].gather(1, ranked.clamp(max=C - 1))
        is_new = (ranked >= C) & picked_valid
        if is_new.any():
            result["window"][is_new], result["window_max"][is_new] = windows_of(
                source.gather(1, (ranked - C).clamp(min=0))[is_new]
            )
        for name, tensor in result.items():
            tensor[~picked_valid] = self._empty[name]
            self._rows[name].index_copy_(0, touched, tensor)
        self.bar.index_copy_(0, touched, self._bar_of(*(result[name][:, -1] for name in ("weight", "address", "key"))))


class CandidateContext(Protocol):
    """What the state asks of a batch about the candidates it keeps (indices into the batch's arrays)."""

    def window_hash(self, index: torch.Tensor) -> torch.Tensor: ...

    def window_weights(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class ExpertState:
    """Everything the index job accumulates: per-slot stats, top-K contexts and a uniform sample."""

    def __init__(
        self,
        n_slots: int,
        top_k: int,
        samples: int,
        window: int,
        histogram_edges: torch.Tensor,
        device="cpu",
        compiled: bool | None = None,
    ):
        self.n_slots, self.device = n_slots, torch.device(device)
        # On a CPU each batch is added by the compiled loop (precompute.indexing.topk_cpu), elsewhere by the
        # vectorised torch update below; both give the same state, tensor for tensor
        self.compiled = self.device.type == "cpu" if compiled is None else compiled
        self.histogram_edges = histogram_edges.double().cpu()
        self.log_edges = (self.histogram_edges[0].log10().item(), self.histogram_edges[-1].log10().item())
        n_bins = histogram_edges.numel() - 1
        self.top = ExampleBank(n_slots, top_k, window, by_weight=True, device=device)
        self.sample = ExampleBank(n_slots, samples, window, by_weight=False, device=device)
        self.weight_sum = torch.zeros(n_slots, dtype=torch.float64, device=device)
        self.weight_max = torch.zeros(n_slots, device=device)
        self.histogram = torch.zeros((n_slots, n_bins), dtype=torch.int32, device=device)
        self.domains: list[str] = []
        self.domain_tokens = torch.zeros(0, dtype=torch.long)
        self.domain_weight_sum = torch.zeros((n_slots, 0), dtype=torch.float64, device=device)
        self.token_counts = torch.zeros(0, dtype=torch.long)  # by token id, grown to the largest id seen
        self.tokens_processed = 0
        self.histogram_starts = self.bin_starts().numpy()  # for the compiled update: bins without a logarithm

    @property
    def active_count(self) -> torch.Tensor:
        """[slots] int64: activations >= min_weight seen (every one lies in exactly one histogram bin)."""
        return self.histogram.sum(1, dtype=torch.long)

    # -- domains ------------------------------------------------------------------------------
    def domain_index(self, name: str | None) -> int:
        """Column of a domain (added on first sight), or -1 for a document without one."""
        if name is None:
            return -1
        if name not in self.domains:
            self.domains.append(name)
            self.domain_tokens = torch.cat([self.domain_tokens, torch.zeros(1, dtype=torch.long)])
            column = torch.zeros((self.n_slots, 1), dtype=torch.float64, device=self.device)
            self.domain_weight_sum = torch.cat([self.domain_weight_sum, column], dim=1)
        return self.domains.index(name)

    # -- tokens ---------------------------------------------------------------------------------
    def count_tokens(self, token_ids: torch.Tensor) -> None:
        """Count every token the model ran on, by id (labels compare an expert's tokens with these counts)."""
        self.token_counts = _add_counts(self.token_counts, torch.bincount(token_ids.flatten().cpu()))

    # -- the per-batch update -------------------------------------------------------------------
    def histogram_bin(self, weight: torch.Tensor) -> torch.Tensor:
        low, high = self.log_edges
        n_bins = self.histogram.shape[1]
        position = (weight.double().clamp_min(1e-30).log10() - low) / (high - low) * n_bins
        return position.floor().long().clamp(0, n_bins - 1)

    def bin_starts(self) -> torch.Tensor:
        """[bins - 1] float32: the smallest float32 weight that `histogram_bin` puts in bin b + 1 or above.

        A float32 weight's bin is then the number of starts at or below it, the same bin for every float32 (the
        rule is monotonic) without a logarithm per activation. Found by bisection on the weights' bit patterns
        (positive float32s order as their int32 patterns do), all bins at once."""
        n_bins = self.histogram.shape[1]
        wanted = torch.arange(1, n_bins)
        low = torch.zeros(n_bins - 1, dtype=torch.int32)  # bit pattern of a weight below the start
        high = torch.full((n_bins - 1,), 0x7F7FFFFF, dtype=torch.int32)  # the largest finite float32
        while bool((high - low > 1).any()):
            middle = low + (high - low) // 2
            reaches = self.histogram_bin(middle.view(torch.float32)) >= wanted
            high, low = torch.where(reaches, middle, high), torch.where(reaches, low, middle)
        return high.view(torch.float32)

    def add(self, slot, weight, address, domain, context: CandidateContext) -> None:
        """Add one batch's activations (flat, all >= min_weight): slot, weight, address, domain column."""
        if self.compiled:
            from precompute.indexing import topk_cpu  # numba compiles on first use: only where it is used

            topk_cpu.update(self, slot, weight, address, domain, context)
            return
        self.add_stats(slot, weight, domain)
        enter = self.top.could_enter(slot, weight).nonzero().squeeze(1)
        if enter.numel():
            self.top.stage(
                slot[enter],
                weight[enter],
                address[enter],
                context.window_hash(enter),
                lambda kept: context.window_weights(enter[kept]),
            )
        priority = sample_priority(address, slot)
        enter = self.sample.could_enter(slot, weight, priority).nonzero().squeeze(1)
        if enter.numel():
            self.sample.stage(
                slot[enter],
                weight[enter],
                address[enter],
                priority[enter],
                lambda kept: context.window_weights(enter[kept]),
            )

    def add_stats(self, slot, weight, domain) -> None:
        self.weight_sum.index_add_(0, slot, weight.double())
        self.weight_max.scatter_reduce_(0, slot, weight.float(), reduce="amax")
        n_bins = self.histogram.shape[1]
        ones = torch.ones_like(slot, dtype=torch.int32)
        self.histogram.view(-1).index_add_(0, slot * n_bins + self.histogram_bin(weight), ones)
        has_domain = domain >= 0
        if has_domain.any():
            n_domains = self.domain_weight_sum.shape[1]
            flat = slot[has_domain] * n_domains + domain[has_domain]
            self.domain_weight_sum.view(-1).index_add_(0, flat, weight[has_domain].double())

    # -- combining shards -----------------------------------------------------------------------
    def absorb(self, other: "ExpertState") -> None:
        """Fold another state (a shard over other documents) into this one, exactly."""
        if other.histogram_edges.shape != self.histogram_edges.shape or other.n_slots != self.n_slots:
            raise ValueError("cannot merge states of different shapes")
        self.tokens_processed += other.tokens_processed
        self.token_counts = _add_counts(self.token_counts, other.token_counts)
        self.weight_sum += other.weight_sum.to(self.device)
        self.weight_max = torch.maximum(self.weight_max, other.weight_max.to(self.device))
        self.histogram += other.histogram.to(self.device)
        for column, name in enumerate(other.domains):
            mine = self.domain_index(name)
            self.domain_tokens[mine] += other.domain_tokens[column]
            self.domain_weight_sum[:, mine] += other.domain_weight_sum[:, column].to(self.device)
        for mine, theirs in ((self.top, other.top), (self.sample, other.sample)):
            for first in range(0, self.n_slots, ABSORB_SLOTS):  # a slice of slots at a time: bounded memory
                rows = slice(first, first + ABSORB_SLOTS)
                entries = {name: tensor[rows].to(self.device) for name, tensor in theirs.tensors().items()}
                slot, column = (entries["address"] != EMPTY_ADDRESS).nonzero(as_tuple=True)
                entries = {name: tensor[slot, column] for name, tensor in entries.items()}
                mine.merge(
                    slot + first,
                    entries["weight"],
                    entries["address"],
                    entries["key"],
                    lambda kept, e=entries: (e["window"][kept], e["window_max"][kept]),
                )

    # -- checkpoints ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Merge both banks' staged candidates into their rows (reading a bank's tensors does it too)."""
        self.top.flush()
        self.sample.flush()

    def state_dict(self) -> dict:
        return {
            "n_slots": self.n_slots,
            "histogram_edges": self.histogram_edges,
            "top": {k: v.cpu() for k, v in self.top.tensors().items()},
            "sample": {k: v.cpu() for k, v in self.sample.tensors().items()},
            "weight_sum": self.weight_sum.cpu(),
            "weight_max": self.weight_max.cpu(),
            "histogram": self.histogram.cpu(),
            "domains": list(self.domains),
            "domain_tokens": self.domain_tokens.cpu(),
            "domain_weight_sum": self.domain_weight_sum.cpu(),
            "token_counts": self.token_counts.cpu(),
            "tokens_processed": self.tokens_processed,
        }

    @classmethod
    def from_state_dict(cls, saved: dict, device="cpu", compiled: bool | None = None) -> "ExpertState":
        top, sample = saved["top"], saved["sample"]
        state = cls(
            saved["n_slots"],
            top["weight"].shape[1],
            sample["weight"].shape[1],
            top["window"].shape[2],
            saved["histogram_edges"],
            device=device,
            compiled=compiled,
        )
        for bank, tensors in ((state.top, top), (state.sample, sample)):
            for name, value in tensors.items():
                setattr(bank, name, value.to(device).contiguous())
            bank.refresh_bar()
        for name in ("weight_sum", "weight_max", "histogram", "domain_weight_sum"):
            setattr(state, name, saved[name].to(device).contiguous())
        state.domains, state.domain_tokens = list(saved["domains"]), saved["domain_tokens"]
        state.token_counts = saved["token_counts"]
        state.tokens_processed = saved["tokens_processed"]
        return state

    def memory_bytes(self) -> int:
        tensors = [
            *self.top.tensors().values(),
            *self.sample.tensors().values(),
            self.weight_sum,
            self.weight_max,
            self.histogram,
            self.domain_weight_sum,
            self.token_counts,
        ]
        return sum(t.numel() * t.element_size() for t in tensors)


def _add_counts(counts: torch.Tensor, more: torch.Tensor) -> torch.Tensor:
    """Two per-id count vectors added, the shorter one padded with zeros."""
    total = torch.zeros(max(counts.numel(), more.numel()), dtype=torch.long)
    total[: counts.numel()] += counts.cpu()
    total[: more.numel()] += more.cpu()
    return total
