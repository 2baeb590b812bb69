"""A tiny text-spotting-shaped task for the engine tests: dataset, mapper, meta-arch, evaluator, trainer.

Everything is small enough for a CPU step to take milliseconds, but every part that matters to the
engine is real: the mapper draws python / numpy / torch randomness (so augmentation depends on the
data position and seeding), images come in two aspect ratios (so aspect-ratio grouping buffers),
the model has a "backbone" and uses dropout (two parameter groups; model RNG) and its loss depends
on the images and instances it is given (so the data position matters).

Environment variables slow a run down so that a test can send a signal while it is in a given phase
(they change no result): ``TINY_ENGINE_STEP_SECONDS`` (each training forward sleeps),
``TINY_ENGINE_EVAL_SECONDS`` (each evaluation sleeps, after creating the file ``TINY_ENGINE_EVAL_MARKER``
names, if set) and, in ``tiny_train_net.py``, ``TINY_ENGINE_SAVE_SECONDS`` (each ``torch.save`` sleeps
first, its temporary file already on disk).
"""
import os
import time

import numpy as np
import random
import torch
from torch import nn
from detectron2.config import get_cfg
from detectron2.engine import HookBase
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from ests_d2.config import add_ests_config
from ests_d2.engine import Trainer

TRAIN_NAME = "tiny_engine_train"
TEST_NAME = "tiny_engine_test"
MIN_SIZES = (16, 20, 24)


def _tiny_dicts(n: int, offset: int):
    dicts = []
    for i in range(n):
        wide = i % 3 != 0
        h, w = (24, 32) if wide else (32, 24)
        x0, y0 = 2 + i % 5, 3 + i % 4
        box = [x0, y0, x0 + 10 + i % 6, y0 + 8 + i % 3]
        dicts.append(
            {
                "file_name": f"tiny_{offset + i}.png",
                "image_id": offset + i,
                "height": h,
                "width": w,
                "annotations": [
                    {"bbox": box, "bbox_mode": 0, "category_id": 0, "iscrowd": 0,
                     "beziers": [float(v) for v in np.linspace(box[0], box[2], 16)]}
                ],
            }
        )
    return dicts


def register_tiny_datasets():
    if TRAIN_NAME in DatasetCatalog.list():
        return
    DatasetCatalog.register(TRAIN_NAME, lambda: _tiny_dicts(12, 0))
    DatasetCatalog.register(TEST_NAME, lambda: _tiny_dicts(3, 100))
    for name in (TRAIN_NAME, TEST_NAME):
        MetadataCatalog.get(name).set(evaluator_type="tiny", thing_classes=["text"])


class TinyMapper:
    """Synthesises the image from ``image_id`` and applies random resize / flip / noise."""

    def __init__(self, is_train: bool):
        self.is_train = is_train

    def __call__(self, d):
        d = dict(d)
        h, w = d["height"], d["width"]
        gen = torch.Generator().manual_seed(int(d["image_id"]))
        image = torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
        box = torch.tensor([d["annotations"][0]["bbox"]], dtype=torch.float32)
        beziers = torch.tensor([d["annotations"][0]["beziers"]], dtype=torch.float32)
        if self.is_train:
            scale = float(np.random.choice(MIN_SIZES)) / min(h, w)  # numpy RNG
            size = (round(h * scale), round(w * scale))
            image = nn.functional.interpolate(image[None].float(), size=size, mode="nearest")[0]
            image = (image + torch.randn_like(image) * 4).clamp(0, 255).to(torch.uint8)  # torch RNG
            box, beziers = box * scale, beziers * scale
            if random.random() < 0.5:  # python RNG
                image = image.flip(-1)
                box = torch.stack([size[1] - box[:, 2], box[:, 1], size[1] - box[:, 0], box[:, 3]], dim=1)
            instances = Instances(size)
            instances.gt_boxes = Boxes(box)
            instances.gt_classes = torch.zeros(1, dtype=torch.int64)
            instances.gt_beziers = beziers
            d["instances"] = instances
        d["image"] = image
        return d


@META_ARCH_REGISTRY.register()
class TinyTextNet(nn.Module):
    """Predicts the (normalised) box of the single text instance from a two-conv backbone.

    Tests only: ``cfg.MODEL.TINY_NAN_AT_ITERS`` makes the loss NaN at those iterations,
    ``cfg.MODEL.TINY_NAN_GRAD_AT_ITERS`` keeps the loss finite but makes the gradients NaN.
    """

    def __init__(self, cfg):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(8, 4)
        self.nan_at = set(cfg.MODEL.get("TINY_NAN_AT_ITERS", ()))
        self.nan_grad_at = set(cfg.MODEL.get("TINY_NAN_GRAD_AT_ITERS", ()))
        self.to(cfg.MODEL.DEVICE)

    @property
    def device(self):
        return self.head.weight.device

    def _features(self, batched_inputs):
        feats = [
            self.backbone((d["image"].to(self.device).float()[None] - 128.0) / 64.0).mean(dim=(2, 3))
            for d in batched_inputs
        ]
        return torch.cat(feats)

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        time.sleep(float(os.environ.get("TINY_ENGINE_STEP_SECONDS", 0)))
        pred = self.head(self.dropout(self._features(batched_inputs))).sigmoid()
        targets = []
        for d in batched_inputs:
            h, w = d["image"].shape[-2:]
            box = d["instances"].gt_boxes.tensor[0].to(self.device)
            targets.append(box / box.new_tensor([w, h, w, h]))
        loss_box = (pred - torch.stack(targets)).abs().mean()
        loss_aux = 0.1 * pred.pow(2).mean()
        if get_event_storage().iter in self.nan_at:
            loss_aux = loss_aux * float("nan")
        if get_event_storage().iter in self.nan_grad_at:
            loss_aux = loss_aux + (pred.sum() * 0).sqrt()  # value 0, gradient inf * 0 = nan
        return {"loss_box": loss_box, "loss_aux": loss_aux}

    def inference(self, batched_inputs):
        pred = self.head(self._features(batched_inputs)).sigmoid()
        results = []
        for d, p in zip(batched_inputs, pred):
            inst = Instances((d["height"], d["width"]))
            inst.pred_boxes = Boxes(p[None] * p.new_tensor([d["width"], d["height"]] * 2))
            inst.scores = p[:1]
            results.append({"instances": inst})
        return results


class TinyEvaluator(DatasetEvaluator):
    def reset(self):
        self.scores = []

    def process(self, inputs, outputs):
        self.scores += [float(o["instances"].scores.sum()) for o in outputs]

    def evaluate(self):
        marker = os.environ.get("TINY_ENGINE_EVAL_MARKER")
        if marker:
            open(marker, "a").close()
        time.sleep(float(os.environ.get("TINY_ENGINE_EVAL_SECONDS", 0)))
        return {"tiny": {"num_images": float(len(self.scores)), "mean_score": float(np.mean(self.scores))}}


class TinyTrainer(Trainer):
    @classmethod
    def build_train_mapper(cls, cfg):
        return TinyMapper(is_train=True)

    @classmethod
    def build_test_mapper(cls, cfg):
        return TinyMapper(is_train=False)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return TinyEvaluator()


def tiny_cfg(output_dir, *opts):
    """The tiny config (MODEL.DEVICE cpu, 12 iterations of batch 2, checkpoints every 3), then ``opts``."""
    register_tiny_datasets()
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE", "TinyTextNet",
            "MODEL.DEVICE", "cpu",
            "DATASETS.TRAIN", (TRAIN_NAME,),
            "DATASETS.TEST", (TEST_NAME,),
            "DATALOADER.NUM_WORKERS", 0,
            "INPUT.MIN_SIZE_TRAIN", MIN_SIZES,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.BASE_LR", 1e-2,
            "SOLVER.WARMUP_ITERS", 0,
            "SOLVER.STEPS", (8,),
            "SOLVER.MAX_ITER", 12,
            "SOLVER.CHECKPOINT_PERIOD", 3,
            "SOLVER.LOG_PERIOD", 1,
            "SOLVER.CLIP_GRADIENTS.ENABLED", True,
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.1,
            "TEST.EVAL_PERIOD", 0,
            "SEED", 7,
            "OUTPUT_DIR", str(output_dir),
        ]
        + list(opts)
    )
    return cfg


def train_and_save(cfg, out_dir, resume=False):
    """Worker of the multi-process test: train with a rank-dependent init, save what the test checks."""
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    rank = comm.get_rank()
    # Different initial weights per rank: DDP must make them equal.
    seed_all_rng(100 + rank)
    initial = TinyTrainer.build_model(cfg).state_dict()
    seed_all_rng(100 + rank)
    trainer = TinyTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    torch.save(
        {
            "start_iter": trainer.start_iter,
            "world_size": comm.get_world_size(),
            "initial": initial,
            "final": trainer.model.module.state_dict(),
            "batches_consumed": trainer._trainer.batches_consumed,
        },
        f"{out_dir}/rank{rank}.pt",
    )


def resume_and_train(cfg):
    """One life of the SIGKILL test: resume from whatever is on disk and train to the end."""
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(cfg.SEED)  # as default_setup: a life that starts from scratch builds the same model
    trainer = TinyTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()


# Registered on import so that spawned / forked worker processes see the datasets too.
register_tiny_datasets()


class SimulatedCrash(Exception):
    """Raised by :class:`StopAfter` to end a training run abruptly."""


class StopAfter(HookBase):
    """Simulates a crash right after iteration ``k`` (and its checkpoint)."""

    def __init__(self, k):
        self.k = k

    def after_step(self):
        if self.trainer.iter == self.k:
            raise SimulatedCrash()


class SignalSelf(HookBase):
    """Sends ``sig`` to this process after iteration ``k``: a preemption signal that reached one rank only."""

    def __init__(self, k, sig):
        self.k, self.sig = k, sig

    def after_step(self):
        if self.trainer.iter == self.k:
            os.kill(os.getpid(), self.sig)


def train_until_signalled(cfg, out_dir, signalled_rank, k, sig):
    """Worker of the multi-process preemption test: rank ``signalled_rank`` signals itself after iteration ``k``."""
    from detectron2.utils import comm

    trainer = TinyTrainer(cfg)
    trainer.resume_or_load(resume=True)
    if comm.get_rank() == signalled_rank:
        trainer.register_hooks([SignalSelf(k, sig)])
    # Registered after the preemption hook: the signal is seen after the next step.
    with open(f"{out_dir}/rank{comm.get_rank()}_start.txt", "w") as f:
        f.write(str(trainer.start_iter))
    trainer.train()
