"""Config keys of ests-d2. ``add_ests_config`` only *adds* keys; detectron2's defaults stay untouched."""
from detectron2.config import CfgNode as CN


def add_ests_config(cfg):
    """Add every ESTS key to ``cfg`` (a detectron2 ``get_cfg()`` node). Values default to the official code."""
    _add_model_config(cfg)
    _add_input_config(cfg)
    _add_solver_config(cfg)
    _add_test_config(cfg)


def load_ests_config(config_file: str, opts=()):
    """A detectron2 config with the ESTS keys, ``config_file`` merged in, then ``KEY VALUE`` overrides (unfrozen)."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def _add_model_config(cfg):
    cfg.MODEL.ESTS = CN()
    e = cfg.MODEL.ESTS
    e.NUM_CLASSES = 2  # box classes of the official head (only class 1 = text is ever a target)
    e.NUM_QUERIES = 100  # matching ("detection") queries
    e.HIDDEN_DIM = 256  # transformer width D
    e.NHEADS = 8  # attention heads
    e.ENC_LAYERS = 6  # deformable encoder layers
    e.DEC_LAYERS = 6  # decoder layers
    e.DIM_FEEDFORWARD = 2048  # FFN width in encoder and decoder
    e.DROPOUT = 0.0  # dropout everywhere in the transformer
    e.NUM_FEATURE_LEVELS = 5  # 5: res2..res5 + a stride-64 level; 4: res3..res5 + stride-64
    e.ENC_N_POINTS = 4  # deformable sampling points per head and level (encoder)
    e.DEC_N_POINTS = 4  # deformable sampling points per head and level (decoder)
    e.PE_TEMPERATURE = 20  # temperature of the 2-D sine position encoding (both axes)
    e.MAX_TEXT_LEN = 25  # recognition slots per instance (T)
    e.VOC_SIZE = 97  # recognition classes V (EN: 95 printable ASCII + unknown + padding)
    e.CUSTOM_DICT = ""  # optional file with one character per line for a non-EN vocabulary
    e.VOCABULARY = ""  # "en" | "char_file" | "code_point_pickle" (official chn_cls_list.txt) | "vintext"; "": by CUSTOM_DICT
    e.ROI_OUTPUT_SIZE = (8, 25)  # RoIAlign bins (rows, cols) used to initialise recognition queries
    e.NUM_SELECT = 100  # (query, class) pairs kept by post-processing
    e.ACTIVATION_CHECKPOINT = False  # recompute encoder/decoder layers in backward to save memory
    e.DEFORM_ATTN_FP32 = True  # run multi-scale deformable attention in fp32 under autocast
    e.DEFORM_ATTN_RECOMPUTE = True  # training: redo sampling, value projection, sampling points, weights in backward
    e.FFN_RECOMPUTE = True  # training: recompute the FFNs' inputs (LayerNorm) and wide activations in backward

    e.DN = CN()
    e.DN.ENABLED = True  # contrastive denoising queries in training
    e.DN.NUMBER = 100  # DN budget: 2*NUMBER//(2*max GTs) groups if 2*NUMBER >= 100, else 2*NUMBER groups (official)
    e.DN.LABEL_NOISE_RATIO = 0.5  # label flip ratio (flip probability is half of it)
    e.DN.BOX_NOISE_SCALE = 1.0  # box noise scale (the official scripts use 1.0)

    e.MATCHER = CN()
    e.MATCHER.COST_CLASS = 2.0  # focal class cost weight
    e.MATCHER.COST_BBOX = 5.0  # L1 box cost weight
    e.MATCHER.COST_GIOU = 2.0  # GIoU cost weight

    e.LOSS = CN()
    e.LOSS.FOCAL_ALPHA = 0.25  # focal loss alpha
    e.LOSS.FOCAL_GAMMA = 2.0  # focal loss gamma
    e.LOSS.CLASS_WEIGHT = 1.0  # weight of loss_ce
    e.LOSS.BBOX_WEIGHT = 5.0  # weight of loss_bbox
    e.LOSS.GIOU_WEIGHT = 2.0  # weight of loss_giou
    e.LOSS.REC_WEIGHT = 1.0  # weight of loss_rec (per-slot cross-entropy)
    e.LOSS.POLYGON_WEIGHT = 1.0  # weight of loss_beziers (16-point polygon L1)
    e.LOSS.INTERM_WEIGHT = 1.0  # multiplier of the encoder-proposal (interm) terms
    e.LOSS.AUX = True  # apply the losses to every decoder layer, not only the last


def _add_input_config(cfg):
    # The official sizes are not set here (detectron2's own keys keep their defaults); configs set
    # INPUT.MIN_SIZE_TRAIN (640, 672, ..., 896), MAX_SIZE_TRAIN 1600, MIN/MAX_SIZE_TEST and FORMAT "RGB".
    i = cfg.INPUT
    i.TEXT_CROP = CN()
    i.TEXT_CROP.ENABLED = True  # instance-preserving random crop (official RandomSizeCrop), first augmentation
    i.TEXT_CROP.PROB = 0.5  # probability of cropping an image that has instances
    i.TEXT_CROP.MIN_RATIO = 0.5  # smallest crop side, relative to the image side (before growing to instances)
    i.TEXT_CROP.MAX_RATIO = 1.0  # largest crop side, relative to the image side
    i.TEXT_CROP.MAX_TRIES = 100  # windows drawn before giving up (image left uncropped)
    i.ROTATE = CN()
    i.ROTATE.ENABLED = True  # random rotation with canvas expansion, after the crop
    i.ROTATE.PROB = 0.5  # probability of rotating
    i.ROTATE.ANGLE = 45.0  # angle ~ U(-ANGLE, ANGLE) degrees, counter-clockwise
    i.COLOR_JITTER = CN()
    i.COLOR_JITTER.ENABLED = True  # torchvision-style ColorJitter, after the resize
    i.COLOR_JITTER.PROB = 0.5  # probability of jittering
    i.COLOR_JITTER.BRIGHTNESS = 0.5  # brightness factor ~ U(1 - b, 1 + b)
    i.COLOR_JITTER.CONTRAST = 0.5  # contrast factor ~ U(1 - c, 1 + c)
    i.COLOR_JITTER.SATURATION = 0.5  # saturation factor ~ U(1 - s, 1 + s)
    i.COLOR_JITTER.HUE = 0.5  # hue shift ~ U(-h, h), h <= 0.5


def _add_solver_config(cfg):
    s = cfg.SOLVER
    s.BACKBONE_MULTIPLIER = 0.1  # lr of params whose name contains "backbone" = BASE_LR * this (1e-5)
    s.LOG_PERIOD = 20  # iterations between two metric writes (console, metrics.json, tensorboard)
    s.MAX_CHECKPOINTS_TO_KEEP = 0  # periodic checkpoints kept on disk (0 = keep all; model_final is never deleted)
    s.PREEMPT_SIGNALS = ("SIGTERM",)  # signals that checkpoint the current iteration and exit with code 75 (add "SIGUSR1")
    s.MAX_CONSECUTIVE_NONFINITE = 100  # abort with FloatingPointError after this many skipped non-finite steps in a row
    s.AMP.PRECISION = "float16"  # autocast dtype when SOLVER.AMP.ENABLED: "float16" (with a GradScaler) or "bfloat16"

    s.OOM = CN()
    s.OOM.ENABLED = True  # undo a step that runs out of CUDA memory and retry it smaller instead of crashing
    s.OOM.MAX_RETRIES = 2  # retries of one batch (each at a smaller INPUT.MIN_SIZE_TRAIN choice) before skipping it
    s.OOM.INJECT_AT_ITERS = ()  # testing only: each listed iteration raises a simulated OOM (listed n times: n tries)


def _add_test_config(cfg):
    cfg.TEST.TEXT = CN()
    t = cfg.TEST.TEXT
    t.TASKS = ["det", "e2e"]  # runs to report: "det" (official task 0, no rec filter) and/or "e2e" (task 1)
    t.LEXICONS = []  # extra e2e runs with lexicons: TT "full"/"weak", CTW "full", IC15 "generic"/"weak"/"strong"
    t.DET_THRESHOLD = -1.0  # keep round(score, 3) >= this; -1: official (TT 0.415, CTW 0.41, IC15 0.243)
    t.REC_CONFIDENCE = -1.0  # e2e: drop mean(rec_scores) < this; -1: official (TT 0.975, CTW 0.98, IC15 none)
    t.WORD_SPOTTING = -1  # 1/0 force the word-spotting rules on/off; -1: official (Total-Text only)
