"""NumPy front-end: ICNN_s inference in pure NumPy from HDF5 weights (no torch).

``model`` (the network, stateless inference), ``layers`` (torch-semantics layers),
``parallel`` (thread pool with a one-thread BLAS via threadpoolctl); the weights
format and the architecture live in ``icnn.h5weights`` and ``icnn.spec``.
"""
