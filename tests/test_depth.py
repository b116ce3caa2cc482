"""depth.py on tiny real BAMs/CRAMs and tables written by the tests: hand-computed depths (edges,
identity, flags) with both engines, the jgi_summarize_bam_contig_depths rule on random reads, engine
agreement (BAM, CRAM, CG-tag CIGARs), tables, and every bad input."""
from __future__ import annotations

import gzip
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bamtools import Read, bam_to_cram, random_contigs, write_bam, write_fasta
from deepmetabin.contigs import Contigs, read_contigs
from deepmetabin.depth import depth_from_bams, read_depth_table, write_depth_table
from deepmetabin.errors import BamError, DepthTableError, InputFileError

# c1..c4 are kept with min_length=100; "tiny" (50 bp) is a BAM reference dropped by the filter
REFS = {"c1": 1000, "c2": 150, "c3": 152, "c4": 153, "tiny": 50}
JGI = shutil.which("jgi_summarize_bam_contig_depths")
ENGINES = ["numba", "pysam"]


@pytest.fixture
def fasta(tmp_path):
    return write_fasta(tmp_path / "contigs.fna", random_contigs(np.random.default_rng(1), REFS))


@pytest.fixture
def contigs(fasta):
    return read_contigs(fasta, min_length=100)


def hand_reads() -> list[Read]:
    """All reads are 100 bp, so the edge is min(75, 100) = 75 everywhere."""
    return [
        # c1: window [75, 925), 850 positions
        Read("c1", 0, "100M"),  # 25 bases in the window
        Read("c1", 50, "100M"),  # 75
        Read("c1", 400, "100M", nm=3),  # identity 97/100 = 0.97: kept, 100
        Read("c1", 500, "100M", nm=4),  # 0.96: dropped
        Read("c1", 600, "50M3D50M", nm=3),  # 100/103: kept; the deletion adds no depth: 100
        Read("c1", 300, "50M3D50M", nm=4),  # 99/104: dropped
        Read("c1", 200, "50M2I48M", nm=2),  # 98/100: kept, 98
        Read("c1", 700, "60=1X39=", nm=1),  # 99/100: kept, 100 (X bases count as depth)
        Read("c1", 710, "90=10X", nm=10),  # 0.90: dropped
        Read("c1", 720, "100M", nm=None),  # no NM tag: identity from the CIGAR = 1: kept, 100
        Read("c1", 730, "10S90M"),  # clips add nothing: 90
        Read("c1", 740, "100M", flag=0x100),  # secondary: skipped
        Read("c1", 750, "100M", flag=0x200),  # QC fail: skipped
        Read("c1", 760, "100M", flag=0x400),  # duplicate: skipped
        Read("c1", 770, "100M", flag=0x800),  # supplementary: counted (as jgi does), 100
        Read("c1", 780, "100M", flag=0x4),  # unmapped (placed): skipped
        Read("c1", 900, "100M", flag=16),  # reverse strand: 25
        # c2: 150 <= 2*75+1, so the whole contig is the window
        Read("c2", 20, "100M"),
        # c3: window [75, 77) has only 2 positions -> depth 0
        Read("c3", 0, "100M"),
        # c4: window [75, 78)
        Read("c4", 0, "100M"),  # 3
        # jgi clips an alignment that runs past the end: the op crossing the end and all after it
        # become a soft clip (jgi 2.15 aborts if the crossing op is the last one, so a clip follows)
        Read("c4", 70, "50M40M10S"),  # 40M crosses the end: 50M covers the window: 3
        Read("c4", 70, "50M5I35M10S"),  # 35M crosses the end: left with 50M5I, identity 50/55: dropped
        Read("tiny", 0, "40M"),
        Read("*", -1, "*", nm=None, flag=0x4),  # unplaced unmapped read at the end
    ]


HAND_DEPTH = [813 / 850, 100 / 150, 0.0, 2.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_hand_computed_depths(tmp_path, contigs, engine):
    bam = write_bam(tmp_path / "S1.bam", REFS, hand_reads())
    depth, samples = depth_from_bams([bam], contigs, engine=engine)
    assert samples == ["S1"]
    assert depth.dtype == np.float32 and depth.shape == (4, 1)
    np.testing.assert_allclose(depth[:, 0], HAND_DEPTH, rtol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_identity_threshold_and_edge_options(tmp_path, contigs, engine):
    bam = write_bam(tmp_path / "S1.bam", REFS, hand_reads())
    # min_identity=0.9 also keeps the NM=4 reads (0.96, 0.952), 90=10X (0.90) and the clipped 50M5I (0.909)
    depth, _ = depth_from_bams([bam], contigs, min_identity=0.90, engine=engine)
    assert depth[0, 0] == pytest.approx((813 + 100 + 100 + 100) / 850)
    assert depth[3, 0] == pytest.approx(3.0)
    # edge=0 keeps the contig ends: c1 window is the whole contig
    depth, _ = depth_from_bams([bam], contigs, edge=0, engine=engine)
    c1 = 100 * 8 + 98 + 90  # reads at 0 50 400 600 700 720 770 900 add 100 each, 200 adds 98, 730 adds 90
    assert depth[0, 0] == pytest.approx(c1 / 1000)
    assert depth[2, 0] == pytest.approx(100 / 152)


@pytest.mark.parametrize("engine", ENGINES)
def test_edge_is_capped_by_the_mean_read_length(tmp_path, contigs, engine):
    reads = [Read("c1", 10, "40M"), Read("c1", 500, "40M")]  # 40 bp reads: edge = 40, window [40, 960)
    bam = write_bam(tmp_path / "S1.bam", REFS, reads)
    depth, _ = depth_from_bams([bam], contigs, engine=engine)
    assert depth[0, 0] == pytest.approx((10 + 40) / 920)
    assert depth[1:, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("engine", ENGINES)
def test_edge_uses_the_running_mean_read_length(tmp_path, contigs, engine):
    """jgi caps the edge by the mean l_seq of all records read so far (SEQ '*' counts as 0), at the
    moment a contig is finished, i.e. when the first read of the next contig arrives."""
    reads = [
        Read("c1", 10, "40M"),  # window [45, 955) -> 5 bases
        Read("c1", 500, "40M"),  # 40
        Read("c1", 600, "40M", flag=0x100, seq_len=0),  # secondary without SEQ: skipped, but length 0 counts
        Read("c2", 20, "100M"),  # mean (40+40+0+100)//4 = 45 when c1 is finished
    ]
    bam = write_bam(tmp_path / "S1.bam", REFS, reads)
    depth, _ = depth_from_bams([bam], contigs, engine=engine)
    np.testing.assert_allclose(depth[:2, 0], [45 / 910, 1.0], rtol=1e-6)  # c2: window [45, 105), all covered
    if JGI:
        table = tmp_path / "jgi.tsv"
        subprocess.run([JGI, "--outputDepth", str(table), str(bam)], check=True, capture_output=True)
        np.testing.assert_allclose(read_depth_table(table, contigs)[0], depth, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_unindexed_bam_and_bam_with_more_references_are_fine(tmp_path, contigs, engine):
    (tmp_path / "a").mkdir()
    indexed = write_bam(tmp_path / "a" / "S1.bam", REFS, hand_reads())
    plain = write_bam(tmp_path / "S1.bam", REFS, hand_reads(), index=False)
    assert not (tmp_path / "S1.bam.bai").exists()
    np.testing.assert_array_equal(depth_from_bams([plain], contigs, engine=engine)[0],
                                  depth_from_bams([indexed], contigs, engine=engine)[0])


def random_reads(rng: np.random.Generator, refs: dict[str, int], n: int) -> list[Read]:
    """Reads with random CIGARs (M/=/X/I/D/S), NM, flags and read lengths, within their contig."""
    reads = []
    names = [r for r in refs if refs[r] > 60]
    for _ in range(n):
        ref = names[rng.integers(len(names))]
        length = refs[ref]
        ops: list[tuple[int, str]] = []
        if rng.random() < 0.2:
            ops.append((int(rng.integers(1, 20)), "S"))
        eqx = rng.random() < 0.3
        ins = dels = mism = 0
        for _ in range(int(rng.integers(1, 4))):
            if eqx:
                ops.append((int(rng.integers(5, 60)), "="))
                if rng.random() < 0.4:
                    k = int(rng.integers(1, 3))
                    ops.append((k, "X"))
                    mism += k
            else:
                ops.append((int(rng.integers(5, 80)), "M"))
            if rng.random() < 0.3:
                k = int(rng.integers(1, 4))
                op = "I" if rng.random() < 0.5 else "D"
                ops.append((k, op))
                ins, dels = ins + (op == "I") * k, dels + (op == "D") * k
        ops.append((int(rng.integers(5, 60)), "=" if eqx else "M"))
        if rng.random() < 0.2:
            ops.append((int(rng.integers(1, 20)), "S"))
        cigar = "".join(f"{k}{op}" for k, op in ops)
        u = rng.random()
        nm = None if u < 0.05 else ins + dels + mism + (int(rng.integers(0, 5)) if not eqx else 0)
        flag = int(rng.choice([0, 0, 0, 16, 0x100, 0x200, 0x400, 0x800, 0x4]))
        seq_len = 0 if flag & 0x100 and rng.random() < 0.5 else None
        span = sum(k for k, op in ops if op in "MD=X")
        if span >= length:
            continue
        pos = int(rng.integers(0, length - span + 1))
        reads.append(Read(ref, pos, cigar, nm=nm, flag=flag, seq_len=seq_len))
    return reads


RANDOM_REFS = {"k1": 3000, "k2": 400, "k3": 152, "k4": 1500, "short": 60, "k5": 2200}


def test_parallel_equals_serial_and_reports_progress(tmp_path):
    rng = np.random.default_rng(7)
    fasta = write_fasta(tmp_path / "contigs.fna", random_contigs(rng, RANDOM_REFS))
    contigs = read_contigs(fasta, min_length=100)
    bams = [write_bam(tmp_path / f"S{j}.bam", RANDOM_REFS, random_reads(rng, RANDOM_REFS, 300)) for j in range(3)]
    calls: list[tuple[int, int]] = []
    serial, samples = depth_from_bams(bams, contigs, threads=1)
    parallel, samples2 = depth_from_bams(bams, contigs, threads=3, progress=lambda d, t: calls.append((d, t)))
    with_pysam, samples3 = depth_from_bams(bams, contigs, threads=2, engine="pysam")
    assert samples == samples2 == samples3 == ["S0", "S1", "S2"]
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(serial, with_pysam)
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert (serial > 0).any()


@pytest.mark.skipif(JGI is None, reason="jgi_summarize_bam_contig_depths (MetaBAT) not installed")
@pytest.mark.parametrize("seed", [3, 4])
def test_matches_jgi_summarize_bam_contig_depths(tmp_path, seed):
    rng = np.random.default_rng(seed)
    fasta = write_fasta(tmp_path / "contigs.fna", random_contigs(rng, RANDOM_REFS))
    contigs = read_contigs(fasta, min_length=100)
    bams = [write_bam(tmp_path / f"S{j}.bam", RANDOM_REFS, random_reads(rng, RANDOM_REFS, 600)) for j in range(2)]
    table = tmp_path / "jgi.tsv"
    subprocess.run([JGI, "--outputDepth", str(table), *map(str, bams)], check=True, capture_output=True)
    jgi, jgi_samples = read_depth_table(table, contigs)
    ours, samples = depth_from_bams(bams, contigs, threads=2)
    assert samples == jgi_samples
    np.testing.assert_allclose(ours, jgi, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(JGI is None, reason="jgi_summarize_bam_contig_depths (MetaBAT) not installed")
def test_hand_bam_matches_jgi(tmp_path, contigs):
    bam = write_bam(tmp_path / "S1.bam", REFS, hand_reads())
    table = tmp_path / "jgi.tsv"
    subprocess.run([JGI, "--outputDepth", str(table), str(bam)], check=True, capture_output=True)
    np.testing.assert_allclose(read_depth_table(table, contigs)[0][:, 0], HAND_DEPTH, rtol=1e-5)


# --------------------------------------------------------------------------------- engines


def running_mean_reads() -> list[Read]:
    return [Read("c1", 10, "40M"), Read("c1", 500, "40M"), Read("c1", 600, "40M", flag=0x100, seq_len=0),
            Read("c2", 20, "100M")]


HAND_BAMS = {
    "hand": hand_reads,
    "short reads": lambda: [Read("c1", 10, "40M"), Read("c1", 500, "40M")],
    "running mean": running_mean_reads,
    "one read": lambda: [Read("c1", 0, "100M")],
}


@pytest.mark.parametrize("reads", HAND_BAMS)
def test_engines_agree_on_hand_bams(tmp_path, contigs, reads):
    bam = write_bam(tmp_path / "S1.bam", REFS, HAND_BAMS[reads]())
    for options in ({}, {"min_identity": 0.9}, {"edge": 0}):
        results = [depth_from_bams([bam], contigs, engine=e, **options)[0] for e in ("numba", "pysam", "auto")]
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_array_equal(results[0], results[2])


def test_engines_agree_on_random_bam(tmp_path):
    rng = np.random.default_rng(11)
    fasta = write_fasta(tmp_path / "contigs.fna", random_contigs(rng, RANDOM_REFS))
    contigs = read_contigs(fasta, min_length=100)
    bam = write_bam(tmp_path / "S1.bam", RANDOM_REFS, random_reads(rng, RANDOM_REFS, 1500))
    numba_depth = depth_from_bams([bam], contigs, engine="numba")[0]
    np.testing.assert_array_equal(numba_depth, depth_from_bams([bam], contigs, engine="pysam")[0])
    assert (numba_depth > 0).sum() == 4  # k3 (152 bp) has a 2-position window: 0


def test_cram_gives_the_depths_of_its_bam(tmp_path, caplog):
    """A CRAM (written by pysam/htslib) of reads whose sequences agree with their CIGAR and NM, and
    that stay inside their contig (CRAM merges adjacent CIGAR ops, which changes end clipping)."""
    rng = np.random.default_rng(12)
    seqs = random_contigs(rng, RANDOM_REFS)
    fasta = write_fasta(tmp_path / "contigs.fna", seqs)
    contigs = read_contigs(fasta, min_length=100)
    reads = random_reads(rng, RANDOM_REFS, 1500)
    bam = write_bam(tmp_path / "S1.bam", RANDOM_REFS, reads, reference=seqs)
    cram = bam_to_cram(bam, tmp_path / "S2.cram", fasta)
    for fai in tmp_path.glob("*.fai"):  # written by htslib for the CRAM encoder
        fai.unlink()
    expected = depth_from_bams([bam], contigs, engine="numba")[0][:, 0]
    assert (expected > 0).sum() == 4
    caplog.set_level("INFO", logger="deepmetabin.depth")
    depth, samples = depth_from_bams([bam, cram], contigs, threads=2)  # auto: numba for the BAM, pysam for the CRAM
    assert samples == ["S1", "S2"]
    np.testing.assert_array_equal(depth[:, 0], expected)
    np.testing.assert_array_equal(depth[:, 1], expected)
    assert "S2.cram: 1" in caplog.text and "engine pysam" in caplog.text
    assert not list(tmp_path.glob("*.fai"))  # the FASTA was indexed in a temporary folder
    # a gzipped reference given explicitly, and engine="pysam"
    gz = tmp_path / "ref.fna.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    depth, _ = depth_from_bams([cram], contigs, engine="pysam", reference=gz)
    np.testing.assert_array_equal(depth[:, 0], expected)
    with pytest.raises(BamError, match="S2.cram: is a CRAM file, which engine='numba' cannot read"):
        depth_from_bams([cram], contigs, engine="numba")
    short = write_fasta(tmp_path / "other.fna", {k: v for k, v in seqs.items() if k != "k3"})
    with pytest.raises(BamError, match="S2.cram: reference 'k3' .* is missing from .*other.fna"):
        depth_from_bams([cram], contigs, reference=short)


def test_long_cigar_in_cg_tag(tmp_path, caplog):
    """A CIGAR of more than 65535 ops is stored in a CG tag (htslib does it when writing): "auto"
    falls back to pysam (logged), "numba" refuses the BAM."""
    refs = {"big": 80000}
    fasta = write_fasta(tmp_path / "contigs.fna", random_contigs(np.random.default_rng(3), refs))
    contigs = read_contigs(fasta, min_length=100)
    bam = write_bam(tmp_path / "S1.bam", refs, [Read("big", 5, "1M1N" * 35000), Read("big", 100, "100M")])
    # window [75, 79925): the long read covers 35000 odd positions from 5 to 70003, 35 of them before 75
    expected = (35000 - 35 + 100) / (80000 - 150)
    caplog.set_level("WARNING", logger="deepmetabin.depth")
    auto = depth_from_bams([bam], contigs)[0]
    assert auto[0, 0] == pytest.approx(expected, rel=1e-6)
    assert "S1.bam: holds CIGARs with more than 65535 operations" in caplog.text
    np.testing.assert_array_equal(auto, depth_from_bams([bam], contigs, engine="pysam")[0])
    with pytest.raises(BamError, match="S1.bam: holds CIGARs with more than 65535 operations.*engine='pysam'"):
        depth_from_bams([bam], contigs, engine="numba")


def test_bad_engine(tmp_path, contigs):
    bam = write_bam(tmp_path / "S1.bam", REFS, [Read("c1", 0, "100M")])
    with pytest.raises(ValueError, match="engine must be one of"):
        depth_from_bams([bam], contigs, engine="htslib")


# --------------------------------------------------------------------------------- bad BAMs


def test_missing_bam(tmp_path, contigs):
    with pytest.raises(InputFileError, match="nope.bam"):
        depth_from_bams([tmp_path / "nope.bam"], contigs)


@pytest.mark.parametrize(
    "name, data",
    [
        ("text.bam", b"hello, this is not a BAM\n"),
        ("reads.bam", b"@HD\tVN:1.6\n@SQ\tSN:c1\tLN:1000\n"),
        ("plain.bam", gzip.compress(b"contig\tdepth\n")),
        ("x.bam", b"CRAM\x03\x00"),
        ("empty.bam", b""),
    ],
)
def test_not_a_bam(tmp_path, contigs, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(BamError, match=name):
        depth_from_bams([tmp_path / name], contigs)


@pytest.mark.parametrize("engine", ENGINES)
def test_truncated_bam(tmp_path, contigs, engine):
    reads = [Read("c1", i % 900, "100M") for i in range(3000)]
    bam = write_bam(tmp_path / "S1.bam", REFS, reads)
    data = bam.read_bytes()
    bam.write_bytes(data[: len(data) // 2])
    with pytest.raises(BamError, match="S1.bam.*truncated"):
        depth_from_bams([bam], contigs, engine=engine)


def test_bam_missing_a_kept_contig(tmp_path, contigs):
    refs = {k: v for k, v in REFS.items() if k != "c3"}
    bam = write_bam(tmp_path / "S1.bam", refs, [Read("c1", 0, "100M")])
    with pytest.raises(BamError, match="S1.bam.*'c3'"):
        depth_from_bams([bam], contigs)


def test_bam_contig_of_another_length(tmp_path, contigs):
    bam = write_bam(tmp_path / "S1.bam", {**REFS, "c2": 151}, [Read("c1", 0, "100M")])
    with pytest.raises(BamError, match="S1.bam.*'c2' is 151 bp"):
        depth_from_bams([bam], contigs)


@pytest.mark.parametrize("so", ["queryname", "unsorted"])
def test_bam_header_not_coordinate_sorted(tmp_path, contigs, so):
    bam = write_bam(tmp_path / "S1.bam", REFS, [Read("c1", 0, "100M")], sort=False, index=False, so=so)
    with pytest.raises(BamError, match=f"S1.bam.*'{so}'.*samtools sort"):
        depth_from_bams([bam], contigs)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("so", ["coordinate", None])
def test_bam_records_out_of_order(tmp_path, contigs, so, engine):
    reads = [Read("c1", 500, "100M"), Read("c1", 10, "100M")]
    bam = write_bam(tmp_path / "S1.bam", REFS, reads, sort=False, index=False, so=so)
    with pytest.raises(BamError, match="S1.bam.*not sorted.*samtools sort"):
        depth_from_bams([bam], contigs, engine=engine)


def test_duplicate_sample_names(tmp_path, contigs):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_bam(tmp_path / "a" / "S1.bam", REFS, [Read("c1", 0, "100M")])
    b = write_bam(tmp_path / "b" / "S1.bam", REFS, [Read("c1", 0, "100M")])
    with pytest.raises(BamError, match="S1.bam.*'S1'"):
        depth_from_bams([a, b], contigs)
    with pytest.raises(BamError, match="S1.bam.*'S1'"):
        depth_from_bams([a, a], contigs)


def test_no_bams(contigs):
    with pytest.raises(BamError, match="no BAM"):
        depth_from_bams([], contigs)


# --------------------------------------------------------------------------------- tables

JGI_TABLE = (
    "contigName\tcontigLen\ttotalAvgDepth\tS1.bam\tS1.bam-var\tS2.bam\tS2.bam-var\n"
    "c4\t153\t3\t1\t0.5\t2\t0.1\n"
    "c1\t1000\t1.5\t0.5\t1\t1\t2\n"
    "tiny\t50\t0\t0\t0\t0\t0\n"
    "c2\t150\t0\t0\t0\t0\t0\n"
    "c3\t152\t7\t3.25\t1\t3.75\t1\n"
)
EXPECTED = np.array([[0.5, 1], [0, 0], [3.25, 3.75], [1, 2]], dtype=np.float32)


def test_reads_metabat_table(tmp_path, contigs):
    path = tmp_path / "depth.txt"
    path.write_text(JGI_TABLE)
    depth, samples = read_depth_table(path, contigs)
    assert samples == ["S1", "S2"]
    np.testing.assert_array_equal(depth, EXPECTED)
    gz = tmp_path / "depth.txt.gz"  # gzipped, CRLF, without -var columns
    text = "\n".join("\t".join(f for k, f in enumerate(line.split("\t")) if k not in (4, 6)) for line in JGI_TABLE.splitlines())
    gz.write_bytes(gzip.compress(text.replace("\n", "\r\n").encode()))
    depth, samples = read_depth_table(gz, contigs)
    assert samples == ["S1", "S2"]
    np.testing.assert_array_equal(depth, EXPECTED)


def test_metabat_lengths_printed_with_six_digits(tmp_path):
    rng = np.random.default_rng(0)
    fasta = write_fasta(tmp_path / "big.fna", random_contigs(rng, {"big": 1234567, "small": 2000}))
    contigs = read_contigs(fasta)
    path = tmp_path / "depth.txt"
    path.write_text("contigName\tcontigLen\ttotalAvgDepth\tS.bam\nbig\t1.23457e+06\t1\t1\nsmall\t2000\t2\t2\n")
    assert read_depth_table(path, contigs)[0][:, 0].tolist() == [1, 2]
    path.write_text("contigName\tcontigLen\ttotalAvgDepth\tS.bam\nbig\t1.23457e+06\t1\t1\nsmall\t2100\t2\t2\n")
    with pytest.raises(DepthTableError, match="depth.txt: line 3: contig 'small' has contigLen 2100"):
        read_depth_table(path, contigs)


@pytest.mark.parametrize("header", [True, False])
def test_reads_vamb_and_aemb_tables(tmp_path, contigs, header):
    body = "c3\t3.25\t3.75\nc1\t0.5\t1\nc2\t0\t0\nc4\t1\t2\n"
    path = tmp_path / "S.aemb.tsv"
    path.write_text(("contigname\tA\tB\n" if header else "") + body)
    depth, samples = read_depth_table(path, contigs)
    assert samples == (["A", "B"] if header else ["S.aemb_1", "S.aemb_2"])
    np.testing.assert_array_equal(depth, EXPECTED)
    one = tmp_path / "S7.tsv"  # strobealign --aemb: one sample per file, no header
    one.write_text("c1\t0.5\nc2\t0\nc3\t3.25\nc4\t1\n")
    depth, samples = read_depth_table(one, contigs)
    assert samples == ["S7"] and depth[:, 0].tolist() == [0.5, 0, 3.25, 1]


def make_contigs(ids: list[str], lengths: list[int]) -> Contigs:
    lengths_a = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths_a, out=offsets[1:])
    return Contigs(ids=np.array(ids, dtype=object), lengths=lengths_a, gc=np.full(len(ids), 0.5, np.float32),
                   seq_buffer=np.zeros(int(offsets[-1]), np.uint8), offsets=offsets)


_names = st.text(alphabet="abcXYZ019_.|-", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(_names.filter(lambda s: s.lower() not in {"contig", "id", "name"}), min_size=1, max_size=20, unique=True),
    samples=st.lists(_names, min_size=1, max_size=4, unique=True),
    fmt=st.sampled_from(["metabat", "vamb"]),
    data=st.data(),
)
def test_write_read_round_trip(tmp_path, ids, samples, fmt, data):
    lengths = data.draw(st.lists(st.integers(1, 10**7), min_size=len(ids), max_size=len(ids)))
    depth = np.array(
        data.draw(st.lists(st.lists(st.floats(0, 1e6, width=32), min_size=len(samples), max_size=len(samples)),
                           min_size=len(ids), max_size=len(ids))),
        dtype=np.float32,
    ).reshape(len(ids), len(samples))
    contigs = make_contigs(ids, lengths)
    path = tmp_path / f"rt.{fmt}.tsv"
    write_depth_table(path, contigs, depth, samples, fmt=fmt)
    back, back_samples = read_depth_table(path, contigs)
    assert back_samples == samples
    np.testing.assert_array_equal(back, depth)
    # rows come back in the Contigs order, whatever the file order
    rev = make_contigs(ids[::-1], lengths[::-1])
    np.testing.assert_array_equal(read_depth_table(path, rev)[0], depth[::-1])


def test_write_needs_lengths_for_metabat(tmp_path):
    with pytest.raises(ValueError, match="lengths"):
        write_depth_table(tmp_path / "x.tsv", ["a"], np.ones((1, 1)), ["s"])
    write_depth_table(tmp_path / "x.tsv", ["a"], np.ones((1, 1)), ["s"], lengths=[5])
    assert (tmp_path / "x.tsv").read_text().splitlines()[1] == "a\t5\t1\t1"


# --------------------------------------------------------------------------------- bad tables

VAMB_OK = ["contigname\tA\tB", "c1\t1\t2", "c2\t1\t2", "c3\t1\t2", "c4\t1\t2"]


def bad_table(tmp_path, lines: list[str]):
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_table(tmp_path, contigs):
    with pytest.raises(InputFileError, match="nope.tsv"):
        read_depth_table(tmp_path / "nope.tsv", contigs)


@pytest.mark.parametrize("text", ["", "\n\n", "contigname\tA\tB\n", "contigName\tcontigLen\ttotalAvgDepth\n"])
def test_empty_table(tmp_path, contigs, text):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(DepthTableError, match="bad.tsv"):
        read_depth_table(path, contigs)


def test_table_missing_contig(tmp_path, contigs):
    path = bad_table(tmp_path, [line for line in VAMB_OK if not line.startswith("c2")])
    with pytest.raises(DepthTableError, match="bad.tsv: contig 'c2' .*has no row"):
        read_depth_table(path, contigs)


def test_table_extra_contigs(tmp_path, contigs):
    path = bad_table(tmp_path, VAMB_OK + ["tiny\t0\t0"])  # in the FASTA, dropped by min_length: ignored
    assert read_depth_table(path, contigs)[0].shape == (4, 2)
    path = bad_table(tmp_path, VAMB_OK + ["tiny\t0\t0", "zz9\t1\t1"])
    with pytest.raises(DepthTableError, match="bad.tsv: line 7: contig 'zz9' is not in"):
        read_depth_table(path, contigs)


@pytest.mark.parametrize(
    "value, what", [("nan", "not a finite number"), ("-1", "not a finite number"), ("inf", "not a finite number"),
                    ("1,5", "not a number"), ("", "not a number")],
)
def test_table_bad_values(tmp_path, contigs, value, what):
    lines = list(VAMB_OK)
    lines[3] = f"c3\t1\t{value}"
    with pytest.raises(DepthTableError, match=f"bad.tsv: line 4, column 'B': .*{what}"):
        read_depth_table(bad_table(tmp_path, lines), contigs)


def test_table_wrong_column_count(tmp_path, contigs):
    lines = list(VAMB_OK)
    lines[2] = "c2\t1"
    with pytest.raises(DepthTableError, match="bad.tsv: line 3: found 2 .*expected 3"):
        read_depth_table(bad_table(tmp_path, lines), contigs)
    with pytest.raises(DepthTableError, match="bad.tsv: line 1: found 1 column"):
        read_depth_table(bad_table(tmp_path, ["c1 1 2", "c2 1 2"]), contigs)


def test_table_duplicate_rows(tmp_path, contigs):
    with pytest.raises(DepthTableError, match="bad.tsv: line 6: contig 'c1' already has a row \\(line 2\\)"):
        read_depth_table(bad_table(tmp_path, VAMB_OK + ["c1\t1\t2"]), contigs)


def test_table_duplicate_samples(tmp_path, contigs):
    lines = ["contigname\tA\tA"] + VAMB_OK[1:]
    with pytest.raises(DepthTableError, match="bad.tsv: line 1: sample 'A' appears twice"):
        read_depth_table(bad_table(tmp_path, lines), contigs)


def test_bam_given_as_table(tmp_path, contigs):
    bam = write_bam(tmp_path / "S1.bam", REFS, [Read("c1", 0, "100M")])
    with pytest.raises((DepthTableError, InputFileError), match="S1.bam"):
        read_depth_table(bam, contigs)


@pytest.mark.parametrize("engine", ENGINES)
def test_unique_depth_counts_the_reads_placed_with_mapq_1_or_more(tmp_path, engine):
    rng = np.random.default_rng(5)
    fasta = write_fasta(tmp_path / "contigs.fna", random_contigs(rng, RANDOM_REFS))
    contigs = read_contigs(fasta, min_length=100)
    reads = random_reads(rng, RANDOM_REFS, 1500)
    for r in reads:
        r.mapq = int(rng.choice([0, 0, 1, 3, 60, 255]))  # 255 = "not available": counts as placed
    bam = write_bam(tmp_path / "S1.bam", RANDOM_REFS, reads)
    # the same records with every MAPQ-0 read marked a duplicate: skipped, yet still in the running mean read length
    (tmp_path / "ref").mkdir()
    marked = [Read(r.ref, r.pos, r.cigar, nm=r.nm, flag=r.flag | (0x400 if r.mapq == 0 else 0), mapq=r.mapq,
                   seq_len=r.seq_len) for r in reads]
    ref_bam = write_bam(tmp_path / "ref" / "S1.bam", RANDOM_REFS, marked)
    depth, unique, samples = depth_from_bams([bam], contigs, engine=engine, unique=True)
    assert samples == ["S1"]
    np.testing.assert_array_equal(depth, depth_from_bams([bam], contigs, engine=engine)[0])
    np.testing.assert_array_equal(unique, depth_from_bams([ref_bam], contigs, engine=engine)[0])
    assert (unique <= depth).all() and (unique < depth).any() and (unique > 0).any()


def test_unique_depth_by_hand(tmp_path, contigs):
    # c1 (1000 bp, edges of 75 bp): two 100 bp reads over [200, 300), one drawn at random among equal hits (MAPQ 0)
    bam = write_bam(tmp_path / "S1.bam", REFS, [Read("c1", 200, "100M", mapq=0), Read("c1", 200, "100M", mapq=7)])
    depth, unique, _ = depth_from_bams([bam], contigs, unique=True)
    window = 1000 - 2 * 75
    assert depth[0, 0] == pytest.approx(200 / window) and unique[0, 0] == pytest.approx(100 / window)
