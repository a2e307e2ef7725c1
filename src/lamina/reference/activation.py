"""Activations: forward and backward in NumPy, the formula beside the code.

Every function works elementwise on an array of any shape and dtype float32 or
float64 (PReLU also reads a per-channel weight), computes in the input's dtype,
and never modifies its input. Each ``*_forward`` returns ``(y, cache)``; the
cache holds exactly what the matching ``*_backward`` needs, and for the ReLU
family and Sigmoid/Tanh that is the output (or a boolean mask), not the input.

Large arguments never overflow: exponentials are only ever taken of
``-|x|``, and polynomials in x are evaluated on x clipped to a range where the
function has already saturated, so ``|x| = 1e4`` or ``float32`` extremes give
no NumPy warnings and the same values as PyTorch.
"""

from __future__ import annotations

import functools

import numpy as np

from .layer import Layer

# GELU constants: sqrt(2/pi) and the cubic coefficient of the tanh form
# (Hendrycks & Gimpel, 2016), 1/sqrt(2) and 1/sqrt(2*pi).
GELU_TANH_SCALE = float(np.sqrt(2.0 / np.pi))
GELU_TANH_CUBIC = 0.044715
SQRT1_2 = float(np.sqrt(0.5))
INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
# Past this |x| the Gaussian, tanh and sigmoid have saturated even in float64
# (exp(-x*x/2) == 0, tanh(...) == +-1), so clipping x there changes no result
# and keeps x*x and x**3 from overflowing.
SATURATED = 40.0


def _inf_times_zero_is_nan(fn):
    """For activations of the form x * f(x) with f(+-inf) = 0 or 1: an
    infinite x meets a 0 and the answer is NaN, as in PyTorch, which does not
    warn about it either."""
    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(invalid="ignore"):
            return fn(*args, **kwargs)
    return quiet


def _where(cond, a, b, like):
    """np.where that keeps ``like``'s dtype when a or b is a Python scalar."""
    return np.where(cond, a, b).astype(like.dtype, copy=False)


# --- ReLU --------------------------------------------------------------------

def relu_forward(x: np.ndarray):
    """y = max(x, 0).  NaN propagates (as in PyTorch)."""
    y = np.where(x > 0, x, np.zeros_like(x))
    y = np.where(np.isnan(x), x, y)
    return y, (y,)


def relu_backward(dy: np.ndarray, cache):
    """dx = dy * [y > 0].  Backward needs only the output (or one bit of it).
    Where y is NaN the gradient passes through, as in PyTorch."""
    (y,) = cache
    return np.where(y <= 0, np.zeros_like(dy), dy)


# --- LeakyReLU ---------------------------------------------------------------

def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01):
    """y = x if x > 0 else negative_slope * x.

    Backward needs only [x > 0]. With negative_slope >= 0 that is [y > 0], so
    the output is kept; with a negative slope y > 0 on both sides, so a
    boolean mask is kept instead (PyTorch keeps the whole input).
    """
    y = _where(x > 0, x, x * negative_slope, x)
    saved = y if negative_slope >= 0 else (x > 0)
    return y, (saved, negative_slope)


def leaky_relu_backward(dy: np.ndarray, cache):
    """dx = dy if x > 0 else negative_slope * dy  (x > 0 read from y or the mask)."""
    saved, negative_slope = cache
    return _where(saved > 0, dy, dy * negative_slope, dy)


# --- PReLU -------------------------------------------------------------------

def _channel_view(weight: np.ndarray, ndim: int) -> np.ndarray:
    """weight (num_parameters,) shaped to broadcast along dim 1 of an ndim-D input."""
    weight = np.asarray(weight).reshape(-1)
    if weight.size == 1:
        return weight.reshape(())
    return weight.reshape((1, -1) + (1,) * (ndim - 2))


def prelu_forward(x: np.ndarray, weight: np.ndarray):
    """y = x if x > 0 else a_c * x, with a_c = weight[c] for the channel c of x
    (dim 1 when x.ndim >= 2) or the single weight for every element."""
    a = _channel_view(weight, x.ndim)
    y = np.where(x > 0, x, a * x).astype(np.result_type(x, weight), copy=False)
    return y, (x, weight)


def prelu_backward(dy: np.ndarray, cache):
    """dx = dy if x > 0 else a_c * dy;  d(a_c) = sum over x of channel c with
    x <= 0 of dy * x  (all of x when there is a single weight)."""
    x, weight = cache
    a = _channel_view(weight, x.ndim)
    dx = np.where(x > 0, dy, a * dy)
    contribution = np.where(x > 0, np.zeros_like(dy), dy * x)
    if np.asarray(weight).size == 1:
        dweight = contribution.sum().reshape(np.shape(weight))
    else:
        dweight = contribution.sum(axis=tuple(d for d in range(x.ndim) if d != 1))
    return dx, dweight


# --- Sigmoid -----------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), written with z = exp(-|x|) <= 1 so nothing overflows:
    x >= 0: 1 / (1 + z);  x < 0: z / (1 + z)."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def sigmoid_forward(x: np.ndarray):
    """y = 1 / (1 + exp(-x)), stable for any |x|."""
    y = _sigmoid(x)
    return y, (y,)


def sigmoid_backward(dy: np.ndarray, cache):
    """dx = dy * y * (1 - y), from the saved output."""
    (y,) = cache
    return dy * y * (1 - y)


# --- Tanh --------------------------------------------------------------------

def tanh_forward(x: np.ndarray):
    """y = tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))."""
    y = np.tanh(x)
    return y, (y,)


def tanh_backward(dy: np.ndarray, cache):
    """dx = dy * (1 - y^2), from the saved output."""
    (y,) = cache
    return dy * (1 - y * y)


# --- GELU --------------------------------------------------------------------

def _erf(x: np.ndarray) -> np.ndarray:
    """The error function, to float64 precision, vectorized (NumPy has none).

    erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1)), a
    series of positive terms (no cancellation) that converges for every x;
    for |x| >= 6, erf(x) == sign(x) in float64. The loop runs over terms of
    the series, not over elements.
    """
    x64 = np.asarray(x, dtype=np.float64)
    ax = np.minimum(np.abs(x64), 6.0)
    two_x2 = 2.0 * ax * ax
    term = ax.copy()
    total = ax.copy()
    n = 0
    while np.any(term > 1e-17 * total):
        n += 1
        term = term * (two_x2 / (2 * n + 1))
        total = total + term
    r = (2.0 / np.sqrt(np.pi)) * np.exp(-ax * ax) * total
    r = np.where(np.abs(x64) >= 6.0, 1.0, r)
    return np.copysign(r, x64).astype(np.asarray(x).dtype, copy=False)


@_inf_times_zero_is_nan
def gelu_forward(x: np.ndarray, approximate: str = "none"):
    """GELU(x) = x * Phi(x), Phi the standard normal CDF.

    approximate='none': Phi(x) = (1 + erf(x / sqrt(2))) / 2.
    approximate='tanh': Phi(x) ~ (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3).
    """
    if approximate == "tanh":
        xc = np.clip(x, -SATURATED, SATURATED)
        u = GELU_TANH_SCALE * (xc + GELU_TANH_CUBIC * xc * xc * xc)
        y = 0.5 * x * (1 + np.tanh(u))
    else:
        y = 0.5 * x * (1 + _erf(x * SQRT1_2))
    return y, (x, approximate)


@_inf_times_zero_is_nan
def gelu_backward(dy: np.ndarray, cache):
    """approximate='none':  dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2/2) / sqrt(2 pi).
    approximate='tanh':  with t = tanh(u),
        dx = dy * ((1 + t) / 2 + x/2 * (1 - t^2) * sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
    """
    x, approximate = cache
    xc = np.clip(x, -SATURATED, SATURATED)
    if approximate == "tanh":
        t = np.tanh(GELU_TANH_SCALE * (xc + GELU_TANH_CUBIC * xc * xc * xc))
        du = GELU_TANH_SCALE * (1 + 3 * GELU_TANH_CUBIC * xc * xc)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    cdf = 0.5 * (1 + _erf(x * SQRT1_2))
    pdf = INV_SQRT_2PI * np.exp(-0.5 * xc * xc)
    return dy * (cdf + x * pdf)


# --- SiLU and Swish ----------------------------------------------------------

def _scaled(x: np.ndarray, beta: float) -> np.ndarray:
    """beta * x; near the dtype's maximum it may round to +-inf, which the
    sigmoid maps to exactly 1 or 0, so that overflow is expected, not reported."""
    with np.errstate(over="ignore"):
        return x * beta


@_inf_times_zero_is_nan
def swish_forward(x: np.ndarray, beta: float = 1.0):
    """Swish(x) = x * sigmoid(beta * x)  (Ramachandran et al., 2017); beta=1 is SiLU."""
    y = x * _sigmoid(_scaled(x, beta))
    return y, (x, beta)


@_inf_times_zero_is_nan
def swish_backward(dy: np.ndarray, cache):
    """dx = dy * (s + beta * s * (1 - s) * x),  s = sigmoid(beta * x).
    The product beta*s*(1-s) is formed before multiplying by x: it is 0 where
    s saturates, so a huge x gives 0 rather than inf * 0."""
    x, beta = cache
    s = _sigmoid(_scaled(x, beta))
    return dy * (s + (beta * s * (1 - s)) * x)


def silu_forward(x: np.ndarray):
    """SiLU(x) = x * sigmoid(x)  (Elfwing et al., 2017; Hendrycks & Gimpel, 2016)."""
    return swish_forward(x, 1.0)


def silu_backward(dy: np.ndarray, cache):
    """dx = dy * sigmoid(x) * (1 + x * (1 - sigmoid(x)))."""
    return swish_backward(dy, cache)


# --- layer classes -----------------------------------------------------------

class _Elementwise(Layer):
    """A parameter-free activation: forward keeps its cache for backward."""

    def _forward(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    _backward = None

    def forward(self, x):
        y, self._cache = self._forward(x)
        return y

    def backward(self, dy):
        return type(self)._backward(dy, self._need_cache())


class ReLU(_Elementwise):
    _forward = staticmethod(relu_forward)
    _backward = staticmethod(relu_backward)


class LeakyReLU(_Elementwise):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def _forward(self, x):
        return leaky_relu_forward(x, self.negative_slope)

    _backward = staticmethod(leaky_relu_backward)


class PReLU(Layer):
    """PReLU with ``params['weight']`` of shape (num_parameters,), filled with init."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype=np.float64) -> None:
        super().__init__()
        self.num_parameters = num_parameters
        self.params["weight"] = np.full((num_parameters,), init, dtype=dtype)

    def forward(self, x):
        y, self._cache = prelu_forward(x, self.params["weight"])
        return y

    def backward(self, dy):
        dx, self.grads["weight"] = prelu_backward(dy, self._need_cache())
        return dx


class Sigmoid(_Elementwise):
    _forward = staticmethod(sigmoid_forward)
    _backward = staticmethod(sigmoid_backward)


class Tanh(_Elementwise):
    _forward = staticmethod(tanh_forward)
    _backward = staticmethod(tanh_backward)


class GELU(_Elementwise):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def _forward(self, x):
        return gelu_forward(x, self.approximate)

    _backward = staticmethod(gelu_backward)


class SiLU(_Elementwise):
    _forward = staticmethod(silu_forward)
    _backward = staticmethod(silu_backward)


class Swish(_Elementwise):
    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def _forward(self, x):
        return swish_forward(x, self.beta)

    _backward = staticmethod(swish_backward)
