"""PyTorch front-end: the ICNN_s model, data streams, train.py and test.py."""
