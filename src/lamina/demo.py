"""``lamina demo``: train a small CNN whose layers are lamina's on the 8x8
handwritten digits that ship with scikit-learn (no download).

The convolutions and the linear layer are PyTorch's; BatchNorm2d, ReLU,
MaxPool2d and Dropout are lamina's. On the CPU they run lamina's NumPy
reference, on CUDA its Triton kernels. The same ``--seed`` gives the same
weights, the same batches, the same dropout masks and so the same accuracy,
bit for bit, on the same machine.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch

import lamina

from .cli import ArgumentParser, positive_float, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=15, help="passes over the training set (default: 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, batch order and dropout (default: 0)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu runs lamina's NumPy reference, cuda its Triton kernels (default: cpu)")
    parser.add_argument("--plot", default="lamina-demo.png", metavar="PATH",
                        help="where to save the PNG of loss and accuracy per epoch (default: lamina-demo.png)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="training batch size (default: 64)")
    parser.add_argument("--lr", type=positive_float, default=3e-3, help="Adam's peak learning rate (default: 0.003)")
    parser.set_defaults(run=run)


# --- data ------------------------------------------------------------------------

def load_data(device: torch.device):
    """The 1797 digits as (N, 1, 8, 8) float32 tensors, split 80/20 once and for
    all (stratified, fixed random_state), standardized with the training
    set's mean and standard deviation."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8), values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    mean, std = x_train.mean(), x_train.std()

    def tensors(x, y):
        x = torch.from_numpy((x - mean) / std).to(device)
        return x, torch.from_numpy(y.astype(np.int64)).to(device)

    return tensors(x_train, y_train), tensors(x_test, y_test)


# --- the model -------------------------------------------------------------------

def build_model(width: int = 32, dropout: float = 0.25) -> torch.nn.Module:
    """8x8 -> conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN -> ReLU -> 2x2 max pool
    -> dropout -> linear. The convolutions carry no bias: BatchNorm's shift
    takes that role."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1, bias=False),
        lamina.nn.BatchNorm2d(width),
        lamina.nn.ReLU(),
        torch.nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        lamina.nn.BatchNorm2d(2 * width),
        lamina.nn.ReLU(),
        lamina.nn.MaxPool2d(2),  # 8x8 -> 4x4
        lamina.nn.Dropout(dropout),
        torch.nn.Flatten(),
        torch.nn.Linear(2 * width * 4 * 4, 10),
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed every source of randomness the demo touches; returns the generator
    that orders the batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def evaluate(model, x, y, batch_size: int = 512):
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        loss += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(1) == target).sum())
    return loss / len(x), correct


# --- the plot ----------------------------------------------------------------------

def save_plot(history: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], marker="o", label="train")
    ax_loss.plot(epochs, history["test_loss"], marker="o", label="test")
    ax_loss.set(title="cross-entropy loss", xlabel="epoch", ylabel="loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], marker="o", label="train")
    ax_acc.plot(epochs, [100 * a for a in history["test_acc"]], marker="o", label="test")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("lamina demo: small CNN on scikit-learn's digits")
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


# --- training ----------------------------------------------------------------------

def train(epochs: int = 15, seed: int = 0, device: str = "cpu", batch_size: int = 64, lr: float = 3e-3,
          progress: bool = True) -> dict:
    """Train and evaluate; returns the per-epoch history and the final numbers."""
    from tqdm import tqdm

    device = torch.device(device)
    if device.type == "cuda":
        # bit-for-bit repeatable convolutions on the GPU
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    (x_train, y_train), (x_test, y_test) = load_data(device)
    generator = seed_everything(seed)
    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(x_train) // batch_size)
    # one warm-up-free cosine decay over the whole run: steady, and no tuning per epoch count
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)

    history = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        total_loss, correct = 0.0, 0
        # updated by hand (not iterated) so it stays open for the test accuracy at the end
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch:>2}/{epochs}", unit="batch",
                   disable=not progress, leave=True, dynamic_ncols=True)
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            logits = model(x_train[index])
            loss = torch.nn.functional.cross_entropy(logits, y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(index)
            correct += int((logits.argmax(1) == y_train[index]).sum())
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.update(1)
        test_loss, test_correct = evaluate(model, x_test, y_test)
        history["train_loss"].append(total_loss / len(x_train))
        history["train_acc"].append(correct / len(x_train))
        history["test_loss"].append(test_loss)
        history["test_acc"].append(test_correct / len(x_test))
        bar.set_postfix(loss=f"{history['train_loss'][-1]:.4f}", test_acc=f"{100 * history['test_acc'][-1]:.2f}%")
        bar.close()
    elapsed = time.perf_counter() - start
    return {
        "history": history,
        "test_correct": test_correct,
        "test_total": len(x_test),
        "seconds": elapsed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": model,
    }


def run(args) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        ArgumentParser(prog="lamina demo").error("--device cuda: no CUDA device is available")
    what = "Triton kernels" if args.device == "cuda" else "NumPy reference"
    plural = "" if args.epochs == 1 else "s"
    print(f"lamina demo: digits 8x8, {args.epochs} epoch{plural}, seed {args.seed}, "
          f"device {args.device} (lamina's layers run the {what})")
    # 8x8 images are far too small to gain from threads, and on a busy machine
    # threads that wait for each other made training ten times slower: one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(epochs=args.epochs, seed=args.seed, device=args.device, batch_size=args.batch_size, lr=args.lr)
    finally:
        torch.set_num_threads(threads)
    save_plot(result["history"], args.plot)
    accuracy = result["test_correct"] / result["test_total"]
    print()
    print(f"test accuracy  {100 * accuracy:.2f}% ({result['test_correct']}/{result['test_total']})")
    print(f"time           {result['seconds']:.1f} s")
    print(f"parameters     {result['parameters']:,}")
    print(f"plot           {os.path.abspath(args.plot)}")
    return 0
