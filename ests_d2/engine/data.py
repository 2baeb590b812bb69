"""A training data loader whose stream of batches is a pure function of (seed, batch position).

detectron2's train loader cannot be resumed exactly: its ``TrainingSampler`` always restarts at the
beginning of the stream, ``AspectRatioGroupedDataset`` keeps images buffered in memory, and
dataloader workers draw their augmentation randomness from per-worker seeds that depend on when
the iterator was created. Here:

- the per-rank index stream is detectron2's (epochs of ``randperm`` from one seed, sliced by rank);
- aspect-ratio grouping is done on *indices* (from the dataset dicts' ``width``/``height``, which is
  what detectron2's grouping looks at too), so the batch at position ``b`` is known without loading
  any image and a resumed run replays the grouping up to ``b`` in microseconds per batch;
- every image is mapped under RNGs seeded from (seed, rank, position, slot), so augmentations do not
  depend on the number of workers nor on where the run was resumed; in the main process the global
  RNG states are restored afterwards, so mapping never perturbs the model's randomness.

The only state is the number of batches the trainer consumed (plus the seed), see
:class:`ResumableTrainLoader`.
"""
import contextlib
import logging
import random
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["ResumableBatchSampler", "ResumableTrainLoader", "isolated_rng", "aspect_ratio_groups"]

# Mapping a dict may fail (mapper returns None, e.g. a crop without text): retry this many times
# with the next indices before giving up with an error.
_MAX_MAP_ATTEMPTS = 10


def aspect_ratio_groups(dataset_dicts: Sequence[dict]) -> List[int]:
    """Group id per dict: 0 if ``width > height`` else 1 (detectron2's two aspect-ratio buckets)."""
    groups = []
    for d in dataset_dicts:
        if "width" not in d or "height" not in d:
            raise ValueError(
                f"Aspect-ratio grouping needs 'width' and 'height' in every dataset dict; "
                f"{d.get('file_name', '<no file_name>')} lacks them "
                "(set DATALOADER.ASPECT_RATIO_GROUPING False or fix the loader)."
            )
        groups.append(0 if d["width"] > d["height"] else 1)
    return groups


class ResumableBatchSampler:
    """Infinite per-rank stream of ``(position, [dataset indices])`` that can start anywhere.

    Args:
        size: number of dataset dicts.
        batch_size: images per batch on this rank.
        seed: shuffling seed, identical on every rank.
        groups: optional group id per index; a batch then only holds indices of one group.
        shuffle: shuffle each epoch (detectron2's ``TrainingSampler`` semantics) or not.
        rank, world_size: this process's slice of the global index stream.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        *,
        groups: Optional[Sequence[int]] = None,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if size <= 0:
            raise ValueError(f"ResumableBatchSampler needs a non-empty dataset, got size={size}.")
        if groups is not None and len(groups) != size:
            raise ValueError(f"{len(groups)} group ids for {size} dataset dicts.")
        self.size = size
        self.batch_size = batch_size
        self.seed = int(seed)
        self.groups = list(groups) if groups is not None else None
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size

    def _rank_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        position = 0
        while True:
            if self.shuffle:
                epoch = torch.randperm(self.size, generator=generator).tolist()
            else:
                epoch = range(self.size)
            for index in epoch:
                if position % self.world_size == self.rank:
                    yield index
                position += 1

    def iter_from(self, start: int) -> Iterator[Tuple[int, List[int]]]:
        """Yield batches ``start, start + 1, ...``; the first ``start`` batches are replayed, not returned."""
        buckets = [[] for _ in range(2)] if self.groups is not None else [[]]
        position = 0
        for index in self._rank_indices():
            bucket = buckets[self.groups[index]] if self.groups is not None else buckets[0]
            bucket.append(index)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                if position >= start:
                    yield position, batch
                position += 1


def _item_seed(*parts: int) -> int:
    """A 32-bit seed that mixes all parts (SeedSequence hashing, so nearby positions decorrelate)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


@contextlib.contextmanager
def isolated_rng(seed: Optional[int] = None, include_cuda: bool = False):
    """Run a block without touching the python / numpy / torch global RNG streams.

    With ``seed`` the block also starts from that seed, which makes it reproducible. CUDA generators
    are saved and restored too with ``include_cuda`` (when CUDA is initialised).
    """
    cuda = include_cuda and torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class _PositionSeededBatches(torchdata.Dataset):
    """Maps a sampler item ``(position, indices)`` to the list of mapped dicts of that batch."""

    def __init__(self, dataset: DatasetFromList, mapper, seed: int, rank: int):
        self.dataset = dataset
        self.mapper = mapper
        self.seed = seed
        self.rank = rank

    def __getitem__(self, item: Tuple[int, List[int]]) -> List[dict]:
        position, indices = item
        return [self._map(position, slot, index) for slot, index in enumerate(indices)]

    def _map(self, position: int, slot: int, index: int) -> dict:
        for attempt in range(_MAX_MAP_ATTEMPTS):
            current = (index + attempt) % len(self.dataset)
            with isolated_rng(_item_seed(self.seed, self.rank, position, slot, attempt)):
                mapped = self.mapper(self.dataset[current])
            if mapped is not None:
                return mapped
            logger.warning(
                "Mapper returned None for %s; trying the next dataset dict.",
                self.dataset[current].get("file_name", f"index {current}"),
            )
        raise RuntimeError(
            f"The mapper rejected {_MAX_MAP_ATTEMPTS} consecutive dataset dicts starting at "
            f"{self.dataset[index].get('file_name', f'index {index}')}; check the dataset and augmentations."
        )


def _no_collate(batch):
    return batch


class _SamplerFrom(torchdata.Sampler):
    def __init__(self, sampler: ResumableBatchSampler, start: int):
        self.sampler = sampler
        self.start = start

    def __iter__(self):
        return self.sampler.iter_from(self.start)


class ResumableTrainLoader:
    """Iterable of training batches (lists of mapped dicts) that can restart at any batch position.

    ``iter(loader)`` starts at position 0; ``loader.iter_from(b)`` starts at batch ``b``. Iterators are
    lazy: no worker starts before the first ``next``. ``seed`` may be replaced before iterating (the
    trainer restores it from a checkpoint, so a resumed run sees the same stream even when
    ``cfg.SEED`` is negative).
    """

    def __init__(
        self,
        dataset_dicts: Sequence[dict],
        mapper,
        *,
        batch_size: int,
        seed: Optional[int] = None,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        shuffle: bool = True,
    ):
        dataset_dicts = list(dataset_dicts)
        self._groups = aspect_ratio_groups(dataset_dicts) if aspect_ratio_grouping else None
        self._dataset = DatasetFromList(dataset_dicts, copy=False)
        self.mapper = mapper
        self.batch_size = batch_size
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.num_workers = num_workers
        self.shuffle = shuffle

    @property
    def dataset_size(self) -> int:
        """Number of dataset dicts (the stream itself is infinite)."""
        return len(self._dataset)

    def sampler(self) -> ResumableBatchSampler:
        return ResumableBatchSampler(
            len(self._dataset),
            self.batch_size,
            self.seed,
            groups=self._groups,
            shuffle=self.shuffle,
            rank=comm.get_rank(),
            world_size=comm.get_world_size(),
        )

    def iter_from(self, start: int) -> Iterator[List[dict]]:
        # A private generator: creating a DataLoader iterator draws a base seed, which must not
        # come from (and advance) the global torch RNG that the model uses.
        generator = torch.Generator()
        generator.manual_seed(_item_seed(self.seed, start))
        loader = torchdata.DataLoader(
            _PositionSeededBatches(self._dataset, self.mapper, self.seed, comm.get_rank()),
            sampler=_SamplerFrom(self.sampler(), start),
            batch_size=None,
            collate_fn=_no_collate,
            num_workers=self.num_workers,
            generator=generator,
        )
        yield from loader

    def __iter__(self) -> Iterator[List[dict]]:
        return self.iter_from(0)
