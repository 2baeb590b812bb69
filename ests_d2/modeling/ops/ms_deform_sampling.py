"""The sampling op of multi-scale deformable attention (Deformable DETR), pure PyTorch.

The op behind ``MSDeformAttn`` (the layer, in ``modeling/ms_deform_attn.py``, only projects): the layer code stays
plain, and the op can be swapped for a compiled kernel at this one seam, as Mask2Former keeps its CUDA op in ``ops/``.

The sampling is the official reference math: bilinear sampling with zeros padding and ``align_corners=False``
per level, weighted by per-head softmax attention. Instead of one ``grid_sample`` per level (which writes a
(B*M, Dh, Lq, P) sample buffer per level), every (query, head) output row is computed as weighted bags of
value rows with ``F.embedding_bag(mode="sum", per_sample_weights=...)``, which produces the (B, Lq, M*Dh)
output layout directly.

The value maps of all levels are first copied onto one zero-bordered *canvas* (levels stacked vertically,
2 zero rows between them and 2 zero columns on each side, one common row width). On it, the four bilinear
corners of a sample are its top-left corner's row plus four fixed row offsets, identical for every level, and
a corner outside its map reads a zero, exactly like ``grid_sample``'s zeros padding. So each sample needs one
index (not four), no inside/outside masks, and every pass over the samples is four times shorter; the four
corners become four bag sums over shifted views of the same canvas.

With ``recompute_sampling`` (``MODEL.ESTS.DEFORM_ATTN_RECOMPUTE``) the op keeps only its inputs and has a
hand-written backward (``_RecomputedBagSample``); see ``modeling/recompute.py`` for every memory saving.
"""
import warnings
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

# zero rows/columns around every level: a top-left corner clamped to -2 or to the map size reads two of them
_BORDER = 2


class _Canvas(NamedTuple):
    """Where the value tokens of every level lie on the zero-bordered canvas."""

    spatial_shapes: List[Tuple[int, int]]  # L pairs (H_l, W_l)
    level_tops: List[int]  # canvas row of every level's first pixel row
    width: int  # cells per canvas row: widest level + 2 borders
    num_cells: int  # canvas rows x width, zero bottom border included

    def level_origins(self) -> List[int]:
        """Canvas cell of every level's pixel (0, 0)."""
        return [top * self.width + _BORDER for top in self.level_tops]


def _canvas(spatial_shapes: List[Tuple[int, int]]) -> _Canvas:
    width = max(w for _, w in spatial_shapes) + 2 * _BORDER
    tops, top = [], _BORDER
    for h, _ in spatial_shapes:
        tops.append(top)
        top += h + _BORDER  # the next level's top border is this level's bottom border
    if top * width >= 2**24:
        raise ValueError(f"feature maps {spatial_shapes} are too large for one sampling canvas")
    return _Canvas(list(spatial_shapes), tops, width, top * width)


def _level_windows(canvas: _Canvas, board: torch.Tensor, tokens: torch.Tensor):
    """Pairs (canvas window, token view) of every level: board (B, rows, width, M, Dh), tokens (B, S, M, Dh)."""
    start = 0
    for (h, w), top in zip(canvas.spatial_shapes, canvas.level_tops):
        yield (board[:, top:top + h, _BORDER:_BORDER + w],
               tokens[:, start:start + h * w].view(tokens.shape[0], h, w, *tokens.shape[2:]))
        start += h * w


def _corner_offsets(canvas: _Canvas, num_heads: int) -> Tuple[int, int, int, int]:
    """Row offsets of the corners (x0, y0), (x1, y0), (x0, y1), (x1, y1) from the top-left one's row."""
    down = canvas.width * num_heads
    return 0, num_heads, down, down + num_heads


def _canvas_rows(value: torch.Tensor, canvas: _Canvas, dtype: torch.dtype) -> torch.Tensor:
    """(B, S, M, Dh) values -> (B * num_cells * M, Dh) canvas rows in ``dtype``, zeros on the borders
    (differentiable). Values in a lower precision are upcast as they are written: exact, and no upcast copy of
    the whole value map exists beside the canvas."""
    batch, _, num_heads, head_dim = value.shape
    # level by level into an uninitialised board, borders zeroed apart: every cell is written once (a zeroed
    # board filled by index_copy writes it twice and takes twice as long)
    board = value.new_empty(batch, canvas.num_cells // canvas.width, canvas.width, num_heads, head_dim, dtype=dtype)
    board[:, : canvas.level_tops[0]] = 0
    for (h, w), top in zip(canvas.spatial_shapes, canvas.level_tops):
        board[:, top:top + h, :_BORDER] = 0
        board[:, top:top + h, _BORDER + w:] = 0
        board[:, top + h:top + h + _BORDER] = 0
    for window, level in _level_windows(canvas, board, value):
        window.copy_(level)
    return board.view(-1, head_dim)


def _canvas_values(rows: torch.Tensor, canvas: _Canvas, batch: int, num_heads: int, dtype: torch.dtype
                   ) -> torch.Tensor:
    """Inverse of ``_canvas_rows`` (not differentiable): (B * num_cells * M, Dh) -> (B, S, M, Dh) in ``dtype``,
    borders dropped (a lower precision is rounded to as the cells are read, as ``.to`` would)."""
    head_dim = rows.shape[-1]
    board = rows.view(batch, canvas.num_cells // canvas.width, canvas.width, num_heads, head_dim)
    num_tokens = sum(h * w for h, w in canvas.spatial_shapes)
    values = rows.new_empty(batch, num_tokens, num_heads, head_dim, dtype=dtype)
    for window, level in _level_windows(canvas, board, values):
        level.copy_(window)
    return values


def over_points(per_level, num_points: int) -> torch.Tensor:
    """(L, ...) per-level values repeated over the points: a contiguous (L, P, ...) tensor.

    Elementwise kernels read a (..., L, P) tensor and a (L, P) operand with one long inner loop; a broadcast
    (L, 1) operand cuts it into loops of P (or 2) elements, 3-8x slower on CPU. The values are the same, so are
    the results.
    """
    return per_level.unsqueeze(1).expand(per_level.shape[0], num_points, *per_level.shape[1:]).contiguous()


def points_of_queries(reference: torch.Tensor, num_points: int) -> torch.Tensor:
    """(B, Lq, L, C) per-level references -> (B, Lq, 1, L, P, C), contiguous over (L, P, C) (see over_points)."""
    batch, num_queries, num_levels, coords = reference.shape
    return reference[:, :, :, None].expand(batch, num_queries, num_levels, num_points, coords).contiguous()[:, :, None]


def _level_sizes(spatial_shapes: List[Tuple[int, int]], num_points: int, device: torch.device, dtype: torch.dtype):
    """(L, P) widths and heights of the levels, for the points of a (..., L, P) tensor."""
    sizes = torch.tensor(spatial_shapes, device=device, dtype=dtype)
    return over_points(sizes[:, 1], num_points), over_points(sizes[:, 0], num_points)


def _top_left_rows(canvas: _Canvas, sampling_locations: torch.Tensor, num_heads: int):
    """Canvas row of every sample's top-left corner, and its fractional offsets from that corner.

    Args:
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y).
    Returns:
        rows (B*Lq*M, L*P) int32; fx, fy (B, Lq, M, L, P), differentiable in the locations.
    """
    batch, num_queries = sampling_locations.shape[:2]
    if batch * canvas.num_cells * num_heads >= 2**31:
        raise ValueError(f"{batch} x {canvas.num_cells} x {num_heads} canvas rows do not fit int32 indices")
    device, dtype = sampling_locations.device, sampling_locations.dtype
    num_points = sampling_locations.shape[-2]
    widths, heights = _level_sizes(canvas.spatial_shapes, num_points, device, dtype)
    x, y = sampling_locations.unbind(-1)
    # align_corners=False: pixel centres sit at (i + 0.5) / size
    x = x * widths - 0.5
    y = y * heights - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0  # differentiable in the locations, exactly like grid_sample's bilinear weights
    # a corner pair entirely outside its map is moved onto the border, where both read zeros
    border = torch.full((), -_BORDER, device=device, dtype=dtype)
    x0, y0 = torch.clamp(x0, border, widths), torch.clamp(y0, border, heights)
    # the cell arithmetic below is exact in float32 (cells < 2**24, checked in _canvas), not in half types
    if dtype not in (torch.float32, torch.float64):
        x0, y0 = x0.float(), y0.float()
    origins = over_points(torch.tensor(canvas.level_origins(), device=device, dtype=x0.dtype), num_points)
    cell = torch.add(x0 + origins, y0, alpha=canvas.width).int()
    image = torch.arange(batch, device=device, dtype=torch.int32).view(batch, 1, 1, 1, 1) * canvas.num_cells
    head = torch.arange(num_heads, device=device, dtype=torch.int32).view(num_heads, 1, 1).expand(
        -1, *cell.shape[-2:]).contiguous()
    rows = torch.add(head, cell + image, alpha=num_heads)
    return rows.view(batch * num_queries * num_heads, -1), fx, fy


def _corner_weights(fx: torch.Tensor, fy: torch.Tensor, attention_weights: torch.Tensor):
    """Attention x bilinear weight of the corners (x0, y0), (x1, y0), (x0, y1), (x1, y1), (B, Lq, M, L, P) each."""
    bottom = attention_weights * fy
    top = attention_weights - bottom
    top_right, bottom_right = top * fx, bottom * fx
    return top - top_right, top_right, bottom - bottom_right, bottom_right


def _sample(value: torch.Tensor, spatial_shapes: List[Tuple[int, int]], sampling_locations: torch.Tensor,
            attention_weights: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
    """The sampling in ``compute_dtype``, every input upcast to it (the values as the canvas is written)."""
    batch, _, num_heads, head_dim = value.shape
    sampling_locations, attention_weights = sampling_locations.to(compute_dtype), attention_weights.to(compute_dtype)
    num_queries = sampling_locations.shape[1]
    canvas = _canvas(spatial_shapes)
    value_rows = _canvas_rows(value, canvas, compute_dtype)
    rows, fx, fy = _top_left_rows(canvas, sampling_locations, num_heads)
    out = 0
    for shift, weights in zip(_corner_offsets(canvas, num_heads), _corner_weights(fx, fy, attention_weights)):
        out = out + F.embedding_bag(rows, value_rows[shift:], mode="sum", per_sample_weights=weights.view(rows.shape))
    return out.view(batch, num_queries, num_heads * head_dim)


class _TransposedBags(NamedTuple):
    """The samples regrouped by the canvas row they read (one argsort, shared by the four corners)."""

    order: torch.Tensor  # (N,) sample positions sorted by row
    reading_bags: torch.Tensor  # (N,) output row (bag) of every sorted sample
    offsets: torch.Tensor  # (R,) first sorted sample of every canvas row


def _transpose_bags(rows: torch.Tensor, num_rows: int) -> _TransposedBags:
    flat = rows.reshape(-1)
    order = flat.argsort()
    offsets = torch.zeros(num_rows, dtype=torch.int64, device=flat.device)
    offsets[1:] = torch.bincount(flat, minlength=num_rows)[:-1].cumsum(0)
    return _TransposedBags(order, torch.div(order, rows.shape[1], rounding_mode="floor"), offsets)


def _sample_weight_grads(rows: torch.Tensor, grad_rows: torch.Tensor, value_rows: torch.Tensor,
                         canvas_shifts: Tuple[int, ...]) -> List[torch.Tensor]:
    """d(output)/d(corner weight) = <grad of the sample's output row, value row the corner reads>, per corner.

    Sampled dense-dense products on one CSR pattern (bag, top-left row), one per shifted canvas view.
    """
    num_bags, samples_per_bag = rows.shape
    num_rows = value_rows.shape[0] - max(canvas_shifts)
    crow = torch.arange(0, num_bags * samples_per_bag + 1, samples_per_bag, device=rows.device)
    columns = rows.reshape(-1).long()
    grads = []
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the two calls used here are tested
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for shift in canvas_shifts:
            # one CSR tensor per corner, sharing the index arrays; the product is written into it (out=) so
            # that sampled_addmm does not first copy the whole pattern into a new result
            products = torch.sparse_csr_tensor(
                crow, columns, torch.zeros(rows.numel(), dtype=grad_rows.dtype, device=rows.device),
                size=(num_bags, num_rows), check_invariants=False,  # valid by construction
            )
            torch.sparse.sampled_addmm(products, grad_rows, value_rows[shift:shift + num_rows].t(), beta=0.0,
                                       out=products)
            grads.append(products.values())
    return grads


class _RecomputedBagSample(torch.autograd.Function):
    """``_sample`` that stores only its inputs and has a hand-written backward.

    Backward recomputes the canvas and the top-left rows, computes the value gradient as transposed bag sums
    (samples regrouped by the row they read), the corner weight gradients as sampled products and from them,
    in closed form, the location and attention gradients. The math is ``_sample``'s under autograd; tests
    compare the two in float64 and gradcheck it.
    """

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, spatial_shapes, compute_dtype):
        # Inputs in a lower precision than compute_dtype (value and softmax weights under autocast) are
        # saved as they came: their upcast is exact, so backward redoes it instead of keeping copies twice
        # the size.
        ctx.spatial_shapes, ctx.compute_dtype = spatial_shapes, compute_dtype
        ctx.save_for_backward(value, sampling_locations, attention_weights)
        return _sample(value, spatial_shapes, sampling_locations, attention_weights, compute_dtype)

    @staticmethod
    def backward(ctx, grad_output):
        value_in, locations_in, attention_in = ctx.saved_tensors
        sampling_locations, attention_weights = (t.to(ctx.compute_dtype) for t in (locations_in, attention_in))
        need_value, need_locations, need_attention = ctx.needs_input_grad[:3]
        batch, _, num_heads, head_dim = value_in.shape
        grad_rows = grad_output.reshape(-1, head_dim).contiguous()
        canvas = _canvas(ctx.spatial_shapes)
        shifts = _corner_offsets(canvas, num_heads)
        rows, fx, fy = _top_left_rows(canvas, sampling_locations, num_heads)
        num_canvas_rows = batch * canvas.num_cells * num_heads
        grad_value = grad_locations = grad_attention = None
        if need_value:
            bags = _transpose_bags(rows, num_canvas_rows - shifts[-1])
            grad_canvas = grad_rows.new_zeros(num_canvas_rows, head_dim)
            # the corner weights of the samples in row order: three gathers of their factors (not four of
            # the weights), then the same elementwise products
            sorted_factors = (t.reshape(-1).take(bags.order) for t in (fx, fy, attention_weights))
            for shift, weights in zip(shifts, _corner_weights(*sorted_factors)):
                grad_canvas[shift:shift + bags.offsets.shape[0]].add_(F.embedding_bag(
                    bags.reading_bags, grad_rows, bags.offsets, mode="sum", per_sample_weights=weights))
            del bags
            grad_value = _canvas_values(grad_canvas, canvas, batch, num_heads, value_in.dtype)
        if need_locations or need_attention:
            value_rows = _canvas_rows(value_in, canvas, ctx.compute_dtype)
            g00, g01, g10, g11 = (g.view(fx.shape) for g in _sample_weight_grads(rows, grad_rows, value_rows, shifts))
            del rows, value_rows
            # chain rule of _corner_weights: w = a * wy * wx, wx0 = 1 - fx, wx1 = fx, x = location_x * W - 0.5
            d_right_top, d_right_bottom = g01 - g00, g11 - g10
            top, bottom = torch.addcmul(g00, fx, d_right_top), torch.addcmul(g10, fx, d_right_bottom)
            d_down = bottom - top
            grad_attention = torch.addcmul(top, fy, d_down)
            grad_fx = attention_weights * torch.lerp(d_right_top, d_right_bottom, fy)
            grad_fy = attention_weights * d_down
            widths, heights = _level_sizes(ctx.spatial_shapes, fx.shape[-1], fx.device, fx.dtype)
            grad_locations = torch.stack((grad_fx * widths, grad_fy * heights), -1)
        # gradients in the dtypes of the inputs, as autograd's ToCopyBackward of an outside upcast would give
        return (grad_value if need_value else None,
                grad_locations.to(locations_in.dtype) if need_locations else None,
                grad_attention.to(attention_in.dtype) if need_attention else None, None, None)


def ms_deform_attn_sample(
    value: torch.Tensor,
    spatial_shapes: List[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    recompute_sampling: bool = False,
    compute_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Weighted bilinear sampling of a multi-level value map.

    Args:
        value: (B, S, M, Dh) per-head values of all levels, flattened level by level (row-major).
        spatial_shapes: L pairs (H_l, W_l) with sum(H_l * W_l) == S.
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y) in [0, 1] of the padded maps.
        attention_weights: (B, Lq, M, L, P), softmax-normalised over (L, P).
        recompute_sampling: with autograd, keep only the inputs and recompute the canvas, the (B*Lq*M, L*P)
            top-left rows and the corner weights in backward (hand-written backward) instead of letting
            autograd store them and their intermediates. Float32/float64 only; other dtypes take the
            autograd path.
        compute_dtype: dtype of the sampling (default: value's). Inputs are upcast to it; with
            ``recompute_sampling`` they are kept for backward in the precision they came in.
    Returns:
        (B, Lq, M * Dh) in ``compute_dtype``.
    """
    if sum(h * w for h, w in spatial_shapes) != value.shape[1]:
        raise ValueError(f"spatial_shapes {spatial_shapes} do not cover the {value.shape[1]} value tokens")
    tracking = torch.is_grad_enabled() and (
        value.requires_grad or sampling_locations.requires_grad or attention_weights.requires_grad
    )
    compute_dtype = compute_dtype or value.dtype
    if tracking and recompute_sampling and compute_dtype in (torch.float32, torch.float64):
        return _RecomputedBagSample.apply(value, sampling_locations, attention_weights, spatial_shapes, compute_dtype)
    return _sample(value, spatial_shapes, sampling_locations, attention_weights, compute_dtype)

