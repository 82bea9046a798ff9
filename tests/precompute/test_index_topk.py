"""The streaming state (precompute.topk) on synthetic activations: batch splits, shard merges, brute force."""

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from precompute.indexing import topk
from precompute.indexing.topk import EMPTY_ADDRESS, ExpertState, make_address, place_key, sample_priority

N_SLOTS, K, SAMPLES, WINDOW = 12, 3, 2, 3
EDGES = torch.logspace(-2, 0, 5, dtype=torch.float64)


class Stream:
    """One synthetic stream of activations; `context` answers for a batch slice like BatchCandidates does."""

    def __init__(self, seed: int, n: int):
        gen = torch.Generator().manual_seed(seed)
        self.slot = torch.randint(0, N_SLOTS, (n,), generator=gen)
        self.weight = (torch.randint(1, 40, (n,), generator=gen) / 40).float()  # coarse: many exact ties
        place = torch.randperm(10 * n, generator=gen)[:n].long()
        self.address = make_address(place % 7, place // 7)  # a few documents, many places in each
        self.hash = torch.randint(0, 6, (n,), generator=gen).long()  # few distinct windows: many duplicates
        self.domain = torch.randint(-1, 2, (n,), generator=gen)

    def feed(self, state: ExpertState, start: int, stop: int) -> None:
        part = slice(start, stop)
        stream = self

        class Context:
            def window_hash(self, index):
                return stream.hash[part][index]

            def window_weights(self, index):
                address = stream.address[part][index]
                return (address[:, None] % 251).to(torch.uint8).expand(-1, WINDOW), address.float()

        state.add(self.slot[part], self.weight[part], self.address[part], self.domain[part], Context())
        state.count_tokens(self.address[part] % 11)  # some token ids, so the counts merge too


def new_state(compiled: bool | None = None) -> ExpertState:
    state = ExpertState(N_SLOTS, K, SAMPLES, WINDOW, EDGES, compiled=compiled)
    for name in ("a", "b"):
        state.domain_index(name)
    return state


def rows(state: ExpertState):
    banks = []
    for bank in (state.top, state.sample):
        valid = bank.address != EMPTY_ADDRESS
        banks.append(
            [
                (
                    s,
                    bank.address[s][valid[s]].tolist(),
                    bank.weight[s][valid[s]].tolist(),
                    bank.window[s][valid[s]].tolist(),
                    bank.window_max[s][valid[s]].tolist(),
                )
                for s in range(N_SLOTS)
            ]
        )
    return (
        banks,
        state.active_count.tolist(),
        state.weight_sum.tolist(),
        state.histogram.tolist(),
        state.domain_weight_sum.tolist(),
        state.weight_max.tolist(),
        state.token_counts.tolist(),
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    absorb_slots=st.sampled_from([1, 3, topk.ABSORB_SLOTS]),
)
def test_batches_and_shards_give_the_same_state(seed, n, cuts, absorb_slots):
    stream = Stream(seed, n)
    whole = new_state()
    stream.feed(whole, 0, n)
    batched = new_state()
    bounds = sorted({0, n, *(c % (n + 1) for c in cuts)})
    for start, stop in zip(bounds, bounds[1:], strict=False):
        stream.feed(batched, start, stop)
    halves = new_state(), new_state()
    stream.feed(halves[0], 0, n // 2)
    stream.feed(halves[1], n // 2, n)
    halves[1].domain_index("c")  # domain columns in another order still line up
    default, topk.ABSORB_SLOTS = topk.ABSORB_SLOTS, absorb_slots  # absorbed a slice of slots at a time, or whole
    try:
        halves[0].absorb(halves[1])
    finally:
        topk.ABSORB_SLOTS = default
    assert rows(batched)[:2] == rows(whole)[:2]  # sums may round differently across splits
    assert rows(halves[0])[0] == rows(whole)[0]
    assert rows(batched)[-1] == rows(halves[0])[-1] == rows(whole)[-1]  # token counts

    # brute force: dedupe by window hash, top K by (weight desc, place key asc); bottom-k priority sample
    frame = pd.DataFrame(
        {
            "slot": stream.slot,
            "weight": stream.weight,
            "address": stream.address,
            "tie": place_key(stream.address),
            "hash": stream.hash,
            "priority": sample_priority(stream.address, stream.slot),
        }
    )
    best = frame.sort_values(["slot", "hash", "weight", "tie"], ascending=[True, True, False, True])
    best = best.drop_duplicates(["slot", "hash"])
    best = best.sort_values(["slot", "weight", "tie"], ascending=[True, False, True]).groupby("slot").head(K)
    sample = frame.sort_values(["slot", "priority", "address"]).groupby("slot").head(SAMPLES)
    top_rows, sample_rows = rows(whole)[0]
    assert [r[1] for r in top_rows] == [best[best["slot"] == s]["address"].tolist() for s in range(N_SLOTS)]
    assert [r[1] for r in sample_rows] == [sample[sample["slot"] == s]["address"].tolist() for s in range(N_SLOTS)]
    assert whole.active_count.tolist() == frame["slot"].value_counts().reindex(range(N_SLOTS), fill_value=0).tolist()
    assert whole.token_counts.tolist() == np.bincount((stream.address % 11).numpy()).tolist()


def test_place_keys_are_distinct_and_unlike_corpus_order():
    """Ties are broken by the place key: one key per place (a bijection), in an order unrelated to the corpus'."""
    doc, position = np.meshgrid(np.arange(300), np.arange(300), indexing="ij")
    address = make_address(doc.ravel(), position.ravel())
    keys = place_key(address)
    assert len(np.unique(keys)) == len(keys) and (keys >= 0).all() and (keys < 2**62).all()
    assert place_key(torch.from_numpy(address)).tolist() == keys.tolist()  # numpy and torch agree
    first = np.argsort(keys)[:32]  # the 32 places a tie of all 90,000 would keep: spread over the documents
    assert len(set(doc.ravel()[first])) >= 28 and np.ptp(doc.ravel()[first]) > 200


def test_checkpoint_round_trip():
    stream = Stream(1, 200)
    state = new_state()
    stream.feed(state, 0, 200)
    state.tokens_processed = 99
    again = ExpertState.from_state_dict(state.state_dict())
    assert rows(again) == rows(state) and again.tokens_processed == 99 and again.domains == ["a", "b"]
    assert again.token_counts.sum() == 200
    stream.feed(state, 0, 0)
    assert state.memory_bytes() == again.memory_bytes() > 0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    stage_limit=st.integers(0, 200),
    resume_at=st.integers(0, 6),
)
def test_staged_merges_give_the_same_banks_bit_for_bit(seed, n, cuts, stage_limit, resume_at):
    """Staging (any flush bound, any batch split, a checkpoint/resume between batches) equals merging each batch
    at once, tensor for tensor: a stale bar only lets more candidates through, and the flush is exact."""
    stream = Stream(seed, n)
    reference = new_state(compiled=False)
    for bank in (reference.top, reference.sample):
        bank.stage_limit = 0  # no staging: every batch merged into the rows at once
    stream.feed(reference, 0, n)

    staged = new_state(compiled=False)
    for bank in (staged.top, staged.sample):
        bank.stage_limit = stage_limit
    bounds = [0, *sorted(c % (n + 1) for c in cuts), n]
    for number, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if number == resume_at:  # checkpoint and resume: the saved state must hold the staged entries too
            staged = ExpertState.from_state_dict(staged.state_dict(), compiled=False)
            for bank in (staged.top, staged.sample):
                bank.stage_limit = stage_limit
        stream.feed(staged, start, stop)
    assert_same_banks(staged.state_dict(), reference.state_dict())


def assert_same_banks(got: dict, expected: dict) -> None:
    """Both banks of two state dicts equal, tensor for tensor."""
    for bank in ("top", "sample"):
        for name, tensor in expected[bank].items():
            assert torch.equal(got[bank][name], tensor), (bank, name)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 400),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    switch_at=st.integers(0, 6),
)
def test_compiled_update_equals_the_torch_update_tensor_for_tensor(seed, n, cuts, switch_at):
    """The CPU's compiled loop and the vectorised torch update (the GPU's) give the same state, whatever the batch
    split, and a state can pass from one to the other between batches (a checkpoint written by either)."""
    stream = Stream(seed, n)
    reference = new_state(compiled=False)
    stream.feed(reference, 0, n)
    compiled = new_state(compiled=True)
    bounds = [0, *sorted(c % (n + 1) for c in cuts), n]
    for number, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if number == switch_at:  # the torch update takes over for a batch, then the compiled one again
            compiled.compiled = False
        stream.feed(compiled, start, stop)
        compiled.compiled = True
    expected, got = reference.state_dict(), compiled.state_dict()
    assert_same_banks(got, expected)
    for name in ("weight_max", "histogram", "token_counts"):
        assert torch.equal(got[name], expected[name]), name
    for name in ("weight_sum", "domain_weight_sum"):  # float64 sums: the same terms, possibly another order
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=0)
    assert torch.equal(compiled.top.bar, reference.top.bar) and torch.equal(compiled.sample.bar, reference.sample.bar)


def test_bin_starts_give_every_float32_weight_its_histogram_bin():
    """The compiled update finds a weight's bin among the bins' smallest weights: the same bin as the formula,
    for weights at, next to and between the starts, and across the whole range."""
    state = ExpertState(4, 2, 2, 3, torch.logspace(-2, torch.log10(torch.tensor(8.0)).item(), 17, dtype=torch.float64))
    starts = torch.from_numpy(state.histogram_starts)
    bits = starts.view(torch.int32)
    near = torch.cat([bits - 1, bits, bits + 1]).view(torch.float32)
    gen = torch.Generator().manual_seed(0)
    spread = torch.cat([10 ** (torch.rand(100_000, generator=gen) * 4 - 3), torch.tensor([0.0, 1e-30, 1e30])])
    for weight in (near, spread.float()):
        assert torch.equal(torch.searchsorted(starts, weight, right=True), state.histogram_bin(weight))
    assert (starts[1:] > starts[:-1]).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), context=st.integers(0, 4))
def test_compiled_window_weights_equal_the_torch_windows(seed, context):
    """The CPU's compiled window loop gives the windows of the torch formula: w_ij summed over heads at each
    position around the candidate, zero outside its document, quantised by topk.quantise_window."""
    from precompute.indexing import topk_cpu

    gen = torch.Generator().manual_seed(seed)
    B, T, H, E, n = 3, 12, 4, 6, 50
    g1, g2, lengths = router_like(gen, B, T, H, E)
    row = torch.randint(0, B, (n,), generator=gen)
    position = (torch.rand(n, generator=gen) * lengths[row]).long()
    i, j = torch.randint(0, E, (n,), generator=gen), torch.randint(0, E, (n,), generator=gen)
    windows, maxima = topk_cpu.window_weights(g1, g2, row, position, i, j, lengths, context)
    around = position[:, None] + torch.arange(-context, context + 1)
    inside = (around >= 0) & (around < lengths[row, None])
    at = around.clamp(0, T - 1)
    rows = row[:, None].expand_as(at)
    weights = (g1[rows, at, :, i[:, None]] * g2[rows, at, :, j[:, None]]).sum(-1) * inside
    expected_windows, expected_maxima = topk.quantise_window(weights)
    assert torch.equal(maxima, expected_maxima)
    assert torch.equal(windows, expected_windows)
    assert (maxima > 0).any() and (windows == 0).any()  # the draw has both active and silent positions


def router_like(gen, B, T, H, E):
    """g1, g2 [B, T, H, E] as a router gives them (each head keeps 2 of E entries, softmax-normalised, zero
    elsewhere) and the rows' lengths [B] (one full, one shorter, one of a single token)."""
    routing = []
    for _ in range(2):
        logits = torch.randn(B, T, H, E, generator=gen)
        keep = logits >= logits.topk(2, dim=-1).values[..., -1:]
        routing.append(torch.where(keep, logits, -torch.inf).softmax(-1))
    return *routing, torch.tensor([T, T - 5, 1])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), asks=st.lists(st.lists(st.integers(0, 39), max_size=30), min_size=1, max_size=4))
def test_batch_candidates_answer_every_ask_as_if_it_were_the_first(seed, asks):
    """BatchCandidates computes each window once per batch and remembers it: asked in any order, with repeats and
    with activations already asked for, it answers what a fresh one answers."""
    from precompute.indexing.candidates import BatchCandidates

    gen = torch.Generator().manual_seed(seed)
    B, T, H, E, n = 3, 12, 4, 6, 40
    g1, g2, lengths = router_like(gen, B, T, H, E)
    row = torch.randint(0, B, (n,), generator=gen)
    position = (torch.rand(n, generator=gen) * lengths[row]).long()
    expert = torch.randint(0, E * E, (n,), generator=gen)
    hashes = torch.randint(0, 1 << 40, (B, T), generator=gen)

    def candidates():
        return BatchCandidates(g1, g2, row, position, expert, lengths, hashes, 2)

    remembering = candidates()
    for ask in asks:
        index = torch.tensor(ask, dtype=torch.long)
        got, fresh = remembering.window_weights(index), candidates().window_weights(index)
        assert torch.equal(got[0], fresh[0]) and torch.equal(got[1], fresh[1])
        assert got[0].shape == (len(ask), 5)
