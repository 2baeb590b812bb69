"""Training loops that survive out-of-memory and non-finite steps and resume bitwise.

:class:`TrainLoop` (fp32) and :class:`AMPTrainLoop` (autocast, optional GradScaler) share one
``run_step`` (:class:`_RobustStepMixin`) and keep detectron2's ``SimpleTrainer`` / ``AMPTrainer``
as their bases, so their ``state_dict`` (optimizer, grad scaler) and hooks keep working. The step:

1. takes the next batch (counting consumed batches: the data position saved in checkpoints);
2. forward under autocast (AMP) -> loss; a non-finite loss skips the step before backward;
3. backward (scaled with a GradScaler), unscale, full-model L2 clipping / grad-norm measurement;
4. a non-finite gradient norm skips the step (with a GradScaler the scaler skips it and lowers its
   scale, counted as an AMP overflow);
5. a CUDA out-of-memory error anywhere in 2-4 frees the step's memory, shrinks the batch to the next
   smaller ``INPUT.MIN_SIZE_TRAIN`` choice and retries, or skips the batch after ``max_oom_retries``.

An OOM inside ``optimizer.step`` is retried like the others, but an optimizer that updates its
parameters one by one may already have changed some of them: OOMs are expected (and most likely)
in forward and backward, where nothing has been applied yet.

Skip decisions are all-reduced across processes so that every rank takes the same branch (DDP's
gradient all-reduce would otherwise hang). OOM recovery is single-process only: under DDP a rank
that fails inside backward has already started bucket all-reduces that cannot be withdrawn.
"""
import gc
import inspect
import logging
import random
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
import psutil
import torch
import torch.distributed as dist
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from .checkpoint import capture_rng_state, restore_rng_state
from .oom import InjectedOutOfMemoryError, is_out_of_memory, shrink_batch

__all__ = ["TrainLoop", "AMPTrainLoop"]

logger = logging.getLogger(__name__)

_COUNTERS = ("nonfinite_skips", "amp_overflows", "oom_retries", "oom_skips")


class _RobustStepMixin:
    """The shared ``run_step``; see the module docstring. Call :meth:`_setup_robust_step` in ``__init__``."""

    def _setup_robust_step(
        self,
        *,
        clip_norm: Optional[float],
        norm_type: float,
        min_size_choices: Sequence[int],
        oom_recovery: bool,
        max_oom_retries: int,
        inject_oom_at: Sequence[int],
        max_consecutive_nonfinite: int,
    ):
        self.clip_norm = clip_norm
        self.norm_type = norm_type
        self.min_size_choices = tuple(sorted(set(int(s) for s in min_size_choices), reverse=True))
        self.oom_recovery = oom_recovery
        self.max_oom_retries = max_oom_retries
        self.inject_oom_at = Counter(int(i) for i in inject_oom_at)
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.counters = {k: 0 for k in _COUNTERS}
        self._consecutive_nonfinite = 0
        self.batches_consumed = 0
        self._batch_iter = None
        self._process = psutil.Process()

    # ----------------------------------------------------------------------------- data position
    def _next_batch(self) -> List[dict]:
        if self._batch_iter is None:
            loader = self.data_loader
            if hasattr(loader, "iter_from"):
                self._batch_iter = iter(loader.iter_from(self.batches_consumed))
            else:
                if self.batches_consumed:
                    logger.warning(
                        "The train loader is not resumable: the data stream restarts from its beginning."
                    )
                # SimpleTrainer already made an iterator (eagerly in 0.6, lazily later): reuse it.
                self._batch_iter = self._data_loader_iter
        batch = next(self._batch_iter)
        self.batches_consumed += 1
        return batch

    # ----------------------------------------------------------------------------- the step
    def run_step(self):
        assert self.model.training, f"[{type(self).__name__}] model was changed to eval mode!"
        start = time.perf_counter()
        data = self._next_batch()
        data_time = time.perf_counter() - start
        if self._device().type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        for attempt in range(self.max_oom_retries + 1):
            try:
                self._forward_backward_update(data, attempt, data_time)
                return
            except Exception as e:  # noqa: B902 - only OOM is handled, everything else re-raised
                if not (self.oom_recovery and is_out_of_memory(e)):
                    raise
                if comm.get_world_size() > 1:
                    raise RuntimeError(
                        "Out of memory in a multi-process run: OOM recovery cannot resynchronise DDP; "
                        "lower INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN or enable SOLVER.AMP."
                    ) from e
                message = str(e).splitlines()[0]
            # Outside the except block: the exception and its traceback (which pin the step's
            # activations) are gone, so the memory can really be released now.
            self._release_step_memory()
            smaller = shrink_batch(data, self.min_size_choices) if attempt < self.max_oom_retries else None
            if smaller is None:
                self.counters["oom_skips"] += 1
                logger.warning("Iteration %d: out of memory (%s); batch skipped.", self.iter, message)
                self._put_counters()
                return
            self.counters["oom_retries"] += 1
            data = smaller
            logger.warning(
                "Iteration %d: out of memory (%s); retrying with short side %d.",
                self.iter,
                message,
                min(min(d["image"].shape[-2:]) for d in data),
            )

    def _forward_backward_update(self, data: List[dict], attempt: int, data_time: float):
        with self._autocast():
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
        if self.inject_oom_at[self.iter] > attempt:
            raise InjectedOutOfMemoryError(f"CUDA out of memory (injected at iteration {self.iter})")

        if not self._all_ranks_agree(bool(torch.isfinite(losses))):
            self._skip_nonfinite(f"loss {float(losses.detach())}", loss_dict)
            return

        self.optimizer.zero_grad(set_to_none=True)
        self._backward(losses)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.grad is not None],
            self.clip_norm if self.clip_norm is not None else float("inf"),
            norm_type=self.norm_type,
        )
        grad_norm_finite = bool(torch.isfinite(grad_norm))
        if not self._apply_update(grad_norm_finite):
            self._skip_nonfinite(f"gradient norm {float(grad_norm)}", loss_dict)
            return
        self._consecutive_nonfinite = 0
        self._write_step_metrics(loss_dict, data_time, float(grad_norm) if grad_norm_finite else None)

    def _all_ranks_agree(self, ok: bool) -> bool:
        """True iff ``ok`` holds on every process (one tiny all-reduce in multi-process runs)."""
        if comm.get_world_size() == 1:
            return ok
        flag = torch.tensor([0 if ok else 1], device=self._device())
        dist.all_reduce(flag)
        return int(flag.item()) == 0

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _skip_nonfinite(self, what: str, loss_dict: Dict[str, torch.Tensor]):
        self.optimizer.zero_grad(set_to_none=True)
        self.counters["nonfinite_skips"] += 1
        self._consecutive_nonfinite += 1
        bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v)}
        logger.warning("Iteration %d: non-finite %s; step skipped. Non-finite losses: %s", self.iter, what, bad)
        self._put_counters()
        if self._consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"{self._consecutive_nonfinite} consecutive non-finite steps up to iteration {self.iter}: "
                "training has diverged."
            )

    def _release_step_memory(self):
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------------------- precision hooks
    def _autocast(self):
        return torch.autocast(device_type=self._device().type, enabled=False)

    def _backward(self, losses: torch.Tensor):
        losses.backward()

    def _apply_update(self, grad_norm_finite: bool) -> bool:
        """Apply the optimizer step; returns False when the step was not applied."""
        if not grad_norm_finite:
            return False
        self.optimizer.step()
        return True

    # ----------------------------------------------------------------------------- metrics
    def _put_counters(self):
        if comm.is_main_process():
            storage = get_event_storage()
            for k, v in self.counters.items():
                storage.put_scalar(k, v, smoothing_hint=False)

    def _memory_metrics(self) -> Dict[str, float]:
        """CUDA: the allocator's peak during this step; CPU: the process's resident memory now."""
        if self._device().type == "cuda":
            return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20}
        return {"rss_mb": self._process.memory_info().rss / 2**20}

    def _write_step_metrics(self, loss_dict, data_time: float, grad_norm: Optional[float]):
        metrics = {k: float(v.detach()) for k, v in loss_dict.items()}
        metrics["data_time"] = data_time
        all_metrics = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", max(m.pop("data_time") for m in all_metrics))
        mean = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
        storage.put_scalar("total_loss", sum(mean.values()))
        if len(mean) > 1:
            storage.put_scalars(**mean)
        if grad_norm is not None:
            storage.put_scalar("grad_norm", grad_norm)
        storage.put_scalars(**self._memory_metrics(), smoothing_hint=False)
        self._put_counters()

    # ----------------------------------------------------------------------------- state
    def state_dict(self):
        ret = super().state_dict()
        ret["counters"] = dict(self.counters)
        ret["batches_consumed"] = self.batches_consumed
        if hasattr(self.data_loader, "seed"):
            ret["data_seed"] = int(self.data_loader.seed)
            ret["dataset_size"] = self.data_loader.dataset_size
        # The RNG states after this iteration: dropout, denoising noise etc. continue identically.
        ret["rng"] = capture_rng_state()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.counters.update(state_dict.get("counters", {}))
        self.batches_consumed = int(state_dict.get("batches_consumed", 0))
        if "data_seed" in state_dict and hasattr(self.data_loader, "seed"):
            self.data_loader.seed = int(state_dict["data_seed"])
            if state_dict.get("dataset_size", self.data_loader.dataset_size) != self.data_loader.dataset_size:
                logger.warning(
                    "The checkpoint was trained on %d dataset dicts, this run has %d: the resumed data "
                    "stream is not the one the run would have seen.",
                    state_dict["dataset_size"],
                    self.data_loader.dataset_size,
                )
        self._batch_iter = None  # restart the stream at the restored position
        if "rng" in state_dict:
            restore_rng_state(state_dict["rng"])
            if comm.get_rank() > 0:
                # Only rank 0's states are in the file; give the other ranks distinct, reproducible ones.
                seed = int(state_dict["iteration"]) * 1000 + comm.get_rank()
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)


def _init_kwargs(cls, **candidates):
    """The subset of ``candidates`` that ``cls.__init__`` accepts (detectron2 0.6 vs. newer signatures)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in candidates.items() if k in params}


class TrainLoop(_RobustStepMixin, SimpleTrainer):
    """fp32 training; keyword arguments as in :meth:`_RobustStepMixin._setup_robust_step`."""

    def __init__(self, model, data_loader, optimizer, **robust_kwargs):
        super().__init__(model, data_loader, optimizer)
        self._setup_robust_step(**robust_kwargs)


class AMPTrainLoop(_RobustStepMixin, AMPTrainer):
    """Mixed precision on CUDA or CPU through detectron2's ``AMPTrainer`` (whose ``run_step`` asserts CUDA
    in 0.6 and is replaced here).

    Args:
        precision: autocast dtype; float16 gets an enabled GradScaler (fp16 gradients underflow
            without loss scaling), bfloat16 does not need one (fp32 exponent range).
    """

    def __init__(self, model, data_loader, optimizer, *, precision: torch.dtype = torch.float16, **robust_kwargs):
        device_type = next(model.parameters()).device.type
        grad_scaler = torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        super().__init__(
            model,
            data_loader,
            optimizer,
            **_init_kwargs(AMPTrainer, grad_scaler=grad_scaler, precision=precision),
        )
        self.precision = precision
        self._setup_robust_step(**robust_kwargs)

    def _autocast(self):
        return torch.autocast(device_type=self._device().type, dtype=self.precision)

    def _backward(self, losses):
        self.grad_scaler.scale(losses).backward()
        if self.grad_scaler.is_enabled():
            self.grad_scaler.unscale_(self.optimizer)  # clip and measure the true gradients

    def _apply_update(self, grad_norm_finite: bool) -> bool:
        if not self.grad_scaler.is_enabled():
            return super()._apply_update(grad_norm_finite)
        # The scaler skips steps with inf/nan gradients itself and lowers its scale.
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        if not grad_norm_finite:
            self.counters["amp_overflows"] += 1
        return True

    def _release_step_memory(self):
        super()._release_step_memory()
        # An OOM between unscale_() and update() (e.g. in AdamW's first step, which allocates its
        # moments) leaves the scaler waiting for step(); the retry's unscale_() would then raise.
        # The scale itself is kept: it was not the cause.
        per_optimizer = getattr(self.grad_scaler, "_per_optimizer_states", None)
        if per_optimizer is not None:
            per_optimizer.clear()

    def _write_step_metrics(self, loss_dict, data_time, grad_norm):
        super()._write_step_metrics(loss_dict, data_time, grad_norm)
        if self.grad_scaler.is_enabled() and comm.is_main_process():
            get_event_storage().put_scalar("amp_scale", float(self.grad_scaler.get_scale()), smoothing_hint=False)
