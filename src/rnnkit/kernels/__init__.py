"""rnnkit.kernels."""
