"""NumPy front-end: ICNN_s inference in pure NumPy from HDF5 weights (no torch).

``denoise(y)``, ``estimate_sigma(y)`` and ``scoreboard(y)`` (``api``) denoise an array in one call, as
``Numpy_test.py --input`` denoises a file; ``model`` (the network, stateless inference), ``layers``
(torch-semantics layers), ``jacobian`` (its exact Jacobians), ``parallel`` (thread pool with a one-thread
BLAS via threadpoolctl); the weights format and the architecture live in ``icnn.h5weights`` and ``icnn.spec``.
"""

__all__ = ["denoise", "estimate_sigma", "scoreboard"]


def __getattr__(name: str):
    # on first use only: importing Numpy_V2.model need not load the scoreboard and the classical peers
    if name in __all__:
        from Numpy_V2 import api

        return getattr(api, name)
    raise AttributeError(f"module 'Numpy_V2' has no attribute {name!r}")
