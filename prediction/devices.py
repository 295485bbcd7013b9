"""Where torch models run: picking the device, the thread count, and surviving CUDA OOM;
`TorchSeparator`, the part every torch separator shares.

A device that is asked for but cannot be used never fails a job: the predictor falls back to
the CPU and says so in a warning string that travels with the result.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from common.errors import BadRequest
from prediction.separator import Separator

log = logging.getLogger("audiosplit.devices")

# forward(batch, device) -> output (batch, ...): runs the batch (given on the CPU) on `device`
Forward = Callable[[torch.Tensor, str], torch.Tensor]


GPU_BATCH = 4  # windows per forward on an accelerator unless settings say otherwise


def pick_device(setting: str) -> tuple[str, list[str]]:
    """The torch device for `setting` ("auto", "cpu", "cuda", "cuda:N", "mps"), and warnings.

    "auto" takes CUDA, then MPS, then the CPU. An explicit device is used only if a tensor can
    be made on it; otherwise the CPU, with a warning that says why.
    """
    wanted = setting.strip().lower() or "auto"
    if wanted == "auto":
        if torch.cuda.is_available():
            return "cuda", []
        if mps_available():
            return "mps", []
        return "cpu", []
    if wanted == "cpu":
        return "cpu", []
    try:
        device = torch.device(wanted)
        torch.zeros(1, device=device)
    # Any failure here means "not usable": torch raises RuntimeError, AssertionError ("not
    # compiled with CUDA") or ValueError depending on the backend and the build.
    except Exception as e:
        warning = f"device {setting!r} could not be initialised ({e}); running on cpu instead"
        log.warning(warning)
        return "cpu", [warning]
    return str(device), []


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def configure_threads(torch_threads: int) -> int:
    """Set torch's intra-op threads: `torch_threads`, or every core when it is 0."""
    threads = torch_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def is_out_of_memory(error: BaseException) -> bool:
    """True for an accelerator running out of memory (CUDA's own type, or MPS' message)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def run_in_batches(
    forward: Forward, x: torch.Tensor, device: str, batch_size: int
) -> tuple[torch.Tensor, list[str]]:
    """Run `forward` over x (batch, ...) in batches of `batch_size`; output (batch, ...) on cpu.

    When the accelerator runs out of memory, the batch is halved and retried; when even one
    window does not fit, the remaining windows run on the CPU (`forward` is then called with
    device "cpu"; it moves the batch, and the model, to the device it is given). The warnings
    say what happened; the result is the same, only slower. Out of memory on the CPU itself
    is raised.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    warnings: list[str] = []
    outputs: list[torch.Tensor] = []
    start = 0
    while start < x.shape[0]:
        batch = x[start : start + batch_size]
        out: torch.Tensor | None = None
        try:
            out = forward(batch, device)
        except Exception as e:
            if device == "cpu" or not is_out_of_memory(e):
                raise
        if out is None:
            # Outside the `except`: its traceback would keep the failed batch's tensors alive.
            release_cached_memory(device)
            if batch_size > 1:
                warnings.append(
                    f"{device} ran out of memory with a batch of {batch_size} windows; "
                    f"retrying with {batch_size // 2}"
                )
                batch_size //= 2
            else:
                warnings.append(
                    f"{device} ran out of memory with a single window; the remaining "
                    f"{x.shape[0] - start} window(s) ran on cpu (slower)"
                )
                device = "cpu"
            log.warning(warnings[-1])
            continue
        outputs.append(out.to("cpu"))
        start += batch.shape[0]
    return torch.cat(outputs), warnings


def release_cached_memory(device: str) -> None:
    """Give the allocator's cached blocks back, so a smaller retry can find room."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps" and mps_available():
        torch.mps.empty_cache()


class TorchSeparator(Separator):
    """A separator whose work is torch modules: windows go through in batches on `device`, a
    CUDA OOM degrades to smaller batches or the CPU (see `run_in_batches`), never to a failure.

    `batch_size` windows at once: 1 on the CPU (batching measured slower there), the whole
    request on an accelerator.
    """

    concurrency = 1  # torch already uses every core, a GPU one batch at a time

    def __init__(
        self,
        modules: list[torch.nn.Module],
        device: str,
        batch_size: int | None = None,
        warnings: list[str] | None = None,
    ):
        self.modules = modules
        self.device = device
        self.batch_size = batch_size
        self.load_warnings = list(warnings or [])  # e.g. the device fallback, told every time
        self._on = ""
        self._move(device)

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, 2, window) on the modules' device -> (batch, n_stems, 2, window)."""

    def check_windows(self, windows: np.ndarray) -> None:
        """Raise BadRequest for windows this model cannot take."""
        if windows.ndim != 3 or windows.shape[1] != 2:
            raise BadRequest(f"expected windows (batch, 2, window), got shape {windows.shape}")

    def separate(self, windows: np.ndarray) -> np.ndarray:
        stems, warnings = self.separate_with_warnings(windows)
        for warning in warnings:
            log.warning("%s: %s", self.info.name, warning)
        return stems

    def preferred_batch(self) -> int:
        return self.batch_size or (1 if self.device == "cpu" else GPU_BATCH)

    def separate_with_warnings(
        self, windows: np.ndarray, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """Like `separate`, and the warnings of a degraded run (device fallback, OOM retries).
        `forward`: what runs the windows, `self.forward` unless given."""
        self.check_windows(windows)
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        batch = self.batch_size or (1 if self.device == "cpu" else x.shape[0])
        run = partial(self._run, forward=forward or self.forward)
        try:
            out, warnings = run_in_batches(run, x, self.device, batch)
        finally:
            self._move(self.device)  # back home after a CPU fallback
        return out.numpy(), self.load_warnings + warnings

    def _run(
        self, x: torch.Tensor, device: str, forward: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        self._move(device)
        with torch.no_grad():
            return forward(x.to(device))

    def _move(self, device: str) -> None:
        if self._on != device:
            for module in self.modules:
                module.to(device).eval()
            self._on = device
