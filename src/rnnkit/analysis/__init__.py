"""Understanding recurrent networks: gradient flow through time, gradient warnings for training,
hidden-state views, and the long-range memory benchmark.

Public API::

    gradient_flow(module, inputs, loss_fn=None) -> GradientFlow(grad_norms (L, T), jacobian_norms (L, T-1), ...)
    plot_gradient_flow(flows, path=None) -> Figure
    compare_cells(cells, length, ...) -> (rows, flows);  diagnose_cells(cells, length, out_png) -> rows
    diagnose_module(module, inputs, out_png) -> rows;  format_table(rows) -> str
    GradientMonitor().update(step, grad_norm) -> str | None;  GradientMonitorCallback
    hidden_states(module, inputs) -> (T, H);  pca(states);  plot_pca_trajectory(states, path)
    feature_inside(text, open_ch, close_ch);  find_units(activations, feature);  plot_unit_activations(...)
    run_memory_suite(...) -> list[MemoryResult]  (rnnkit.analysis.memory; ``rnnkit bench memory``)
"""

from rnnkit.analysis._trace import recurrent_layers
from rnnkit.analysis.diagnose import CELLS, compare_cells, diagnose_cells, diagnose_module, format_table
from rnnkit.analysis.gradients import GradientFlow, gradient_flow
from rnnkit.analysis.hidden import (PCA, UnitRanking, feature_depth, feature_inside, find_units, hidden_states,
                                    pca)
from rnnkit.analysis.monitor import GradientMonitor, GradientMonitorCallback, GradientWarning
from rnnkit.analysis.plots import plot_gradient_flow, plot_pca_trajectory, plot_unit_activations

__all__ = [
    "GradientFlow", "gradient_flow", "recurrent_layers",
    "CELLS", "compare_cells", "diagnose_cells", "diagnose_module", "format_table",
    "plot_gradient_flow", "plot_pca_trajectory", "plot_unit_activations",
    "GradientMonitor", "GradientMonitorCallback", "GradientWarning",
    "hidden_states", "pca", "PCA", "feature_inside", "feature_depth", "find_units", "UnitRanking",
]
