"""Multi-process launch: detectron2's ``launch`` (NCCL) on GPUs, a gloo twin on CPU.

detectron2 0.6's ``launch`` asserts CUDA and hard-codes NCCL, so without a GPU the distributed code
paths (DDP, ``comm.gather``, sharded samplers) could never run. On CPU we spawn the processes
ourselves with the gloo backend and set up the same per-machine process group detectron2 does.
"""
import logging
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from .preemption import PREEMPTED_EXIT_CODE, TrainingPreempted

__all__ = ["launch", "available_device", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)


def available_device(requested: str) -> str:
    """``requested`` (a MODEL.DEVICE value), or ``"cpu"`` when it names CUDA and this machine has none.

    For the tools that should run anywhere (demo, memory planner, ``make demo``); training and evaluation
    keep the configured device and fail loudly instead.
    """
    if requested.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %s but CUDA is not available: using the CPU", requested)
        return "cpu"
    return requested


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = None,
    args=(),
    timeout: timedelta = DEFAULT_TIMEOUT,
    backend: str = None,
):
    """Run ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes.

    Args:
        num_gpus_per_machine: processes on this machine (GPUs, or CPU processes without CUDA).
        dist_url: as for detectron2 (``"auto"``: a free local port, single machine only).
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when CUDA is available, else gloo on CPU.
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    try:
        return _launch_processes(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout, backend
        )
    except mp.ProcessExitedException as e:
        if e.exit_code != PREEMPTED_EXIT_CODE:
            raise
        # The workers checkpointed and stopped on a preemption signal: exit with their code, not a crash.
        raise TrainingPreempted(f"process {e.error_index} stopped on a preemption signal") from None


def _launch_processes(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout, backend):
    """``launch`` for more than one process."""
    world_size = num_machines * num_gpus_per_machine
    use_nccl = torch.cuda.is_available() if backend is None else backend.lower() == "nccl"
    if use_nccl:
        return d2_launch(
            main_func,
            num_gpus_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=timeout,
        )
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on one machine; pass tcp://HOST:PORT.")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _set_local_process_group(num_per_machine: int, machine_rank: int, world_size: int):
    if hasattr(comm, "create_local_process_group"):  # newer detectron2
        comm.create_local_process_group(num_per_machine)
        return
    assert comm._LOCAL_PROCESS_GROUP is None
    # Every process must create every group (new_group is collective), keeping only its own.
    for machine in range(world_size // num_per_machine):
        ranks = list(range(machine * num_per_machine, (machine + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    _set_local_process_group(num_per_machine, machine_rank, world_size)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
