"""Fast paths that must equal the reference recurrences in :mod:`rnnkit.cells` (tests/kernels says so).

* :mod:`~rnnkit.kernels.native`: torch's own kernels (oneDNN/cuDNN), and lengths without packing;
* :mod:`~rnnkit.kernels.fused_lstm`, :mod:`~rnnkit.kernels.fused_gru`: one autograd Function per
  sequence with a hand-written backward (layer norm, peepholes, recurrent dropout, zoneout, lengths);
* :mod:`~rnnkit.kernels.fused_min`, :mod:`~rnnkit.kernels.chunked_scan`: MinGRU/MinLSTM as a chunked
  real-space parallel scan, forward and backward (:mod:`~rnnkit.kernels.scan` is the float64
  log-space scan of the cell path);
* :mod:`~rnnkit.kernels.step`: streaming one-step inference without autograd;
* :mod:`~rnnkit.kernels.dispatch`: what the layers' ``"fused"`` and ``"scan"`` backends call.

Performance and its limits: docs/performance.md.
"""
