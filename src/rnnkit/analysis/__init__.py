"""rnnkit.analysis."""
