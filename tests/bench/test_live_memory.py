"""bench/live_memory.py counts exactly the bytes of the tensor storages alive, and their peak."""
import pytest
import torch

from bench.live_memory import LiveTensorMemory

FLOAT = 4


def test_counts_allocations_and_frees_to_the_byte():
    with LiveTensorMemory() as memory:
        a = torch.empty(1000)
        b = torch.empty(2000)
        del a
        c = torch.empty(500)
        assert memory.current_bytes == (2000 + 500) * FLOAT
    assert memory.peak_bytes == 3000 * FLOAT
    del b, c
    assert memory.current_bytes == 0


def test_views_share_their_storage_and_existing_tensors_count():
    weight = torch.zeros(10, 10)
    with LiveTensorMemory([weight, weight.t()]) as memory:
        base = torch.ones(64, 64)
        views = [base.view(-1), base[::2], base.t(), base.unsqueeze(0)]
        assert memory.current_bytes == (100 + 64 * 64) * FLOAT
        del base
        assert memory.current_bytes == (100 + 64 * 64) * FLOAT  # the views keep the storage alive
        del views
        assert memory.current_bytes == 100 * FLOAT


def test_a_grown_storage_counts_its_new_size():
    with LiveTensorMemory() as memory:
        out = torch.empty(0)
        torch.arange(1000, dtype=torch.float32, out=out)
        assert memory.current_bytes == 1000 * FLOAT


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_csr_parts_are_counted():
    with LiveTensorMemory() as memory:
        dense = torch.eye(100)
        csr = dense.to_sparse_csr()
        del dense
        parts = {id(t.untyped_storage()): t.untyped_storage().nbytes()
                 for t in (csr.crow_indices(), csr.col_indices(), csr.values())}
        # at least 101 row pointers and 100 column indices (int64) and 100 values (float32); the column
        # indices may be a view of a larger index tensor, whose whole storage stays alive
        assert memory.current_bytes == sum(parts.values()) >= (101 + 100) * 8 + 100 * FLOAT
        del csr
        assert memory.current_bytes == 0


def test_peak_of_a_training_step_counts_saved_activations_and_gradients():
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 1024)
    params = 1024 * 256 + 1024
    x = torch.randn(512, 256)
    with LiveTensorMemory(layer.parameters()) as memory:
        hidden = layer(x).relu()
        # the ReLU keeps its output for backward; the linear's output died once the ReLU had read it
        assert memory.current_bytes == (params + 512 * 1024) * FLOAT
        assert memory.peak_bytes == (params + 2 * 512 * 1024) * FLOAT
        hidden.sum().backward()
    # left: the parameters, their gradients and the output still referenced here
    assert memory.current_bytes == (2 * params + 512 * 1024) * FLOAT
    assert memory.peak_bytes >= (params + 2 * 512 * 1024) * FLOAT
