"""Training engine: ``Trainer``, AMP / OOM-surviving train loops, atomic checkpoints, CPU/GPU launch."""
from .checkpoint import AtomicDetectionCheckpointer, PeriodicCheckpointer
from .data import ResumableBatchSampler, ResumableTrainLoader
from .launch import launch
from .preemption import PREEMPTED_EXIT_CODE, PreemptionHook, TrainingPreempted
from .train_loop import AMPTrainLoop, TrainLoop
from .trainer import Trainer

__all__ = [
    "AMPTrainLoop",
    "AtomicDetectionCheckpointer",
    "PeriodicCheckpointer",
    "PREEMPTED_EXIT_CODE",
    "PreemptionHook",
    "ResumableBatchSampler",
    "ResumableTrainLoader",
    "TrainLoop",
    "Trainer",
    "TrainingPreempted",
    "launch",
]
