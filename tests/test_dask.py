"""--scheduler: depth per BAM, TNF and marker genes per chunk on a dask.distributed cluster (a small
LocalCluster here) give exactly the local results; a bad address or a missing dask is one line."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from bamtools import Read, write_bam, write_fasta  # noqa: E402
from deepmetabin import _parallel, pipeline  # noqa: E402
from deepmetabin import markers as M  # noqa: E402
from deepmetabin.cli import main  # noqa: E402
from deepmetabin.contigs import read_contigs  # noqa: E402
from deepmetabin.depth import depth_from_bams  # noqa: E402
from deepmetabin.errors import BamError, SchedulerError  # noqa: E402
from deepmetabin.tnf import tetramer_counts, tnf  # noqa: E402
from simulated import FASTA, genomes  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def address(cluster):
    return cluster.scheduler_address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """24 contigs of each of the two real genomes (so markers are found) and 3 BAMs of random reads."""
    tmp = tmp_path_factory.mktemp("dask")
    both = read_contigs(FASTA)
    g = genomes(both)
    rows = np.concatenate([np.flatnonzero(g == name)[:24] for name in np.unique(g)])
    sub = both.subset(rows)
    fasta = write_fasta(tmp / "contigs.fna", dict(sub.sequences()))
    refs = {str(c): int(n) for c, n in zip(sub.ids, sub.lengths)}
    rng = np.random.default_rng(5)
    bams = []
    for j in range(3):
        reads = []
        for c, n in refs.items():
            for pos in rng.integers(0, n - 100, size=max(1, n // (300 + 200 * j))):
                reads.append(Read(c, int(pos), "100M", nm=int(rng.integers(0, 4)), flag=int(rng.choice([0, 16, 0x400]))))
        bams.append(write_bam(tmp / f"S{j}.bam", refs, reads, index=False))
    return fasta, bams


def test_depth_on_the_cluster_equals_local(inputs, address, tmp_path):
    fasta, bams = inputs
    contigs = read_contigs(fasta)
    local, samples = depth_from_bams(bams, contigs, threads=2)
    calls: list[tuple[int, int]] = []
    remote, samples2 = depth_from_bams(bams, contigs, scheduler=address, cache_dir=tmp_path / "cache",
                                       progress=lambda d, t: calls.append((d, t)))
    assert samples == samples2 and local.dtype == remote.dtype == np.float32
    np.testing.assert_array_equal(local, remote)
    assert (local > 0).mean() > 0.9
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["S0.npz", "S1.npz", "S2.npz"]


def test_tnf_on_the_cluster_equals_local(inputs, address):
    contigs = read_contigs(inputs[0])
    calls: list[tuple[int, int]] = []
    remote = tetramer_counts(contigs, chunk_bp=100_000, scheduler=address, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(tetramer_counts(contigs, threads=2), remote)
    assert len(calls) > 3 and calls[0] == (0, contigs.total_bp) and calls[-1] == (contigs.total_bp, contigs.total_bp)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    np.testing.assert_array_equal(tnf(contigs, threads=2), tnf(contigs, scheduler=address))


def test_markers_on_the_cluster_equal_local(inputs, address):
    contigs = read_contigs(inputs[0])
    local = M.find_marker_sets(contigs, marker_sets=("sc107", "checkm_bacteria"), threads=2)
    calls: list[tuple[int, int]] = []
    remote = M.find_marker_sets(contigs, marker_sets=("sc107", "checkm_bacteria"), scheduler=address,
                                progress=lambda d, t: calls.append((d, t)))
    assert set(remote) == {"sc107", "checkm_bacteria"}
    for name in local:
        assert len(local[name]) > 10
        pd.testing.assert_frame_equal(local[name], remote[name], check_exact=True)
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1


def test_trained_gene_models_travel_to_the_cluster(inputs, address, monkeypatch):
    """Trained mode trains here (a few seconds) and sends the models with each chunk: same hits as local."""
    monkeypatch.setattr(M, "TRAIN_MIN_GROUP_BP", 100_000)  # the 48 test contigs (~0.5 Mbp) get several GC groups
    contigs = read_contigs(inputs[0])
    models = M.train_gene_models(contigs)
    assert models is not None and len(models.training) >= 3
    local = M.find_marker_sets(contigs, marker_sets=("sc107",), threads=2, gene_mode="trained")
    remote = M.find_marker_sets(contigs, marker_sets=("sc107",), scheduler=address, gene_mode="trained")
    assert len(local["sc107"]) > 10
    pd.testing.assert_frame_equal(local["sc107"], remote["sc107"], check_exact=True)


def test_cli_features_and_markers_with_a_scheduler_write_the_local_run(inputs, address, tmp_path, capsys):
    fasta, bams = inputs
    base = ["-q", "features", "--contigs", str(fasta), "--bam", *map(str, bams), "--threads", "2"]
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main([*base, "--out", str(local)]) == 0
    assert main([*base, "--out", str(remote), "--scheduler", address]) == 0
    for name in ("features", "tnf"):
        np.testing.assert_array_equal(pipeline.load_array(local, name), pipeline.load_array(remote, name))
    pd.testing.assert_frame_equal(pipeline.load_frame(local), pipeline.load_frame(remote), check_exact=True)
    assert not (remote / pipeline.DEPTH_CACHE).exists()
    assert main(["-q", "markers", "--run", str(local), "--threads", "2"]) == 0
    assert main(["-q", "markers", "--run", str(remote), "--scheduler", address]) == 0
    assert (local / "markers.tsv").read_bytes() == (remote / "markers.tsv").read_bytes()


def test_bin_with_a_scheduler(inputs, address, tmp_path, capsys):
    fasta, bams = inputs
    out = tmp_path / "run"
    assert main(["-q", "bin", "--contigs", str(fasta), "--bam", *map(str, bams), "--out", str(out), "--epochs", "2",
                 "--latent", "4", "--components", "4", "--threads", "1", "--scheduler", address]) == 0
    assert "bins:" in capsys.readouterr().out
    ref = tmp_path / "ref"
    assert main(["-q", "features", "--contigs", str(fasta), "--bam", *map(str, bams), "--out", str(ref), "--threads", "1"]) == 0
    np.testing.assert_array_equal(pipeline.load_array(out, "features"), pipeline.load_array(ref, "features"))


def test_a_worker_error_is_the_usual_one_line_error(inputs, address, tmp_path, capsys):
    fasta, bams = inputs
    contigs = read_contigs(fasta)
    refs = {str(c): int(n) for c, n in zip(contigs.ids, contigs.lengths)}
    first = next(iter(refs))
    bad = write_bam(tmp_path / "bad.bam", refs, [Read(first, 500, "100M"), Read(first, 100, "100M")], sort=False, index=False)
    with pytest.raises(BamError, match="bad.bam: records are not sorted by coordinate"):
        depth_from_bams([bams[0], bad], contigs, scheduler=address)
    out = tmp_path / "run"
    assert main(["-q", "features", "--contigs", str(fasta), "--bam", str(bad), "--out", str(out), "--scheduler", address]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.bam" in err and "Traceback" not in err


def test_bad_scheduler_address_is_one_line_naming_it(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_parallel, "CONNECT_TIMEOUT", 1)
    fasta, bams = inputs
    out = tmp_path / "run"
    addr = "tcp://127.0.0.1:9"
    assert main(["-q", "features", "--contigs", str(fasta), "--bam", str(bams[0]), "--out", str(out), "--scheduler", addr]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--scheduler {addr}: cannot reach a Dask scheduler there" in err
    assert "tcp://HOST:8786" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_dask_is_one_line(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(SchedulerError, match=r"pip install 'deepmetabin\[dask\]'"):
        tnf(read_contigs(inputs[0]), scheduler="tcp://somewhere:8786")
    run = tmp_path / "run"
    assert main(["-q", "features", "--contigs", str(inputs[0]), "--bam", str(inputs[1][0]), "--out", str(run),
                 "--scheduler", "tcp://somewhere:8786"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tcp://somewhere:8786" in err and "dask.distributed" in err
