import pytest

from explorer.model import sparse


@pytest.fixture(params=["direct", "sparse"])
def ablation_path(request, monkeypatch):
    """Runs a test with each way of building the switched-off matrices: reading every switched-off pair's weight
    (a decode step's few tokens) and the sparse path that follows the router (batches); see
    explorer.model.sparse.switched_off_matrices."""
    monkeypatch.setattr(sparse, "DIRECT_PAIRS", 1 << 62 if request.param == "direct" else 0)
    return request.param
