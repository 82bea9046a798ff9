"""Dense ⇄ sparse expert weights: w_ij = sum_h g1[h, i] * g2[h, j] as flat lists of the non-zero entries.

At the published scale a layer has E*E = 262,144 experts; a token's non-zero weights are at most
H * k1 * k2 pairs, so they are formed from the router's selected entries, never as a dense tensor.
"""

import warnings
from typing import NamedTuple

import torch


class SparseExpertWeights(NamedTuple):
    """Every non-zero expert weight of a batch, as flat parallel tensors."""

    row: torch.Tensor  # int64, batch row
    position: torch.Tensor  # int64, position in the model's input
    expert: torch.Tensor  # int64, flat id i * E + j
    weight: torch.Tensor  # float32, w_ij = sum_h g1[h, i] * g2[h, j]


def dense_expert_weights(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """The definition, [..., E*E]: for tests and tiny models only (E*E = 262,144 at published scale)."""
    return torch.einsum("...hi,...hj->...ij", g1, g2).flatten(-2)


def _selected_entries(g: torch.Tensor, other: torch.Tensor, min_weight: float):
    """The entries of g [N, H, E] that can take part in a kept pair, in (token, head, e) order:
    (segment = token * H + head, e, value). With a `min_weight`, an entry e is dropped (in all heads) where
    sum_h g[h, e] * max(other[h]) < min_weight: that bounds every w it takes part in, so no pair reaching
    `min_weight` loses a term (a little slack covers float sums taken in another order)."""
    E = g.shape[-1]
    selected = g > 0
    if min_weight > 0:
        bound = torch.einsum("nhe,nh->ne", g, other.amax(-1))
        selected &= (bound >= min_weight * (1 - 1e-5)).unsqueeze(1)
    flat = selected.view(-1).nonzero().squeeze(1)
    return flat // E, flat % E, g.view(-1).index_select(0, flat)


def _heads_by_entry(segment: torch.Tensor, e: torch.Tensor, N: int, H: int, E: int) -> torch.Tensor:
    """[N * E] int64 bitmask: bit h is set where head h selects entry e of that token."""
    heads = torch.zeros(N * E, dtype=torch.long, device=e.device)
    return heads.index_add_(0, segment // H * E + e, 1 << (segment % H))


def sparse_expert_weights(
    g1: torch.Tensor, g2: torch.Tensor, min_weight: float = 0.0, max_chunk_pairs: int = 1 << 23
) -> SparseExpertWeights:
    """Non-zero w_ij of every token from (g1, g2) [B, T, H, E], never building [tokens, E*E].

    Each head selects a few entries per side, so each (token, head) proposes k1 * k2 candidate pairs.
    A pair selected by several heads is kept once, by its first head (a bitmask of the heads selecting
    each entry tells which), and only those rare pairs pay for the full sum over heads. Weights below
    `min_weight` (or zero) are dropped; with a `min_weight`, entries that cannot reach it are pruned
    before any pair is formed (exactly: see `_selected_entries`), which removes about 95% of the
    candidate pairs on router-like inputs. Pairs are formed in chunks of about `max_chunk_pairs`, so
    memory stays bounded for any batch.
    """
    if g1.shape != g2.shape or g1.dim() != 4:
        raise ValueError(f"g1 and g2 must both be [B, T, H, E]; got {tuple(g1.shape)} and {tuple(g2.shape)}.")
    B, T, H, E = g1.shape
    if H > 62:
        raise ValueError(f"At most 62 router heads are supported (a head bitmask is int64); got {H}.")
    N = B * T
    g1, g2 = g1.reshape(N, H, E).float(), g2.reshape(N, H, E).float()
    segment1, i, value1 = _selected_entries(g1, g2, min_weight)
    segment2, j, value2 = _selected_entries(g2, g1, min_weight)
    heads1, heads2 = _heads_by_entry(segment1, i, N, H, E), _heads_by_entry(segment2, j, N, H, E)
    # per entry, once (a pair then costs a few gathers of these): the heads other than its own that select
    # the side-1 entry, those of them before its own head, and every head selecting the side-2 entry
    token1, own1 = segment1 // H, 1 << (segment1 % H)
    others1 = heads1.index_select(0, token1 * E + i) & ~own1
    sides = _Entries(
        token1, i, value1, others1, others1 & (own1 - 1), j, value2, heads2.index_select(0, segment2 // H * E + j)
    )
    count2 = torch.bincount(segment2, minlength=N * H)  # side-2 entries of each (token, head), stored in order
    start2 = count2.cumsum(0) - count2
    pairs = count2.index_select(0, segment1)  # pairs each side-1 entry proposes
    first_pair = pairs.cumsum(0) - pairs
    partner_base = start2.index_select(0, segment1) - first_pair  # side-2 entry of pair p: partner_base + p
    chunk_of_entry = first_pair // max_chunk_pairs  # non-decreasing
    parts, lo = [], 0
    for size in torch.unique_consecutive(chunk_of_entry, return_counts=True)[1].tolist():
        entry = torch.arange(lo, lo + size, device=g1.device).repeat_interleave(pairs[lo : lo + size])
        pair = torch.arange(entry.numel(), device=g1.device) + first_pair[lo]
        parts.append(_pair_weights(g1, g2, sides, entry, partner_base.index_select(0, entry) + pair, min_weight))
        lo += size
    if not parts:
        empty = torch.empty(0, dtype=torch.long, device=g1.device)
        return SparseExpertWeights(empty, empty, empty, torch.empty(0, device=g1.device))
    token, i, j, weight = (torch.cat(column) for column in zip(*parts, strict=True))
    return SparseExpertWeights(token // T, token % T, i * E + j, weight)


class _Entries(NamedTuple):
    """Selected entries of both sides, with their head bitmasks (see sparse_expert_weights)."""

    token1: torch.Tensor
    i: torch.Tensor
    value1: torch.Tensor
    others1: torch.Tensor  # heads other than the entry's own selecting (token, i)
    earlier1: torch.Tensor  # those of them numbered before its own head
    j: torch.Tensor
    value2: torch.Tensor
    heads2: torch.Tensor  # every head selecting (token, j)


def _pair_weights(g1, g2, sides: _Entries, entry, partner, min_weight):
    """(token, i, j, weight) of candidate pairs (side-1 entry, side-2 entry of the same token and head):
    a pair also selected by an earlier head is dropped, so each (i, j) appears once."""
    heads2 = sides.heads2.index_select(0, partner)
    first = ((sides.earlier1.index_select(0, entry) & heads2) == 0).nonzero().squeeze(1)
    entry, partner, heads2 = entry.index_select(0, first), partner.index_select(0, first), heads2.index_select(0, first)
    weight = sides.value1.index_select(0, entry) * sides.value2.index_select(0, partner)
    multi = ((sides.others1.index_select(0, entry) & heads2) != 0).nonzero().squeeze(1)  # other heads select it too
    if multi.numel():
        t, mi, mj = (
            x.index_select(0, y)
            for x, y in ((sides.token1, entry[multi]), (sides.i, entry[multi]), (sides.j, partner[multi]))
        )
        weight[multi] = (g1[t, :, mi] * g2[t, :, mj]).sum(-1)  # the full sum over heads
    if min_weight > 0:
        strong = (weight >= min_weight).nonzero().squeeze(1)
        entry, partner, weight = (
            entry.index_select(0, strong),
            partner.index_select(0, strong),
            weight.index_select(0, strong),
        )
    return sides.token1.index_select(0, entry), sides.i.index_select(0, entry), sides.j.index_select(0, partner), weight


# -- the switched-off experts' weights, for ablation -------------------------------------------------------
class SwitchedOffSet(NamedTuple):
    """One layer's switched-off experts as the forward reads them: each (batch row, i, j) once, sorted. `bits`
    holds, per (batch row, i) that switches anything off, a bitset over j ([slots, ceil(E / 64)] int64, j at bit
    j % 64 of word j // 64); `slot` [batch_rows * E] int64 points each (batch row, i) at its bitset row, or -1
    where it switches nothing off. With one set for the whole batch, batch_rows is 1 and every row reads it, and
    the pairs are also laid out as a CSR pattern over [E, E] (for a few tokens, `switched_off_matrices` reads
    their weights directly)."""

    rows: torch.Tensor  # [A] i of each switched-off expert, sorted by (batch row, i, j)
    cols: torch.Tensor  # [A] j
    batch_rows: torch.Tensor | None  # [A] the batch row it is switched off in, or None for every row
    slot: torch.Tensor
    bits: torch.Tensor
    # one set for the whole batch only (else None): the pairs of row i are [row_starts[i], row_starts[i + 1]),
    # those of column j by_col[col_starts[j] : col_starts[j + 1]], by_col holding the pairs in (j, i) order
    row_starts: torch.Tensor | None  # [E + 1]
    by_col: torch.Tensor | None  # [A]
    col_starts: torch.Tensor | None  # [E + 1]


class SwitchedOffWeights(NamedTuple):
    """The non-zero weight terms of switched-off experts, one per (token, head, i, j) where that head selects
    both i and j: weight = g1[token, head, i] * g2[token, head, j], so the terms of one (token, i, j) sum to
    its w_ij. Subtracting each term's share of the output removes the expert exactly."""

    token: torch.Tensor  # flat token over the B*T tokens of the batch
    i: torch.Tensor
    j: torch.Tensor
    weight: torch.Tensor


class SwitchedOffMatrices(NamedTuple):
    """What switching a batch's experts off adds to a layer's gating sums: its SwitchedOffWeights with the terms of
    one (token, i, j) summed into w_ij, negated. Expert slots are token-major (slot = token * E + e over the batch's
    tokens). `rows` is a sparse CSR [slots, slots] matrix with -w_ij at (token * E + i, token * E + j), so adding
    `rows @ a2` to sum_j w_ij a'_j removes the switched-off experts' share of it at every (token, i); `cols`, its
    transpose (also CSR), does the same for sum_i w_ij a_i; `row_mass` and `col_mass` [slots], its row and column
    sums, for the gate mass sum_j w_ij and sum_i w_ij."""

    rows: torch.Tensor
    cols: torch.Tensor
    row_mass: torch.Tensor
    col_mass: torch.Tensor


# tokens x switched-off experts up to which a batch's switched-off weights are read directly, for every pair: a
# decode step's few tokens, where the ~85 small operations of the sparse path cost more than the arithmetic
DIRECT_PAIRS = 1 << 16


def switched_off_matrices(g1: torch.Tensor, g2: torch.Tensor, switched_off) -> SwitchedOffMatrices:
    """The SwitchedOffMatrices of routing g1, g2 [..., H, E] for `switched_off` (as in `switched_off_weights`).
    Built once per routing group (its layers share the routing): the sort here is paid once, and each layer
    then subtracts with two sparse matrix products whose cost follows the switched-off terms.

    A batch of a few tokens with one set for every row (tokens x switched-off experts <= DIRECT_PAIRS: a decode
    step) instead reads w_ij = sum_h g1[h, i] g2[h, j] of every switched-off (i, j) at once, zero or not, in
    fixed shapes (`_direct_matrices`): a dozen operations, none of a size that depends on the data. Larger
    batches take the sparse path, whose cost follows the router's sparsity, never tokens x switched-off experts."""
    if not isinstance(switched_off, SwitchedOffSet):
        switched_off = switched_off_set(*switched_off[:2], g1.shape[-1], *switched_off[2:], batch_size=g1.shape[0])
    experts = g1.shape[-1]
    tokens = g1.shape[:-2].numel()
    slots = tokens * experts
    if switched_off.batch_rows is None and tokens * len(switched_off.rows) <= DIRECT_PAIRS:
        return _direct_matrices(g1.reshape(tokens, -1, experts), g2.reshape(tokens, -1, experts), switched_off)
    weights = switched_off_weights(g1, g2, switched_off)
    key = (weights.token * experts + weights.i) * experts + weights.j
    pair, term_pair = torch.unique(key, return_inverse=True)  # (token, i, j) of each term, sorted, once each
    w = torch.zeros(len(pair), dtype=weights.weight.dtype, device=pair.device)
    w.index_add_(0, term_pair, weights.weight, alpha=-1)
    row, col = pair // experts, pair // (experts * experts) * experts + pair % experts
    by_col = torch.argsort(col * experts + row % experts)  # (token, j, i) order
    return SwitchedOffMatrices(
        _csr(_starts(row, slots), col, w, slots),
        _csr(
            _starts(col.index_select(0, by_col), slots), row.index_select(0, by_col), w.index_select(0, by_col), slots
        ),
        torch.bincount(row, w, minlength=slots),
        torch.bincount(col, w, minlength=slots),
    )


def _direct_matrices(g1: torch.Tensor, g2: torch.Tensor, switched_off: SwitchedOffSet) -> SwitchedOffMatrices:
    """SwitchedOffMatrices from g1, g2 [tokens, H, E], reading the weight of every switched-off pair of a set shared
    by the batch: each token's block holds the set's pattern, with zeros where no head selects both i and j."""
    tokens, _, experts = g1.shape
    rows, cols, by_col = switched_off.rows, switched_off.cols, switched_off.by_col
    per_entry1, per_entry2 = g1.transpose(1, 2), g2.transpose(1, 2)  # [tokens, E, H]: an entry's heads side by side
    w = torch.linalg.vecdot(per_entry1.index_select(1, rows), per_entry2.index_select(1, cols)).neg_()
    slots = tokens * experts
    return SwitchedOffMatrices(
        _csr(*_blocks(switched_off.row_starts, cols, tokens, experts), w.view(-1), slots),
        _csr(
            *_blocks(switched_off.col_starts, rows.index_select(0, by_col), tokens, experts),
            w.index_select(1, by_col).view(-1),
            slots,
        ),
        torch.zeros(tokens, experts, dtype=w.dtype, device=w.device).index_add_(1, rows, w).view(-1),
        torch.zeros(tokens, experts, dtype=w.dtype, device=w.device).index_add_(1, cols, w).view(-1),
    )


def _blocks(starts: torch.Tensor, index: torch.Tensor, tokens: int, experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(crow, col) indices of a block-diagonal matrix that repeats the [E, E] CSR pattern (starts, index) once per
    token; a decode step's one token reads the pattern as it is."""
    if tokens == 1:
        return starts, index
    block = torch.arange(tokens, device=index.device)[:, None]
    crow = torch.cat(((starts[:-1] + block * len(index)).view(-1), starts[-1:] * tokens))
    return crow, (index + block * experts).view(-1)


# torch warns, once a process, that its sparse CSR support is in beta; the one product used here has long been stable
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def _csr(starts: torch.Tensor, col: torch.Tensor, value: torch.Tensor, size: int) -> torch.Tensor:
    """A [size, size] sparse CSR matrix from its crow indices (`_starts`) and entries sorted by (row, col), with no
    repeats (CSR's invariants, which the callers here guarantee; checking them would cost as much as the product)."""
    return torch.sparse_csr_tensor(starts, col, value, (size, size), check_invariants=False)


def switched_off_set(rows, cols, experts: int, batch_rows=None, batch_size: int = 1) -> SwitchedOffSet:
    """The SwitchedOffSet of experts (rows[a], cols[a]), switched off in batch row batch_rows[a] (a RowAblation)
    or, without batch_rows, in every row."""
    words = -(-experts // 64)
    owner = rows if batch_rows is None else batch_rows * experts + rows  # (batch row, i)
    flat = torch.unique(owner * (words * 64) + cols)  # unique and sorted, so adding bits below sets them
    owner, word, bit = flat // (words * 64), flat % (words * 64) // 64, flat % 64
    used, slot_of_entry = torch.unique(owner, return_inverse=True)
    slot = torch.full(((1 if batch_rows is None else batch_size) * experts,), -1, dtype=torch.long, device=rows.device)
    slot[used] = torch.arange(len(used), device=rows.device)
    bits = torch.zeros(len(used) * words, dtype=torch.long, device=rows.device)
    bits.index_add_(0, slot_of_entry * words + word, torch.ones_like(bit) << bit)
    rows, cols = owner % experts, word * 64 + bit
    if batch_rows is not None:
        return SwitchedOffSet(rows, cols, owner // experts, slot, bits.view(len(used), words), None, None, None)
    by_col = torch.argsort(cols * experts + rows)
    row_starts, col_starts = (_starts(sorted_index, experts) for sorted_index in (rows, cols.index_select(0, by_col)))
    return SwitchedOffSet(rows, cols, None, slot, bits.view(len(used), words), row_starts, by_col, col_starts)


def _starts(index: torch.Tensor, size: int) -> torch.Tensor:
    """[size + 1]: where each value's run begins in the sorted `index` (a CSR matrix's crow indices)."""
    starts = torch.zeros(size + 1, dtype=torch.long, device=index.device)
    torch.cumsum(torch.bincount(index, minlength=size), 0, out=starts[1:])
    return starts


def switched_off_weights(g1: torch.Tensor, g2: torch.Tensor, switched_off) -> SwitchedOffWeights:
    """The SwitchedOffWeights of a batch's routing g1, g2 [B, T, H, E] for `switched_off`: a SwitchedOffSet, or
    (rows, cols) switched off in every row, or (rows, cols, batch_rows).

    The cost follows the router's sparsity, not tokens x switched-off experts: each (token, head) selects
    about k entries per side, so for each selected side-1 entry (token, head, i) one AND of the set's
    bitset of row i with the head's selected side-2 entries (E / 64 words) finds the switched-off j that
    this head also selects. Rows i that switch nothing off are skipped before any AND."""
    if not isinstance(switched_off, SwitchedOffSet):
        switched_off = switched_off_set(*switched_off[:2], g1.shape[-1], *switched_off[2:], batch_size=g1.shape[0])
    T, H, E = g1.shape[-3:]
    g1, g2 = g1.reshape(-1, E), g2.reshape(-1, E)  # [tokens * H, E]
    head_token, i = (g1 > 0).nonzero(as_tuple=True)  # selected side-1 entries, one per (token, head, i)
    owner = i if switched_off.batch_rows is None else head_token // (H * T) * E + i
    slot = switched_off.slot.index_select(0, owner)
    kept = (slot >= 0).nonzero().squeeze(1)
    head_token, i, slot = head_token.index_select(0, kept), i.index_select(0, kept), slot.index_select(0, kept)
    both = switched_off.bits.index_select(0, slot)  # [entries, words]
    both &= _pack_bits(g2 > 0).index_select(0, head_token)
    words = both.shape[1]
    both = both.view(-1)
    hit_words = both.nonzero().squeeze(1)
    word_of_bit, bit = _set_bits(both.index_select(0, hit_words))
    hit_words = hit_words.index_select(0, word_of_bit)
    entry, j = hit_words // words, hit_words % words * 64 + bit
    head_token, i = head_token.index_select(0, entry), i.index_select(0, entry)
    weight = g1.view(-1).index_select(0, head_token * E + i) * g2.view(-1).index_select(0, head_token * E + j)
    return SwitchedOffWeights(head_token // H, i, j, weight)


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """[R, E] bool -> [R, ceil(E / 64)] int64 bitsets (entry e at bit e % 64 of word e // 64)."""
    R, E = mask.shape
    words = -(-E // 64)
    if E % 64:
        mask = torch.nn.functional.pad(mask, (0, words * 64 - E))
    byte_bits = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=mask.device)
    packed = (mask.reshape(R, words * 8, 8).view(torch.uint8) * byte_bits).sum(-1, dtype=torch.uint8)
    return packed.view(torch.int64)  # little-endian: byte k of a word holds entries 8k .. 8k + 7


def _set_bits(words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index into `words`, bit position 0..63) of every set bit of the int64 `words`, in order."""
    as_bytes = words.view(torch.uint8)  # assumes a little-endian machine, as _pack_bits does
    byte = as_bytes.nonzero().squeeze(1)  # word * 8 + byte within it
    shifts = torch.arange(8, dtype=torch.uint8, device=words.device)
    at, bit = (as_bytes.index_select(0, byte).unsqueeze(1) >> shifts & 1).nonzero(as_tuple=True)
    byte = byte.index_select(0, at)
    return byte // 8, byte % 8 * 8 + bit
