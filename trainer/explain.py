"""Grad-CAM importance curves over the Raman-shift axis (paper §4.2.1).

For a class c, the importance of each position of the last convolutional feature map A (channels k, after
its activation) is
ReLU(Σ_k α_k A_k) with α_k the mean over positions of ∂y_c/∂A_k (Selvaraju et al. 2017); the curve is
upsampled linearly to the spectrum's grid and scaled to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import TrainerError
from .model import RamanCNN

__all__ = ["grad_cam", "plot_grad_cam"]


def _last_conv(features: nn.Sequential) -> nn.Module:
    """The activation that follows the last (k > 1) convolution: Grad-CAM reads activated feature maps."""
    layers = list(features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv1d) and m.kernel_size[0] > 1]
    if not convs:
        raise TrainerError("model has no convolution to explain")
    after = [m for m in layers[convs[-1]:] if isinstance(m, nn.LeakyReLU)]
    return after[0] if after else layers[convs[-1]]


def grad_cam(model: RamanCNN, x: np.ndarray, class_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM curves of preprocessed spectra.

    Parameters
    ----------
    model : RamanCNN
    x : numpy.ndarray, shape (B, N) or (B, C, N), float32
        Preprocessed spectra.
    class_index : numpy.ndarray of int, shape (B,), optional
        Class to explain per spectrum (default: the predicted class).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Importance curves shape (B, N) in [0, 1], float32, and the explained class indices shape (B,).
    """
    model.eval()
    store: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        out.retain_grad()
        store.append(out)

    # One hook per ensemble member; the ensemble's map is the sum of its members' maps.
    handles = [_last_conv(f).register_forward_hook(hook) for f in model.member_features]
    try:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        logits = model(xt)
        idx = logits.argmax(1) if class_index is None else torch.as_tensor(class_index, dtype=torch.long)
        model.zero_grad()
        logits.gather(1, idx[:, None]).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    maps = []
    for a in store:
        if a.grad is None:  # every stored activation lies on the path to the logits
            raise TrainerError("Grad-CAM: an activation received no gradient")
        maps.append((a.grad.mean(dim=2, keepdim=True) * a).sum(1))
    cam = torch.relu(torch.stack(maps).sum(0)).detach().numpy()  # (B, L)
    n = x.shape[-1]
    pos = (np.arange(cam.shape[1]) + 0.5) * n / cam.shape[1]
    curves = np.stack([np.interp(np.arange(n), pos, c) for c in cam])
    curves /= np.maximum(curves.max(axis=1, keepdims=True), 1e-12)
    return curves.astype(np.float32), idx.numpy()


def plot_grad_cam(raman_shift_cm1: np.ndarray, spectrum: np.ndarray, curve: np.ndarray, title: str, path: Path) -> Path:
    """The spectrum (shape (N,)) coloured by its Grad-CAM importance (shape (N,)), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.fill_between(raman_shift_cm1, 0, curve * spectrum.max(), color="tab:red", alpha=0.25, label="Grad-CAM importance")
    ax.scatter(raman_shift_cm1, spectrum, c=curve, cmap="inferno", s=2, zorder=3)
    ax.plot(raman_shift_cm1, spectrum, color="k", lw=0.6)
    ax.set_xlabel("Raman shift (cm⁻¹)")
    ax.set_ylabel("intensity (max-normalised)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
