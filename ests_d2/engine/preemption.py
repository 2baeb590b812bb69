"""Checkpoint and exit on a preemption signal (SLURM, cloud spot instances: SIGTERM or a chosen signal).

The signal handler only records the signal: whatever runs when it arrives (a training step, a
checkpoint write, an evaluation) finishes undisturbed, so no half-done state can be saved. After the
step, every process agrees to stop (one all-reduce in multi-process runs, so that all stop after the
same iteration), the main process writes a checkpoint of that iteration unless the schedule has just
written one, and training ends with :data:`PREEMPTED_EXIT_CODE`. ``--resume`` then continues bitwise,
as from any checkpoint. The final evaluation of a run stopped after its last step is left to the
resumed run, which evaluates at the same iteration.
"""
import logging
import signal
import threading
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["PREEMPTED_EXIT_CODE", "PreemptionHook", "TrainingPreempted", "parse_signals"]

logger = logging.getLogger(__name__)

# sysexits.h EX_TEMPFAIL ("temporary failure; the user is invited to retry"): a job script can requeue
# on it, and it differs from a crash (1), a usage error (2) and a death by signal (128 + n).
PREEMPTED_EXIT_CODE = 75


class TrainingPreempted(SystemExit):
    """Training stopped on a preemption signal after checkpointing; exits the process with code 75.

    A ``SystemExit`` so that it ends any entry point with that code and is not reported by detectron2's
    training loop as a crash (which catches ``Exception`` only).
    """

    def __init__(self, message: str):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message

    def __str__(self):
        return self.message


def parse_signals(names: Sequence[str]):
    """``SOLVER.PREEMPT_SIGNALS`` names (``"SIGTERM"``, ``"SIGUSR1"``, ...) -> ``signal.Signals``."""
    parsed = []
    for name in names:
        sig = getattr(signal.Signals, str(name).upper(), None)
        if sig is None or sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"SOLVER.PREEMPT_SIGNALS: {name!r} is not a signal a process can handle")
        parsed.append(sig)
    return parsed


class PreemptionHook(HookBase):
    """Stop training cleanly after the step during which one of ``signals`` arrived.

    Args:
        signals: the signals to handle (see :func:`parse_signals`).
        checkpoint_hook: the main process's :class:`~.checkpoint.PeriodicCheckpointer` (None elsewhere).
    """

    def __init__(self, signals: Sequence[signal.Signals], checkpoint_hook=None):
        self.signals = list(signals)
        self.checkpoint_hook = checkpoint_hook
        self.received: Optional[str] = None
        self._previous_handlers = {}

    @property
    def stop_requested(self) -> bool:
        return self.received is not None

    def _record(self, signum, frame):
        # Only record it: logging or raising here would interrupt whatever is running (a checkpoint write).
        if self.received is None:
            self.received = signal.Signals(signum).name

    def before_train(self):
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training runs outside the main thread: preemption signals are not handled.")
            return
        for sig in self.signals:
            self._previous_handlers[sig] = signal.signal(sig, self._record)

    def _all_processes_stop(self) -> bool:
        if comm.get_world_size() == 1:
            return self.stop_requested
        flag = torch.tensor([int(self.stop_requested)], device=next(self.trainer.model.parameters()).device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.received is None:
            self.received = "a signal to another process"
        return bool(flag.item())

    def after_step(self):
        if not self._all_processes_stop():
            return
        iteration = self.trainer.iter
        saved = self.checkpoint_hook.save_now(iteration) if self.checkpoint_hook is not None else None
        comm.synchronize()  # no process exits before the checkpoint is on disk
        message = (
            f"{self.received} received: stopped after iteration {iteration}"
            + (f", state saved in {saved}" if saved else "")
            + f"; exiting with code {PREEMPTED_EXIT_CODE}. --resume continues from iteration {iteration + 1}."
        )
        logger.warning(message)
        raise TrainingPreempted(message)

    def after_train(self):
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}
        if self.stop_requested and self.trainer.iter >= self.trainer.max_iter:
            logger.warning("%s received after the last iteration: the run completed normally.", self.received)
