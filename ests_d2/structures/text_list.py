"""``TextList``: decoded texts as a field of detectron2 ``Instances``."""
import numpy as np
import torch


class TextList(list):
    """A list of strings that can be indexed like a tensor field of ``Instances``.

    detectron2's ``Instances[...]`` indexes every field with the same index (a bool mask, an index tensor,
    a list or a slice); a plain list only accepts ints and slices, so ``instances[scores > t]`` would fail.
    """

    def __getitem__(self, item):
        if isinstance(item, slice):
            return TextList(super().__getitem__(item))
        if isinstance(item, (torch.Tensor, np.ndarray)) or isinstance(item, (list, tuple)):
            index = torch.as_tensor(item)
            if index.dtype == torch.bool:
                if len(index) != len(self):
                    raise IndexError(f"boolean mask of length {len(index)} for {len(self)} texts")
                index = index.nonzero().flatten()
            if index.dim() == 0:
                return super().__getitem__(int(index))
            return TextList(super(TextList, self).__getitem__(int(i)) for i in index.tolist())
        return super().__getitem__(item)
