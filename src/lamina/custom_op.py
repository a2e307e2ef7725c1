"""lamina's custom ops: ``torch.library`` ops for torch.compile, cheap in eager.

Every lamina layer is a pair of ``torch.library`` custom ops with a fake
implementation and an autograd formula, so ``torch.compile(fullgraph=True)``
and CUDA graphs see plain ops. Going through the dispatcher and the
library's autograd wrapper costs about 200 microseconds of host time per
forward+backward (measured on an H200 host, scripts/probe_overhead.py),
several times the GPU time of a small layer. So outside of compilation the
same Python function runs directly, under a plain ``torch.autograd.Function``
that uses the very same ``setup_context`` and ``backward``: one formula, two
ways in.

Usage mirrors ``torch.library.custom_op``::

    @custom_op("lamina::relu_forward", mutates_args=())
    def relu_forward(x: Tensor) -> Tensor: ...

    @relu_forward.register_fake
    def _(x): ...

    relu_forward.register_autograd(backward, setup_context=setup_context)

Under torch.compile, a lamina op called on a GPU (where the Triton
kernels run) is traced into, as ``torch.library.triton_op`` does: the
graph holds lamina's kernels themselves (kernels/fast_launch.py hands
each traced launch to ``wrap_triton``) and Inductor launches them from its
generated code, with no lamina Python left in the compiled step. Elsewhere
(the NumPy reference, the interpreter) the op stays opaque. In the default
compile mode most layers on a GPU never call their op under torch.compile:
lamina.functional hands Inductor torch's own op instead (under_compile.py);
the ops traced into are then those of compile mode 'kernels' and the
layers that keep lamina's kernels in both modes (a seeded dropout,
DropBlock2d).
"""

from __future__ import annotations

import inspect

import torch
from torch._C import _are_functorch_transforms_active, _len_torch_dispatch_stack
from torch._C import _is_tracing as _jit_tracing
from torch._C._functorch import is_legacy_batchedtensor, unwrap_if_dead

# Tensor types that run the Python function directly; any other subclass
# (FakeTensor, FunctionalTensor, ...) means a tracer is looking.
PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _eager_function(op):
    """A ``torch.autograd.Function`` that runs ``op``'s Python function with
    its registered autograd formula (a class per op, so that the formula sees
    exactly the op's inputs, ``ctx.needs_input_grad`` included)."""

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            out = op.fn(*args)
            op.setup_context(ctx, args, out)
            # The secondary outputs (saved statistics, masks) feed no graph:
            # materializing their zero gradients costs a torch.zeros each
            # (about 30 us of host time apiece, measured on an H200 host)
            # and every formula ignores them. Only the main output's gradient
            # is materialized, when it is missing, from this metadata.
            ctx.set_materialize_grads(False)
            first = out[0] if isinstance(out, tuple) else out
            ctx.lamina_first = (first.shape, first.dtype, first.device) if isinstance(first, torch.Tensor) else None
            return out

        @staticmethod
        def backward(ctx, *grads):
            if grads[0] is None and ctx.lamina_first is not None:
                shape, dtype, device = ctx.lamina_first
                grads = (torch.zeros(shape, dtype=dtype, device=device),) + grads[1:]
            result = op.backward(ctx, *grads)
            return result if isinstance(result, tuple) else (result,)

    Eager.__name__ = f"{op.__name__}_eager"
    return Eager


def eager_apply(function_cls):
    """``function_cls.apply``, cheaper in eager mode: what Function.apply does
    outside functorch transforms for a Function without ``setup_context``
    (unwrap dead functorch wrappers, call the C apply), minus its Python
    frames and checks - host time, about 1.2 us of its 3.7 us a call on the
    CPU host. Under torch.compile (dynamo knows Function.apply, not the C
    one) and under functorch transforms it is Function.apply itself."""
    assert "setup_context" not in vars(function_cls), "a Function with setup_context binds its arguments in apply"
    c_apply = super(torch.autograd.Function, function_cls).apply
    python_apply = function_cls.apply

    def apply(*args):
        if torch.compiler.is_compiling() or _are_functorch_transforms_active():
            return python_apply(*args)
        for a in args:
            if isinstance(a, torch.Tensor) and unwrap_if_dead(a) is not a:  # a dead functorch wrapper
                return c_apply(*(unwrap_if_dead(t) if isinstance(t, torch.Tensor) else t for t in args))
        return c_apply(*args)  # (no new tuple when nothing is unwrapped: 0.2 us of 1.1, CPU host)

    return apply


def runs_compiled_kernels(t: torch.Tensor) -> bool:
    """Ops on ``t`` run lamina's compiled Triton kernels (a CUDA tensor on
    the kernels' backend; tests/gpu_trace_on_meta.py lets meta tensors
    stand in)."""
    from .backend import use_kernels

    return t.is_cuda and use_kernels(t)


def _traceable_on_gpu(args) -> bool:
    """The op's first tensor argument runs lamina's compiled Triton kernels,
    and every tensor argument has static sizes and strides: the launch
    arithmetic (block sizes, grids, plan caches) is plain Python on ints, so
    a dynamic-shape trace (SymInts) keeps the opaque op."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or not runs_compiled_kernels(tensors[0]):
        return False
    return not any(isinstance(d, torch.SymInt) for t in tensors for d in (*t.shape, *t.stride()))


def _traced_into(fn):
    """A FunctionalTensorMode rule (the mode torch.compile's AOT autograd
    traces under): GPU calls run ``fn`` under the mode, so its torch ops and
    kernel launches enter the graph; others stay one opaque op."""

    def rule(mode, op, types, args, kwargs):
        if not _traceable_on_gpu(args):
            return mode.__torch_dispatch__(op, types, args, kwargs)
        with mode:
            return fn(*args, **kwargs)

    return rule


class LaminaOp:
    """A custom op that, in eager mode, skips the dispatcher (see module doc)."""

    def __init__(self, name: str, fn, mutates_args):
        self.fn = fn
        self.op = torch.library.custom_op(name, mutates_args=mutates_args)(fn)
        if not mutates_args:
            # in-place ops stay opaque (their Python runs in the compiled
            # step): a traced kernel writing its own input has not been
            # through Inductor on a card yet
            from torch._subclasses.functional_tensor import FunctionalTensorMode

            self.op.register_torch_dispatch(FunctionalTensorMode, _traced_into(fn))
        self.signature = inspect.signature(fn)
        self.n_params = len(self.signature.parameters)
        self.backward = None
        self.setup_context = None
        # an op named <layer>_backward is a layer's backward formula: with no
        # formula of its own, autograd cannot differentiate through it
        self.is_backward_formula = name.endswith("_backward")
        # the same formula in differentiable PyTorch ops (set by the layer),
        # taken only there: inside a backward run with create_graph=True
        self.differentiable = None
        self.__name__ = getattr(fn, "__name__", name)
        self.__doc__ = fn.__doc__

    def register_fake(self, fake):
        self.op.register_fake(fake)
        return fake

    def register_autograd(self, backward, *, setup_context):
        self.op.register_autograd(backward, setup_context=setup_context)
        self.backward = backward
        self.setup_context = setup_context
        self.eager = _eager_function(self)
        self.eager_apply = eager_apply(self.eager)

    def __call__(self, *args, **kwargs):
        if kwargs or len(args) != self.n_params:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            args = tuple(bound.arguments.values())
        # (_len_torch_dispatch_stack: the C call behind
        # _get_current_dispatch_mode, without its Python frame: host time.
        # torch.jit.trace records dispatcher ops: through the registered op
        # its graph calls lamina again, instead of storing this result)
        if torch.compiler.is_compiling() or _len_torch_dispatch_stack() or _jit_tracing():
            return self.op(*args)
        # one pass over the arguments (host time): a traced tensor sends the
        # call to the registered op, a plain one asking for grad to autograd
        wants_grad = False
        for a in args:
            if isinstance(a, torch.Tensor):
                if type(a) not in PLAIN_TENSORS:
                    return self.op(*args)  # FakeTensor, FunctionalTensor, ...: a tracer is looking
                wants_grad = wants_grad or a.requires_grad
        if wants_grad and torch.is_grad_enabled():
            if self.backward is not None:
                return self.eager_apply(*args)
            if self.is_backward_formula and self.differentiable is None:  # create_graph=True, no PyTorch form
                return _no_second_derivative(self.fn(*args), args, self.__name__)
        if self.differentiable is not None and differentiable_backward(args[0]):
            return self.differentiable(*args)  # PyTorch's ops: exact higher derivatives, batching rules
        return self.fn(*args)


def differentiable_backward(dy) -> bool:
    """A backward formula must build a graph (create_graph=True: grad mode
    is on inside the backward) or run batched (a torch.func vmap, or
    autograd's own for is_grads_batched): lamina's kernels and reference
    can do neither, so the formula takes its PyTorch form."""
    return torch.is_grad_enabled() or _are_functorch_transforms_active() or is_legacy_batchedtensor(dy)


def _no_second_derivative(out, args, name: str):
    """``out`` (a tensor or a tuple) tied to a node that raises when autograd
    reaches it: a backward formula run with create_graph=True (a gradient
    penalty, a Hessian-vector product) gives first derivatives whose own
    derivative lamina does not have. A second backward through them raises,
    as through PyTorch's once_differentiable, instead of a silent zero; the
    first derivatives keep their values. The tie is an exact zero (an empty
    slice's sum) computed from the formula's inputs through the raising node,
    so every path from ``out`` back to those inputs meets it."""
    needing = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    error = torch._C._functions.DelayedError(
        f"lamina: {name.lstrip('_')} has no derivative of its own: a second derivative through this "
        "layer is not implemented (torch.func transforms and forward-mode AD run PyTorch's ops instead)",
        len(needing))
    aliases = error(*needing)
    aliases = aliases if isinstance(aliases, tuple) else (aliases,)
    zero = sum(a.reshape(-1)[:0].sum() for a in aliases)

    def tie(t):
        return t + zero.to(t.dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    return tuple(tie(t) for t in out) if isinstance(out, tuple) else tie(out)


def custom_op(name: str, *, mutates_args=()):
    """Decorator: like ``torch.library.custom_op``, returning a :class:`LaminaOp`."""

    def wrap(fn):
        return LaminaOp(name, fn, mutates_args)

    return wrap
