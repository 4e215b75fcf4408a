"""Shared NumPy-only toolkit: synthesis, signal I/O, metrics and classical denoisers.

Never imports torch or the two front-ends (Pytorch_V1, Numpy_V2).
"""
