"""NumPy front-end: ICNN_s inference in pure NumPy from HDF5 weights (no torch)."""
