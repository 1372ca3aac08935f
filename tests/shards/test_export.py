"""`stablerep dataset export --format webdataset`, read back by clients nobody here wrote: open_clip's
own training loader (get_wds_dataset, sizes.json), webdataset's WebDataset, locally and on S3.

(Hugging Face `datasets` reading the shards directly is tested in test_independent_readers.py.)
"""

import hashlib
import importlib
import json
import uuid
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stablerep.captions import sample_captions, write_captions
from stablerep.cli import app
from stablerep.config import SynthesisConfig
from stablerep.shards import iter_images, write_manifest
from stablerep.shards.export import ExportError, export_webdataset, sample_key
from stablerep.shards.layout import SHARD_SCHEMA
from stablerep.synthesis import ProceduralBackend, procedural_captions, synthesize_dataset
from tests.helpers.datasets import make_image_bytes, write_example_dataset

N_CAPTIONS, PER_CAPTION, PER_TAR = 20, 2, 16  # 40 images -> tars of 16, 16, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A real synthetic dataset: sampled captions, the procedural backend, 3 shards of 32 px JPEGs."""
    tmp = tmp_path_factory.mktemp("export-src")
    src = tmp / "captions.txt"
    src.write_text("\n".join(procedural_captions(N_CAPTIONS, seed=3)))
    root = str(tmp / "ds")
    write_captions(root, sample_captions(str(src), N_CAPTIONS, progress=False))
    cfg = SynthesisConfig(images_per_caption=PER_CAPTION, captions_per_shard=7, resolution=32, image_size=32,
                          batch_size=8)
    result = synthesize_dataset(root, root, cfg, ProceduralBackend(32), progress=False)
    assert result.manifest["totals"]["images"] == N_CAPTIONS * PER_CAPTION
    return root


@pytest.fixture(scope="module")
def rows(dataset):
    return {sample_key(r["caption_id"], r["image_index"]): r for r in iter_images(dataset)}


@pytest.fixture(scope="module")
def exported(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "wds"
    return export_webdataset(dataset, str(out), samples_per_tar=PER_TAR, progress=False)


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}


def test_layout_sizes_and_summary(exported, dataset):
    out = Path(exported["out"])
    assert sorted(p.name for p in out.iterdir()) == ["000000.tar", "000001.tar", "000002.tar",
                                                     "export.json", "sizes.json"]
    # open_clip's get_dataset_size: json.load(dirname(first shard)/sizes.json)[basename(shard)]
    assert json.loads((out / "sizes.json").read_text()) == {"000000.tar": 16, "000001.tar": 16, "000002.tar": 8}
    summary = json.loads((out / "export.json").read_text())
    manifest = json.loads((Path(dataset) / "manifest.json").read_text())
    assert summary["config_hash"] == manifest["config_hash"] and summary["totals"] == manifest["totals"]
    assert (summary["samples"], summary["tars"], summary["samples_per_tar"]) == (40, 3, PER_TAR)
    assert summary["source"] == dataset and summary["pattern"] == "{000000..000002}.tar"
    assert exported["train_data"] == f"{out}/{{000000..000002}}.tar"


def test_webdataset_reads_every_sample_as_stored(exported, rows):
    import webdataset as wds

    samples = list(wds.WebDataset(exported["train_data"], shardshuffle=False))
    assert len(samples) == len(rows) == 40
    assert [s["__key__"] for s in samples] == list(rows)  # manifest order, keys unique
    for sample in samples:
        row = rows[sample["__key__"]]
        assert {k for k in sample if not k.startswith("__")} == {"jpg", "txt", "json"}
        assert sample["jpg"] == row["image"]["bytes"]  # never re-encoded
        assert sample["txt"].decode("utf-8") == row["caption"]
        meta = json.loads(sample["json"])
        assert meta == {k: row[k] for k in ("caption_id", "image_index", "seed", "width", "height")}


def test_open_clip_training_loader_reads_sizes_json_and_every_sample(exported, rows, monkeypatch):
    from importlib.metadata import version

    from packaging.version import Version

    # open_clip_torch[training] pins webdataset<=0.2.86: from 0.2.96 on, webdataset ends each tar
    # with an EOF marker that open_clip_train's group_by_keys_nothrow fails on (KeyError 'fname',
    # mlfoundations/open_clip#935, webdataset/webdataset#384) whatever the tars hold
    assert Version(version("webdataset")) <= Version("0.2.86"), "install the test extra (webdataset<=0.2.86)"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import open_clip
    import torch
    from open_clip_train.data import get_dataset_size, get_wds_dataset

    tokenizer = open_clip.get_tokenizer("RN50")  # SimpleTokenizer: its BPE ships in the wheel
    preprocess = open_clip.image_transform(32, is_train=True)
    assert get_dataset_size(exported["train_data"]) == (40, 3)
    args = Namespace(train_data=exported["train_data"], val_data=None, train_num_samples=None,
                     dataset_resampled=False, train_data_upsampling_factors=None, seed=0, batch_size=8,
                     workers=0, world_size=1)
    info = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    loader = info.dataloader
    assert (loader.num_samples, loader.num_batches) == (40, 5)  # from sizes.json
    images, texts = [], []
    for batch_images, batch_texts in loader:
        assert batch_images.shape[1:] == (3, 32, 32) and batch_texts.shape[1:] == (77,)
        images.append(batch_images)
        texts.extend(tuple(t.tolist()) for t in batch_texts)
    assert torch.cat(images).shape[0] == 40 and torch.isfinite(torch.cat(images)).all()
    expected = Counter(tuple(t.tolist()) for t in tokenizer([r["caption"] for r in rows.values()]))
    assert Counter(texts) == expected  # every sample once, shuffled


def test_re_export_is_byte_identical_and_a_redo_replaces_the_old_tars(exported, dataset, tmp_path):
    again = export_webdataset(dataset, str(tmp_path / "again"), samples_per_tar=PER_TAR, progress=False)
    assert _files(again["out"]) == _files(exported["out"])
    # the same dataset again at the same OUT with bigger tars: redone, the stale tars removed
    redo = export_webdataset(dataset, str(tmp_path / "again"), samples_per_tar=40, progress=False)
    assert redo["tars"] == 1
    assert sorted(_files(redo["out"])) == ["000000.tar", "export.json", "sizes.json"]
    assert json.loads((tmp_path / "again" / "sizes.json").read_text()) == {"000000.tar": 40}


def test_an_interrupted_redo_looks_unfinished_and_the_next_run_completes(dataset, exported, tmp_path, monkeypatch):
    from stablerep import storage

    out = tmp_path / "wds"
    export_webdataset(dataset, str(out), samples_per_tar=PER_TAR, progress=False)
    real_write, written = storage.write_bytes, []

    def dies_on_the_second_tar(url, data):
        if url.endswith(".tar") and len(written) == 1:
            raise KeyboardInterrupt  # a kill mid-export
        written.append(url)
        real_write(url, data)

    monkeypatch.setattr(storage, "write_bytes", dies_on_the_second_tar)
    with pytest.raises(KeyboardInterrupt):
        export_webdataset(dataset, str(out), samples_per_tar=PER_TAR, progress=False)
    assert not (out / "export.json").exists() and not (out / "sizes.json").exists()
    monkeypatch.setattr(storage, "write_bytes", real_write)
    export_webdataset(dataset, str(out), samples_per_tar=PER_TAR, progress=False)
    assert _files(out) == _files(exported["out"])


def test_imported_rows_keep_png_bytes_and_source_columns(tmp_path):
    """An imported corpus's shard: PNG bytes, no seed, source_key / source_url columns."""
    import webdataset as wds

    root = tmp_path / "imported"
    (root / "shards").mkdir(parents=True)
    images = [make_image_bytes(i, 16, fmt="PNG") for i in range(3)]
    schema = pa.schema([*SHARD_SCHEMA, pa.field("source_key", pa.string()), pa.field("source_url", pa.string())])
    table = pa.table({
        "caption_id": [11, 12, 13], "caption": ["a real photo", "ünïcode caption", "third"],
        "image_index": [0, 0, 0], "seed": [None, None, None],
        "image": [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)],
        "width": [16] * 3, "height": [16] * 3,
        "source_key": ["000000001", "000000002", None], "source_url": [f"http://x/{i}.png" for i in range(3)],
    }, schema=schema)
    pq.write_table(table, root / "shards" / "000000.parquet")
    blob = (root / "shards" / "000000.parquet").read_bytes()
    mark = {"format": 1, "index": 0, "file": "shards/000000.parquet", "rows": 3, "captions": 3, "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(), "row_groups": [{"rows": 3, "captions": 3}],
            "config_hash": "import"}
    (root / "shards" / "000000.json").write_text(json.dumps(mark))
    write_manifest(str(root), [0], {"import": True}, "import")
    summary = export_webdataset(str(root), str(tmp_path / "wds"), samples_per_tar=2, progress=False)
    samples = list(wds.WebDataset(summary["train_data"], shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:016x}_000" for i in (11, 12, 13)]
    assert [s["png"] for s in samples] == images
    assert samples[1]["txt"].decode("utf-8") == "ünïcode caption"
    meta = [json.loads(s["json"]) for s in samples]
    assert meta[0] == {"caption_id": 11, "image_index": 0, "seed": None, "width": 16, "height": 16,
                       "source_key": "000000001", "source_url": "http://x/0.png"}
    assert meta[2]["source_key"] is None


def test_refusals(dataset, exported, tmp_path):
    with pytest.raises(ExportError, match="--samples-per-tar must be an integer >= 1"):
        export_webdataset(dataset, str(tmp_path / "x"), samples_per_tar=0)
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        export_webdataset(str(tmp_path / "nothing"), str(tmp_path / "x"))
    other = str(tmp_path / "other")
    write_example_dataset(other, n_captions=2, images_per_caption=1, captions_per_shard=2, size=8)
    before = _files(exported["out"])
    with pytest.raises(ExportError, match="holds an export of another dataset"):
        export_webdataset(other, exported["out"], progress=False)
    assert _files(exported["out"]) == before  # left as it was
    with pytest.raises(ExportError, match="not a webdataset export"):
        export_webdataset(dataset, other, progress=False)  # a dataset root is no export directory
    assert not (tmp_path / "x").exists()


def test_cli_export_and_its_one_line_errors(dataset, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["dataset", "export", dataset, "--format", "webdataset", "--out",
                             str(tmp_path / "wds"), "--samples-per-tar", "25"])
    assert ok.exit_code == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert (summary["samples"], summary["tars"]) == (40, 2)
    assert json.loads((tmp_path / "wds" / "sizes.json").read_text()) == {"000000.tar": 25, "000001.tar": 15}
    for args, message in [
        ([dataset, "--out", str(tmp_path / "a"), "--samples-per-tar", "0"], "--samples-per-tar must be"),
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "b")], "no dataset at"),
        ([dataset, "--out", str(tmp_path / "c"), "--format", "tfrecord"], "'tfrecord' is not supported"),
    ]:
        bad = runner.invoke(app, ["dataset", "export", *args])
        lines = bad.stderr.strip().splitlines()
        assert bad.exit_code == 2 and len(lines) == 1, bad.stderr
        assert lines[0].startswith("error: ") and message in lines[0], bad.stderr
        assert not bad.stdout
    assert not any((tmp_path / name).exists() for name in "abc")


def test_export_to_s3_read_back_by_webdataset_through_fsspec(s3_server, dataset, exported, monkeypatch):
    import fsspec
    import webdataset as wds

    from tests.conftest import S3_BUCKET

    out = f"s3://{S3_BUCKET}/{uuid.uuid4().hex}/wds"
    summary = export_webdataset(dataset, out, samples_per_tar=PER_TAR, progress=False)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    stored = {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.ls(out.removeprefix("s3://"), detail=False)}
    assert stored == _files(exported["out"])  # the same bytes as the local export
    # webdataset opens URLs through its gopen scheme table; s3 goes through fsspec here
    gopen = importlib.import_module("webdataset.gopen")  # (webdataset 1.0 shadows it with a function)
    monkeypatch.setitem(gopen.gopen_schemes, "s3", lambda url, mode="rb", bufsize=8192, **kw:
                        fsspec.open(url, mode).open())
    samples = list(wds.WebDataset(summary["train_data"], shardshuffle=False))
    assert len(samples) == 40 and all(s["jpg"][:2] == b"\xff\xd8" for s in samples)
    assert export_webdataset(dataset, out, samples_per_tar=PER_TAR, progress=False)["tars"] == 3  # redone
