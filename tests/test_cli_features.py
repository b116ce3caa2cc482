"""`deepmetabin features` end to end on tiny real files, and its bad-input behaviour."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepmetabin import pipeline
from deepmetabin.cli import main
from deepmetabin.tnf import TNF_DIM


def make_inputs(tmp_path, n=8, samples=("S1", "S2"), seed=0):
    rng = np.random.default_rng(seed)
    seqs = {f"k141_{i}": "".join(rng.choice(list("ACGT"), size=int(rng.integers(1000, 4000)))) for i in range(n)}
    seqs["tiny"] = "ACGT" * 50  # below --min-length: filtered out, may be absent from the table
    fasta = tmp_path / "contigs.fna"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    depth = rng.gamma(2, 4, size=(len(seqs), len(samples))).round(3)
    lines = ["contigName\tcontigLen\ttotalAvgDepth\t" + "\t".join(f"{s}.bam\t{s}.bam-var" for s in samples)]
    for (cid, seq), row in zip(seqs.items(), depth):
        lines.append(f"{cid}\t{len(seq)}\t{row.sum():.3f}\t" + "\t".join(f"{d}\t1.0" for d in row))
    table = tmp_path / "depth.tsv"
    table.write_text("\n".join(lines) + "\n")
    return fasta, table, seqs, depth


def test_features_writes_a_checked_run_folder(tmp_path, capsys):
    fasta, table, seqs, depth = make_inputs(tmp_path)
    out = tmp_path / "run"
    assert main(["-q", "features", "--contigs", str(fasta), "--depth", str(table), "--out", str(out)]) == 0
    assert "8 contigs" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    st = manifest["stages"]["features"]
    assert st["status"] == "done" and st["params"]["samples"] == ["S1", "S2"]
    frame = pipeline.load_frame(out)
    assert list(frame["contig"]) == [k for k in seqs if k != "tiny"]
    assert np.allclose(frame[["depth:S1", "depth:S2"]].to_numpy(), depth[:8], atol=1e-3)
    x = pipeline.load_array(out, "features")
    assert x.shape == (8, TNF_DIM + 2) and x.dtype == np.float32
    assert pipeline.load_array(out, "tnf").shape == (8, TNF_DIM)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    c = pipeline.load_contigs(out)
    assert c.sequence(0) == seqs["k141_0"] and c.depth.shape == (8, 2)
    lean = pipeline.load_contigs(out, sequences=False)  # from contigs.parquet: all but the sequences
    for field in ("ids", "lengths", "gc", "depth", "offsets"):
        assert np.array_equal(getattr(lean, field), getattr(c, field)), field
    assert lean.samples == c.samples and lean.ids_hash == c.ids_hash and len(lean.seq_buffer) == 0
    with pytest.raises(RuntimeError, match="released"):
        lean.sequence(0)
    assert dict(lean.sequences()) == dict(c.sequences())  # read from the FASTA one record at a time


def test_existing_run_is_refused_unless_force(tmp_path, capsys):
    fasta, table, *_ = make_inputs(tmp_path)
    out = tmp_path / "run"
    args = ["-q", "features", "--contigs", str(fasta), "--depth", str(table), "--out", str(out)]
    assert main(args) == 0
    before = (out / "features.npy").read_bytes()
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "features.npy").read_bytes() == before
    (out / "stale.npy").write_bytes(b"x")
    assert main(args + ["--force"]) == 0
    assert not (out / "stale.npy").exists()


def _dup(tmp_path, fasta, table):
    fasta.write_text(fasta.read_text() + ">k141_0\n" + "A" * 1200 + "\n")


def _drop_row(tmp_path, fasta, table):
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:2] + lines[3:]) + "\n")


def _nan(tmp_path, fasta, table):
    lines = table.read_text().splitlines()
    parts = lines[3].split("\t")
    parts[3] = "nan"
    lines[3] = "\t".join(parts)
    table.write_text("\n".join(lines) + "\n")


def _empty(tmp_path, fasta, table):
    fasta.write_text("")


@pytest.mark.parametrize("breaker,where", [(_dup, "contigs.fna"), (_drop_row, "depth.tsv"), (_nan, "depth.tsv"), (_empty, "contigs.fna")])
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, breaker, where):
    fasta, table, *_ = make_inputs(tmp_path)
    breaker(tmp_path, fasta, table)
    out = tmp_path / "run"
    assert main(["-q", "features", "--contigs", str(fasta), "--depth", str(table), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and where in err and "Traceback" not in err
    assert not out.exists()


def test_missing_contigs_file(tmp_path, capsys):
    _, table, *_ = make_inputs(tmp_path)
    assert main(["-q", "features", "--contigs", str(tmp_path / "none.fna"), "--depth", str(table), "--out", str(tmp_path / "r")]) == 2
    assert "none.fna: file not found" in capsys.readouterr().err


def test_app_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["app", "--run", str(tmp_path)]) == 2
    assert "not a deepmetabin run folder" in capsys.readouterr().err


def test_threads_cap_blas_numba_and_torch_in_the_stages(tmp_path, monkeypatch):
    """--threads reaches every pool a stage may use (threadpoolctl: BLAS/OpenMP; numba; torch), and the
    process's settings come back afterwards."""
    import numba
    import torch
    from threadpoolctl import threadpool_info

    from deepmetabin.errors import DeepMetaBinError

    seen = {}

    def stage(*args, **kwargs):
        seen.update(blas={i["num_threads"] for i in threadpool_info()}, numba=numba.get_num_threads(),
                    torch=torch.get_num_threads())
        raise DeepMetaBinError("stop here")

    fasta, table, *_ = make_inputs(tmp_path)
    monkeypatch.setattr(pipeline, "features_stage", stage)
    before = (numba.get_num_threads(), torch.get_num_threads())
    args = ["-q", "features", "--contigs", str(fasta), "--depth", str(table), "--out", str(tmp_path / "r"), "--threads", "1"]
    assert main(args) == 2
    assert seen == {"blas": {1}, "numba": 1, "torch": 1}
    assert (numba.get_num_threads(), torch.get_num_threads()) == before
