"""The normalised feature matrix: shapes, documented block variances, bad depth."""
from __future__ import annotations

import numpy as np
import pytest

from deepmetabin.contigs import Contigs
from deepmetabin.errors import DepthTableError
from deepmetabin.features import feature_names, features
from deepmetabin.tnf import TNF_DIM


def _contigs(n=60, samples=3, seed=0):
    rng = np.random.default_rng(seed)
    c = Contigs.from_sequences([(f"c{i}", "".join(rng.choice(list("ACGT"), size=1500))) for i in range(n)])
    depth = rng.gamma(2.0, 5.0, size=(n, samples)).astype(np.float32)
    return c.with_depth(depth, [f"S{j}" for j in range(samples)])


@pytest.mark.parametrize("samples", [1, 3, 7])
def test_shape_dtype_and_block_variances(samples):
    c = _contigs(samples=samples)
    x = features(c, tnf_weight=0.3, depth_weight=0.7)
    assert x.shape == (60, TNF_DIM + samples) and x.dtype == np.float32
    assert np.allclose(x.mean(axis=0), 0, atol=1e-5)
    assert x[:, :TNF_DIM].var(axis=0).sum() == pytest.approx(0.3, rel=1e-3)
    assert x[:, TNF_DIM:].var(axis=0).sum() == pytest.approx(0.7, rel=1e-3)
    assert len(feature_names(c.samples)) == x.shape[1]


def test_depth_block_keeps_log_ratios_between_samples():
    c = _contigs(samples=2)
    x = features(c)
    d = np.log(c.depth.astype(np.float64) + 0.1)
    ratio = (d[:, 0] - d[:, 1]) - (d[:, 0] - d[:, 1]).mean()
    scaled = x[:, TNF_DIM] - x[:, TNF_DIM + 1]
    assert np.corrcoef(ratio, scaled)[0, 1] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bad", [np.nan, -1.0, np.inf])
def test_bad_depth_values_are_refused(bad):
    c = _contigs()
    depth = c.depth.copy()
    depth[3, 1] = bad
    with pytest.raises(DepthTableError):
        features(c.with_depth(depth, c.samples))


def test_no_depth_is_refused():
    with pytest.raises(DepthTableError):
        features(Contigs.from_sequences([("a", "ACGT" * 300)]))
