"""Which kernel runs a cell over a sequence: the layers' ``"fused"`` and ``"scan"`` backends.

``Recurrent.select_backend`` asks :func:`fused_supports` / :func:`scan_supports` for its cell kind;
``Recurrent._run_direction`` calls :func:`run_fused` / :func:`run_scan`, which take and return what
``cell.forward(x, state, lengths=..., recurrent_mask=..., zoneout=...)`` does (batch-first ``x``).

* ``"fused"``: :mod:`rnnkit.kernels.fused_lstm` (LSTM incl. layer norm and peepholes, no projection),
  :mod:`rnnkit.kernels.fused_gru` (GRU incl. layer norm) and :mod:`rnnkit.kernels.fused_indrnn`
  (IndRNN), with lengths, initial state, recurrent dropout and zoneout;
* ``"scan"``: :mod:`rnnkit.kernels.fused_min` (MinGRU, MinLSTM) with lengths and initial state; zoneout
  (per-step noise) is left to the cell's loop. On CUDA with triton importable, the recurrence runs in
  :mod:`rnnkit.kernels.triton_scan` instead (``RNNKIT_TRITON=0`` turns that off, ``=force`` forces it).
"""

from __future__ import annotations

from torch import Tensor

from rnnkit.kernels import fused_gru, fused_indrnn, fused_lstm, fused_min, triton_scan

__all__ = ["fused_supports", "scan_supports", "run_fused", "run_scan"]


def fused_supports(cell) -> bool:
    """Whether a fused kernel computes this cell exactly (any regulariser)."""
    return fused_lstm.supports(cell) or fused_gru.supports(cell) or fused_indrnn.supports(cell)


def scan_supports(cell, zoneout: bool) -> bool:
    """Whether the chunked scan computes this cell exactly (not under zoneout)."""
    return fused_min.supports(cell) and not zoneout


def run_fused(cell, x: Tensor, state, lengths: Tensor | None = None, recurrent_mask: Tensor | None = None,
              zoneout: float = 0.0, zoneout_expected: bool = False):
    """The fused kernel of ``cell`` over batch-first ``x``; returns ``(y, final state)``."""
    run = fused_lstm.lstm_sequence if fused_lstm.supports(cell) else \
        fused_gru.gru_sequence if fused_gru.supports(cell) else fused_indrnn.indrnn_sequence
    return run(cell, x, state, lengths, recurrent_mask, zoneout, zoneout_expected)


def run_scan(cell, x: Tensor, state, lengths: Tensor | None = None):
    """The chunked scan of a MinGRU/MinLSTM cell over batch-first ``x``; returns ``(y, h_n)``."""
    if triton_scan.wanted(x):
        return triton_scan.min_sequence(cell, x, state, lengths)
    return fused_min.min_sequence(cell, x, state, lengths)
