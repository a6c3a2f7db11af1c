"""placeholder"""
import numpy as np
AE_FILE_STEM = "autoencoder"
NOVELTY_SCHEMA = 1
PROTOTYPES_FILE = "novelty_prototypes.npz"
def reconstruction_error(x, r):
    d = np.asarray(x, dtype=np.float64) - np.asarray(r, dtype=np.float64)
    return np.mean(d * d, axis=-1)
