"""bench.bench_novelty on a bundle whose novelty section has no spectral library (found by mypy: it called
``None.scores``)."""

import shutil

import numpy as np
import pytest

from edge.bundle import Bundle
from edge.errors import BundleError


@pytest.mark.realdata
def test_component_times_without_a_library_is_a_bundle_error(novelty_bundle, tmp_path):
    from bench.bench_novelty import component_times

    no_lib = tmp_path / "bundle"
    shutil.copytree(novelty_bundle["path"], no_lib)
    b = Bundle.load(no_lib)
    del b.manifest["novelty"]["library"]
    b.save()
    x = np.zeros((2, b.grid.n_points), dtype=np.float32) + 1e-3
    with pytest.raises(BundleError, match="no spectral library"):
        component_times(no_lib, x, 2)
