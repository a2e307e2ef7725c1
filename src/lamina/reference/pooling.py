"""Pooling: max, average and their adaptive forms, forward and backward in NumPy.

Every function takes a 4-D array ``x`` of shape (N, C, H, W) in float32 or
float64 and never modifies it. Geometry follows PyTorch exactly:

    OH = floor_or_ceil((H + 2*pad - dil*(k - 1) - 1) / stride) + 1

and with ``ceil_mode`` the last window is dropped when it would start past the
input plus the left padding. Output window (oh, ow) reads input rows
``oh*stride - pad + i*dil`` for ``i < k`` (columns likewise).

Vectorization: the Python loops run over the k*k offsets inside a window, never
over elements. For one offset (i, j), the input elements seen by every window
form one strided slice of a padded copy of x, so forward is "combine k*k
strided slices" (see _Phases for how those slices are made contiguous).
Backward sends each output's gradient to the input element its maximum (max
pool) came from, a scatter-add, or adds k*k strided slices (average pool).

Max pool remembers, per output, only *which* of the k*k window positions held
the maximum (uint8 for windows up to 256, row-major in the window): backward
needs nothing else. PyTorch's int64 indices (flat ``h*W + w`` within each
(n, c) plane) are derived from it on request. Ties go to the first maximum in
row-major window order and NaN wins (the last NaN, as PyTorch's
``val > max or isnan(val)`` update does).

Adaptive pools: output row i covers input rows ``floor(i*H/OH)`` up to (not
including) ``ceil((i+1)*H/OH)``; windows differ in size by at most one, and
are handled one dimension at a time with a loop over the largest window.
"""

from __future__ import annotations

import numpy as np

from .layer import Layer


# =============================================================================
# geometry shared by the pools
# =============================================================================

def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's output length of one pooled dimension (may be < 1: caller checks)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        # the last window must start inside the input or the left padding
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = span // stride + 1
    return out


def position_dtype(window_size: int):
    """The smallest integer type that numbers the positions of a window: uint8,
    else int16 or int32 (types torch tensors hold on every version)."""
    if window_size <= 256:
        return np.uint8
    if window_size <= 32767:
        return np.int16
    return np.int32


def _padded_size(hw, pad, out_hw, kernel, stride, dilation):
    """(Hp, Wp): the input plus padding, or more where ceil_mode windows reach past it."""
    return tuple(max((o - 1) * s + d * (k - 1) + 1, n + p)
                 for o, s, d, k, n, p in zip(out_hw, stride, dilation, kernel, hw, pad))


class _Phases:
    """A padded (N, C, Hp, Wp) array split into its sh*sw stride phases, so
    that every window offset reads one *contiguous* run per plane.

    Phase (a, b) holds rows a, a+sh, ... and columns b, b+sw, ... of each
    plane, stored flat as an (N*C, Hq*Wq) array with a spare row. Window
    offset (i, j) reads, for output (oh, ow), element (r0 + oh, c0 + ow) of
    phase ((i*dh) % sh, (j*dw) % sw), with r0 = (i*dh)//sh and c0 = (j*dw)//sw:
    in flat terms, offset r0*Wq + c0 plus oh*Wq + ow. So the outputs are
    computed on a "wide" (OH, Wq) grid -- columns past OW are scratch,
    cropped at the end -- and each offset is a single slice
    ``flat[:, start:start + OH*Wq]``: long runs, NumPy's fast inner loop,
    whatever the stride.
    """

    def __init__(self, shape, stride, dilation, out_hw, dtype, fill=0, source=None, pad=(0, 0)):
        """Phases of an (N, C, Hp, Wp) array of ``fill`` holding ``source``
        (if given) at offset ``pad`` -- the padded input, never built whole."""
        n, c, self.hp, self.wp = shape
        self.stride, self.dilation, self.out_hw = stride, dilation, out_hw
        sh, sw = stride
        self.hq, self.wq = -(-self.hp // sh) + 1, -(-self.wp // sw)
        self.parts = {}
        for a in range(sh):
            for b in range(sw):
                shape = (n * c, self.hq, self.wq)
                part = np.zeros(shape, dtype) if fill == 0 else np.full(shape, fill, dtype)
                if source is not None:
                    # the first phase row/column that lands inside the source
                    r0, q0 = -(-(pad[0] - a) // sh), -(-(pad[1] - b) // sw)
                    src = source[:, :, a + r0 * sh - pad[0]::sh, b + q0 * sw - pad[1]::sw]
                    part[:, r0:r0 + src.shape[2], q0:q0 + src.shape[3]] = src.reshape((n * c,) + src.shape[2:])
                self.parts[a, b] = part.reshape(n * c, self.hq * self.wq)

    def window(self, i, j):
        """The (N*C, OH*Wq) slice that window offset (i, j) reads (a view)."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        (a, r0), (b, c0) = ((i * dh) % sh, (i * dh) // sh), ((j * dw) % sw, (j * dw) // sw)
        start = r0 * self.wq + c0
        return self.parts[a, b][:, start:start + self.out_hw[0] * self.wq]

    def widen(self, t, fill=0):
        """(N, C, OH, OW) -> the wide (N*C, OH*Wq) grid, scratch columns = fill."""
        n, c, oh, ow = t.shape
        wide = np.full((n * c, oh, self.wq), fill, t.dtype)
        wide[:, :, :ow] = t.reshape(n * c, oh, ow)
        return wide.reshape(n * c, oh * self.wq)

    def narrow(self, wide, n, c):
        """The wide (N*C, OH*Wq) grid -> (N, C, OH, OW), scratch columns dropped."""
        oh, ow = self.out_hw
        return np.ascontiguousarray(wide.reshape(n * c, oh, self.wq)[:, :, :ow]).reshape(n, c, oh, ow)

    def join(self, n, c):
        """The phases put back together as one (N, C, Hp, Wp) array."""
        sh, sw = self.stride
        out = np.empty((n, c, self.hp, self.wp), self.parts[0, 0].dtype)
        for (a, b), part in self.parts.items():
            dst = out[:, :, a::sh, b::sw]
            dst[...] = part.reshape(n, c, self.hq, self.wq)[:, :, :dst.shape[2], :dst.shape[3]]
        return out


def _crop(xp, pad, h, w):
    """The input-sized part of a padded array (itself when there is no border)."""
    if xp.shape[2:] == (h, w):
        return xp
    return np.ascontiguousarray(xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w])


def _tiles_cover(kernel_size, stride, padding, dilation):
    """True when the windows tile the input without overlap or padding (2x2/s2
    and the like): backward is then a broadcast over (OH, kh, OW, kw) tiles."""
    return tuple(stride) == tuple(kernel_size) and tuple(padding) == (0, 0) and tuple(dilation) == (1, 1)


def _untile(tiles, h, w):
    """(N, C, OH, kh, OW, kw) tiles -> the (N, C, H, W) input gradient: rows and
    columns no window reaches (floor mode) get 0, ceil_mode overhang is cut."""
    n, c, oh, kh, ow, kw = tiles.shape
    tiles = tiles.reshape(n, c, oh * kh, ow * kw)
    if (oh * kh, ow * kw) == (h, w):
        return tiles
    th, tw = min(oh * kh, h), min(ow * kw, w)
    dx = np.zeros((n, c, h, w), tiles.dtype)
    dx[:, :, :th, :tw] = tiles[:, :, :th, :tw]
    return dx


def _first_valid_offset(out_len, size, kernel, stride, padding, dilation):
    """Per output index: the first window offset that lands inside the input."""
    starts = np.arange(out_len) * stride - padding
    first = np.zeros(out_len, dtype=np.int64)
    found = np.zeros(out_len, dtype=bool)
    for i in range(kernel):
        pos = starts + i * dilation
        inside = (pos >= 0) & (pos < size) & ~found
        first[inside] = i
        found |= inside
    return first


# =============================================================================
# max pool
# =============================================================================

def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode=False):
    """y[n,c,oh,ow] = max over i<kh, j<kw of x[n,c, oh*sh-ph+i*dh, ow*sw-pw+j*dw]
    (positions outside the input are skipped).

    Returns ``(y, cache)``; cache holds the window position of each maximum
    (uint8 for windows of up to 256 elements), the geometry and x's shape.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    n, c, h, w = x.shape
    out_hw = oh, ow = (pool_output_size(h, kh, sh, ph, dh, ceil_mode), pool_output_size(w, kw, sw, pw, dw, ceil_mode))
    # max propagates NaN: one reduction, no input-sized temporary
    has_nan = bool(x.size) and bool(np.isnan(np.max(x)))
    shape = (n, c) + _padded_size((h, w), padding, out_hw, kernel_size, stride, dilation)
    phases = _Phases(shape, stride, dilation, out_hw, x.dtype, -np.inf, source=x, pad=padding)

    y = phases.window(0, 0).copy()
    pos = np.zeros(y.shape, dtype=position_dtype(kh * kw))
    better = np.empty(y.shape, dtype=bool)
    for i in range(kh):
        for j in range(kw):
            if i == j == 0:
                continue
            v = phases.window(i, j)
            np.greater(v, y, out=better)  # strict: ties keep the first maximum
            if has_nan:
                better |= np.isnan(v)  # NaN wins, and a later NaN replaces an earlier one
            # (arithmetic, not masked copies: NumPy's fast path) maximum
            # propagates NaN; offsets only grow, so max(pos, better * k) = k where better
            np.maximum(y, v, out=y)
            np.maximum(pos, better * pos.dtype.type(i * kw + j), out=pos)
    y, pos = phases.narrow(y, n, c), phases.narrow(pos, n, c)
    # A window whose maximum is -inf (all -inf, or offset 0 in the padding and
    # nothing larger): PyTorch points at the window's first element inside the input.
    all_low = y == -np.inf
    if all_low.any():
        first = (_first_valid_offset(oh, h, kh, sh, ph, dh)[:, None] * kw
                 + _first_valid_offset(ow, w, kw, sw, pw, dw)[None, :])
        pos = np.where(all_low, first.astype(pos.dtype), pos)
    return y, (pos, x.shape, kernel_size, stride, padding, dilation)


def max_pool2d_indices(cache):
    """PyTorch's indices (int64, flat ``h*W + w`` in each plane) from the saved positions:
    the window's origin plus the flat offset of the window position, looked up
    in a table of kh*kw offsets (cheaper than dividing every position by kw)."""
    pos, (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = cache
    oh, ow = pos.shape[2:]
    origin = (np.arange(oh) * sh - ph)[:, None] * w + (np.arange(ow) * sw - pw)[None, :]
    offset = (np.arange(kh)[:, None] * (dh * w) + np.arange(kw)[None, :] * dw).ravel()
    return np.take(offset, pos) + origin


def max_pool2d_backward(dy, cache):
    """dx[n,c,h,w] = sum of dy over the windows whose maximum sits at (h, w)."""
    pos, (n, c, h, w), kernel_size, stride, padding, dilation = cache
    kh, kw = kernel_size
    oh, ow = dy.shape[2:]
    if _tiles_cover(kernel_size, stride, padding, dilation):
        # dy * hit is the fast form of "dy where hit"; where() keeps a NaN/inf
        # in dy from leaking into elements that were not the maximum
        finite = bool(np.isfinite(dy).all())
        # each element gets its window's gradient if it held the maximum:
        # compare every tile element's window position with the saved one
        # one (N, C, OH, OW) pass per window offset, written straight into
        # its strided slot of the tiles (no 6-D broadcast temporaries)
        tiles = np.empty((n, c, oh, kh, ow, kw), dy.dtype)
        hit = np.empty(pos.shape, dtype=bool)
        for i in range(kh):
            for j in range(kw):
                np.equal(pos, i * kw + j, out=hit)
                if finite:
                    np.multiply(dy, hit, out=tiles[:, :, :, i, :, j])
                else:
                    tiles[:, :, :, i, :, j] = np.where(hit, dy, 0)
        return _untile(tiles, h, w)
    # Overlapping windows: a scatter-add of each output's gradient to the
    # input element its maximum came from (np.add.at adds repeated indices
    # in order; no per-offset masks, no padded copy of dx to crop).
    idx = max_pool2d_indices(cache) + np.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    # A window lying wholly in the padding (dilated windows can) has no input
    # element to send its gradient to: it is left out (PyTorch's CPU kernel
    # writes through its out-of-range index; tests/test_edges.py).
    inside_h = _window_reaches_input(oh, h, kh, stride[0], padding[0], dilation[0])
    inside_w = _window_reaches_input(ow, w, kw, stride[1], padding[1], dilation[1])
    if not (inside_h.all() and inside_w.all()):
        keep = inside_h[:, None] & inside_w[None, :]
        idx, dy = idx[:, :, keep], dy[:, :, keep]
    dx = np.zeros(n * c * h * w, dy.dtype)
    np.add.at(dx, idx.ravel(), dy.ravel())
    return dx.reshape(n, c, h, w)


def _window_reaches_input(out_len, size, kernel, stride, padding, dilation):
    """Per output index along one dimension: does its window hold any input position?"""
    starts = np.arange(out_len) * stride - padding
    taps = starts[:, None] + np.arange(kernel)[None, :] * dilation
    return ((taps >= 0) & (taps < size)).any(axis=1)


# =============================================================================
# average pool
# =============================================================================

def _avg_divisor(size, out_len, kernel, stride, padding, count_include_pad):
    """Per output index along one dimension: the number of elements the window
    counts (PyTorch: windows clipped to input + padding, or to the input)."""
    start = np.arange(out_len) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def avg_pool2d_divisor(input_hw, output_hw, kernel_size, stride, padding, count_include_pad, divisor_override, dtype):
    """The (OH, OW) array of divisors of the average pool."""
    if divisor_override:
        return np.full(output_hw, divisor_override, dtype=dtype)
    rows = _avg_divisor(input_hw[0], output_hw[0], kernel_size[0], stride[0], padding[0], count_include_pad)
    cols = _avg_divisor(input_hw[1], output_hw[1], kernel_size[1], stride[1], padding[1], count_include_pad)
    return (rows[:, None] * cols[None, :]).astype(dtype)


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """y[n,c,oh,ow] = (sum over the window of x, padding as zeros) / divisor,
    where divisor is ``divisor_override`` if given, else the window's size
    clipped to input + padding (``count_include_pad``) or to the input alone."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    out_hw = (pool_output_size(h, kh, sh, ph, 1, ceil_mode), pool_output_size(w, kw, sw, pw, 1, ceil_mode))
    shape = (n, c) + _padded_size((h, w), padding, out_hw, kernel_size, stride, (1, 1))
    phases = _Phases(shape, stride, (1, 1), out_hw, x.dtype, source=x, pad=padding)
    y = phases.window(0, 0).copy()
    for i in range(kh):
        for j in range(kw):
            if i or j:
                y += phases.window(i, j)
    y = phases.narrow(y, n, c)
    divisor = avg_pool2d_divisor((h, w), out_hw, kernel_size, stride, padding, count_include_pad,
                                 divisor_override, x.dtype)
    y /= divisor
    return y, (divisor, x.shape, kernel_size, stride, padding)


def avg_pool2d_backward(dy, cache):
    """dx[n,c,h,w] = sum over the windows containing (h, w) of dy / divisor."""
    divisor, (n, c, h, w), kernel_size, stride, padding = cache
    out_hw = (oh, ow) = dy.shape[2:]
    kh, kw = kernel_size
    g = dy / divisor
    if _tiles_cover(kernel_size, stride, padding, (1, 1)):
        # each element gets its one window's gradient: a broadcast
        tiles = np.empty((n, c, oh, kh, ow, kw), dy.dtype)
        tiles[...] = g[:, :, :, None, :, None]
        return _untile(tiles, h, w)
    shape = (n, c) + _padded_size((h, w), padding, out_hw, kernel_size, stride, (1, 1))
    phases = _Phases(shape, stride, (1, 1), out_hw, dy.dtype)  # zeros: dx, padded
    g = phases.widen(g)
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            phases.window(i, j)[...] += g
    return _crop(phases.join(n, c), padding, h, w)


# =============================================================================
# adaptive pools
# =============================================================================

def adaptive_windows(size: int, out_len: int):
    """(start, end) per output index: start = floor(i*size/out), end = ceil((i+1)*size/out)."""
    i = np.arange(out_len)
    start = (i * size) // out_len
    end = -((-(i + 1) * size) // out_len)
    return start, end


def _gather_windows(x, axis, start, end):
    """For each window offset k < the largest window: (x at start+k along
    ``axis``, whether start+k is inside the window), clamped to stay in range."""
    size = x.shape[axis]
    for k in range(int((end - start).max(initial=0))):
        idx = np.minimum(start + k, size - 1)
        yield k, np.take(x, idx, axis=axis), (start + k) < end


def _covering_windows(size, out_len):
    """For each input index along one dimension: the first output window that
    covers it and how many do (windows covering one index are consecutive)."""
    start, end = adaptive_windows(size, out_len)
    idx = np.arange(size)
    covers = (start[:, None] <= idx[None, :]) & (idx[None, :] < end[:, None])
    if out_len == 0:  # an empty output: no window covers anything
        return np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    return covers.argmax(axis=0), covers.sum(axis=0)


def _expand_avg(g, axis, size, out_len):
    """Adjoint of 'sum each window along axis': every input index gathers the
    gradient of the windows covering it (a gather, so no index is written twice)."""
    first, count = _covering_windows(size, out_len)
    shape = list(g.shape)
    shape[axis] = size
    out = np.zeros(shape, g.dtype)
    bshape = [1] * g.ndim
    bshape[axis] = size
    for m in range(int(count.max(initial=0))):
        idx = np.minimum(first + m, out_len - 1)
        out += np.where((m < count).reshape(bshape), np.take(g, idx, axis=axis), 0)
    return out


def adaptive_avg_count(input_hw, output_hw, dtype):
    """The (OH, OW) array of adaptive window sizes."""
    hs, he = adaptive_windows(input_hw[0], output_hw[0])
    ws, we = adaptive_windows(input_hw[1], output_hw[1])
    return ((he - hs)[:, None] * (we - ws)[None, :]).astype(dtype)


def adaptive_avg_pool2d_forward(x, output_size):
    """y[n,c,i,j] = mean of x[n,c, hs(i):he(i), ws(j):we(j)] (adaptive windows)."""
    n, c, h, w = x.shape
    oh, ow = output_size
    hs, he = adaptive_windows(h, oh)
    ws, we = adaptive_windows(w, ow)
    if oh and ow and h % oh == 0 and w % ow == 0:
        # equal windows that tile the plane (global pooling among them): one reshape
        y = x.reshape(n, c, oh, h // oh, ow, w // ow).mean(axis=(3, 5), dtype=x.dtype)
        return y, (adaptive_avg_count((h, w), (oh, ow), x.dtype), x.shape)
    # sum along H, then along W (sums are separable)
    rows = np.zeros((n, c, oh, w), dtype=x.dtype)
    for _, v, inside in _gather_windows(x, 2, hs, he):
        rows += np.where(inside[:, None], v, 0)
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for _, v, inside in _gather_windows(rows, 3, ws, we):
        y += np.where(inside, v, 0)
    count = adaptive_avg_count((h, w), (oh, ow), x.dtype)
    y /= count
    return y, (count, x.shape)


def adaptive_avg_pool2d_backward(dy, cache):
    """dx[n,c,h,w] = sum over the windows containing (h, w) of dy / window size."""
    count, (n, c, h, w) = cache
    oh, ow = dy.shape[2:]
    g = dy / count
    if oh and ow and h % oh == 0 and w % ow == 0:
        # tiling windows: each input element belongs to exactly one
        dx = np.empty((n, c, oh, h // oh, ow, w // ow), dy.dtype)
        dx[...] = g[:, :, :, None, :, None]
        return dx.reshape(n, c, h, w)
    return _expand_avg(_expand_avg(g, 3, w, ow), 2, h, oh)


def _max_along(x, axis, start, end):
    """Max over adaptive windows along one axis, PyTorch's rule (first maximum,
    last NaN); returns (max, offset of the max inside its window)."""
    best, pos = None, None
    for k, v, inside in _gather_windows(x, axis, start, end):
        shape = [1] * x.ndim
        shape[axis] = len(start)
        inside = inside.reshape(shape)
        if best is None:
            best, pos = v.copy(), np.zeros(v.shape, np.int64)
            continue
        better = inside & ((v > best) | np.isnan(v))
        np.copyto(best, v, where=better)
        pos[better] = k
    return best, pos


def _tiles(x, oh, ow):
    """(N, C, H, W) -> (N, C, OH, OW, KH*KW): each equal window that tiles the
    plane as one contiguous row, in row-major order inside the window."""
    n, c, h, w = x.shape
    kh, kw = h // oh, w // ow
    return x.reshape(n, c, oh, kh, ow, kw).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, oh, ow, kh * kw)


def _tiled_adaptive_max(x, oh, ow):
    """Adaptive max pool when the windows tile the plane (H % OH == W % OW == 0):
    one max and one argmax along each window's row. np.argmax takes the first
    maximum, as PyTorch does; where a window holds NaN, PyTorch takes its last
    NaN, found on those few windows only."""
    n, c, h, w = x.shape
    kw = w // ow
    windows = _tiles(x, oh, ow)
    # argmax alone (twice as fast as max along short rows), the values gathered
    # after; argmax picks a window's first NaN, so y is NaN exactly there
    pos = windows.argmax(axis=-1)
    # one flat gather (take_along_axis builds an index array per dimension)
    size = windows.shape[-1]
    y = np.take(windows.reshape(-1), np.arange(0, windows.size, size).reshape(pos.shape) + pos)
    nan = np.isnan(y)
    if nan.any():
        flipped = np.isnan(windows[nan][:, ::-1])
        pos[nan] = windows.shape[-1] - 1 - flipped.argmax(axis=-1)
    return y, (pos.astype(position_dtype(windows.shape[-1])), kw, x.shape)


def adaptive_max_pool2d_forward(x, output_size):
    """y[n,c,i,j] = max of x[n,c, hs(i):he(i), ws(j):we(j)].

    Taken along W, then along H: the first row holding the overall maximum,
    then the first column in that row, is the first maximum in row-major order
    (and the same argument picks the last NaN), matching PyTorch's indices.
    Cache: the window position of each maximum, ``kh * KW + kw`` with KW the
    largest window width."""
    n, c, h, w = x.shape
    oh, ow = output_size
    hs, he = adaptive_windows(h, oh)
    ws, we = adaptive_windows(w, ow)
    if oh == 0 or ow == 0:
        return np.zeros((n, c, oh, ow), x.dtype), (np.zeros((n, c, oh, ow), np.uint8), 1, x.shape)
    kw_max = int((we - ws).max(initial=1))
    kh_max = int((he - hs).max(initial=1))
    if h % oh == 0 and w % ow == 0:
        return _tiled_adaptive_max(x, oh, ow)
    row_max, col = _max_along(x, 3, ws, we)  # (n, c, h, ow)
    y, row = _max_along(row_max, 2, hs, he)  # (n, c, oh, ow)
    # the column offset of the winning row, for each output
    rows_abs = hs[:, None] + row  # (n, c, oh, ow) absolute row
    col = np.take_along_axis(col, rows_abs, axis=2)
    pos = (row * kw_max + col).astype(position_dtype(kh_max * kw_max))
    return y, (pos, kw_max, x.shape)


def adaptive_max_pool2d_indices(cache):
    """PyTorch's int64 indices (flat ``h*W + w`` per plane) from the saved positions."""
    pos, kw_max, (n, c, h, w) = cache
    oh, ow = pos.shape[2:]
    hs, _ = adaptive_windows(h, oh)
    ws, _ = adaptive_windows(w, ow)
    pos = pos.astype(np.int64)
    return (hs[:, None] + pos // kw_max) * w + ws[None, :] + pos % kw_max


def adaptive_max_pool2d_backward(dy, cache):
    """dx[n,c,h,w] = sum of dy over the windows whose maximum sits at (h, w).

    Adaptive windows can overlap (and, when upsampling, repeat), so the
    scatter is a ``bincount`` over flat indices: vectorized and deterministic."""
    pos, kw_max, (n, c, h, w) = cache
    oh, ow = dy.shape[2:]
    idx = adaptive_max_pool2d_indices(cache)
    planes = np.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    if oh and ow and h % oh == 0 and w % ow == 0:
        # tiling windows: each input element is in exactly one, so a put, not
        # a sum, straight into dx (no window-major tiles to transpose back)
        dx = np.zeros(n * c * h * w, dy.dtype)
        dx[(idx + planes).ravel()] = dy.ravel()
        return dx.reshape(n, c, h, w)
    dx = np.bincount((idx + planes).ravel(), weights=dy.ravel(), minlength=n * c * h * w)
    return dx.astype(dy.dtype).reshape(n, c, h, w)


# =============================================================================
# layer classes
# =============================================================================

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class MaxPool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.padding, self.dilation, self.ceil_mode = _pair(padding), _pair(dilation), ceil_mode

    def forward(self, x):
        y, self._cache = max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        return y

    def backward(self, dy):
        return max_pool2d_backward(dy, self._need_cache())


class AvgPool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.padding, self.ceil_mode = _pair(padding), ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x):
        y, self._cache = avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                            self.count_include_pad, self.divisor_override)
        return y

    def backward(self, dy):
        return avg_pool2d_backward(dy, self._need_cache())


class AdaptiveAvgPool2d(Layer):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x):
        y, self._cache = adaptive_avg_pool2d_forward(x, self.output_size)
        return y

    def backward(self, dy):
        return adaptive_avg_pool2d_backward(dy, self._need_cache())


class AdaptiveMaxPool2d(Layer):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x):
        y, self._cache = adaptive_max_pool2d_forward(x, self.output_size)
        return y

    def backward(self, dy):
        return adaptive_max_pool2d_backward(dy, self._need_cache())

