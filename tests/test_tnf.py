"""TNF: the projection kernel, the numba counter against a plain Python count, invariants."""
from __future__ import annotations

import os

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmetabin.contigs import Contigs
from deepmetabin.tnf import TNF_DIM, project, projection_kernel, tetramer_counts, tetramers, tnf

COMP = str.maketrans("ACGTN", "TGCAN")


def revcomp(s: str) -> str:
    return s.translate(COMP)[::-1]


def naive_counts(seq: str) -> np.ndarray:
    index = {k: i for i, k in enumerate(tetramers())}
    out = np.zeros(256, dtype=np.int64)
    for i in range(len(seq) - 3):
        k = seq[i : i + 4]
        if k in index:
            out[index[k]] += 1
    return out


def test_kernel_is_orthonormal_and_respects_constraints():
    k = projection_kernel()
    assert k.shape == (256, TNF_DIM)
    assert np.allclose(k.T @ k, np.eye(TNF_DIM), atol=1e-10)
    assert np.allclose(k.sum(axis=0), 0, atol=1e-10)  # orthogonal to the all-ones vector
    idx = {s: i for i, s in enumerate(tetramers())}
    rc = np.array([idx[revcomp(s)] for s in tetramers()])
    assert np.allclose(k, k[rc], atol=1e-10)  # a tetramer and its reverse complement weigh the same
    assert projection_kernel() is k  # computed once


def test_counts_match_naive_python_with_n_and_iupac():
    rng = np.random.default_rng(5)
    seqs = []
    for n in (3, 4, 5, 50, 1000, 2345):
        s = list(rng.choice(list("ACGT"), size=n))
        for j in rng.integers(0, n, size=n // 20):
            s[j] = rng.choice(list("NRY-"))
        seqs.append("".join(s))
    c = Contigs.from_sequences([(f"s{i}", s) for i, s in enumerate(seqs)])
    counts = tetramer_counts(c)
    for i, s in enumerate(seqs):
        assert np.array_equal(counts[i], naive_counts(s)), i


def test_threads_and_chunks_give_identical_counts():
    rng = np.random.default_rng(6)
    c = Contigs.from_sequences([(f"s{i}", "".join(rng.choice(list("ACGTN"), size=int(rng.integers(4, 3000))))) for i in range(200)])
    a = tetramer_counts(c, threads=1)
    b = tetramer_counts(c, threads=2, chunk_bp=5000)
    assert np.array_equal(a, b)


def test_progress_reports_all_bases():
    c = Contigs.from_sequences([(f"s{i}", "ACGTTGCA" * 300) for i in range(10)])
    seen = []
    tetramer_counts(c, chunk_bp=5000, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (c.total_bp, c.total_bp) and len(seen) > 1


def test_contig_without_tetramers_is_zero():
    c = Contigs.from_sequences([("n", "N" * 1000), ("short", "ACG")])
    assert np.array_equal(tnf(c), np.zeros((2, TNF_DIM), np.float32))


dna = st.text(alphabet="ACGTN", min_size=4, max_size=400)


@settings(max_examples=80, deadline=None)
@given(dna)
def test_tnf_equals_tnf_of_reverse_complement(seq):
    c = Contigs.from_sequences([("f", seq), ("r", revcomp(seq))])
    t = tnf(c)
    assert np.allclose(t[0], t[1], atol=1e-6)


@settings(max_examples=80, deadline=None)
@given(dna.filter(lambda s: any("N" not in s[i : i + 4] for i in range(len(s) - 3))))
def test_back_projection_sums_to_one(seq):
    t = tnf(Contigs.from_sequences([("x", seq)])).astype(np.float64)
    back = t @ projection_kernel().T + 1 / 256
    assert back.sum() == pytest.approx(1.0, abs=1e-5)


def test_projection_separates_genomes_better_than_chance():
    """Two random 'genomes' with different composition: TNF of their fragments cluster by genome."""
    rng = np.random.default_rng(7)
    g1 = "".join(rng.choice(list("ACGT"), p=[0.35, 0.15, 0.15, 0.35], size=60_000))
    g2 = "".join(rng.choice(list("ACGT"), p=[0.15, 0.35, 0.35, 0.15], size=60_000))
    frags = [(f"a{i}", g1[i * 3000 : (i + 1) * 3000]) for i in range(20)] + [(f"b{i}", g2[i * 3000 : (i + 1) * 3000]) for i in range(20)]
    t = tnf(Contigs.from_sequences(frags))
    d = np.linalg.norm(t[:, None] - t[None], axis=2)
    within = d[:20, :20].max()
    between = d[:20, 20:].min()
    assert within < between


def test_project_rows_follow_kernel():
    counts = np.array(list(itertools.islice(itertools.cycle([1, 0, 3, 2]), 256)), dtype=np.uint32)[None]
    f = counts / counts.sum()
    assert np.allclose(project(counts), (f - 1 / 256) @ projection_kernel(), atol=1e-6)


def test_numba_threading_layer_does_not_spin_against_torch():
    """numba's OpenMP layer slowed torch's training 5x in the same process; deepmetabin picks workqueue,
    unless the user chose a layer."""
    import subprocess
    import sys

    code = ("import numba, deepmetabin\nfrom deepmetabin.contigs import Contigs\nfrom deepmetabin.tnf import tnf\n"
            "tnf(Contigs.from_sequences([('a', 'ACGT' * 500), ('b', 'GGCA' * 400)]), threads=2)\n"
            "print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-1] == "workqueue"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "NUMBA_THREADING_LAYER": "omp"})
    assert out.stdout.split()[-1] == "omp"


def test_projection_in_chunks_equals_one_piece():
    """project() works in row chunks (bounded memory); the result does not depend on the chunk size."""
    from deepmetabin.tnf import project

    rng = np.random.default_rng(3)
    counts = rng.integers(0, 50, size=(100, 256)).astype(np.uint32)
    counts[5] = 0  # a contig without tetramers -> zeros
    whole = project(counts, chunk=1000)
    np.testing.assert_array_equal(project(counts, chunk=7), whole)
    assert whole.dtype == np.float32 and whole.shape == (100, 103) and not whole[5].any()
