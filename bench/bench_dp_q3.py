"""Utility cost of differential privacy on Q3 (UCI Online Retail, next-month purchases):
SASRec trained with DP-SGD at ε ∈ {1, 4, 8, ∞}.

Kept for the commands already documented: the protocol, options and output are those
of ``bench/bench_dp.py --bench q3 --model sasrec`` (this script runs exactly that; the
defaults are this script's former ones: 4 epochs, hidden 32, max_len 20, batch 256, lr
3e-3). Writes ``bench/results/dp_q3.json`` (``--out``).
Usage: ``python bench/bench_dp_q3.py [--epochs 4] [--eps 1 4 8 inf]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_dp

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--bench", "q3", "--model", "sasrec", "--epochs", "4", *sys.argv[1:]]
    bench_dp.main()
