"""Bad input raises as PyTorch does: the same exception type, found by making
the same call to PyTorch inside the test, and a message that names the
argument or the value expected. Every call runs on the CPU reference and
under the Triton interpreter (the checks come before any kernel runs, so the
interpreter costs nothing here). Module constructors too."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as LF
import lamina.nn as LN

# torch's functions under lamina.functional's names (sigmoid and tanh live on torch)
TORCH = types.SimpleNamespace(**{n: getattr(TF, n) for n in dir(TF) if not n.startswith("_")})
TORCH.sigmoid, TORCH.tanh = torch.sigmoid, torch.tanh


def x4(*shape):
    return torch.randn(shape or (2, 3, 5, 5))


def ints(*shape, dtype=torch.int32):
    return torch.ones(shape or (2, 3, 5, 5), dtype=dtype)


META = "meta"  # a second device every machine has: tensors "on another device"

# (id, call(F), message regex). F is lamina.functional or torch's namespace;
# the regex must name the argument or the expected value.
CASES = [
    # ---- activation ---------------------------------------------------------
    ("relu_complex", lambda F: F.relu(x4().to(torch.complex64)), r"not supported for complex"),
    ("relu_not_tensor", lambda F: F.relu([1.0, 2.0]), r"input"),
    ("sigmoid_not_tensor", lambda F: F.sigmoid(3.0), r"input"),
    ("gelu_int", lambda F: F.gelu(ints()), r"floating-point.*int32"),
    ("gelu_complex", lambda F: F.gelu(x4().to(torch.complex64)), r"floating-point"),
    ("gelu_approximate", lambda F: F.gelu(x4(), approximate="erf"), r"approximate.*none or tanh"),
    ("gelu_approximate_none", lambda F: F.gelu(x4(), approximate=None), r"approximate.*must be str"),
    ("silu_int", lambda F: F.silu(ints()), r"not implemented for 'Int'"),
    ("leaky_relu_int", lambda F: F.leaky_relu(ints(dtype=torch.int64)), r"floating-point.*int64"),
    ("leaky_relu_slope_str", lambda F: F.leaky_relu(x4(), "a"), r"negative_slope"),
    ("prelu_int", lambda F: F.prelu(ints(), torch.ones(1, dtype=torch.int32)), r"floating-point"),
    ("prelu_weight_channels", lambda F: F.prelu(x4(), torch.ones(2)), r"parameter numbers = 2 and channel size = 3"),
    ("prelu_weight_2d", lambda F: F.prelu(x4(), torch.ones(3, 1)), r"weight.*scalar or 1D"),
    ("prelu_weight_dtype", lambda F: F.prelu(x4(), torch.ones(3, dtype=torch.float64)), r"(?i)type promoting"),
    ("prelu_weight_int", lambda F: F.prelu(x4(), torch.ones(1, dtype=torch.int64)), r"(?i)weight|type promoting"),
    ("prelu_weight_not_tensor", lambda F: F.prelu(x4(), 0.25), r"weight"),
    ("prelu_weight_device", lambda F: F.prelu(x4(), torch.ones(3, device=META)), r"device"),
    # ---- batch norm ---------------------------------------------------------
    ("batch_norm_1d_input", lambda F: F.batch_norm(torch.randn(3), None, None, training=True), r"2 dimensions"),
    ("batch_norm_int", lambda F: F.batch_norm(ints(), None, None, training=True), r"floating-point"),
    ("batch_norm_running_mean_grad",
     lambda F: F.batch_norm(x4(), torch.zeros(3, requires_grad=True), torch.ones(3), training=True),
     r"not differentiable with respect to argument 'running_mean'"),
    ("batch_norm_running_mean_size", lambda F: F.batch_norm(x4(), torch.zeros(2), torch.ones(3), training=True),
     r"running_mean should contain 3 elements not 2"),
    ("batch_norm_running_var_size", lambda F: F.batch_norm(x4(), torch.zeros(3), torch.ones(4)),
     r"running_var should contain 3 elements not 4"),
    ("batch_norm_weight_size", lambda F: F.batch_norm(x4(), None, None, torch.ones(4), training=True),
     r"weight should contain 3 elements"),
    ("batch_norm_bias_size", lambda F: F.batch_norm(x4(), None, None, None, torch.ones(5), training=True),
     r"bias should contain 3 elements not 5"),
    ("batch_norm_one_value_per_channel", lambda F: F.batch_norm(torch.randn(1, 3), None, None, training=True),
     r"more than 1 value per channel"),
    ("batch_norm_one_value_per_channel_4d",
     lambda F: F.batch_norm(torch.randn(1, 3, 1, 1), torch.zeros(3), torch.ones(3), training=True),
     r"more than 1 value per channel"),
    ("batch_norm_eval_without_stats", lambda F: F.batch_norm(x4(), None, None, training=False), r"running_mean"),
    ("batch_norm_eps_zero_training", lambda F: F.batch_norm(x4(), None, None, training=True, eps=0.0),
     r"eps must be positive"),
    ("batch_norm_eps_negative_eval", lambda F: F.batch_norm(x4(), torch.zeros(3), torch.ones(3), eps=-1e-3),
     r"eps must be non-negative"),
    ("batch_norm_running_mean_dtype",
     lambda F: F.batch_norm(x4(), torch.zeros(3, dtype=torch.float64), torch.ones(3), training=True), r"(?i)dtype"),
    ("batch_norm_weight_int", lambda F: F.batch_norm(x4(), None, None, torch.ones(3, dtype=torch.int64), training=True),
     r"(?i)dtype"),
    ("batch_norm_device", lambda F: F.batch_norm(x4(), torch.zeros(3, device=META), torch.ones(3, device=META), training=True),
     r"device"),
    ("instance_norm_1d_input", lambda F: F.instance_norm(torch.randn(3)), r"input"),
    ("instance_norm_one_spatial", lambda F: F.instance_norm(torch.randn(2, 3, 1)), r"more than 1 spatial element"),
    ("instance_norm_weight_size", lambda F: F.instance_norm(torch.randn(2, 3, 5), weight=torch.ones(4)),
     r"weight should contain"),
    ("instance_norm_running_size", lambda F: F.instance_norm(torch.randn(2, 3, 5), torch.zeros(4), torch.ones(4)),
     r"running_mean should contain"),
    ("instance_norm_int", lambda F: F.instance_norm(ints(2, 3, 5, dtype=torch.int64)), r"floating-point"),
    ("instance_norm_weight_dtype",
     lambda F: F.instance_norm(torch.randn(2, 3, 5), weight=torch.ones(3, dtype=torch.float64)), r"(?i)dtype"),
    # ---- layer, RMS, group norm ---------------------------------------------
    ("layer_norm_shape", lambda F: F.layer_norm(torch.randn(4, 3), [4]), r"normalized_shape=\[4\]"),
    ("layer_norm_shape_longer", lambda F: F.layer_norm(torch.randn(4, 3), [2, 4, 3]), r"normalized_shape"),
    ("layer_norm_shape_empty", lambda F: F.layer_norm(torch.randn(4, 3), []), r"normalized_shape"),
    ("layer_norm_shape_int", lambda F: F.layer_norm(torch.randn(4, 3), 3), r"normalized_shape"),
    ("layer_norm_shape_float", lambda F: F.layer_norm(torch.randn(4, 3), [3.0]), r"normalized_shape"),
    ("layer_norm_0d_input", lambda F: F.layer_norm(torch.tensor(1.0), [1]), r"normalized_shape=\[1\]"),
    ("layer_norm_weight_shape", lambda F: F.layer_norm(torch.randn(4, 3), [3], torch.ones(4)), r"weight.*\[4\]"),
    ("layer_norm_bias_shape", lambda F: F.layer_norm(torch.randn(4, 3), [3], None, torch.ones(2)), r"bias.*\[2\]"),
    ("layer_norm_int", lambda F: F.layer_norm(ints(4, 3, dtype=torch.int64), [3]), r"floating-point"),
    ("layer_norm_complex", lambda F: F.layer_norm(torch.ones(4, 3, dtype=torch.complex64), [3]), r"floating-point"),
    ("layer_norm_weight_dtype", lambda F: F.layer_norm(torch.randn(4, 3), [3], torch.ones(3, dtype=torch.float64)),
     r"(?i)dtype"),
    ("layer_norm_weight_device", lambda F: F.layer_norm(torch.randn(4, 3), [3], torch.ones(3, device=META)), r"device"),
    ("rms_norm_shape", lambda F: F.rms_norm(torch.randn(4, 3), [4]), r"normalized_shape=\[4\]"),
    ("rms_norm_weight_shape", lambda F: F.rms_norm(torch.randn(4, 3), [3], torch.ones(4)), r"weight.*\[4\]"),
    ("rms_norm_int", lambda F: F.rms_norm(ints(4, 3, dtype=torch.int64), [3]), r"not implemented for 'Long'"),
    ("rms_norm_shape_empty", lambda F: F.rms_norm(torch.randn(4, 3), []), r"normalized_shape"),
    ("group_norm_not_dividing", lambda F: F.group_norm(x4(), 2), r"divisible by num_groups"),
    ("group_norm_zero_groups", lambda F: F.group_norm(x4(), 0), r"num_groups|zero"),
    ("group_norm_negative_groups", lambda F: F.group_norm(x4(), -1), r"greater than 0, got -1"),
    ("group_norm_float_groups", lambda F: F.group_norm(x4(), 1.5), r"num_groups"),
    ("group_norm_1d_input", lambda F: F.group_norm(torch.randn(3), 1), r"at least 2 dimensions"),
    ("group_norm_weight_size", lambda F: F.group_norm(x4(), 3, torch.ones(4)), r"weight of shape \[4\]"),
    ("group_norm_bias_size", lambda F: F.group_norm(x4(), 3, None, torch.ones(4)), r"bias"),
    ("group_norm_int", lambda F: F.group_norm(ints(), 3), r"floating-point"),
    ("group_norm_one_value", lambda F: F.group_norm(torch.randn(1, 3, 1, 1), 3), r"more than 1 value per channel"),
    ("group_norm_weight_dtype", lambda F: F.group_norm(x4(), 3, torch.ones(3, dtype=torch.float64)), r"(?i)dtype"),
    # ---- pooling ------------------------------------------------------------
    ("max_pool_kernel_zero", lambda F: F.max_pool2d(x4(), 0), r"(?i)kernel_size|stride"),
    ("max_pool_kernel_negative", lambda F: F.max_pool2d(x4(), -2), r"kernel_size"),
    ("max_pool_stride_zero", lambda F: F.max_pool2d(x4(), 2, 0), r"stride"),
    ("max_pool_stride_negative", lambda F: F.max_pool2d(x4(), 2, -1), r"stride"),
    ("max_pool_padding_negative", lambda F: F.max_pool2d(x4(), 2, 1, -1), r"pad"),
    ("max_pool_padding_over_half", lambda F: F.max_pool2d(x4(), 2, 1, 2), r"pad should be at most half"),
    ("max_pool_dilation_zero", lambda F: F.max_pool2d(x4(), 2, 1, 0, 0), r"dilation"),
    ("max_pool_dilation_negative", lambda F: F.max_pool2d(x4(), 2, 1, 0, -1), r"dilation"),
    ("max_pool_output_empty", lambda F: F.max_pool2d(x4(), 7), r"Output size is too small"),
    ("max_pool_2d_input", lambda F: F.max_pool2d(torch.randn(5, 5), 2), r"3D|4D"),
    ("max_pool_5d_input", lambda F: F.max_pool2d(torch.randn(1, 2, 3, 5, 5), 2), r"3D|4D"),
    ("max_pool_kernel_three", lambda F: F.max_pool2d(x4(), (2, 2, 2)), r"kernel_size"),
    ("max_pool_kernel_str", lambda F: F.max_pool2d(x4(), "a"), r"kernel_size"),
    ("max_pool_kernel_float", lambda F: F.max_pool2d(x4(), 2.0), r"kernel_size"),
    ("max_pool_empty_channels", lambda F: F.max_pool2d(torch.randn(2, 0, 5, 5), 2), r"\[?2, 0, 5, 5|non-zero"),
    ("max_pool_empty_height", lambda F: F.max_pool2d(torch.randn(2, 3, 0, 5), 2), r"2, 3, 0, 5"),
    ("avg_pool_kernel_zero", lambda F: F.avg_pool2d(x4(), 0), r"(?i)kernel_size|stride"),
    ("avg_pool_stride_zero", lambda F: F.avg_pool2d(x4(), 2, 0), r"stride"),
    ("avg_pool_stride_float", lambda F: F.avg_pool2d(x4(), 2, 2.0), r"stride"),
    ("avg_pool_padding_over_half", lambda F: F.avg_pool2d(x4(), 2, 1, 2), r"pad should be at most half"),
    ("avg_pool_padding_negative", lambda F: F.avg_pool2d(x4(), 2, 1, -1), r"pad"),
    ("avg_pool_output_empty", lambda F: F.avg_pool2d(x4(), 6), r"Output size is too small"),
    ("avg_pool_divisor_zero", lambda F: F.avg_pool2d(x4(), 2, divisor_override=0), r"divisor"),
    ("avg_pool_2d_input", lambda F: F.avg_pool2d(torch.randn(5, 5), 2), r"3D|4D|dim"),
    ("avg_pool_int", lambda F: F.avg_pool2d(ints(), 2), r"not implemented for 'Int'"),
    ("adaptive_avg_negative", lambda F: F.adaptive_avg_pool2d(x4(), -1), r"output_size"),
    ("adaptive_avg_three", lambda F: F.adaptive_avg_pool2d(x4(), (1, 2, 3)), r"output_size"),
    ("adaptive_avg_float", lambda F: F.adaptive_avg_pool2d(x4(), (2.0, 2)), r"output_size"),
    ("adaptive_avg_2d_input", lambda F: F.adaptive_avg_pool2d(torch.randn(5, 5), 2), r"3D|4D"),
    ("adaptive_avg_2d_input_pair", lambda F: F.adaptive_avg_pool2d(torch.randn(5, 5), (2, 2)), r"dimension should be at least 3"),
    ("adaptive_avg_empty_size", lambda F: F.adaptive_avg_pool2d(x4(), ()), r"output_size must be 2"),
    ("max_pool_2d_input", lambda F: F.max_pool2d(torch.randn(5, 5), 2), r"non-empty 3D or 4D \(batch mode\) tensor expected"),
    ("max_pool_negative_pad_empty", lambda F: F.max_pool2d(torch.randn(0, 1, 49), 2, 50, padding=-1), r"pad must be non-negative"),
    ("max_pool_pad_over_half_empty", lambda F: F.max_pool2d(torch.randn(0, 1, 49), 2, 50, padding=4),
     r"pad should be at most half of effective kernel size"),
    ("avg_pool_pad_over_half_empty", lambda F: F.avg_pool2d(torch.randn(0, 1, 49), 2, 50, padding=4),
     r"pad should be at most half of effective kernel size"),
    ("max_pool_dilated_pad_over_half", lambda F: F.max_pool2d(x4(), 3, 1, 2, dilation=2),
     r"pad should be smaller than or equal to half of kernel size"),
    ("adaptive_avg_int", lambda F: F.adaptive_avg_pool2d(ints(), 2), r"floating-point"),
    ("adaptive_max_negative", lambda F: F.adaptive_max_pool2d(x4(), -1), r"negative dimension -1: \[2, 3, -1, -1\]"),
    ("adaptive_avg_negative", lambda F: F.adaptive_avg_pool2d(torch.randn(1, 1, 1, 1), (-1, 0)),
     r"elements of output_size must be greater than or equal to 0 but received \{-1, 0\}"),
    ("adaptive_max_2d_input", lambda F: F.adaptive_max_pool2d(torch.randn(5, 5), 2), r"3D|4D"),
    ("adaptive_max_2d_input_pair", lambda F: F.adaptive_max_pool2d(torch.randn(5, 5), (2, 2)), r"dimension should be at least 3"),
    ("adaptive_max_empty_height", lambda F: F.adaptive_max_pool2d(torch.randn(2, 3, 0, 5), 2),
     r"non-zero size for non-batch dimensions, but input has sizes \[2, 3, 0, 5\] with dimension 2 being empty"),
    ("max_pool_empty_height", lambda F: F.max_pool2d(torch.randn(1, 0, 10), 1),
     r"Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input, but got:\[1, 0, 10\]"),
    ("avg_pool_empty_channels", lambda F: F.avg_pool2d(torch.randn(2, 0, 5, 5), 1),
     r"Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input"),
    ("adaptive_max_int", lambda F: F.adaptive_max_pool2d(ints(), 2), r"floating-point"),
    # ---- dropout ------------------------------------------------------------
    ("dropout_p_negative", lambda F: F.dropout(x4(), -0.1), r"between 0 and 1, but got -0.1"),
    ("dropout_p_over_one", lambda F: F.dropout(x4(), 1.1), r"between 0 and 1, but got 1.1"),
    ("dropout_p_nan", lambda F: F.dropout(x4(), float("nan")), r"between 0 and 1, but got nan"),
    ("dropout_p_over_one_eval", lambda F: F.dropout(x4(), 1.5, training=False), r"between 0 and 1"),
    ("dropout_int", lambda F: F.dropout(ints(), 0.5), r"(?i)float|int"),
    ("dropout_not_tensor", lambda F: F.dropout([1.0], 0.5), r"input"),
    ("dropout_p_str", lambda F: F.dropout(x4(), "a"), r"p|str"),
]

# lamina-only ops: the expected type written down (no PyTorch op to ask)
LAMINA_ONLY = [
    ("swish_int", lambda: LF.swish(ints()), TypeError, r"floating-point"),
    ("swish_not_tensor", lambda: LF.swish(1.0), TypeError, r"input"),
    ("drop_connect_p", lambda: LF.drop_connect(torch.randn(3, 3), 1.5), ValueError, r"between 0 and 1"),
    ("drop_block_p", lambda: LF.drop_block2d(x4(), -0.5, 3), ValueError, r"between 0 and 1"),
    ("drop_block_3d_input", lambda: LF.drop_block2d(torch.randn(3, 5, 5), 0.5, 3), ValueError, r"4 dimensional"),
    ("drop_block_even_block", lambda: LF.drop_block2d(x4(), 0.5, 2), ValueError, r"odd"),
    ("drop_block_zero_block", lambda: LF.drop_block2d(x4(), 0.5, 0), ValueError, r"block"),
    ("drop_block_negative_block", lambda: LF.drop_block2d(x4(), 0.5, -3), ValueError, r"block_size"),
    ("drop_block_int", lambda: LF.drop_block2d(ints(), 0.5, 3), RuntimeError, r"floating-point"),
]


def torch_error(call):
    """The exception PyTorch raises for ``call``, or None when it takes the
    call on this device (CUDA batch norm takes float64 running stats that
    its CPU kernel refuses)."""
    try:
        call(TORCH)
    except Exception as theirs:
        return type(theirs)
    return None


def test_enough_cases():
    assert len(CASES) + len(LAMINA_ONLY) >= 60


@pytest.mark.parametrize("name,call,message", CASES, ids=[c[0] for c in CASES])
def test_raises_like_torch(each_backend, name, call, message):
    expected = torch_error(call)
    if expected is None:
        assert torch.device(torch.get_default_device()).type != "cpu", f"{name}: PyTorch takes this call on the CPU"
        call(LF)  # taken by PyTorch on this device: lamina takes it too
        return
    with pytest.raises(expected, match=message):
        call(LF)


@pytest.mark.parametrize("name,call,expected,message", LAMINA_ONLY, ids=[c[0] for c in LAMINA_ONLY])
def test_lamina_only_ops_raise(each_backend, name, call, expected, message):
    with pytest.raises(expected, match=message):
        call()


# Dtypes lamina computes in neither implementation (integers, bool, complex)
# are handed to PyTorch's own op: its answer, and for those it refuses its
# error (the rows above). Integer relu, sigmoid promoting to float, integer
# pooling, complex sigmoid:
NON_FLOAT_INPUTS_TORCH_ACCEPTS = [
    ("relu", lambda F: F.relu(ints() - 2)),
    ("sigmoid", lambda F: F.sigmoid(ints())),
    ("tanh", lambda F: F.tanh(ints())),
    ("max_pool2d", lambda F: F.max_pool2d(torch.arange(50, dtype=torch.uint8).reshape(2, 1, 5, 5), 2)),
    ("avg_pool2d_int64", lambda F: F.avg_pool2d(torch.arange(50).reshape(2, 1, 5, 5), 2)),
    ("sigmoid_complex", lambda F: F.sigmoid(x4().to(torch.complex64))),
    ("rms_norm_complex", lambda F: F.rms_norm(x4(4, 3).to(torch.complex64), [3])),
    ("dropout_p1_int", lambda F: F.dropout(ints(), 1.0)),
]


@pytest.mark.parametrize("name,call", NON_FLOAT_INPUTS_TORCH_ACCEPTS, ids=[c[0] for c in NON_FLOAT_INPUTS_TORCH_ACCEPTS])
def test_non_float_input_gets_torchs_answer(each_backend, name, call):
    expected = torch_error(call)
    if expected is not None:  # PyTorch refuses it on this device (integer pooling on CUDA): so does lamina
        with pytest.raises(expected):
            call(LF)
        return
    torch.manual_seed(0)
    want = call(TF)
    torch.manual_seed(0)
    got = call(LF)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_per_channel_weight_of_any_shape_accepted():
    """torch takes a batch-norm weight or bias of any shape with C elements
    (a (C, 1) weight), but only 1-D running statistics."""
    x = x4()
    w, b = torch.rand(3, 1) + 0.5, torch.randn(1, 3)
    torch.testing.assert_close(LF.batch_norm(x, None, None, w, b, training=True),
                               TF.batch_norm(x, None, None, w, b, training=True))
    stats = (torch.zeros(3, 1), torch.ones(3, 1))
    for training in (False, True):
        expected = torch_error(lambda F: F.batch_norm(x, *stats, training=training))
        with pytest.raises(expected, match="running_mean"):
            LF.batch_norm(x, *stats, training=training)


# ---- modules ------------------------------------------------------------------

MODULE_CASES = [
    ("BatchNorm2d_negative", lambda N: N.BatchNorm2d(-1)),
    ("BatchNorm2d_float", lambda N: N.BatchNorm2d(2.5)),
    ("BatchNorm1d_negative", lambda N: N.BatchNorm1d(-3)),
    ("LayerNorm_negative", lambda N: N.LayerNorm(-1)),
    ("LayerNorm_str", lambda N: N.LayerNorm("a")),
    ("RMSNorm_negative", lambda N: N.RMSNorm(-2)),
    ("GroupNorm_not_dividing", lambda N: N.GroupNorm(3, 4)),
    ("GroupNorm_zero_groups", lambda N: N.GroupNorm(0, 4)),
    ("PReLU_negative", lambda N: N.PReLU(-1)),
    ("Dropout_negative", lambda N: N.Dropout(-0.1)),
    ("Dropout_over_one", lambda N: N.Dropout(1.1)),
    ("Dropout_str", lambda N: N.Dropout("a")),
    # errors at the first call
    ("GELU_bad_approximate", lambda N: N.GELU("foo")(torch.randn(3))),
    ("MaxPool2d_kernel_zero", lambda N: N.MaxPool2d(0)(x4())),
    ("AvgPool2d_kernel_zero", lambda N: N.AvgPool2d(0)(x4())),
    ("AdaptiveAvgPool2d_negative", lambda N: N.AdaptiveAvgPool2d(-1)(x4())),
    ("AdaptiveMaxPool2d_negative", lambda N: N.AdaptiveMaxPool2d(-1)(x4())),
    ("BatchNorm2d_3d_input", lambda N: N.BatchNorm2d(3)(torch.randn(2, 3, 4))),
    ("BatchNorm1d_4d_input", lambda N: N.BatchNorm1d(3)(x4())),
    ("BatchNorm2d_channels", lambda N: N.BatchNorm2d(4)(x4())),
    ("BatchNorm2d_one_value", lambda N: N.BatchNorm2d(3)(torch.randn(1, 3, 1, 1))),
    ("InstanceNorm1d_4d_input", lambda N: N.InstanceNorm1d(3)(x4())),
    ("InstanceNorm2d_channels", lambda N: N.InstanceNorm2d(3, affine=True)(torch.randn(2, 4, 4, 4))),
    ("LayerNorm_shape", lambda N: N.LayerNorm(4)(torch.randn(2, 3))),
    ("GroupNorm_channels", lambda N: N.GroupNorm(2, 4)(torch.randn(2, 6, 3))),
    ("RMSNorm_shape", lambda N: N.RMSNorm(4)(torch.randn(2, 3))),
    ("PReLU_channels", lambda N: N.PReLU(4)(torch.randn(2, 3, 5))),
    ("GELU_int", lambda N: N.GELU()(ints())),
    ("LayerNorm_int", lambda N: N.LayerNorm(3)(ints(2, 3, dtype=torch.int64))),
    ("SyncBatchNorm_1d", lambda N: N.SyncBatchNorm(3)(torch.randn(2))),
]


@pytest.mark.parametrize("name,make", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
def test_modules_raise_like_torch(each_backend, name, make):
    with pytest.raises(Exception) as theirs:
        make(torch.nn)
    with pytest.raises(type(theirs.value)):
        make(LN)


def test_lamina_only_module_arguments():
    with pytest.raises(ValueError, match="between 0 and 1"):
        LN.DropConnect(torch.nn.Linear(2, 2), p=1.5)
    with pytest.raises(TypeError, match="weight"):
        LN.DropConnect(torch.nn.ReLU())


def test_integer_like_sizes_accepted_like_torch(each_backend):
    """PyTorch's argument parser takes numpy integers and 0-d integer tensors
    where it wants an int; so does lamina (no spurious TypeError)."""
    import numpy as np

    x = x4(2, 4, 6, 6)
    for call in (lambda F: F.max_pool2d(x, np.int64(2)), lambda F: F.max_pool2d(x, torch.tensor(3), 1, 1),
                 lambda F: F.avg_pool2d(x, (np.int32(2), 3)), lambda F: F.group_norm(x, np.int64(2)),
                 lambda F: F.layer_norm(x, [np.int64(6)]), lambda F: F.layer_norm(x, torch.Size([6, 6]))):
        torch.testing.assert_close(call(LF), call(TORCH))


def test_bools_and_empty_inputs_taken_as_torch_takes_them():
    """A bool where a number goes is an int (leaky_relu(x, True): slope 1;
    dropout(x, True): p = 1), an empty 1-D batch is returned empty, and
    batch norm minds running statistics that require grad only with grad on."""
    x = x4()
    torch.testing.assert_close(LF.leaky_relu(x, True), TF.leaky_relu(x, True))
    torch.testing.assert_close(LF.dropout(x, True), TF.dropout(x, True))
    assert LF.batch_norm(torch.randn(0), torch.zeros(0), torch.ones(0), training=True).shape == (0,)
    with torch.no_grad():
        rm = torch.zeros(3, requires_grad=True)
        torch.testing.assert_close(LF.batch_norm(x, rm, torch.ones(3), training=True),
                                   TF.batch_norm(x, rm.clone(), torch.ones(3), training=True))


@pytest.mark.parametrize("be", ["reference", "triton"])
def test_rms_norm_output_and_gradients_keep_pytorchs_layouts(be, backend):
    """PyTorch's rms_norm is elementwise math: y keeps a dense input's
    layout, dx takes a dense upstream gradient's (torch's test_memory_format
    checks both), non-dense ones give contiguous results, and the weight's
    gradient is contiguous as the weight."""
    backend(be)
    w0 = torch.rand(2, 2, 5)
    for x0 in (torch.randn(4, 2, 2, 5).to(memory_format=torch.channels_last), torch.randn(4, 2, 2, 10)[..., ::2]):
        for dy_like_y in (True, False):
            x, x_ref = x0.clone(memory_format=torch.preserve_format).requires_grad_(), x0.clone().requires_grad_()
            w, w_ref = w0.clone().requires_grad_(), w0.clone().requires_grad_()
            y, y_ref = LF.rms_norm(x, [2, 2, 5], w), TF.rms_norm(x_ref, [2, 2, 5], w_ref)
            dy = torch.rand(y.shape)
            if dy_like_y:
                dy = torch.empty_like(y).copy_(dy)  # (as torch's test_memory_format makes it)
            grads, grads_ref = torch.autograd.grad(y, (x, w), dy), torch.autograd.grad(y_ref, (x_ref, w_ref), dy)
            assert y.stride() == y_ref.stride()
            assert [g.stride() for g in grads] == [g.stride() for g in grads_ref]
            torch.testing.assert_close(y, y_ref)
            for g, g_ref in zip(grads, grads_ref):
                torch.testing.assert_close(g, g_ref)


def test_layer_and_instance_norm_outputs_are_contiguous_as_torchs():
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    stats = (torch.zeros(3), torch.ones(3))
    for lam, ref in ((LF.layer_norm(x, [5]), TF.layer_norm(x, [5])),
                     (LF.instance_norm(x), TF.instance_norm(x)),
                     (LF.instance_norm(x, *stats, use_input_stats=False), TF.instance_norm(x, *stats, use_input_stats=False))):
        assert lam.stride() == ref.stride()
        torch.testing.assert_close(lam, ref)
