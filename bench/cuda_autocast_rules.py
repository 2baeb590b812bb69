"""CUDA autocast's float32 rules on a CPU: an estimate of what a GPU's mixed-precision step keeps in float32.

CPU and CUDA autocast cast the same matrix products and convolutions to the low precision, but CUDA also runs
a list of precision-sensitive operators in float32 whatever their input (LayerNorm, softmax, exp, log, pow,
sums, most losses: ``AT_FORALL_FP32`` and ``AT_FORALL_FP32_SET_OPT_DTYPE`` in ATen's autocast_mode.h), where
CPU autocast leaves them in their input's precision. :class:`CudaAutocastFloat32Rules` applies that list on top
of CPU autocast, at the Python API (a ``TorchFunctionMode``): a listed function called with a bf16/fp16 tensor
gets its floating-point tensors upcast, so its output (and what autograd keeps of it) is float32, as on a GPU.
``Tensor.backward`` inside the mode keeps it on for the whole backward, where recomputations re-enter autocast.

An approximation for benchmarks, not a CUDA autocast: it sees the functions Python code calls (``F.layer_norm``
from ``nn.LayerNorm``, ``x.softmax``, ``x ** 2``), not those a fused operator or a Python function of torch's
own runs inside itself, and it ignores the few operators only CPU autocast runs in float32.
"""
import torch
from torch.overrides import TorchFunctionMode

# The out-of-place operators CUDA autocast runs in float32 (names as Python calls them; in-place variants are
# not autocast operators on either device).
CUDA_FLOAT32_OPS = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow", "__rpow__", "softplus", "layer_norm", "group_norm", "rms_norm",
    "frobenius_norm", "nuclear_norm", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss",
    "nll_loss", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "interpolate",  # F.interpolate runs the upsample_* operators
    # AT_FORALL_FP32_SET_OPT_DTYPE: computed (and returned) in float32 unless a dtype is given
    "prod", "softmax", "log_softmax", "cumprod", "cumsum", "sum", "linalg_vector_norm", "linalg_matrix_norm",
    "norm",  # Tensor.norm runs linalg_vector_norm
})
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in _LOW_PRECISION else value
    if isinstance(value, (list, tuple)):
        return type(value)(_upcast(v) for v in value)
    return value


def _has_low_precision(values) -> bool:
    return any((isinstance(v, torch.Tensor) and v.dtype in _LOW_PRECISION)
               or (isinstance(v, (list, tuple)) and _has_low_precision(v)) for v in values)


class CudaAutocastFloat32Rules(TorchFunctionMode):
    """Inside CPU autocast, run CUDA autocast's float32 operators in float32 (see the module docstring).

    ``calls_upcast`` counts the calls whose inputs it upcast, per function name: what the estimate changed.
    """

    def __init__(self):
        super().__init__()
        self.calls_upcast = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.backward:
            # A mode is off while its handler runs, so Tensor.backward would run the whole backward without the
            # rules, yet backward's recomputations re-enter the forward's autocast and must see them too.
            with self:
                return _backward(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if (name in CUDA_FLOAT32_OPS and torch.is_autocast_enabled("cpu") and kwargs.get("dtype") is None
                and _has_low_precision(list(args) + list(kwargs.values()))):
            self.calls_upcast[name] = self.calls_upcast.get(name, 0) + 1
            args, kwargs = _upcast(args), {k: _upcast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _backward(tensor: torch.Tensor, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    """``Tensor.backward`` without its torch-function dispatch: autograd's engine, called directly (a torch
    internal: ``torch.autograd.backward`` dispatches to the modes too)."""
    gradient = torch.ones_like(tensor) if gradient is None else gradient
    retain_graph = create_graph if retain_graph is None else retain_graph
    torch.autograd.graph._engine_run_backward((tensor,), (gradient,), retain_graph, create_graph,
                                              tuple(inputs or ()), allow_unreachable=True, accumulate_grad=True)
