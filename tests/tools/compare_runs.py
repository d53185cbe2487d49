"""Are two training runs the same run? Weights, optimizer state, history (timings aside) and
TensorBoard scalars, bit for bit, e.g. a default run at two commits (a refactor must change none):

    git worktree add /tmp/old <commit>; (cd /tmp/a && python3 /tmp/old/train.py --epochs 2)
    (cd /tmp/b && python3 train.py --epochs 2)
    python3 tests/tools/compare_runs.py /tmp/a /tmp/b fmnist_fc_conv_l10_rebalance_no_norm

Prints what differs in the stored settings (new flags appear there) and exits 1 on a difference.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the project
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the test helpers
from helpers import read_events


def _equal(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def compare(run_a: str, run_b: str, name: str) -> list[str]:
    """What differs between the run ``name`` in folder ``run_a`` and in ``run_b`` (empty: the same run)."""
    problems = []
    for kind in ("checkpoint", "best"):
        a, b = (torch.load(os.path.join(r, "weights", f"{name}_{kind}.pth.tar"), weights_only=True)
                for r in (run_a, run_b))
        shared = a["model_config"].keys() & b["model_config"].keys()  # a field added since: not compared
        timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in c["history"]] for c in (a, b)]
        for key, same in (("state_dict", _equal(a["state_dict"], b["state_dict"])),
                          ("optimizer", _equal(a["optimizer"], b["optimizer"])),
                          ("history", _equal(*timeless)),
                          ("model_config", _equal(*({k: c["model_config"][k] for k in shared} for c in (a, b)))),
                          *((k, _equal(a.get(k), b.get(k))) for k in ("epoch", "best_loss", "global_step",
                                                                     "scheduler", "loss_state"))):
            if not same:
                problems.append(f"{kind}: {key} differs")
        settings = sorted(k for k in set(a["args"]) | set(b["args"]) if a["args"].get(k) != b["args"].get(k))
        added = sorted(a["model_config"].keys() ^ b["model_config"].keys())
        print(f"{kind}: stored settings that differ (not compared): {settings}; model config fields in one only: "
              f"{added}")
    ea, eb = (read_events(os.path.join(r, "tb_logs", name)) for r in (run_a, run_b))
    problems += [f"TensorBoard {tag} differs" for tag in sorted(set(ea) | set(eb)) if ea.get(tag) != eb.get(tag)]
    return problems


if __name__ == "__main__":
    found = compare(*sys.argv[1:4])
    print("\n".join(found) or "the same run: weights, optimizer, history and TensorBoard scalars are identical")
    sys.exit(1 if found else 0)
