"""The ``lamina`` command: ``demo``, ``check``, ``bench`` and ``info``.

Each subcommand lives in its own module (``lamina.demo``, ``lamina.check``,
``lamina.bench.cpu`` / ``lamina.bench.gpu``) and is imported only when it
runs, so ``lamina info`` and ``lamina --help`` stay quick. A usage mistake is
reported on one line of stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import platform
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake prints one line, not the usage block.

    The line names the command (``lamina check: ...``) and points at
    ``--help``; the exit code stays argparse's 2.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# argument types shared by the subcommands (demo, bench)

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _subcommand(subparsers, name: str, help: str, description: str) -> ArgumentParser:
    return subparsers.add_parser(name, help=help, description=description)


def _device_default() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- lamina info -------------------------------------------------------------

def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
    except Exception:  # not installed, or broken: say so rather than fail
        return None
    return getattr(module, "__version__", "unknown")


def run_info(args) -> int:
    import numpy
    import torch

    import lamina

    triton_version = _version("triton")
    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)"
    else:
        device = f"cpu: {platform.processor() or platform.machine()} (no CUDA device)"
    backend = lamina.get_backend()
    meaning = {
        "auto": "Triton kernels on CUDA tensors, NumPy reference on CPU tensors",
        "reference": "NumPy reference everywhere",
        "triton": "Triton kernels everywhere (interpreter on CPU tensors)",
    }[backend]
    rows = [
        ("lamina", lamina.__version__),
        ("torch", torch.__version__),
        ("triton", triton_version or "not installed"),
        ("numpy", numpy.__version__),
        ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("device", device),
        ("backend", f"{backend}: {meaning}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


# --- lamina bench: the GPU harness or the CPU comparison ----------------------

def _bench_device(argv: list[str]) -> str | None:
    """The ``--device`` given to ``lamina bench`` (None when not given)."""
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
    return None


def _without_device(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--device":
            skip = True
        elif not arg.startswith("--device="):
            out.append(arg)
    return out


def run_bench(argv: list[str]) -> int:
    """``lamina bench``: CUDA runs the GPU harness (``lamina.bench.gpu``), which
    parses its own arguments; the CPU runs ``lamina.bench.cpu``."""
    device = _bench_device(argv) or _device_default()
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ArgumentParser(prog="lamina bench").error("--device cuda: no CUDA device is available")
        try:
            from .bench import gpu
        except ImportError as error:
            print(f"lamina bench: error: the GPU harness lamina.bench.gpu cannot be imported ({error})", file=sys.stderr)
            return 1
        return gpu.main(_without_device(argv)) or 0
    from .bench import cpu

    return cpu.main(argv) or 0


# --- the parser ----------------------------------------------------------------

def build_parser() -> ArgumentParser:
    from . import __version__

    parser = ArgumentParser(
        prog="lamina",
        description="lamina: neural-network layers with forward and backward, "
        "as a NumPy reference and as Triton kernels, behind PyTorch's API.",
    )
    parser.add_argument("--version", action="version", version=f"lamina {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    subparsers.required = True

    demo = _subcommand(
        subparsers, "demo", "train a small CNN built from lamina's layers on scikit-learn's digits",
        "Train a small CNN (lamina's BatchNorm2d, ReLU, MaxPool2d, Dropout) on the 8x8 digits "
        "that ship with scikit-learn, then print the test accuracy and save a plot.",
    )
    from .demo import add_arguments as demo_arguments

    demo_arguments(demo)

    check = _subcommand(
        subparsers, "check", "check every op, forward and backward, against a float64 oracle",
        "Run every op of lamina's op table forward and backward on random inputs on this device "
        "and compare with PyTorch in float64 on the CPU. Exits 1 if any op is out of tolerance.",
    )
    from .check import add_arguments as check_arguments

    check_arguments(check)

    # 'bench' is dispatched before parsing (its arguments belong to the CPU or
    # the GPU harness); it is listed here so 'lamina --help' shows it.
    _subcommand(
        subparsers, "bench", "time lamina against PyTorch (GPU harness on CUDA, CPU comparison otherwise)",
        "Time lamina's ops against PyTorch. See 'lamina bench --help'.",
    )

    info = _subcommand(
        subparsers, "info", "print versions, the device and the backend in use",
        "Print lamina's, torch's, triton's and numpy's versions, Python's, the device and the backend in use.",
    )
    info.set_defaults(run=run_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lamina`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] == "bench":
            return run_bench(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.run(args) or 0
    except SystemExit as exit_:  # --help, --version and usage errors
        code = exit_.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)  # sys.exit("message")
        return 1
    except KeyboardInterrupt:
        print("lamina: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
