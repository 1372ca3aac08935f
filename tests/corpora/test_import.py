"""`stablerep dataset import` on corpora that img2dataset itself built from real photographs
(tests/helpers/corpus.py): every layout gives the same caption ids and bytes, the result serves
every consumer of our layout (verify, training, HF `datasets`, synthesis of the same captions,
pairing), a killed import resumes to the same bytes, and bad input is one line with no commit."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stablerep.captions import sample_captions
from stablerep.corpora.importer import ImportConfig
from stablerep.shards import read_manifest, verify_dataset
from stablerep.shards.rows import iter_images
from stablerep.stages import ImportJob, import_dataset

ROOT = Path(__file__).resolve().parents[2]


def _import(sources, out, **config):
    return import_dataset(ImportJob(sources=[str(s) for s in sources], out=str(out),
                                    config=ImportConfig(**config), progress=False))


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "stablerep", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _rows(root):
    """caption_id -> [(image_index, sha256 of the bytes)] of a root's committed shards."""
    out = {}
    for row in iter_images(str(root), ["caption_id", "image_index", "image"]):
        out.setdefault(row["caption_id"], []).append((row["image_index"], hashlib.sha256(row["image"]["bytes"]).hexdigest()))
    return {cid: sorted(v) for cid, v in out.items()}


@pytest.fixture(scope="module")
def imported(corpus, tmp_path_factory):
    """The img2dataset webdataset output, imported once for the tests that only read it."""
    out = tmp_path_factory.mktemp("imported") / "real"
    summary = _import([corpus.webdataset], out, captions_per_shard=64)
    return out, summary


def test_every_layout_gives_the_same_caption_ids_and_bytes(corpus, imported, tmp_path):
    real, summary = imported
    web = _rows(real)
    photos = {hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(corpus.photos).iterdir()}
    assert summary["images"] == sum(len(v) for v in web.values()) == len(corpus.ok_pairs)
    assert all(digest in photos for images in web.values() for _, digest in images)  # bytes as they came
    assert _rows(_import([corpus.parquet], tmp_path / "p")["root"]) == web
    for name, source in (("hf", corpus.hf_parquet), ("csv", corpus.csv)):
        got = _rows(_import([source], tmp_path / name)["root"])
        assert set(got) == set(web), name
        assert sorted(d for v in got.values() for _, d in v) == sorted(d for v in web.values() for _, d in v), name


def test_a_caption_with_several_images_keeps_them_all_in_one_shard(corpus, imported):
    real, _ = imported
    repeated = corpus.repeated
    assert repeated, "the corpus must repeat some captions"
    seen = {}
    for entry in read_manifest(str(real))["shards"]:
        table = pq.read_table(real / entry["file"], columns=["caption", "image_index"])
        for caption, k in zip(table.column("caption").to_pylist(), table.column("image_index").to_pylist(), strict=True):
            seen.setdefault(caption, []).append((entry["index"], k))
    for caption in repeated:
        images = seen[" ".join(caption.split())]
        assert len({s for s, _ in images}) == 1 and sorted(k for _, k in images) == list(range(len(images)))
        assert len(images) == repeated[caption]


def test_the_manifest_names_the_sources_and_the_skipped_rows(corpus, imported, tmp_path):
    real, _ = imported
    lineage = read_manifest(str(real))["lineage"]
    tars = sorted(p for p in Path(corpus.webdataset).iterdir() if p.suffix == ".tar")
    assert [Path(s["url"]).name for s in lineage["sources"]] == [p.name for p in tars]
    for source, path in zip(lineage["sources"], tars, strict=True):
        assert source["size"] == path.stat().st_size
        assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert source["format"] == "webdataset"
    assert verify_dataset(str(real), deep=True).ok
    # the img2dataset parquet output keeps the failed download as a row: skipped and counted by reason
    parquet = read_manifest(_import([corpus.parquet], tmp_path / "p")["root"])["lineage"]["rows_skipped"]
    assert sum(v for k, v in parquet.items() if k.startswith("status_")) == corpus.failed
    assert lineage["rows_skipped"].get("empty", 0) == corpus.empty_captions


def test_n_samples_the_same_captions_as_captions_sample(corpus, tmp_path):
    summary = _import([corpus.csv], tmp_path / "r", n=40, seed=3)
    expected = sample_captions(str(corpus.csv), 40, 3, progress=False).table.column("caption_id").to_pylist()
    assert summary["captions"] == 40
    assert set(_rows(tmp_path / "r")) == set(expected)


def test_huggingface_datasets_reads_an_imported_root(imported):
    import datasets

    real, summary = imported
    files = [str(real / s["file"]) for s in read_manifest(str(real))["shards"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert len(ds) == summary["images"]
    row = ds[0]
    assert row["image"].size[0] > 0 and row["caption"] and row["source_url"].startswith("http://127.0.0.1")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "clip"])
def test_simclr_and_clip_train_on_an_imported_root(imported, tmp_path, method):
    from stablerep.config import load_config
    from stablerep.experiments.budget import Budget, matched_run
    from stablerep.stages import TrainingJob, train

    real, _ = imported
    preset = "tiny_cpu_plus" if method == "clip" else "tiny_cpu"
    base = load_config(preset, ["model.img_size=32", "data.image_size=32", "train.device=cpu", "train.steps=3",
                                "train.log_every=1"])
    run = matched_run(base, method, Budget(match="images", images_per_step=16, steps=3, augment=base.data.augment), 1)
    summary = train(TrainingJob(run=run, data=str(real), run_dir=str(tmp_path / "run"), progress=False))
    assert summary["steps"] == 3 and summary["final_loss"] > 0 and summary["checkpoint"]


@pytest.mark.integration
def test_synthesising_the_imported_captions_pairs_with_the_real_root(imported, tmp_path):
    real, summary = imported
    syn = tmp_path / "syn"
    done = _cli("synthesize", "--captions", real, "--out", syn, "--backend", "procedural", "--images-per-caption", "2",
                "--resolution", "32", "--image-size", "32", "--captions-per-shard", "100")
    assert done.returncode == 0, done.stderr[-2000:]
    paired = _cli("dataset", "pair", real, syn)
    report = json.loads(paired.stdout)
    assert paired.returncode == 0, paired.stderr
    assert report["identical"] and report["common"] == summary["captions"] == report["second_captions"]
    # a root with other captions: exit 1 and the counts both ways
    other = tmp_path / "other"
    assert _cli("captions", "sample", ROOT / "README.md", "--out", other, "--n", "5", "--format", "txt").returncode == 0
    assert _cli("synthesize", "--captions", other, "--out", other, "--backend", "procedural", "--images-per-caption",
                "1", "--resolution", "32", "--image-size", "32").returncode == 0
    differ = _cli("dataset", "pair", real, other)
    report = json.loads(differ.stdout)
    assert differ.returncode == 1 and report["only_first"] == summary["captions"] and report["only_second"] == 5
    # the real root itself refuses to be synthesised into
    into = _cli("synthesize", "--captions", real, "--out", real, "--backend", "procedural")
    assert into.returncode == 2 and "imported corpus" in into.stderr


def _files(root):
    """Every file of a root with its bytes; JSON files without their timestamps and the lease."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir() or rel.startswith("_writer_lease"):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            value = json.loads(data)
            if isinstance(value, dict):
                value.pop("created", None)
            data = json.dumps(value, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.integration
def test_a_killed_import_resumes_to_the_same_bytes(corpus, tmp_path):
    args = ["dataset", "import", corpus.webdataset, "--captions-per-shard", "8", "--workers", "2"]
    clean = _cli(*args, "--out", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "stablerep", *map(str, args), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((out / "shards").glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # in the middle of writing shards; its workers die with it
    proc.communicate(timeout=60)
    committed = len(list((out / "shards").glob("*.json")))
    planned = len(json.loads((tmp_path / "clean" / "plan.json").read_text())["bounds"])
    assert 0 < committed < planned, (committed, planned)
    assert not (out / "manifest.json").exists()
    again = _cli(*args, "--out", out)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped"] == committed
    assert _files(out) == _files(tmp_path / "clean")


def _truncated_copy(src_tar, dst_tar):
    """The tar cut in the middle of its third image."""
    with tarfile.open(src_tar) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
    cut = members[2].offset_data + members[2].size // 2
    dst_tar.write_bytes(Path(src_tar).read_bytes()[:cut])
    return members[2].name


@pytest.mark.integration
def test_bad_input_is_one_line_naming_the_file_and_commits_nothing(corpus, tmp_path):
    tars = sorted(p for p in Path(corpus.webdataset).iterdir() if p.suffix == ".tar")
    cases = tmp_path / "cases"
    cases.mkdir()
    member = _truncated_copy(tars[0], cases / "cut.tar")
    bad_image = cases / "bad.csv"
    (cases / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    ok = sorted(Path(corpus.photos).iterdir())[0]
    bad_image.write_text(f"image,caption\n{ok},a good photo\nbroken.jpg,a broken photo\n")
    nulls = cases / "nulls.csv"
    nulls.write_text(f"image,caption\n{ok},\n")
    expect = {
        "missing": ([cases / "nope.tar"], "nope.tar"),
        "truncated": ([cases / "cut.tar"], member.split("/")[-1]),
        "undecodable": ([bad_image], "broken.jpg"),
        "no usable row": ([nulls], "no usable row"),
    }
    for name, (sources, needle) in expect.items():
        out = tmp_path / name
        done = _cli("dataset", "import", *sources, "--out", out)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, (name, done.stderr)
        assert needle in lines[0], (name, lines[0])
        assert not list(out.glob("shards/*.json")) and not (out / "manifest.json").exists(), name
    skipped = _cli("dataset", "import", bad_image, "--out", tmp_path / "skipping", "--skip-bad-images")
    assert skipped.returncode == 0, skipped.stderr
    summary = json.loads(skipped.stdout)
    assert summary["images"] == 1 and summary["skipped_rows"] == {"bad_image": 1}
    assert read_manifest(str(tmp_path / "skipping"))["lineage"]["rows_skipped"] == {"bad_image": 1}


def test_an_import_from_and_into_s3_matches_the_local_one(corpus, imported, s3_server):
    """Sources on the real S3 server (listed as a brace pattern) into a root there: the same rows
    as the local import, and the lineage names each source's ETag."""
    import uuid

    import s3fs

    from tests.conftest import S3_BUCKET

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    prefix = f"{S3_BUCKET}/{uuid.uuid4().hex}"
    tars = sorted(p for p in Path(corpus.webdataset).iterdir() if p.suffix == ".tar")
    for path in tars:
        fs.put_file(str(path), f"{prefix}/corpus/{path.name}")
    pattern = f"s3://{prefix}/corpus/{{{tars[0].stem}..{tars[-1].stem}}}.tar"
    root = f"s3://{prefix}/real"
    summary = _import([pattern], root, captions_per_shard=64)
    real, local = imported
    assert summary["images"] == local["images"] and _rows(root) == _rows(real)
    assert verify_dataset(root, deep=True).ok
    sources = read_manifest(root)["lineage"]["sources"]
    assert [s["url"].rsplit("/", 1)[-1] for s in sources] == [p.name for p in tars]
    assert all(s.get("etag") and "sha256" not in s for s in sources)
