"""Started twice by tests/test_distributed.py (RANK 0 and 1, no torchrun).

Both ranks join a gloo group with a short timeout and evaluate one step of
views through the distributed executor on a stand-in adapter. Rank 1
misbehaves as told by ``MODE``: ``exits`` (dies before the exchange) or
``hangs`` (never reaches it). Rank 0 must fail with DistributedError.
"""

import sys
import time

import torch

torch.set_num_threads(1)

from accdiffusion.distributed import DistributedViewExecutor, close_distributed, init_distributed  # noqa: E402
from accdiffusion.errors import DistributedError  # noqa: E402
from accdiffusion.executor import ViewGroup  # noqa: E402
from accdiffusion.types import Conditioning  # noqa: E402


class Adapter:
    device = torch.device("cpu")

    def predict(self, x, timestep, cond, crops, target):
        return x * 0.5


class Scheduler:
    def scale_model_input(self, x, t):
        return x


def main() -> int:
    mode = sys.argv[1]
    ctx = init_distributed("cpu", timeout=float(sys.argv[2]))
    if ctx.rank == 1:
        if mode == "exits":
            raise SystemExit(3)
        time.sleep(120)
        return 0
    cond = Conditioning(torch.zeros(1, 2, 4), None)
    ex = DistributedViewExecutor(Adapter(), cond, (64, 64), 2)
    group = ViewGroup(torch.ones(5, 4, 8, 8), Conditioning(torch.zeros(5, 2, 4), None), 1.0)
    t0 = time.monotonic()
    try:
        ex.evaluate(Scheduler(), torch.tensor(999), [group])
    except DistributedError as exc:
        print(f"DistributedError after {time.monotonic() - t0:.1f} s: {exc}", flush=True)
        close_distributed()
        return 7
    print("no error", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
