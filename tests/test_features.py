"""The normalised feature matrix: shapes, documented block variances, bad depth."""
from __future__ import annotations

import numpy as np
import pytest

from deepmetabin.contigs import Contigs
from deepmetabin.errors import DepthTableError
from deepmetabin.features import feature_names, features, strain_depth
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


def test_strain_depth_takes_the_profile_of_the_uniquely_placed_reads():
    depth = np.array([[10.0, 10.0, 10.0], [10.0, 10.0, 10.0], [4.0, 2.0, 8.0], [10.0, 10.0, 10.0], [10.0, 10.0, 10.0]])
    unique = np.array([[10.0, 10.0, 10.0],  # no other strain shares it: every read placed
                       [0.0, 0.0, 0.0],  # identical copies in several strains: no read placed
                       [4.0, 2.0, 8.0],
                       [9.0, 1.0, 2.0],  # a strain of another profile, many placed reads (5 kb)
                       [0.09, 0.01, 0.02]])  # the same profile from 60 placed bases only
    lengths = np.array([5000, 5000, 5000, 5000, 500])
    out = strain_depth(depth, unique, lengths)
    np.testing.assert_allclose(out[:3], depth[:3], rtol=1e-12)
    lt, lu, lo = np.log(depth + 0.1), np.log(unique + 0.1), np.log(out + 0.1)
    np.testing.assert_allclose(lo.mean(axis=1), lt.mean(axis=1), rtol=1e-12)  # each contig's level is kept
    w = 12 * 5000 / (12 * 5000 + 6000)
    np.testing.assert_allclose(lo[3] - lo[3].mean(), w * (lu[3] - lu[3].mean()), atol=1e-12)
    assert out[3, 0] > out[3, 2] > out[3, 1]  # the unique reads' order of the samples
    few = 0.12 * 500 / (0.12 * 500 + 6000)
    np.testing.assert_allclose(lo[4] - lo[4].mean(), few * (lu[4] - lu[4].mean()), atol=1e-12)
    assert np.abs(lo[4] - lo[4].mean()).max() < 0.1  # 60 bases barely move the flat profile
    with pytest.raises(ValueError, match="unique depth"):
        strain_depth(depth, unique[:, :2], lengths)


def test_features_use_the_strain_depth_when_the_contigs_carry_a_unique_depth():
    c = _contigs(samples=3)
    rng = np.random.default_rng(1)
    unique = (c.depth * rng.uniform(0, 1, size=c.depth.shape)).astype(np.float32)
    with_unique = features(c.with_depth(c.depth, c.samples, unique))
    expected = features(c.with_depth(strain_depth(c.depth, unique, c.lengths).astype(np.float32), c.samples))
    np.testing.assert_allclose(with_unique, expected, atol=1e-6)
    assert not np.allclose(with_unique, features(c), atol=1e-3)
    np.testing.assert_array_equal(with_unique[:, :TNF_DIM], features(c)[:, :TNF_DIM])


@pytest.mark.parametrize("bad", [np.nan, -1.0, np.inf])
def test_bad_unique_depth_values_are_refused(bad):
    c = _contigs()
    unique = c.depth * 0.5
    unique[2, 0] = bad
    with pytest.raises(DepthTableError, match="unique depth"):
        features(c.with_depth(c.depth, c.samples, unique))
