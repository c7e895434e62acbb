#!/usr/bin/env python3
"""Measure the gradient-flow figures and tables of docs/understanding/{gradients,recurrences}.md.

    python docs/scripts/gradient_flow.py            # writes docs/figures/gradient_flow_*.png, prints tables

Every layer is freshly initialised (seed 0), fed one batch x ~ N(0, 1) of shape (8, T, 8), and the loss
is the mean output at the last step; the analysis runs in float64 (rnnkit.analysis.gradient_flow).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import rnnkit
from rnnkit.analysis import diagnose_cells, format_table, gradient_flow, plot_gradient_flow

FIGURES = Path(__file__).resolve().parents[1] / "figures"
COLUMNS = ("model", "T", "ratio_first_last", "horizon_1e3", "jacobian_mean", "jacobian_max")


def acceptance_setting() -> None:
    """The numbers of the acceptance check: tanh RNN (W_hh scaled by 0.5) against LSTMs, T=100."""
    torch.manual_seed(0)
    x = torch.randn(4, 100, 8)
    rnn = rnnkit.RNN(8, 32, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.5)
    flows = {"rnn (W_hh x 0.5)": gradient_flow(rnn, x),
             "lstm": gradient_flow(rnnkit.LSTM(8, 32, batch_first=True), x),
             "lstm forget_bias=1": gradient_flow(rnnkit.LSTM(8, 32, batch_first=True, forget_bias=1.0), x)}
    for name, flow in flows.items():
        print(f"{name:20s} |dL/ds_1| / |dL/ds_T| = {flow.ratio():.3g}   mean |J| = {flow.jacobian_norms.mean():.3f}")
    plot_gradient_flow(flows, FIGURES / "gradient_flow_rnn_lstm.png",
                       title="tanh RNN vs LSTM at initialisation, T=100, hidden=32, batch=4")


def main() -> None:
    start = time.perf_counter()
    acceptance_setting()
    rows = diagnose_cells("rnn,rnn_relu,lstm,lstm_fb1,lstm_ln,gru,gru_ln,indrnn,mingru,minlstm", 200,
                          FIGURES / "gradient_flow_all.png", hidden_size=64, input_size=8, batch_size=8, seed=0)
    print()
    print(format_table(rows, COLUMNS))
    print(f"\n{time.perf_counter() - start:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
