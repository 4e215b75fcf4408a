"""The network's spec and its HDF5 weights format, torch-free: the one home both backends import."""
