"""The switched-off experts' weights (the cost of ablation follows the router's sparsity) against the definition,
up to the 20,000-per-layer cap at the published E = 512, and the sharing of one computation by a group's layers."""

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.model import sparse
from explorer.model.ablation import Ablation, RowAblation, SwitchingOff
from explorer.model.monet import MonetConfig, MonetMoHDE, MonetMoVDE
from explorer.model.naming import ModelShape
from explorer.model.sparse import _set_bits, switched_off_matrices, switched_off_set, switched_off_weights


def router_like(seed, B, T, H, E, topk):
    """(g1, g2) [B, T, H, E] as the router makes them: per head a softmax over about topk random entries."""
    gen = torch.Generator().manual_seed(seed)

    def one():
        keep = torch.rand(B, T, H, E, generator=gen) < topk / E
        keep[..., 0] |= ~keep.any(-1)  # at least one entry per head
        return torch.softmax(torch.randn(B, T, H, E, generator=gen).masked_fill(~keep, float("-inf")), dim=-1)

    return one(), one()


def dense_switched_off(g1, g2, rows, cols, batch_rows=None):
    """The definition, [B, T, E, E]: w_ij = sum_h g1[h, i] g2[h, j] where (i, j) is switched off in that row."""
    B, T, H, E = g1.shape
    w = torch.einsum("bthi,bthj->btij", g1.double(), g2.double())
    off = torch.zeros(B, E, E, dtype=torch.bool)
    off[batch_rows if batch_rows is not None else slice(None), rows, cols] = True
    return w * off[:, None]


def summed_terms(weights, B, T, E):
    """SwitchedOffWeights -> dense [B, T, E, E], the terms of one (token, i, j) summed."""
    dense = torch.zeros(B * T * E * E, dtype=torch.float64)
    dense.index_add_(0, (weights.token * E + weights.i) * E + weights.j, weights.weight.double())
    return dense.view(B, T, E, E)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    H=st.integers(1, 6),
    E=st.sampled_from([2, 5, 16, 63, 64, 65, 130]),
    share=st.floats(0.0, 1.0),
    per_row=st.booleans(),
)
def test_switched_off_weights_equal_the_definition(seed, B, T, H, E, share, per_row):
    g1, g2 = router_like(seed, B, T, H, E, topk=max(1, E // 4))
    gen = torch.Generator().manual_seed(seed + 1)
    count = int(share * E * E * (B if per_row else 1))
    rows, cols = torch.randint(E, (count,), generator=gen), torch.randint(E, (count,), generator=gen)
    batch_rows = torch.randint(B, (count,), generator=gen) if per_row else None
    pairs = (rows, cols) if batch_rows is None else (rows, cols, batch_rows)
    weights = switched_off_weights(g1, g2, pairs)
    assert (weights.weight > 0).all(), "a term is kept only where one head selects both i and j"
    expected = dense_switched_off(g1, g2, rows, cols, batch_rows)
    torch.testing.assert_close(summed_terms(weights, B, T, E), expected, atol=1e-7, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 3),
    T=st.integers(1, 4),
    H=st.integers(1, 4),
    E=st.sampled_from([2, 5, 16, 65]),
    share=st.floats(0.0, 1.0),
)
def test_switched_off_matrices_hold_each_weight_once_in_valid_csr_on_both_paths(seed, B, T, H, E, share):
    g1, g2 = router_like(seed, B, T, H, E, topk=max(1, E // 3))
    gen = torch.Generator().manual_seed(seed + 1)
    count = int(share * E * E)
    rows, cols = torch.randint(E, (count,), generator=gen), torch.randint(E, (count,), generator=gen)
    expected = torch.zeros(B * T * E, B * T * E, dtype=torch.float64)  # slot = token * E + e, token-major
    for token, w in enumerate(dense_switched_off(g1, g2, rows, cols).view(B * T, E, E)):
        expected[token * E : (token + 1) * E, token * E : (token + 1) * E] = -w  # what switching off adds
    for direct_pairs in (0, 1 << 62):  # the sparse path, then every switched-off pair's weight read directly
        with mock.patch.object(sparse, "DIRECT_PAIRS", direct_pairs):
            check_matrices(switched_off_matrices(g1, g2, (rows, cols)), expected)


def check_matrices(matrices, expected):
    torch.testing.assert_close(matrices.rows.to_dense().double(), expected, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(matrices.cols.to_dense().double(), expected.T, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(matrices.row_mass.double(), expected.sum(1), atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(matrices.col_mass.double(), expected.sum(0), atol=1e-7, rtol=1e-6)
    for matrix in (matrices.rows, matrices.cols):  # sorted, distinct columns per row: checked here, not in the model
        args = (matrix.crow_indices(), matrix.col_indices(), matrix.values(), matrix.shape)
        torch.sparse_csr_tensor(*args, check_invariants=True)


def test_set_bits_finds_every_bit_of_a_word():
    words = torch.tensor([0, 1, -1, -(2**63), 2**62 + 5, 0x0F0F_0000_0000_8001], dtype=torch.long)
    index, bit = _set_bits(words)
    expected = [(k, b) for k, word in enumerate(words.tolist()) for b in range(64) if word >> b & 1]
    assert sorted(zip(index.tolist(), bit.tolist(), strict=True)) == expected


def test_duplicate_entries_count_once():
    g1, g2 = router_like(3, 1, 4, 2, 16, topk=6)
    rows, cols = torch.tensor([1, 1, 2, 2, 2]), torch.tensor([3, 3, 4, 4, 4])
    once = summed_terms(switched_off_weights(g1, g2, (rows[[0, 2]], cols[[0, 2]])), 1, 4, 16)
    torch.testing.assert_close(summed_terms(switched_off_weights(g1, g2, (rows, cols)), 1, 4, 16), once)


def cap_config(decompose: str) -> MonetConfig:
    """The published E = 512, H = 8, moe_topk = 32 with a small hidden size, so the definition runs quickly."""
    return MonetConfig(
        hidden_size=32, num_attention_heads=2, num_hidden_layers=4, moe_dim=4, moe_experts=512, moe_heads=8,
        moe_topk=32, moe_decompose=decompose, vocab_size=64,
    )  # fmt: skip


@torch.no_grad()
@pytest.mark.parametrize("decompose, module", [("vertical", MonetMoVDE), ("horizontal", MonetMoHDE)])
def test_a_layer_at_the_cap_equals_the_definition(decompose, module, ablation_path):
    """20,000 experts of one layer off at E = 512 (the cap): the output is the plain output minus w_ij E_ij(x)
    for every switched-off expert active at every token (about 600 per token)."""
    config = cap_config(decompose)
    torch.manual_seed(0)
    moe = module(config)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 3, config.hidden_size)
    g1, g2 = router_like(5, 1, 3, 8, 512, topk=32)
    flat = torch.randperm(512 * 512, generator=torch.Generator().manual_seed(6))[:20_000]
    rows, cols = flat // 512, flat % 512
    expected = moe(x, g1, g2).double()
    w = dense_switched_off(g1, g2, rows, cols)
    active = (w > 0).nonzero().tolist()
    assert len(active) > 3 * 400, "too few switched-off experts are active: the test would check little"
    for b, t, i, j in active:
        expected[b, t] -= w[b, t, i, j] * moe.expert_output(x[b, t], i, j).double()
    got = moe(x, g1, g2, switched_off=(rows, cols))
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_a_group_spec_computes_its_matrices_once_per_group():
    config = cap_config("vertical")
    shape = ModelShape.of(config)
    g1, g2 = router_like(1, 1, 4, 8, 512, topk=32)
    switching = SwitchingOff(Ablation.build(["G1/1000", "G1/2000", "L1/3000"], shape))
    first = switching.matrices(0, g1, g2)
    assert switching.matrices(1, g1, g2) is not first  # layer 1 also switches (5, 440) off: its own set
    again = SwitchingOff(Ablation.build(["G1/1000", "G1/2000"], shape))
    assert again.matrices(0, g1, g2) is again.matrices(1, g1, g2)  # same set, same routing: computed once
    other_g1, other_g2 = router_like(2, 1, 4, 8, 512, topk=32)
    assert again.matrices(1, other_g1, other_g2) is not again.matrices(0, g1, g2)  # new routing: computed anew


def test_row_ablation_layers_of_a_group_share_their_set():
    shape = ModelShape(num_layers=4, experts_per_side=16, layers_per_group=2)
    ablation = RowAblation.group_experts(shape, torch.tensor([0, 1]), torch.tensor([3, 4]), torch.tensor([5, 6]))
    assert ablation.layer_set(0, "cpu") is ablation.layer_set(1, "cpu")
    assert ablation.layer_set(2, "cpu") is ablation.layer_set(3, "cpu")
    assert ablation.layer_set(0, "cpu") is not ablation.layer_set(2, "cpu")


def test_a_switched_off_set_holds_bits_only_for_rows_that_switch_something_off():
    rows, cols = torch.tensor([3, 3, 9]), torch.tensor([1, 70, 2])
    switched_off = switched_off_set(rows, cols, experts=100, batch_rows=torch.tensor([0, 0, 2]), batch_size=3)
    assert switched_off.bits.shape == (2, 2)  # (row 0, i 3) and (row 2, i 9); two words for E = 100
    assert (switched_off.slot >= 0).nonzero().squeeze(1).tolist() == [3, 2 * 100 + 9]
