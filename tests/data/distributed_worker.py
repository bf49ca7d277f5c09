"""Run under torchrun by tests/test_distributed.py.

``distributed_worker.py OUT JOBS_JSON``: joins the process group, then for
each job ``{"label": ..., "argv": [...]}`` runs the command line
(``accdiffusion generate ...``) in this process and saves this rank's final
latents to ``OUT/LABEL.rankR.pt``.
"""

import json
import sys

import torch

torch.set_num_threads(1)

import accdiffusion.api as api  # noqa: E402
from accdiffusion import cli  # noqa: E402
from accdiffusion.distributed import close_distributed, init_distributed  # noqa: E402


def main() -> int:
    out, jobs = sys.argv[1], json.loads(sys.argv[2])
    ctx = init_distributed("cpu", timeout=120)
    real = api.generate
    for job in jobs:
        def capture(*args, _label=job["label"], **kwargs):
            result = real(*args, **kwargs)
            torch.save(result.latents, f"{out}/{_label}.rank{ctx.rank}.pt")
            return result

        api.generate = capture
        try:
            rc = cli.main(job["argv"])
        finally:
            api.generate = real
        if rc != 0:
            return rc
    close_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
