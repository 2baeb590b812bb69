"""The peak of live tensor memory during a block of PyTorch code, on any device: what a CUDA allocator peak counts.

On a CPU the process peak RSS also counts the libraries (~0.9 GiB here) and whatever the C allocator keeps
after a free, so it cannot show what a GPU's ``torch.cuda.max_memory_allocated`` would. This follows the
storage of every tensor an operator returns, from the operator to the moment the storage is freed (a weak
reference to the storage's Python object, which PyTorch keeps exactly as long as the storage), plus the
tensors that exist before the block (parameters). Not counted: an operator's internal workspace and the
allocator's rounding. torch's own ``MemTracker`` does the same bookkeeping per module, but it cannot follow
sparse tensors (the deformable attention's backward uses CSR matrices) or modules with frozen parameters.
"""
import threading
import weakref
from typing import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorMemory(TorchDispatchMode):
    """Inside ``with LiveTensorMemory(existing) as memory:`` every operator's output storage is counted until it
    is freed; ``memory.peak_bytes`` is the largest total seen, ``memory.current_bytes`` the total now.

    Args:
        existing: tensors alive before the block that belong to the measured total (the model's parameters).
    """

    def __init__(self, existing: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._sizes = {}  # id(storage) -> bytes counted for it
        self._refs = {}  # id(storage) -> weak reference whose callback uncounts it
        self.current_bytes = 0
        self.peak_bytes = 0
        # on a GPU, backward runs in the autograd engine's device thread; frees can come from either thread
        self._lock = threading.RLock()
        for tensor in existing:
            self._count(tensor)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        outputs = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(outputs)[0]:
            if isinstance(tensor, torch.Tensor):
                self._count(tensor)
        return outputs

    def _count(self, tensor: torch.Tensor):
        if tensor.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
            compressed, plain = ((tensor.crow_indices(), tensor.col_indices())
                                 if tensor.layout in (torch.sparse_csr, torch.sparse_bsr)
                                 else (tensor.ccol_indices(), tensor.row_indices()))
            for part in (compressed, plain, tensor.values()):
                self._count(part)
            return
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            raise NotImplementedError(f"cannot count a tensor of layout {tensor.layout} on {tensor.device}")
        storage = tensor.untyped_storage()
        key = id(storage)
        with self._lock:
            # a storage seen before may have grown (resize_, out= variants): count the difference
            nbytes = storage.nbytes()
            added = nbytes - self._sizes.get(key, 0)
            if key not in self._refs:
                self._refs[key] = weakref.ref(storage, lambda _, key=key: self._freed(key))
            self._sizes[key] = nbytes
            self.current_bytes += added
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _freed(self, key: int):
        with self._lock:
            self.current_bytes -= self._sizes.pop(key)
            del self._refs[key]
