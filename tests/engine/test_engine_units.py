"""Unit tests of the engine's parts: resumable data stream, atomic files, OOM helpers, solver."""
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from detectron2.structures import Boxes, Instances
from detectron2.utils.env import seed_all_rng

from ests_d2.engine import (
    AtomicDetectionCheckpointer,
    PeriodicCheckpointer,
    ResumableBatchSampler,
    ResumableTrainLoader,
    Trainer,
    launch,
)
from ests_d2.engine.checkpoint import atomic_write
from ests_d2.engine.oom import is_out_of_memory, shrink_batch
from tests.engine.tiny_engine import TinyMapper, TinyTrainer, _tiny_dicts, tiny_cfg


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("grouped", [False, True])
def test_batch_sampler_starts_anywhere(grouped):
    groups = [i % 3 == 0 for i in range(11)] if grouped else None
    sampler = ResumableBatchSampler(11, 3, seed=5, groups=groups)
    stream = _take(sampler.iter_from(0), 40)
    assert [p for p, _ in stream] == list(range(40))
    for start in (1, 7, 25):
        assert _take(sampler.iter_from(start), 10) == stream[start : start + 10]
    if grouped:
        assert all(len({groups[i] for i in batch}) == 1 for _, batch in stream)


def test_batch_sampler_shards_the_global_stream_by_rank():
    full = [i for _, b in _take(ResumableBatchSampler(10, 1, seed=3).iter_from(0), 20) for i in b]
    ranks = [
        [i for _, b in _take(ResumableBatchSampler(10, 1, seed=3, rank=r, world_size=2).iter_from(0), 10) for i in b]
        for r in range(2)
    ]
    assert ranks[0] == full[0::2] and ranks[1] == full[1::2]
    assert sorted(full[:10]) == list(range(10))  # each epoch is a permutation


def _loader(num_workers):
    return ResumableTrainLoader(
        _tiny_dicts(12, 0), TinyMapper(is_train=True), batch_size=2, seed=11, num_workers=num_workers
    )


def _signature(batch):
    return [
        (d["image_id"], d["image"].shape, d["image"].sum().item(), d["instances"].gt_boxes.tensor.tolist())
        for d in batch
    ]


def test_loader_is_a_function_of_position_and_leaves_global_rng_alone():
    seed_all_rng(0)
    rng_before = torch.get_rng_state()
    stream = [_signature(b) for b in _take(iter(_loader(0)), 8)]
    assert torch.equal(torch.get_rng_state(), rng_before)  # mapping in the main process is isolated
    assert len({s[0][1] for s in stream}) > 1  # random resizing happened
    assert [_signature(b) for b in _take(_loader(0).iter_from(5), 3)] == stream[5:8]
    # Worker processes produce the very same batches.
    assert [_signature(b) for b in _take(_loader(2).iter_from(3), 4)] == stream[3:7]


def test_loader_rejects_dicts_without_size():
    dicts = _tiny_dicts(2, 0)
    del dicts[1]["width"]
    with pytest.raises(ValueError, match="tiny_1.png"):
        ResumableTrainLoader(dicts, TinyMapper(True), batch_size=1, seed=0)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.pth"
    atomic_write(str(path), lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), crash)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.pth"]


def test_checkpointer_tags_only_complete_files_and_cleans_leftovers(tmp_path):
    model = nn.Linear(2, 2)
    ckpt = AtomicDetectionCheckpointer(model, str(tmp_path))
    (tmp_path / ".model_0000001.pth.abc.tmp").write_bytes(b"partial")  # a killed writer's leftover
    ckpt.save("model_0000003", iteration=3)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert torch.load(tmp_path / "model_0000003.pth", weights_only=True)["iteration"] == 3
    assert ckpt.remove_stale_temp_files() == 1
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000003.pth"]


def test_periodic_checkpointer_keeps_at_most_n_across_resumes(tmp_path):
    for i in (2, 5, 8, 11, 14):  # left by earlier lives of the run
        (tmp_path / f"model_{i:07d}.pth").write_bytes(b"x")
    (tmp_path / "model_final.pth").write_bytes(b"x")
    hook = PeriodicCheckpointer(AtomicDetectionCheckpointer(nn.Linear(1, 1), str(tmp_path)), 3, max_to_keep=2)
    hook.trainer = SimpleNamespace(max_iter=30)
    hook.before_train()
    assert sorted(os.listdir(tmp_path)) == ["model_0000011.pth", "model_0000014.pth", "model_final.pth"]
    hook.step(17)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint", "model_0000014.pth", "model_0000017.pth", "model_final.pth"
    ]


def test_shrink_batch_rescales_images_and_instances():
    inst = Instances((20, 30))
    inst.gt_boxes = Boxes(torch.tensor([[3.0, 4.0, 15.0, 10.0]]))
    inst.gt_beziers = torch.arange(16, dtype=torch.float32)[None]
    inst.gt_classes = torch.tensor([0])
    batch = [{"image": torch.full((3, 20, 30), 7, dtype=torch.uint8), "height": 200, "width": 300, "instances": inst}]
    (small,) = shrink_batch(batch, (24, 20, 10, 5))
    assert small["image"].shape == (3, 10, 15) and small["image"].dtype == torch.uint8
    assert (small["image"] == 7).all()
    assert small["instances"].image_size == (10, 15)
    assert small["instances"].gt_boxes.tensor.tolist() == [[1.5, 2.0, 7.5, 5.0]]
    assert torch.equal(small["instances"].gt_beziers, torch.arange(16, dtype=torch.float32)[None] / 2)
    assert torch.equal(small["instances"].gt_classes, inst.gt_classes)
    assert (small["height"], small["width"]) == (200, 300)
    assert batch[0]["image"].shape == (3, 20, 30)  # input untouched
    assert shrink_batch(batch, (20, 24)) is None  # nothing smaller than the current short side


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_optimizer_has_the_official_parameter_groups(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.BASE_LR", 1e-4, "SOLVER.BACKBONE_MULTIPLIER", 0.1, "SOLVER.WEIGHT_DECAY", 1e-4)
    model = TinyTrainer.build_model(cfg)
    model.backbone[0].bias.requires_grad_(False)
    opt = Trainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    rest, backbone = opt.param_groups
    assert rest["lr"] == pytest.approx(1e-4) and backbone["lr"] == pytest.approx(1e-5)
    assert rest["weight_decay"] == backbone["weight_decay"] == pytest.approx(1e-4)
    assert {id(p) for p in backbone["params"]} == {
        id(p) for n, p in model.named_parameters() if n.startswith("backbone") and p.requires_grad
    }
    assert {id(p) for p in rest["params"]} == {id(p) for p in model.head.parameters()}


def test_full_model_clipping_and_step_schedule(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_ITER", 3, "SOLVER.STEPS", (2,), "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 1e-3)
    seed_all_rng(0)
    trainer = TinyTrainer(cfg)
    trainer.train()
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) <= 1e-3 * 1.0001
    history = trainer.storage.history("grad_norm").values()
    assert all(v > 1e-3 for v, _ in history)  # the logged norm is the one before clipping
    lrs = [v for v, _ in trainer.storage.history("lr").values()]
    assert lrs[0] == lrs[1] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.BACKBONE_MULTIPLIER)  # no warm-up
    assert lrs[2] == pytest.approx(lrs[0] * cfg.SOLVER.GAMMA)


def test_dataset_without_text_evaluator_gives_a_clear_error():
    cfg = tiny_cfg("unused")
    with pytest.raises(NotImplementedError, match="tiny_engine_test"):
        Trainer.build_evaluator(cfg, "tiny_engine_test")


def test_metric_printer_survives_two_writes_at_one_iteration():
    from detectron2.utils.events import EventStorage

    from ests_d2.engine.events import MetricPrinter

    printer = MetricPrinter(max_iter=10)
    lines = []
    printer.logger = SimpleNamespace(info=lines.append)  # detectron2's logger may not propagate to caplog
    with EventStorage(0) as storage:
        storage.put_scalar("total_loss", 1.0)
        printer.write()
        printer.write()  # what after_train does after a crash at this iteration
    # detectron2's own printer raises ZeroDivisionError on the second write (0 iterations since the first)
    assert len(lines) == 2
    assert all("iter: 0" in line and "total_loss: 1" in line for line in lines)
    assert "eta" not in lines[1]  # no estimate from zero iterations


def test_single_process_launch_calls_main_in_process():
    assert launch(lambda x: x + 1, 1, args=(41,)) == 42


def test_available_device_falls_back_to_cpu_only_for_missing_cuda(monkeypatch):
    from ests_d2.engine.launch import available_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert [available_device(d) for d in ("cuda", "cuda:1", "cpu")] == ["cpu", "cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert [available_device(d) for d in ("cuda", "cuda:1", "cpu")] == ["cuda", "cuda:1", "cpu"]
