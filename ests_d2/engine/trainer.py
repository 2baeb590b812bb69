"""``Trainer``: detectron2's ``DefaultTrainer`` with the official ESTS solver and a crash-proof loop.

Differences from ``DefaultTrainer`` (each for a reason given where it is implemented):
- AdamW with the official two parameter groups, full-model gradient clipping in the loop;
- :class:`~.train_loop.TrainLoop` / :class:`~.train_loop.AMPTrainLoop` (CPU and CUDA AMP, OOM and
  non-finite recovery) instead of ``SimpleTrainer`` / ``AMPTrainer``;
- a resumable train loader; the checkpoint holds optimizer, grad scaler, scheduler, RNG states,
  data position and the recent metric history, so a resumed run continues bitwise;
- atomic checkpoint files; evaluation that leaves the training RNG streams untouched;
- a preemption signal (``SOLVER.PREEMPT_SIGNALS``) checkpoints the current iteration and exits with code 75;
- a resume falls back to the newest loadable checkpoint when ``last_checkpoint`` is stale or missing, and
  ``metrics.json`` keeps one row per iteration across resumes;
- DDP on CPU (gloo) as well as on GPUs.
"""
import inspect
import logging
import os
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel
from detectron2.data import MetadataCatalog, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.solver import build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import TensorboardXWriter
from detectron2.utils.logger import setup_logger

from ..data.dataset_mapper import TextSpottingDatasetMapper
from ..evaluation import TextSpottingEvaluator
from ..evaluation.script_evaluator import ScriptTextEvaluator
from ..evaluation.script_protocols import SCRIPT_PROTOCOLS
from .checkpoint import AtomicDetectionCheckpointer, PeriodicCheckpointer
from .data import ResumableTrainLoader, isolated_rng
from .events import MetricPrinter, ResumableJSONWriter
from .preemption import PreemptionHook, parse_signals
from .train_loop import AMPTrainLoop, TrainLoop

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)

# Metric history kept in checkpoints: the writers smooth with a 20-iteration median, so a resumed
# run needs the last 20 values of each scalar to log exactly what an uninterrupted run logs.
_HISTORY_WINDOW = 20

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Trainer(DefaultTrainer):
    """Train and evaluate ESTS (or any detectron2 model that returns a loss dict) from a config."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = self.wrap_ddp(model)
        self._trainer = self.build_train_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._restored_history = {}
        self.register_hooks(self.build_hooks())

    # ----------------------------------------------------------------------------- builders
    @staticmethod
    def wrap_ddp(model):
        """DDP over all processes (identity for one); buffers are not re-broadcast at every forward."""
        on_cuda = next(model.parameters()).device.type == "cuda"
        ddp_params = inspect.signature(DistributedDataParallel.__init__).parameters
        # Newer torch deprecates broadcast_buffers for forward_sync_buffers (same meaning after init).
        no_sync = (
            {"forward_sync_buffers": False} if "forward_sync_buffers" in ddp_params else {"broadcast_buffers": False}
        )
        # detectron2 0.6 passes device_ids=[local_rank] unconditionally, which DDP rejects on CPU.
        return create_ddp_model(model, device_ids=[comm.get_local_rank()] if on_cuda else None, **no_sync)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """AdamW over two groups as the official code: names containing "backbone" get
        ``BASE_LR * SOLVER.BACKBONE_MULTIPLIER``, the rest ``BASE_LR``; ``WEIGHT_DECAY`` on every parameter."""
        groups = {"rest": [], "backbone": []}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups["backbone" if "backbone" in name else "rest"].append(param)
        base_lr = cfg.SOLVER.BASE_LR
        lrs = {"rest": base_lr, "backbone": base_lr * cfg.SOLVER.BACKBONE_MULTIPLIER}
        param_groups = [{"params": p, "lr": lrs[k]} for k, p in groups.items() if p]
        optimizer_cls = torch.optim.AdamW
        if cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE != "full_model":
            optimizer_cls = maybe_add_gradient_clipping(cfg, optimizer_cls)  # detectron2's per-parameter modes
        return optimizer_cls(param_groups, lr=base_lr, weight_decay=cfg.SOLVER.WEIGHT_DECAY)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """detectron2's scheduler (the official schedule: WarmupMultiStepLR with WARMUP_ITERS 0)."""
        if cfg.SOLVER.WARMUP_ITERS > 0:
            logger.warning(
                "SOLVER.WARMUP_ITERS=%d: the official ESTS schedules have no warm-up.", cfg.SOLVER.WARMUP_ITERS
            )
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loop(cls, cfg, model, data_loader, optimizer):
        clip = cfg.SOLVER.CLIP_GRADIENTS
        device_type = next(model.parameters()).device.type
        robust = dict(
            clip_norm=clip.CLIP_VALUE if clip.ENABLED and clip.CLIP_TYPE == "full_model" else None,
            norm_type=clip.NORM_TYPE,
            min_size_choices=cfg.INPUT.MIN_SIZE_TRAIN,
            oom_recovery=cfg.SOLVER.OOM.ENABLED,
            max_oom_retries=cfg.SOLVER.OOM.MAX_RETRIES,
            inject_oom_at=cfg.SOLVER.OOM.INJECT_AT_ITERS,
            max_consecutive_nonfinite=cfg.SOLVER.MAX_CONSECUTIVE_NONFINITE,
        )
        if not cfg.SOLVER.AMP.ENABLED:
            return TrainLoop(model, data_loader, optimizer, **robust)
        if cfg.SOLVER.AMP.PRECISION not in _PRECISIONS:
            raise ValueError(
                f"SOLVER.AMP.PRECISION must be one of {sorted(_PRECISIONS)}, got {cfg.SOLVER.AMP.PRECISION!r}"
            )
        precision = _PRECISIONS[cfg.SOLVER.AMP.PRECISION]
        if device_type == "cpu" and precision == torch.float16:
            logger.warning(
                "fp16 autocast on CPU is slow and rarely useful; SOLVER.AMP.PRECISION bfloat16 is the CPU choice."
            )
        return AMPTrainLoop(model, data_loader, optimizer, precision=precision, **robust)

    @classmethod
    def build_train_mapper(cls, cfg):
        return TextSpottingDatasetMapper(cfg, is_train=True)

    @classmethod
    def build_test_mapper(cls, cfg):
        return TextSpottingDatasetMapper(cfg, is_train=False)

    @classmethod
    def build_train_loader(cls, cfg):
        """A :class:`~.data.ResumableTrainLoader` over ``DATASETS.TRAIN`` with :meth:`build_train_mapper`."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(
                f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN!r}: the resumable loader "
                "implements TrainingSampler (uniform shuffling) only."
            )
        world = comm.get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH % world:
            raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by {world} processes.")
        dataset_dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        return ResumableTrainLoader(
            dataset_dicts,
            cls.build_train_mapper(cfg),
            batch_size=cfg.SOLVER.IMS_PER_BATCH // world,
            seed=cfg.SEED if cfg.SEED >= 0 else None,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=cls.build_test_mapper(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type != "text":
            raise NotImplementedError(
                f"No evaluator for dataset '{dataset_name}' (evaluator_type={evaluator_type!r}; expected 'text')."
            )
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # VinText, ReCTS and other scripts have their own protocols
        if MetadataCatalog.get(dataset_name).get("eval_protocol", None) in SCRIPT_PROTOCOLS:
            return ScriptTextEvaluator(cfg, dataset_name, distributed=True, output_dir=output_folder)
        return TextSpottingEvaluator(cfg, dataset_name, distributed=True, output_dir=output_folder)

    def build_hooks(self):
        cfg = self.cfg

        def test_and_save_results():
            if self._preemption.stop_requested:
                # Only the final evaluation can follow a stop: the resumed run does it, at the same iteration.
                logger.warning("Final evaluation skipped: training was preempted; --resume runs it.")
                return {}
            # Evaluation builds loaders and may sample; keep it off the training RNG streams so
            # that a run with evaluation resumes like one without.
            with isolated_rng(include_cuda=True):
                self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results),
        ]
        if comm.is_main_process():
            # Unlike DefaultTrainer, metrics are written *before* the checkpoint: a run killed
            # between the two would otherwise resume after an iteration whose metrics (and
            # evaluation results) were never written.
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.SOLVER.LOG_PERIOD))
            keep = cfg.SOLVER.MAX_CHECKPOINTS_TO_KEEP
            ret.append(PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, max_to_keep=keep or None))
        # Last: it checkpoints the step the other hooks have finished with (metrics written, evaluation done).
        checkpoint_hook = ret[-1] if comm.is_main_process() else None
        self._preemption = PreemptionHook(parse_signals(cfg.SOLVER.PREEMPT_SIGNALS), checkpoint_hook)
        ret.append(self._preemption)
        return ret

    def build_writers(self):
        """detectron2's default writers, with a ``metrics.json`` writer that tolerates kills."""
        os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
        self._metrics_writer = ResumableJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))
        return [
            MetricPrinter(self.max_iter),
            self._metrics_writer,
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    # ----------------------------------------------------------------------------- resume
    def resume_or_load(self, resume=True):
        """As ``DefaultTrainer``: resume everything from ``last_checkpoint`` or load ``MODEL.WEIGHTS``."""
        if comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.resumed_file:
            # The checkpoint stores the iteration that just finished.
            self.start_iter = self.iter + 1
        writer = getattr(self, "_metrics_writer", None)
        if resume and writer is not None:
            # Rows past the checkpoint (or all rows, when a run killed before its first checkpoint
            # restarts from scratch) are trained and written again by this run.
            writer.resume_iter = self.start_iter

    def state_dict(self):
        ret = super().state_dict()
        # Newer detectron2 already stores the inner loop under "_trainer"; 0.6 does not (no optimizer!).
        if "_trainer" not in ret:
            ret["_trainer"] = self._trainer.state_dict()
        storage = getattr(self, "storage", None)
        if storage is not None and comm.is_main_process():
            ret["history"] = {
                name: [(float(v), int(i)) for v, i in buffer.values()[-_HISTORY_WINDOW:]]
                for name, buffer in storage.histories().items()
            }
        return ret

    def load_state_dict(self, state_dict):
        # TrainerBase restores the iteration and hook states (scheduler); the loop is restored here
        # rather than by DefaultTrainer, whose 0.6 version ignores it.
        TrainerBase.load_state_dict(self, state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
        self._restored_history = state_dict.get("history", {})

    def before_train(self):
        # The EventStorage of this run exists now: give it the history the checkpoint carried.
        for name, values in self._restored_history.items():
            for value, iteration in values:
                self.storage.histories()[name].update(value, iteration)
        self._restored_history = {}
        super().before_train()

    def after_train(self):
        if self.start_iter >= self.max_iter and self.iter > self.start_iter:
            # Nothing was left to train (a run stopped during its final evaluation): end at the iteration
            # an uninterrupted run ends at, not one past it, so the evaluation is logged there too.
            self.iter = self.start_iter
        super().after_train()
