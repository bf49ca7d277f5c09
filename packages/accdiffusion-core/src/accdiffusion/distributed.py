"""One image across several processes: the distributed view executor.

Every process (a *rank*) runs the whole sampler: the same seeded generator,
the same text encoding, the same layouts and patch prompts, the same
scheduler steps. Only the UNet work is shared. At each step the views
(local windows and dilated samples) are cut into exactly the chunks of
``view_batch_size`` views that one process would use; chunk ``i`` is
evaluated by rank ``i % world_size`` and the guided outputs of all chunks
are exchanged with one ``all_gather``, so every rank ends the step with the
same canvas. Each chunk goes through the UNet with the same batch as in one
process, so the outputs, and therefore the image, are bit-identical to a
single-process run (float32 outputs cross the wire unchanged).

A step with a single chunk (phase 1, whose one latent may also be read by
the attention capture) is evaluated by every rank and nothing is exchanged.

Collectives use the process group's timeout: a rank that died or stopped
answering makes the others raise :class:`DistributedError` instead of
waiting forever.

Launch with ``torchrun --nproc-per-node N -m accdiffusion generate ...``;
the command line calls :func:`init_distributed` when ``WORLD_SIZE`` > 1.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any, Optional

import attrs
import torch

from .errors import DistributedError
from .executor import ViewExecutor, ViewGroup, guidance_mode
from .types import Conditioning

#: Seconds a collective may wait for the other ranks (``ACCDIFFUSION_DIST_TIMEOUT`` overrides).
DEFAULT_TIMEOUT = 600.0


def world_size_from_env(environ: Optional[dict] = None) -> int:
    """``WORLD_SIZE`` of the environment (set by ``torchrun``), 1 when unset."""
    env = os.environ if environ is None else environ
    text = env.get("WORLD_SIZE", "1").strip() or "1"
    try:
        n = int(text)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={text!r} is not a whole number of processes") from None
    if n < 1:
        raise DistributedError(f"WORLD_SIZE={n} is not allowed: at least 1 process")
    return n


def timeout_from_env(environ: Optional[dict] = None) -> float:
    """The collective timeout in seconds from ``ACCDIFFUSION_DIST_TIMEOUT`` (default :data:`DEFAULT_TIMEOUT`)."""
    env = os.environ if environ is None else environ
    text = env.get("ACCDIFFUSION_DIST_TIMEOUT")
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise DistributedError(f"ACCDIFFUSION_DIST_TIMEOUT={text!r} is not allowed: a number of seconds above 0")
    return value


@attrs.frozen
class DistributedContext:
    """The process group of a run: this process's ``rank`` of ``world_size``,
    its ``local_rank`` on the host, the ``backend`` and the torch ``device``
    this rank should use (``cuda:LOCAL_RANK`` with NCCL)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str
    timeout: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", *, timeout: Optional[float] = None,
                     backend: Optional[str] = None) -> DistributedContext:
    """Join the process group described by torchrun's environment
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Backend ``nccl`` when this rank runs on CUDA (``device`` ``auto`` or
    ``cuda`` with a GPU present; each rank takes ``cuda:LOCAL_RANK``), else
    ``gloo``. ``timeout`` (seconds) bounds every collective.
    """
    import torch.distributed as dist

    timeout = timeout_from_env() if timeout is None else float(timeout)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device == "auto" or device == "cuda")
    if use_cuda:
        device = f"cuda:{local_rank % max(1, torch.cuda.device_count())}"
        torch.cuda.set_device(device)
    elif device == "auto":
        device = "cpu"
    if backend is None:
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
    global _timeout
    if not dist.is_initialized():
        _timeout = timeout
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
        except Exception as exc:  # noqa: BLE001 - rendezvous errors come in many types
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            raise DistributedError(f"cannot join the process group at {where} (backend {backend}, "
                                   f"timeout {timeout:g} s): {exc}") from exc
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                              backend=dist.get_backend(), device=str(device), timeout=_timeout or timeout)


#: The timeout the process group was created with (for messages).
_timeout: Optional[float] = None


def close_distributed() -> None:
    """Leave the process group (nothing when none was joined). Also after a
    failed collective: it releases the connections, so that this process
    exits with its error instead of aborting in the backend's clean-up, and
    the other ranks see this one gone."""
    import torch.distributed as dist

    global _timeout
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _timeout = None


def chunk_evaluations(segments: list[tuple[ViewGroup, int, int]], embedded: bool = False) -> int:
    """UNet evaluations of one chunk: each view once, once more for its CFG half
    (none with ``embedded`` guidance, where the scale is a model input)."""
    return sum((hi - lo) * (2 if g.guidance_scale > 1.0 and not embedded else 1) for g, lo, hi in segments)


class DistributedViewExecutor(ViewExecutor):
    """A :class:`ViewExecutor` whose chunks are shared by the ranks of a process group.

    ``evaluations`` counts the UNet evaluations of the whole job (the same
    number a single process counts, so the record does not depend on the
    number of processes); ``local_evaluations`` those this rank ran (single
    chunk steps, run by every rank, count on each). ``exchanged_bytes`` is
    what this rank received from the others.
    """

    def __init__(self, adapter: Any, uncond: Conditioning, target: tuple[int, int], batch_size: int,
                 known: Optional[dict[str, Conditioning]] = None, *, group: Any = None) -> None:
        import torch.distributed as dist

        super().__init__(adapter, uncond, target, batch_size, known)
        if not dist.is_initialized():
            raise DistributedError("DistributedViewExecutor needs a process group: call init_distributed() first")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)
        self.local_evaluations = 0
        self.exchanged_bytes = 0
        self.steps = 0

    def owner(self, index: int, n_chunks: int) -> Optional[int]:
        """The rank that evaluates chunk ``index`` of ``n_chunks`` (``None``: every rank)."""
        return None if n_chunks == 1 else index % self.world_size

    def _run_chunks(self, scheduler: Any, timestep: Any, latents: torch.Tensor,
                    chunks: list[tuple[int, int, list[tuple[ViewGroup, int, int]]]]) -> list[torch.Tensor]:
        if self.world_size == 1:
            before = self.evaluations
            outs = super()._run_chunks(scheduler, timestep, latents, chunks)
            self.local_evaluations += self.evaluations - before
            return outs
        # every rank scales every chunk: schedulers keep state (the step index) in scale_model_input
        xs = [scheduler.scale_model_input(latents[start:stop], timestep) for start, stop, _ in chunks]
        n = len(chunks)
        outs: list[Optional[torch.Tensor]] = [None] * n
        for i, (_, _, segments) in enumerate(chunks):
            owner = self.owner(i, n)
            if owner is None or owner == self.rank:
                before = self.evaluations
                outs[i] = self._chunk(xs[i], timestep, segments)
                self.local_evaluations += self.evaluations - before
            else:
                self.evaluations += chunk_evaluations(segments, guidance_mode(self.adapter) == "embedded")
        if n > 1:
            self._exchange(outs, chunks, latents, timestep)
        self.steps += 1
        return outs  # type: ignore[return-value]

    def _exchange(self, outs: list[Optional[torch.Tensor]], chunks: list, latents: torch.Tensor,
                  timestep: Any) -> None:
        """Fill the other ranks' chunks of ``outs`` with one ``all_gather``."""
        import torch.distributed as dist

        w, n = self.world_size, len(outs)
        per_rank = -(-n // w)
        view_shape = tuple(latents.shape[1:])
        comm_device = torch.device(self.adapter.device) if self.backend == "nccl" else torch.device("cpu")
        mine = [i for i in range(n) if i % w == self.rank]
        buf = torch.zeros((per_rank, self.batch_size) + view_shape, dtype=torch.float32, device=comm_device)
        for k, i in enumerate(mine):
            out = outs[i]
            assert out is not None
            if tuple(out.shape[1:]) != view_shape:
                raise DistributedError(f"rank {self.rank}: a UNet output of shape {tuple(out.shape)} does not match "
                                       f"its views {view_shape}; only outputs the size of their latents are exchanged")
            buf[k, : out.shape[0]] = out.to(comm_device, torch.float32)
        gathered = [torch.empty_like(buf) for _ in range(w)]
        try:
            dist.all_gather(gathered, buf, group=self.group)
        except Exception as exc:  # noqa: BLE001 - gloo and nccl raise RuntimeError subclasses
            raise DistributedError(
                f"rank {self.rank} of {w}: exchanging the UNet outputs at timestep {_num(timestep)} failed "
                f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); another process "
                f"died or stopped answering (collective timeout {_timeout_text()})") from exc
        self.exchanged_bytes += buf.numel() * buf.element_size() * (w - 1)
        out_device = latents.device
        for i, (start, stop, _) in enumerate(chunks):
            if outs[i] is None:
                outs[i] = gathered[i % w][i // w, : stop - start].to(out_device)


def _num(t: Any) -> Any:
    return t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t


def _timeout_text() -> str:
    shown = f"{_timeout:g} s" if _timeout is not None else "as created"
    return f"{shown}; set ACCDIFFUSION_DIST_TIMEOUT=SECONDS to change it"


class DistributedExecutorFactory:
    """``Sampler(..., executor=factory)``: builds one :class:`DistributedViewExecutor`
    per run and remembers them, for the record's per-rank figures."""

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.executors: list[DistributedViewExecutor] = []

    @property
    def processes(self) -> int:
        import torch.distributed as dist

        return dist.get_world_size(self.group)

    def __call__(self, adapter: Any, uncond: Conditioning, target: tuple[int, int], batch_size: int,
                 known: Optional[dict[str, Conditioning]] = None) -> DistributedViewExecutor:
        ex = DistributedViewExecutor(adapter, uncond, target, batch_size, known, group=self.group)
        self.executors.append(ex)
        return ex

    def summary(self) -> dict[str, Any]:
        """Per-rank UNet evaluations and received bytes of the last run; a
        collective (every rank must call it)."""
        import torch.distributed as dist

        ex = self.executors[-1] if self.executors else None
        mine = torch.tensor([ex.local_evaluations if ex else 0, ex.exchanged_bytes if ex else 0], dtype=torch.float64)
        if dist.get_backend(self.group) == "nccl":
            mine = mine.to(torch.device("cuda", torch.cuda.current_device()))
        parts = [torch.empty_like(mine) for _ in range(self.processes)]
        try:
            dist.all_gather(parts, mine, group=self.group)
        except Exception as exc:  # noqa: BLE001
            raise DistributedError(f"gathering the per-process figures failed: {exc}") from exc
        return {
            "processes": self.processes,
            "backend": dist.get_backend(self.group),
            "unet_evaluations_per_process": [int(p[0].item()) for p in parts],
            "received_bytes_per_process": [int(p[1].item()) for p in parts],
        }
