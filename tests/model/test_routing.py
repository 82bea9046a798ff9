"""Sparse expert weights against the dense definition, and expert naming."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.model.naming import ExpertRef, ModelShape, parse_expert_ref, parse_expert_spec
from explorer.model.sparse import dense_expert_weights, sparse_expert_weights


def random_routing(seed, B, T, H, E, topk):
    """(g1, g2) shaped like the router's: per head a softmax over a random subset of about topk entries."""
    gen = torch.Generator().manual_seed(seed)

    def one():
        scores = torch.randn(B, T, H, E, generator=gen)
        keep = torch.rand(B, T, H, E, generator=gen) < topk / E
        keep[..., 0] |= ~keep.any(-1)  # at least one entry per head, as the router guarantees
        return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)

    return one(), one()


def to_dense(sparse, B, T, E):
    dense = torch.zeros(B, T, E * E)
    dense[sparse.row, sparse.position, sparse.expert] = sparse.weight
    return dense


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 3),
    T=st.integers(1, 7),
    H=st.integers(1, 5),
    E=st.integers(2, 12),
    topk=st.integers(1, 6),
    min_weight=st.sampled_from([0.0, 1e-3, 1e-2, 0.1]),
)
def test_sparse_equals_dense(seed, B, T, H, E, topk, min_weight):
    g1, g2 = random_routing(seed, B, T, H, E, topk)
    dense = dense_expert_weights(g1, g2)
    expected = torch.where(dense >= max(min_weight, 1e-30), dense, torch.zeros(()))
    sparse = sparse_expert_weights(g1, g2, min_weight=min_weight)
    # each (row, position, expert) appears once: heads are summed, never listed twice
    keys = (sparse.row * T + sparse.position) * E * E + sparse.expert
    assert keys.unique().numel() == keys.numel()
    torch.testing.assert_close(to_dense(sparse, B, T, E), expected, atol=1e-6, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), chunk=st.integers(1, 50))
def test_chunking_does_not_change_the_result(seed, chunk):
    g1, g2 = random_routing(seed, 2, 5, 3, 8, 3)
    whole = to_dense(sparse_expert_weights(g1, g2), 2, 5, 8)
    chunked = to_dense(sparse_expert_weights(g1, g2, max_chunk_pairs=chunk), 2, 5, 8)
    torch.testing.assert_close(chunked, whole, atol=0, rtol=0)


def test_sparse_on_conformance_router(vd_tiny):
    g1, g2 = vd_tiny.expected["router.0.g1"], vd_tiny.expected["router.0.g2"]
    sparse = sparse_expert_weights(g1, g2)
    B, T, H, E = g1.shape
    torch.testing.assert_close(to_dense(sparse, B, T, E), dense_expert_weights(g1, g2), atol=1e-7, rtol=0)
    # every token's weights sum to the number of heads (softmax rows sum to one)
    per_token = torch.zeros(B, T).index_put_((sparse.row, sparse.position), sparse.weight, accumulate=True)
    torch.testing.assert_close(per_token, torch.full((B, T), float(H)), atol=1e-5, rtol=0)


def test_sparse_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, T, H, E\]"):
        sparse_expert_weights(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


SHAPE_14B = ModelShape(num_layers=24, experts_per_side=512, layers_per_group=4)


def test_paper_example_names():
    ref = parse_expert_ref("G5/147040", SHAPE_14B)
    assert (ref.group, ref.i, ref.j) == (4, 287, 96)
    assert str(ref) == "G5/147040" and ref.pair_label == "G5 (287, 96)"
    assert parse_expert_ref("G5 (287, 96)", SHAPE_14B) == ref
    assert parse_expert_ref("g5(287,96)", SHAPE_14B) == ref
    assert list(SHAPE_14B.group_layers(4)) == [16, 17, 18, 19]
    assert parse_expert_spec("L17/147040", SHAPE_14B) == ("L", 17, 287, 96)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("G7/1", r"G7 is outside the model \(valid: G1..G6\)"),
        ("G0/1", r"G0 is outside"),
        ("G1/262144", r"expert id 262144 is outside the model \(valid: 0..262143\)"),
        ("G1 (512, 0)", r"i 512 is outside the model \(valid: 0..511\)"),
        ("L24/3", r"layer 24 is outside the model \(valid: 0..23\)"),
        ("expert 5", r"'expert 5' is not an expert"),
        ("G1/-3", r"is not an expert"),
    ],
)
def test_bad_specs_name_the_entry_and_range(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_expert_spec(spec, SHAPE_14B)


def test_layer_spec_is_not_an_expert_page():
    with pytest.raises(ValueError, match="names a layer"):
        parse_expert_ref("L3/5", SHAPE_14B)


def test_expert_ref_orders_and_hashes():
    assert ExpertRef.from_flat(4, 147040, 512) == ExpertRef(4, 287, 96, 512)
    assert str(ExpertRef.from_flat(4, 147040, 512)) == "G5/147040"
    a, b = ExpertRef(0, 1, 2, 16), ExpertRef(0, 1, 2, 16)
    assert a == b and len({a, b}) == 1 and a.flat == 18
