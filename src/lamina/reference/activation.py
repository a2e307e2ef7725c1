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

from .layer import Layer, blockwise

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
    y = np.maximum(x, x.dtype.type(0))  # np.maximum propagates NaN
    return y, (y,)


def relu_backward(dy: np.ndarray, cache):
    """dx = dy * [y > 0].  Backward needs only the output (or one bit of it).
    Where y is NaN the gradient passes through, as in PyTorch."""
    (y,) = cache
    return np.where(y <= 0, dy.dtype.type(0), dy)


# --- LeakyReLU ---------------------------------------------------------------

def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01):
    """y = x if x > 0 else negative_slope * x.

    Backward needs only [x > 0]. With negative_slope >= 0 that is [y > 0], so
    the output is kept; with a negative slope y > 0 on both sides, so a
    boolean mask is kept instead (PyTorch keeps the whole input).
    """
    if 0 <= negative_slope <= 1:
        # x >= slope * x exactly when x >= 0: the larger of the two is y
        # (np.maximum propagates NaN), one pass, block by block
        slope = x.dtype.type(negative_slope)
        y = blockwise(lambda xb: np.maximum(xb, xb * slope), x)
    else:
        y = _where(x > 0, x, x * negative_slope, x)
    saved = y if negative_slope >= 0 else (x > 0)
    return y, (saved, negative_slope)


def leaky_relu_backward(dy: np.ndarray, cache):
    """dx = dy if x > 0 else negative_slope * dy  (x > 0 read from y or the mask)."""
    saved, negative_slope = cache
    slope = dy.dtype.type(negative_slope)
    return blockwise(lambda d, s: np.where(s > 0, d, d * slope), dy, saved)


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
    x >= 0: 1 / (1 + z);  x < 0: z / (1 + z), both as r * m with r = 1 / (1 + z)
    and m = max(z, [x >= 0]), which is 1 or z exactly (z <= 1). The multiplier
    replaces np.where, which mispredicts a branch per element on random signs
    (~4 ns an element, more than the exp)."""
    z = np.abs(x)
    np.negative(z, out=z)
    np.exp(z, out=z)
    r = z + 1
    np.divide(1, r, out=r)
    np.maximum(z, x >= 0, out=z)  # NaN stays NaN
    r *= z
    return r


def sigmoid_forward(x: np.ndarray):
    """y = 1 / (1 + exp(-x)), stable for any |x|."""
    y = blockwise(_sigmoid, x)
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

# W. J. Cody's rational approximations of erf and erfc (Math. Comp. 23, 1969;
# the coefficients of his CALERF routine): three ranges of |x|, each a ratio
# of polynomials, accurate to a few units of float64 rounding.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERFC_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
           2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
           2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERFC_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
           1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
           3.43936767414372164e03, 1.23033935480374942e03)
_ERFC_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
           1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERFC_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
           6.05183413124413191e-2, 2.33520497626869185e-3)


def _exp_minus_square(y: np.ndarray) -> np.ndarray:
    """exp(-y^2) without losing the low bits of y^2: y = s + d with s a
    multiple of 1/16, so exp(-y^2) = exp(-s^2) * exp(-(y - s)(y + s))."""
    s = np.trunc(y * 16.0) / 16.0
    return np.exp(-s * s) * np.exp(-(y - s) * (y + s))


def _erf_cody(x: np.ndarray) -> np.ndarray:
    """erf(x) in float64 by Cody's three ranges: |x| <= 0.46875 erf directly,
    up to 4 and beyond through erfc(|x|) = exp(-x^2) * R(|x|). Vectorized:
    each range is computed on its own elements."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    out = np.full_like(y, np.nan)  # NaN stays NaN: it falls in no range

    small = y <= 0.46875
    ys = y[small]
    z = ys * ys
    num, den = _ERF_A[4] * z, z
    for a, b in zip(_ERF_A[:3], _ERF_B[:3]):
        num, den = (num + a) * z, (den + b) * z
    out[small] = ys * (num + _ERF_A[3]) / (den + _ERF_B[3])

    middle = (y > 0.46875) & (y <= 4.0)
    ym = y[middle]
    num, den = _ERFC_C[8] * ym, ym
    for c, d in zip(_ERFC_C[:7], _ERFC_D[:7]):
        num, den = (num + c) * ym, (den + d) * ym
    out[middle] = 1.0 - _exp_minus_square(ym) * (num + _ERFC_C[7]) / (den + _ERFC_D[7])

    large = y > 4.0
    yl = np.minimum(y[large], 27.0)  # erfc(27) underflows: erf == 1 beyond
    z = 1.0 / (yl * yl)
    num, den = _ERFC_P[5] * z, z
    for p, q in zip(_ERFC_P[:4], _ERFC_Q[:4]):
        num, den = (num + p) * z, (den + q) * z
    r = (1.0 / np.sqrt(np.pi) - z * (num + _ERFC_P[4]) / (den + _ERFC_Q[4])) / yl
    out[large] = 1.0 - _exp_minus_square(yl) * r
    return np.copysign(out, x)


try:  # SciPy's compiled erf, when installed, is the same function, faster
    from scipy.special import erf as _erf_compiled
except ImportError:  # pragma: no cover - SciPy comes with scikit-learn
    _erf_compiled = None


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function in x's dtype (NumPy has none): SciPy's if it is
    installed, else :func:`_erf_cody`; both agree with ``math.erf`` to a few
    float64 ulps (tests/test_activation.py)."""
    x = np.asarray(x)
    if _erf_compiled is not None:
        return _erf_compiled(x)
    return _erf_cody(x).astype(x.dtype, copy=False)


# Abramowitz & Stegun 7.1.26 (Handbook of Mathematical Functions, 1964):
# erfc(z) ~ t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2), t = 1/(1 + p z),
# for z >= 0, with |error| < 1.5e-7, about one float32 ulp of Phi near 1.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


_AS_HALF = tuple(np.float32(a / 2) for a in _AS_A)  # halved: the sum gives erfc / 2


def _gelu_parts_float32(x: np.ndarray):
    """(Phi(x), exp(-x^2/2)) in float32, for float32 x, in a handful of passes.

    SciPy's float32 erf goes through float64 and costs 12 ns an element;
    this costs about one. Phi is formed from h = erfc(|x|/sqrt(2)) / 2 on
    both sides (Phi(x) = h for x < 0, 1 - h for x >= 0), so the negative
    tail keeps its relative accuracy instead of being 1 + erf, a difference
    of two numbers near 1. For huge |x|, x^2 overflows to inf (the caller
    silences that): exp(-inf) = 0 and t = 0 are the right limits. NaN passes
    through every step."""
    f32 = np.float32
    gauss = x * x  # exp(-x^2 / 2)
    gauss *= f32(-0.5)
    np.exp(gauss, out=gauss)
    t = np.abs(x)  # t = 1 / (1 + p |x| / sqrt(2))
    t *= f32(_AS_P * SQRT1_2)
    t += f32(1)
    np.divide(f32(1), t, out=t)
    h = _AS_HALF[4] * t
    for a in _AS_HALF[3::-1]:
        h += a
        h *= t
    h *= gauss
    # Phi = step - sign * h: step = 1 and sign = +1 where x's sign bit is
    # clear, step = 0 and sign = -1 where it is set (-0 included). Exact on
    # both sides (0 + h, and 1 - h with one rounding). Arithmetic, not
    # np.where: on random signs np.where mispredicts a branch per element
    # and costs ~4 ns an element, more than the whole polynomial.
    is_negative = np.signbit(x).astype(f32)
    step = f32(1) - is_negative
    minus_sign = np.subtract(is_negative, step, out=is_negative)
    h *= minus_sign
    h += step
    return h, gauss


def _gelu_tanh_arg(x: np.ndarray):
    """(x clipped where tanh has saturated, u = sqrt(2/pi) (x + 0.044715 x^3))
    for one block, u written as x (sqrt(2/pi) + sqrt(2/pi) 0.044715 x^2) so
    that each step is one in-place pass."""
    xc = np.maximum(x, -SATURATED)  # np.maximum/minimum propagate NaN
    np.minimum(xc, SATURATED, out=xc)
    u = xc * xc
    u *= GELU_TANH_SCALE * GELU_TANH_CUBIC
    u += GELU_TANH_SCALE
    u *= xc
    return xc, u


def _gelu_tanh_value(x: np.ndarray) -> np.ndarray:
    """x (1 + tanh(u)) / 2 for one block, as x (1/2 + tanh(u)/2)."""
    _, t = _gelu_tanh_arg(x)
    np.tanh(t, out=t)
    t *= 0.5
    t += 0.5
    t *= x
    return t


def _gelu_tanh_grad(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dy ((1 + t) / 2 + x/2 (1 - t^2) du) for one block, du = sqrt(2/pi)
    (1 + 3 * 0.044715 x^2) formed in the clipped copy of x."""
    du, t = _gelu_tanh_arg(x)
    np.tanh(t, out=t)
    du *= du
    du *= 3 * GELU_TANH_SCALE * GELU_TANH_CUBIC
    du += GELU_TANH_SCALE
    slope = t * t  # x/2 (1 - t^2) du
    np.subtract(1, slope, out=slope)
    slope *= du
    slope *= x
    slope *= 0.5
    t *= 0.5  # (1 + t) / 2
    t += 0.5
    t += slope
    t *= dy
    return t


@_inf_times_zero_is_nan
def gelu_forward(x: np.ndarray, approximate: str = "none"):
    """GELU(x) = x * Phi(x), Phi the standard normal CDF.

    approximate='none': Phi(x) = (1 + erf(x / sqrt(2))) / 2.
    approximate='tanh': Phi(x) ~ (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3).
    """
    if approximate == "tanh":
        # block by block, in place: whole-array temporaries made this 8x PyTorch
        y = blockwise(_gelu_tanh_value, x)
    elif x.dtype == np.float32:
        with np.errstate(over="ignore"):  # x^2 of a huge x: see _gelu_parts_float32
            y = blockwise(lambda xb: xb * _gelu_parts_float32(xb)[0], x)
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
    if approximate != "tanh" and x.dtype == np.float32 and dy.dtype == np.float32:
        def grad(d, xb):
            cdf, gauss = _gelu_parts_float32(xb)
            gauss *= np.float32(INV_SQRT_2PI)  # the density phi(x)
            gauss *= xb
            gauss += cdf
            gauss *= d
            return gauss
        with np.errstate(over="ignore"):  # x^2 of a huge x: see _gelu_parts_float32
            return blockwise(grad, dy, x)
    if approximate == "tanh" and dy.dtype == x.dtype:
        return blockwise(_gelu_tanh_grad, dy, x)
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
    """Swish(x) = x * sigmoid(beta * x) = x / (1 + exp(-beta x))  (Ramachandran
    et al., 2017); beta=1 is SiLU.

    exp(-beta x) may overflow to inf for very negative x, and x / inf is the
    right limit (-0), so that overflow is expected and not reported."""
    return blockwise(lambda xb: _swish_of_block(xb, beta), x), (x, beta)


def _one_plus_exp_minus(xb: np.ndarray, beta: float) -> np.ndarray:
    """1 + exp(-beta x), a fresh array: 1 / this is sigmoid(beta x) with
    relative accuracy everywhere (an overflow to inf gives sigmoid = 0)."""
    e = _scaled(xb, -beta) if beta != 1 else np.negative(xb)
    with np.errstate(over="ignore"):
        np.exp(e, out=e)
    e += xb.dtype.type(1)
    return e


def _swish_of_block(xb: np.ndarray, beta: float) -> np.ndarray:
    e = _one_plus_exp_minus(xb, beta)
    return np.divide(xb, e, out=e)


@_inf_times_zero_is_nan
def swish_backward(dy: np.ndarray, cache):
    """dx = dy * (s + beta * s * (1 - s) * x),  s = sigmoid(beta * x).
    The product beta*s*(1-s) is formed before multiplying by x: it is 0 where
    s saturates, so a huge x gives 0 rather than inf * 0."""
    x, beta = cache

    def grad(d, xb):
        s = _one_plus_exp_minus(xb, beta)
        np.divide(xb.dtype.type(1), s, out=s)  # s = sigmoid(beta x)
        g = np.subtract(xb.dtype.type(1), s)
        g *= s
        if beta != 1:
            g *= xb.dtype.type(beta)
        g *= xb
        g += s
        g *= d
        return g
    return blockwise(grad, dy, x)


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
