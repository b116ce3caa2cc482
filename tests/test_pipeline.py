"""`deepmetabin bin` end to end on two real genomes (tests/data), caching, resume after kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deepmetabin.cli import main
from deepmetabin.evaluate import read_binning, score
from deepmetabin.pipeline import Run

from simulated import FASTA, write_simulated_table

FAST = ["--epochs", "25", "--threads", "2", "--latent", "8", "--components", "8"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A simulated MetaBAT depth table (each genome its own abundance profile) and a CAMI truth."""
    tmp = tmp_path_factory.mktemp("inputs")
    c, genome = write_simulated_table(tmp / "depth.tsv")
    cami = tmp / "truth.tsv"
    cami.write_text("@@SEQUENCEID\tBINID\tLENGTH\n" + "".join(f"{i}\t{g}\t{L}\n" for i, g, L in zip(c.ids, genome, c.lengths)))
    return tmp / "depth.tsv", cami


def _bin(out, depth, *extra):
    return main(["-q", "bin", "--contigs", str(FASTA), "--depth", str(depth), "--out", str(out), *FAST, *extra])


def test_bin_end_to_end_then_reuse_and_partial_rerun(tmp_path, inputs, capsys):
    depth, truth = inputs
    out = tmp_path / "run"
    assert _bin(out, depth) == 0
    summary = capsys.readouterr().out
    assert "bins:" in summary and "peak RAM" in summary
    assert "markers" in summary and "(beside train)" in summary  # --threads 2: markers ran beside training
    assert "(beside bins)" in summary  # ... and the map beside the bins stage
    assert "contigs moved as graph islands" in summary
    r = Run.load(out)
    assert all(r.done(s) for s in ("features", "graph", "markers", "train", "bins", "map"))
    assert r.manifest["stages"]["map"]["beside"] == "bins" and "beside" not in r.manifest["stages"]["bins"]
    # the app's map is made by the run (the app then opens it without computing anything)
    from deepmetabin.ui.state import RunData

    xy = np.load(out / "umap.npy")
    assert xy.shape == (r.manifest["n_contigs"], 2) and np.isfinite(xy).all()
    assert np.array_equal(np.load(out / "components.npy"), RunData(out).components)
    umap_mtime = (out / "umap.npy").stat().st_mtime_ns
    assert np.array_equal(RunData(out).umap, xy) and (out / "umap.npy").stat().st_mtime_ns == umap_mtime
    s = score(read_binning(out / "bins.tsv"), read_binning(truth, kind="truth"))
    assert s.f1 > 0.95 and s.nc == 2, s
    q = r.quality
    assert (q["completeness"] > 90).sum() == 2 and (q["contamination"] < 5).sum() >= 2
    fasta = sorted((out / "bins").glob("*.fna"))
    assert [f.stem for f in fasta] == sorted(q["bin"])
    assert r.bins().to_frame().shape[0] == len(read_binning(out / "bins.tsv"))

    # the same command again is refused; --resume reuses every stage
    assert _bin(out, depth) == 2
    assert "--resume" in capsys.readouterr().err
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    assert _bin(out, depth, "--resume") == 0
    err = capsys.readouterr().err
    assert err.count("unchanged, reused") == 6
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}

    # a bins-only option reruns the bins stage alone
    assert _bin(out, depth, "--resume", "--min-bin-size", "3000000") == 0
    err = capsys.readouterr().err
    assert err.count("unchanged, reused") == 5 and "[bins] done" in err
    assert (out / "model.pt").stat().st_mtime_ns == before["model.pt"]
    assert len(read_binning(out / "bins.tsv")) == 0 or read_binning(out / "bins.tsv")["bin"].nunique() <= 1


def test_training_after_a_reused_markers_stage_gives_the_fresh_runs_model(tmp_path, inputs):
    """Training uses a fixed share of the cores (torch's floats depend on its thread count): a --resume that reuses
    the markers stage and retrains (a training option changed) gives the model a fresh run with that option gives."""
    depth, _ = inputs
    assert _bin(tmp_path / "fresh", depth, "--epochs", "12") == 0
    assert _bin(tmp_path / "resumed", depth) == 0
    assert _bin(tmp_path / "resumed", depth, "--resume", "--epochs", "12") == 0
    fresh, resumed = Run.load(tmp_path / "fresh"), Run.load(tmp_path / "resumed")
    assert resumed.manifest["stages"]["markers"].get("beside") == "train"  # the markers stage ran once, at first
    assert np.array_equal(fresh.latent, resumed.latent)


def test_other_inputs_refused_unless_force(tmp_path, inputs, capsys):
    depth, _ = inputs
    out = tmp_path / "run"
    assert main(["-q", "features", "--contigs", str(FASTA), "--depth", str(depth), "--out", str(out)]) == 0
    other = tmp_path / "other.tsv"
    other.write_text(depth.read_text().replace("\t1.0\n", "\t1.5\n"))
    assert _bin(out, other, "--resume") == 2
    assert "other inputs" in capsys.readouterr().err


def test_resume_after_kill_during_training(tmp_path, inputs):
    depth, _ = inputs
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "deepmetabin.cli", "-q", "bin", "--contigs", str(FASTA), "--depth", str(depth),
           "--out", str(out), "--epochs", "400", "--threads", "1", "--latent", "8", "--components", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "train.ckpt").exists():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "train.ckpt").exists(), "training never checkpointed"
    assert not (out / "model.pt").exists()
    epoch_at_kill = __import__("torch").load(out / "train.ckpt", weights_only=False)["epoch"]
    res = subprocess.run(cmd + ["--resume", "--epochs", "400"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("unchanged, reused") == 3  # features, graph, markers
    m = json.loads((out / "manifest.json").read_text())
    assert m["stages"]["train"]["epochs_run"] >= epoch_at_kill
    assert m["stages"]["bins"]["status"] == "done"


def test_markers_beside_training_a_failure_ends_both_and_records_neither(tmp_path, inputs, monkeypatch):
    """With 2+ threads the markers stage runs in a thread beside training; when it fails, training stops
    at its next epoch without being recorded, and the markers stage's error is what the caller sees."""
    import threading

    import deepmetabin.pipeline as P
    from deepmetabin.errors import InputFileError
    from deepmetabin.train import TrainConfig

    depth, _ = inputs
    seen = {}

    def failing_markers(*args, **kwargs):
        seen["thread"] = threading.current_thread().name
        raise InputFileError("contigs.fna: no genes (a test)")

    monkeypatch.setattr(P, "markers_stage", failing_markers)
    epochs = []
    cfg = P.Config(threads=2, train=TrainConfig(epochs=400, latent=8, k=8, patience=400))
    with pytest.raises(InputFileError, match="no genes"):
        P.run(FASTA, tmp_path / "run", depth_table=depth, config=cfg, train_callbacks=[epochs.append])
    assert seen["thread"] == "deepmetabin-markers"  # it ran beside training, not before it
    assert 1 <= len(epochs) < 400  # training had started, and stopped early
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert {"features", "graph"} <= set(stages) and "train" not in stages and "markers" not in stages
    # with one thread the stages run one after the other, and the same error comes before any training
    epochs.clear()
    with pytest.raises(InputFileError, match="no genes"):
        P.run(FASTA, tmp_path / "run1", depth_table=depth, config=P.replace(cfg, threads=1), train_callbacks=[epochs.append])
    assert seen["thread"] == "MainThread" and epochs == []


def test_release_memory_trims_without_a_child_process():
    """No helper process is forked between stages: one forked from a big process (as ctypes.util.find_library's
    ldconfig was) reports the parent's size as its peak, which `/usr/bin/time` and the harness would read."""
    code = ("import resource, numpy as np\n"
            "from deepmetabin._parallel import release_memory\n"
            "a = np.ones(50_000_000); del a\n"
            "release_memory(); release_memory()\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out.strip()) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("fixed", [True, False])
def test_fixed_mmap_threshold_hands_freed_arrays_back(fixed):
    """glibc raises its mmap threshold to the size of each mapped block freed; a later smaller array then comes
    from the heap and its pages stay with the process after ``del``. ``run`` fixes the threshold first
    (``fix_mmap_threshold``), so such arrays are handed back. Without it (the control) they stay."""
    code = ("import numpy as np\n"
            "from deepmetabin._parallel import fix_mmap_threshold\n"
            f"assert fix_mmap_threshold() if {fixed} else True\n"
            "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20\n"
            "a = np.ones(20 << 17); del a\n"  # 20 MB mapped, then freed
            "base = rss()\n"
            "b = np.ones(16 << 17); del b\n"  # 16 MB
            "print(rss() - base)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept_mb = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout)
    assert kept_mb < 4 if fixed else kept_mb >= 12


def test_stages_recorded_from_parallel_threads_keep_each_others_entries(tmp_path):
    """record_stage(run, None, ...) and update_manifest read-modify-write under one lock: two threads recording
    different stages and editing entries at once lose nothing (unlocked, a stale copy overwrites the other's)."""
    import threading

    from deepmetabin.manifest import load_manifest, new_manifest, record_stage, update_manifest
    from deepmetabin._io import write_json

    write_json(tmp_path / "manifest.json", new_manifest("h", 1, {}))

    def work(name: str) -> None:
        for i in range(40):
            record_stage(tmp_path, None, f"{name}{i}", params={}, outputs={}, seconds=0.0)
            update_manifest(tmp_path, lambda m, s=f"{name}{i}": m["stages"][s].update(request=i))

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stages = load_manifest(tmp_path)["stages"]
    assert sorted(stages) == sorted(f"{n}{i}" for n in "ab" for i in range(40))
    assert all(e["request"] == int(s[1:]) and e["ids_hash"] == "h" for s, e in stages.items())
