"""The optional C++ loops of the fused kernels (private): built on first use, used when they build.

``csrc/ln_lstm.cpp`` runs the per-step loops of the LSTM kernel (forward and backward of a chunk of
steps; the layer-norm LSTM, and the LSTM without layer norm under recurrent dropout or zoneout or with
peepholes) in C++: the same arithmetic as :mod:`rnnkit.kernels.fused_lstm`, without ~20 Python-level
ATen calls per step (dispatcher ops, ``torch.ops.rnnkit_cpp``). ``csrc/step.cpp`` is the streaming step
of plain LSTM/GRU stacks (:mod:`rnnkit.kernels.step`; pybind11 functions of :func:`module`);
``csrc/indrnn.cpp`` the IndRNN's whole recurrence, forward and backward (:mod:`rnnkit.kernels.fused_indrnn`,
two more ops); ``csrc/min_rnn.cpp`` MinGRU's and MinLSTM's recurrence over a chunk of steps, forward and
backward (:mod:`rnnkit.kernels.fused_min`, four more). They are
compiled into one library with :func:`torch.utils.cpp_extension.load` the first time one of these
kernels runs on the CPU (10-40 s on the project's 2-core VM, once per machine and torch version; the
library is cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) and needs a
C++ compiler and ``ninja`` (the ``cpp`` extra installs ninja). Where it cannot be built the kernels
keep their Python loops, with one logged warning saying why.

``RNNKIT_CPP`` chooses: ``auto`` (default: build or load, fall back quietly after the warning),
``1`` (the C++ loops are required: a failed build is an error), ``0`` (never: the Python loops).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

__all__ = ["ops", "ops_for", "module", "mode", "status"]

log = logging.getLogger(__name__)
_SOURCES = [Path(__file__).parent / "csrc" / f for f in ("ln_lstm.cpp", "step.cpp", "indrnn.cpp", "min_rnn.cpp", "masks.cpp")]
_VERSION = "v8"  # change with the ops' schemas: the cached library is found by its name
_lock = threading.Lock()
_state: dict = {"tried": False, "ops": None, "module": None, "error": None}
_MODES = ("auto", "0", "1")


def mode() -> str:
    """``RNNKIT_CPP`` (module doc); an unknown value is an error naming the valid ones."""
    m = os.environ.get("RNNKIT_CPP", "auto").strip().lower() or "auto"
    if m not in _MODES:
        raise ValueError(f"RNNKIT_CPP must be one of auto, 0, 1 (got {m!r})")
    return m


def _flags() -> tuple[str, list[str]]:
    """The library's name and compiler flags: AVX2 + FMA where torch found them on this CPU (in the name,
    so a cache shared with an older CPU never loads it), else the compiler's baseline."""
    import torch

    cap = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", ...
    simd = ["-mavx2", "-mfma"] if cap.startswith("AVX") and cap != "DEFAULT" else []
    # -fopenmp: at::parallel_for is a header template that runs on one thread unless _OPENMP is defined
    # (and the `omp simd` loops vectorise); the library then needs libgomp.so.1, the soname torch itself
    # loads, so there is one OpenMP runtime (torch.set_num_threads applies). -fno-trapping-math and
    # -fno-math-errno let GCC vectorise tanh's two-branch select (no reassociation: IEEE results)
    flags = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", *simd]
    return f"rnnkit_cpp_{_VERSION}{'_avx2' if simd else ''}", flags


def _build():
    import torch
    from torch.utils import cpp_extension

    name, flags = _flags()

    # ninja from the environment's own bin (the `cpp` extra) when it is not on PATH
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    try:  # torch's cache of built extensions (a private helper: only to say whether a build is coming)
        built = (Path(cpp_extension._get_build_directory(name, False)) / f"{name}.so").exists()
    except Exception:
        built = False
    if not built:
        log.warning("rnnkit: building the C++ kernel loops (once per machine, up to a minute; "
                    "RNNKIT_CPP=0 skips)")
    module = cpp_extension.load(name=name, sources=[str(p) for p in _SOURCES], extra_cflags=flags,
                                extra_ldflags=["-fopenmp"], is_python_module=True, verbose=False)
    # the streaming step's AVX-512 gate sums (per-function target, csrc/step.cpp) where torch itself uses
    # AVX-512 on this CPU: ATEN_CPU_CAPABILITY=avx2 turns both off
    module.set_wide(torch.backends.cpu.get_cpu_capability() == "AVX512")
    return torch.ops.rnnkit_cpp, module


def ops():
    """``torch.ops.rnnkit_cpp`` when the C++ loops are wanted and built, else None (module doc)."""
    m = mode()
    if m == "0":
        return None
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["ops"], _state["module"] = _build()
            except Exception as e:  # no compiler, no ninja, a failed compile: the Python loops remain
                lines = str(e).strip().splitlines()
                _state["error"] = f"{type(e).__name__}: {lines[-1] if lines else ''}"
                log.warning("rnnkit: the C++ kernel loops are not available (%s); using the Python loops",
                            _state["error"])
    if _state["ops"] is None and m == "1":
        raise RuntimeError(f"RNNKIT_CPP=1 but the C++ kernel loops could not be built: {_state['error']}")
    return _state["ops"]


def ops_for(t):
    """:func:`ops` where the loops apply to tensor ``t`` (float32/float64 on the CPU), else None."""
    import torch

    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return None
    return ops()


def module():
    """The built library as a Python module (the pybind11 functions of ``csrc/step.cpp``) when
    :func:`ops` is not None, else None."""
    return _state["module"] if ops() is not None else None


def status() -> str:
    """``"on"``, ``"off (why)"`` or ``"not loaded yet"``, without building anything (for tables)."""
    if mode() == "0":
        return "off (RNNKIT_CPP=0)"
    if not _state["tried"]:
        return "not loaded yet"
    return "on" if _state["ops"] is not None else f"off ({_state['error']})"
