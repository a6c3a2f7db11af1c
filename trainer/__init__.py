"""Workstation trainer (PyTorch): pooling-tuned compact 1-D CNNs, evaluation reports, model bundles."""
