"""The per-batch update of ExpertState compiled for the CPU (numba): one pass over the activations.

The torch update (precompute.indexing.topk) is vectorised for a GPU: it sorts and merges whole rows. On a
CPU that costs microseconds per entering activation, and while the banks fill nearly every activation
enters (a 10M-token run at the published shapes inserts some 360M entries). Here each activation is
handled where it lands, in a loop compiled by numba:

- its statistics are added to its slot's sums, maximum, histogram bin and domain sum;
- it is tested against each bank's bar (the row's last entry, a small contiguous array) and, where it
  passes, inserted into the slot's row by the same rules as the torch merge: the top-K ordered by
  (weight desc, place key asc) with one entry per window hash (the better of two stays), the sample by
  (priority asc, address asc);
- windows are filled in after the batch, only for the entries that are still in a row then, by one
  call of the batch's `window_weights` (precompute.indexing.candidates), in a second small pass.

The activations are first put in slot order (a stable counting sort, their fields gathered so the pass
reads them in sequence) and each thread takes a range of slots: every slot sees its activations in stream
order, so the result does not depend on the number of threads, and rows and statistics are read nearly in
sequence instead of a cache miss each at random. Rows, bars and statistics are the torch tensors
themselves (shared memory through .numpy()): a state can move between this update and the torch one at
any batch, and is equal tensor for tensor (tests/precompute).
"""

import numba
import numpy as np
import torch
from numba import njit, prange

from precompute.indexing.topk import _MULTIPLIERS, _PRIME, ADDRESS_SHIFT, EMPTY_ADDRESS, NO_PRIORITY

_ADDRESS_MASK = (1 << ADDRESS_SHIFT) - 1


@njit(inline="always")
def _place_round(x, multiplier):
    return ((x * x) % _PRIME * multiplier + 91_138_233) % _PRIME


@njit(inline="always")
def _place_key(address):
    """topk.place_key for one address (the same Feistel rounds, the same int64 arithmetic)."""
    left, right = (address >> ADDRESS_SHIFT) % _PRIME, (address & _ADDRESS_MASK) % _PRIME
    right = (right + _place_round(left, _MULTIPLIERS[0])) % _PRIME
    left = (left + _place_round(right, _MULTIPLIERS[1])) % _PRIME
    right = (right + _place_round(left, _MULTIPLIERS[2])) % _PRIME
    return (left << 31) | right


@njit(inline="always")
def _sample_priority(address, slot):
    """topk.sample_priority for one activation."""
    doc, position = address >> ADDRESS_SHIFT, address & _ADDRESS_MASK
    h0 = ((doc * _MULTIPLIERS[2] + position) % _PRIME * _MULTIPLIERS[2] + slot) % _PRIME
    h1 = ((doc * _MULTIPLIERS[3] + position) % _PRIME * _MULTIPLIERS[3] + slot) % _PRIME
    return (((h0 * h0 + 12_345) % _PRIME) << 31) | ((h1 * h1 + 12_345) % _PRIME)


@njit(inline="always")
def _ranks_before(w, tie, row_weight, row_address, k):
    """Whether (w, tie) ranks before the top-K entry k: weight desc, place key asc (computed only on a tie)."""
    other = row_weight[k]
    if w != other:
        return w > other
    return tie < _place_key(row_address[k])


@njit(inline="always")
def _copy_entry(row_w, row_a, row_k, window, window_max, s, to, source):
    """Entry `source` of row s is copied over entry `to` (window byte by byte: no slice views made per entry)."""
    row_w[s, to], row_a[s, to], row_k[s, to] = row_w[s, source], row_a[s, source], row_k[s, source]
    for x in range(window.shape[2]):
        window[s, to, x] = window[s, source, x]
    window_max[s, to] = window_max[s, source]


@njit(inline="always")
def _shift_right(row_w, row_a, row_k, window, window_max, s, first, last):
    """Entries first .. last - 1 of row s move one place right (entry last is overwritten)."""
    for k in range(last, first, -1):
        _copy_entry(row_w, row_a, row_k, window, window_max, s, k, k - 1)


@njit(inline="always")
def _insert_top(s, w, address, key, weight_row, address_row, key_row, window, window_max, bar):
    """Insert one candidate into top-K row s (it passed the bar). Returns True when it entered."""
    K = weight_row.shape[1]
    filled = K
    if bar[s] == -np.inf:  # not full: entries 0 .. filled - 1 are taken (a full row has a finite bar)
        for k in range(K):
            if address_row[s, k] == EMPTY_ADDRESS:
                filled = k
                break
    duplicate = -1
    for k in range(filled):
        if key_row[s, k] == key:
            duplicate = k
            break
    tie = _place_key(address)
    if duplicate >= 0:  # the same window text is in the row: the better of the two stays
        if not _ranks_before(w, tie, weight_row[s], address_row[s], duplicate):
            return False
        for k in range(duplicate, filled - 1):  # remove it: the rest moves one place left
            _copy_entry(weight_row, address_row, key_row, window, window_max, s, k, k + 1)
        filled -= 1
        address_row[s, filled] = EMPTY_ADDRESS
    elif filled == K and not _ranks_before(w, tie, weight_row[s], address_row[s], K - 1):
        return False
    place = filled
    for k in range(filled):
        if _ranks_before(w, tie, weight_row[s], address_row[s], k):
            place = k
            break
    _shift_right(weight_row, address_row, key_row, window, window_max, s, place, min(filled, K - 1))
    weight_row[s, place], address_row[s, place], key_row[s, place] = w, address, key
    if address_row[s, K - 1] != EMPTY_ADDRESS:
        bar[s] = weight_row[s, K - 1]
    return True


@njit(inline="always")
def _insert_sample(s, w, address, priority, weight_row, address_row, key_row, window, window_max, bar):
    """Insert one candidate into sample row s (bottom-k by (priority, address)). Returns True when it entered."""
    K = weight_row.shape[1]
    filled = K
    if bar[s] == NO_PRIORITY:  # not full
        for k in range(K):
            if address_row[s, k] == EMPTY_ADDRESS:
                filled = k
                break
    place = filled
    for k in range(filled):
        if priority < key_row[s, k] or (priority == key_row[s, k] and address < address_row[s, k]):
            place = k
            break
    if place == K:
        return False
    _shift_right(weight_row, address_row, key_row, window, window_max, s, place, min(filled, K - 1))
    weight_row[s, place], address_row[s, place], key_row[s, place] = w, address, priority
    if address_row[s, K - 1] != EMPTY_ADDRESS:
        bar[s] = key_row[s, K - 1]
    return True


@njit(cache=True)
def _by_slot(slot, threads):
    """The activations sorted by slot, stably (a counting sort: each slot's in stream order), and the slot range
    cut into `threads` parts: thread t visits order[bounds[t] : bounds[t + 1]]. Visited in slot order, the rows
    and statistics are read nearly in sequence (a batch touches most of a group's slots about once), which the
    memory prefetches, instead of a cache miss for each of them at random."""
    low = slot.min()
    span = slot.max() - low + 1
    starts = np.zeros(span + 1, dtype=np.int64)
    for n in range(slot.shape[0]):
        starts[slot[n] - low + 1] += 1
    starts = np.cumsum(starts)
    bounds = np.empty(threads + 1, dtype=np.int64)
    for t in range(threads + 1):
        bounds[t] = starts[span * t // threads]
    order, filled = np.empty(slot.shape[0], dtype=np.int64), starts[:-1]
    for n in range(slot.shape[0]):
        order[filled[slot[n] - low]] = n
        filled[slot[n] - low] += 1
    return order, bounds


@njit(parallel=True, cache=True)
def _update(
    slot, weight, address, domain, window_hash,  # the batch's activations
    weight_sum, weight_max, histogram, bin_starts, domain_weight_sum,  # statistics
    top_weight, top_address, top_key, top_window, top_window_max, top_bar,
    sample_weight, sample_address, sample_key, sample_window, sample_window_max, sample_bar,
    entered,  # [threads, 2, n] out: the activations each thread inserted into the top / sample rows
    entered_count,  # [threads, 2] out
):  # fmt: skip
    threads = entered.shape[0]
    order, bounds = _by_slot(slot, threads)
    # the activations' fields gathered in slot order, so that the pass below reads them in sequence
    slot_, weight_, address_ = np.empty_like(slot), np.empty_like(weight), np.empty_like(address)
    domain_, hash_ = np.empty_like(domain), np.empty_like(window_hash)
    for p in prange(order.shape[0]):
        n = order[p]
        slot_[p], weight_[p], address_[p] = slot[n], weight[n], address[n]
        domain_[p], hash_[p] = domain[n], window_hash[n]
    for part in prange(threads):
        top_n = sample_n = 0
        for p in range(bounds[part], bounds[part + 1]):
            s = slot_[p]
            w, a = weight_[p], address_[p]
            weight_sum[s] += np.float64(w)
            weight_max[s] = max(weight_max[s], w)
            histogram[s, np.searchsorted(bin_starts, w, side="right")] += 1
            if domain_[p] >= 0:
                domain_weight_sum[s, domain_[p]] += np.float64(w)
            if w >= top_bar[s] and _insert_top(
                s, w, a, hash_[p], top_weight, top_address, top_key, top_window, top_window_max, top_bar
            ):
                entered[part, 0, top_n] = order[p]
                top_n += 1
            priority = _sample_priority(a, s)
            if priority <= sample_bar[s] and _insert_sample(
                s, w, a, priority, sample_weight, sample_address, sample_key, sample_window, sample_window_max,
                sample_bar,
            ):  # fmt: skip
                entered[part, 1, sample_n] = order[p]
                sample_n += 1
        entered_count[part, 0], entered_count[part, 1] = top_n, sample_n


@njit(parallel=True, cache=True)
def _still_in_rows(slot, address, entered, entered_count, top_address, sample_address, place):
    """The entries inserted this batch that are still in their row: place[bank, n] = their column, else -1;
    returns the mask of the activations whose windows are needed. Each thread reads its own part's rows."""
    needed = np.zeros(slot.shape[0], dtype=np.bool_)
    for part in prange(entered.shape[0]):
        for bank in range(2):
            rows = top_address if bank == 0 else sample_address
            for e in range(entered_count[part, bank]):
                n = entered[part, bank, e]
                s = slot[n]
                for k in range(rows.shape[1]):
                    if rows[s, k] == address[n]:
                        place[bank, n] = k
                        needed[n] = True
                        break
    return needed


@njit(parallel=True, cache=True)
def _fill_windows(slot, entered, entered_count, place, row_of, windows, maxima, bank_windows, bank_maxima):
    """Write the computed windows into the rows, visiting the entries as they entered (in slot order), each
    thread its own part's rows."""
    for part in prange(entered.shape[0]):
        for bank in range(2):
            window, window_max = bank_windows[bank], bank_maxima[bank]
            for e in range(entered_count[part, bank]):
                n = entered[part, bank, e]
                k = place[bank, n]
                if k >= 0:
                    window[slot[n], k, :] = windows[row_of[n]]
                    window_max[slot[n], k] = maxima[row_of[n]]


def update(state, slot, weight, address, domain, context) -> None:
    """Add one batch's activations (flat, all >= min_weight) to a CPU ExpertState: statistics, both banks, and
    the windows of what entered (context: a CandidateContext, asked once for the hashes, once for windows)."""
    n = slot.numel()
    if n == 0:
        return
    numbers = {
        "slot": slot.contiguous().numpy(),
        "weight": weight.float().contiguous().numpy(),
        "address": address.contiguous().numpy(),
        "domain": domain.long().contiguous().numpy(),
        "window_hash": context.window_hash(torch.arange(n)).long().contiguous().numpy(),
    }
    top, sample = state.top.tensors(), state.sample.tensors()
    bank_arrays = [
        [bank[name].numpy() for name in ("weight", "address", "key", "window", "window_max")] for bank in (top, sample)
    ]
    threads = numba.get_num_threads()
    entered = np.empty((threads, 2, n), dtype=np.int64)
    entered_count = np.zeros((threads, 2), dtype=np.int64)
    _update(
        *numbers.values(),
        state.weight_sum.numpy(),
        state.weight_max.numpy(),
        state.histogram.numpy(),
        state.histogram_starts,
        state.domain_weight_sum.numpy(),
        *bank_arrays[0],
        state.top.bar.numpy(),
        *bank_arrays[1],
        state.sample.bar.numpy(),
        entered,
        entered_count,
    )
    place = np.full((2, n), -1, dtype=np.int64)
    needed = _still_in_rows(
        numbers["slot"], numbers["address"], entered, entered_count, top["address"].numpy(),
        sample["address"].numpy(), place,
    )  # fmt: skip
    index = torch.from_numpy(needed).nonzero().squeeze(1)
    if index.numel() == 0:
        return
    windows, maxima = context.window_weights(index)
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[index.numpy()] = np.arange(index.numel())
    _fill_windows(
        numbers["slot"], entered, entered_count, place, row_of, windows.contiguous().numpy(),
        maxima.float().contiguous().numpy(), (top["window"].numpy(), sample["window"].numpy()),
        (top["window_max"].numpy(), sample["window_max"].numpy()),
    )  # fmt: skip


@njit(parallel=True, cache=True)
def _window_weights(g1, g2, row, position, i, j, lengths, context, windows, maxima):
    """candidates.BatchCandidates' window weights on a CPU: per candidate, w_ij at the 2 * context + 1 positions
    around it (0 outside its document), quantised to uint8 of the window's maximum, as topk.quantise_window."""
    H = g1.shape[2]
    weights = np.zeros((row.shape[0], windows.shape[1]), dtype=np.float32)
    for c in prange(row.shape[0]):
        b, length, largest = row[c], lengths[row[c]], np.float32(0)
        for o in range(windows.shape[1]):
            p = position[c] - context + o
            if 0 <= p < length:
                w = np.float32(0)
                for h in range(H):  # no test for a zero g1 (most are): a branch that often mispredicts costs more
                    w += g1[b, p, h, i[c]] * g2[b, p, h, j[c]]
                weights[c, o] = w
                largest = max(largest, w)
        maxima[c] = largest
        scale = max(largest, np.float32(1e-30))
        for o in range(windows.shape[1]):
            windows[c, o] = np.uint8(min(max(np.rint(weights[c, o] / scale * np.float32(255)), 0), 255))


def window_weights(g1, g2, row, position, i, j, lengths, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 2 * context + 1] uint8 windows and [n] float32 maxima of the candidates (row, position, i, j) of a
    batch's routing g1, g2 [B, T, H, E] (contiguous, on the CPU)."""
    n = row.numel()
    windows, maxima = np.empty((n, 2 * context + 1), dtype=np.uint8), np.empty(n, dtype=np.float32)
    arrays = (t.contiguous().numpy() for t in (g1.float(), g2.float(), row, position, i, j, lengths))
    _window_weights(*arrays, context, windows, maxima)
    return torch.from_numpy(windows), torch.from_numpy(maxima)
