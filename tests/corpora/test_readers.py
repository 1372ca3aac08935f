"""Readers of real corpora (stablerep.corpora): img2dataset's own webdataset and parquet output of
real photographs, a Hugging Face `datasets` Parquet and a CSV of the same pairs; the webdataset
grouping rule against webdataset's own reader; and bad input as one error naming the file."""

import hashlib
import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stablerep.corpora import (
    CorpusSourceError,
    check_image,
    iter_samples,
    read_images,
    resolve_inputs,
    sniff_ext,
)
from stablerep.corpora.readers import base_plus_ext
from tests.helpers.corpus import REPEATED


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def samples_of(inputs, **kwargs):
    return [(inp, s) for inp in inputs for s in iter_samples(inp, **kwargs)]


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def wds_samples(path: Path) -> list[dict]:
    """webdataset's own grouping of a tar into samples."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    with open(path, "rb") as f:
        return list(group_by_keys(tar_file_expander([{"url": str(path), "stream": f}])))


# -- img2dataset's outputs (the session corpus) -----------------------------------------------
def test_img2dataset_webdataset_gives_every_downloaded_pair_with_its_bytes(corpus):
    inputs = resolve_inputs([str(corpus.webdataset)])
    tars = sorted(p.name for p in corpus.webdataset.iterdir() if p.suffix == ".tar")
    assert len(tars) == 4 and [Path(i.url).name for i in inputs] == tars  # not the metadata parquets
    assert {i.format for i in inputs} == {"webdataset"} and all(i.etag is None for i in inputs)
    assert [i.size for i in inputs] == [(corpus.webdataset / t).stat().st_size for t in tars]
    got = samples_of(inputs)
    assert len(got) == len(corpus.downloaded) == 240  # the 404 is left out of the tars
    assert corpus.repeated == REPEATED and corpus.empty_captions == 2 and len(corpus.ok_pairs) == 238
    for (_, s), (name, caption) in zip(got, corpus.downloaded, strict=True):
        assert s.caption == caption and s.ext == "jpg" and s.skip is None
        assert sha(s.image) == corpus.sha256(name) == s.source["sha256"]
        assert s.source["url"] == f"{corpus.base_url}/{name}" and len(s.source["key"]) == 7
        assert s.where == f"member {s.source['key']}.jpg"
        assert (s.source["width"], s.source["height"]) == Image.open(corpus.photos / name).size
    assert [sum(i is inp for i, _ in got) for inp in inputs] == [64, 63, 64, 49]  # the 404 was in shard 1
    assert [s.position for inp, s in got if inp is inputs[1]] == list(range(63))
    # the locators find the same bytes again, in any order, without a scan
    for inp in inputs:
        samples = list(iter_samples(inp, with_images=False))
        assert all(s.image is None and s.caption is not None for s in samples)
        wanted = [s.locator for s in samples][::-3]
        expected = {s.locator: s.image for i, s in got if i is inp}
        assert read_images(inp, wanted) == [expected[loc] for loc in wanted]


def test_our_grouping_matches_webdataset_on_img2dataset_tars(corpus):
    tar = sorted(corpus.webdataset.glob("*.tar"))[2]
    ours = list(iter_samples(resolve_inputs([str(tar)])[0]))
    theirs = wds_samples(tar)
    assert [s.source["key"] for s in ours] == [t["__key__"] for t in theirs]
    assert [s.image for s in ours] == [t["jpg"] for t in theirs]
    assert [s.caption for s in ours] == [t["txt"].decode() for t in theirs]


def test_img2dataset_parquet_keeps_the_failed_row_with_its_status(corpus):
    inputs = resolve_inputs([str(corpus.parquet)])
    assert [Path(i.url).name for i in inputs] == [f"0000{k}.parquet" for k in range(4)]
    assert {i.format for i in inputs} == {"img2dataset-parquet"}
    got = samples_of(inputs)
    assert len(got) == len(corpus.pairs) == 241
    failed = [(inp, s) for inp, s in got if s.skip]
    assert len(failed) == corpus.failed == 1
    inp, bad = failed[0]
    assert bad.skip == "status_failed_to_download" and bad.image is None and bad.ext is None
    assert bad.source["url"].endswith(corpus.missing[0]) and bad.where == "row 37" and Path(inp.url).name == "00001.parquet"
    ok = [s for _, s in got if not s.skip]
    assert [(s.source["url"].rsplit("/", 1)[1], s.caption) for s in ok] == corpus.downloaded
    assert all(sha(s.image) == corpus.sha256(s.source["url"].rsplit("/", 1)[1]) for s in ok)
    assert all(s.ext == "jpg" and s.locator == str(s.position) for s in ok)
    rows = [s.locator for i, s in got if i is inputs[1] and not s.skip][::-5]
    assert read_images(inputs[1], rows) == [s.image for i, s in got if i is inputs[1] and s.locator in rows][::-1]


def test_hf_parquet_and_csv_carry_the_same_pairs(corpus):
    (hf,) = resolve_inputs([str(corpus.hf_parquet)])
    (table,) = resolve_inputs([str(corpus.csv)])
    assert (hf.format, table.format) == ("hf-parquet", "csv")
    expected = [(corpus.sha256(name), caption) for name, caption in corpus.downloaded]
    for inp in (hf, table):
        samples = list(iter_samples(inp))
        assert [(sha(s.image), s.caption) for s in samples] == expected, inp.format
        assert all(s.ext == "jpg" and s.skip is None for s in samples)
        picks = [s.locator for s in samples[::7]]
        assert read_images(inp, picks) == [s.image for s in samples[::7]]
    assert list(iter_samples(table))[5].locator == str(corpus.photos / corpus.downloaded[5][0])


def test_resolve_brace_glob_file_and_auto_detection(corpus):
    web = str(corpus.webdataset)
    all_tars = resolve_inputs([web])
    assert resolve_inputs([f"{web}/{{00000..00003}}.tar"]) == all_tars
    assert resolve_inputs([f"{web}/*.tar", f"{web}/00001.tar"]) == all_tars  # de-duplicated, in order
    assert [i.url for i in resolve_inputs([f"{web}/00002.tar", f"{web}/{{00000,00001}}.tar"])] == \
        [all_tars[2].url, all_tars[0].url, all_tars[1].url]
    mixed = resolve_inputs([str(corpus.csv), str(corpus.hf_parquet), f"{corpus.parquet}/00000.parquet"])
    assert [i.format for i in mixed] == ["csv", "hf-parquet", "img2dataset-parquet"]
    assert mixed[1].lineage() == {"url": str(corpus.hf_parquet), "format": "hf-parquet",
                                  "size": corpus.hf_parquet.stat().st_size}
    with pytest.raises(CorpusSourceError, match=r"00000\.parquet: no image column.*columns: caption, url, key"):
        resolve_inputs([f"{web}/00000.parquet"])  # img2dataset's metadata beside a tar holds no image
    with pytest.raises(CorpusSourceError, match="matches no corpus file"):
        resolve_inputs([f"{web}/*.zip"])


def test_s3_reads_a_tar_and_a_parquet_from_the_store(corpus, s3_server):
    import s3fs

    from tests.conftest import S3_BUCKET

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    prefix = f"{S3_BUCKET}/{uuid.uuid4().hex}"
    for name in ("00001.tar", "00001.parquet", "00001_stats.json"):
        fs.put_file(str(corpus.webdataset / name), f"{prefix}/web/{name}")
    fs.put_file(str(corpus.parquet / "00001.parquet"), f"{prefix}/pq/00001.parquet")
    (tar,) = resolve_inputs([f"s3://{prefix}/web/"])
    (table,) = resolve_inputs([f"s3://{prefix}/pq/{{00001..00001}}.parquet"])
    assert tar.url == f"s3://{prefix}/web/00001.tar" and tar.format == "webdataset" and tar.etag
    assert table.format == "img2dataset-parquet" and table.size == (corpus.parquet / "00001.parquet").stat().st_size
    for remote, local in ((tar, f"{corpus.webdataset}/00001.tar"), (table, f"{corpus.parquet}/00001.parquet")):
        here = list(iter_samples(resolve_inputs([local])[0]))
        there = list(iter_samples(remote))
        assert [(s.caption, s.image, s.locator, s.skip) for s in there] == [(s.caption, s.image, s.locator, s.skip) for s in here]
        picks = [s.locator for s in here if s.image][:5]
        assert read_images(remote, picks) == [s.image for s in here if s.image][:5]


# -- the webdataset rule and bad tars (hand-made, no img2dataset) ----------------------------
def test_member_names_split_like_webdataset():
    assert base_plus_ext("dir/000000012.jpg") == ("dir/000000012", "jpg")
    assert base_plus_ext("a.b.jpg") == ("a", "b.jpg")
    assert base_plus_ext("d.x/k.seg.png") == ("d.x/k", "seg.png")
    assert base_plus_ext("README") == (None, None)


def _odd_tar(path: Path, photos) -> dict[str, bytes]:
    folder, pairs = photos
    data = {name: (folder / name).read_bytes() for name, _ in pairs}
    names = list(data)
    with tarfile.open(path, "w") as tar:
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        add_member(tar, "__meta__", b"{}")
        add_member(tar, "dir/000001.JPG", data[names[0]])
        add_member(tar, "dir/000001.txt", b"first caption\n")
        add_member(tar, "dir/000001.json", b'{"key": "k1", "url": "http://x/1.jpg", "width": 3, "junk": [1]}')
        add_member(tar, "dir/000002.txt", "caption without an image, caf\u00e9".encode())
        add_member(tar, "000003.png", data[names[1]])  # an image without a caption
        add_member(tar, "a.b.jpg", data[names[2]])  # key "a", extension "b.jpg": not an image
        add_member(tar, "a.txt", b"double extension")
        add_member(tar, "NOEXT", b"skipped")
        add_member(tar, "000004.webp", data[names[3]])
        add_member(tar, "000004.jpg", data[names[4]])  # the first image member wins
        add_member(tar, "000004.txt", b"two images")
    return data


def test_hand_made_tar_follows_webdataset_grouping(tmp_path, photos):
    path = tmp_path / "odd.tar"
    data = _odd_tar(path, photos)
    names = list(data)
    (inp,) = resolve_inputs([str(path)])
    ours = list(iter_samples(inp))
    theirs = wds_samples(path)
    assert [s.source["key"] for s in ours] == ["k1", "dir/000002", "000003", "a", "000004"]
    assert [t["__key__"] for t in theirs] == ["dir/000001", "dir/000002", "000003", "a", "000004"]
    assert [s.caption for s in ours] == ["first caption", "caption without an image, caf\u00e9", None,
                                         "double extension", "two images"]
    assert [s.ext for s in ours] == ["jpg", None, "png", None, "webp"]
    assert [s.image for s in ours] == [data[names[0]], None, data[names[1]], None, data[names[3]]]
    assert [s.image for s in ours] == [next((t[k] for k in t if k in ("jpg", "png", "webp")), None) for t in theirs]
    assert ours[0].source == {"key": "k1", "url": "http://x/1.jpg", "width": 3}
    assert ours[0].where == "member dir/000001.JPG" and ours[1].where == "member dir/000002.txt"
    assert [s.position for s in ours] == list(range(5))
    assert read_images(inp, [ours[4].locator, ours[0].locator]) == [data[names[3]], data[names[0]]]


def test_duplicate_member_in_a_sample_is_an_error(tmp_path, photos):
    path = tmp_path / "dup.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "k.txt", b"one")
        add_member(tar, "k.txt", b"two")
    with pytest.raises(CorpusSourceError, match=r"dup\.tar: member k\.txt: a second \.txt member"):
        list(iter_samples(resolve_inputs([str(path)])[0]))


def _a_tar(path: Path, photos, n: int = 4) -> list[tarfile.TarInfo]:
    folder, pairs = photos
    with tarfile.open(path, "w") as tar:
        for i, (name, caption) in enumerate(pairs[:n]):
            add_member(tar, f"{i:09d}.jpg", (folder / name).read_bytes())
            add_member(tar, f"{i:09d}.txt", caption.encode())
    with tarfile.open(path) as tar:
        return tar.getmembers()


@pytest.mark.parametrize("cut", ["image data", "header", "member boundary", "padding", "garbage header"])
def test_a_broken_tar_is_one_error_naming_the_file_and_member(tmp_path, photos, cut):
    good = tmp_path / "good.tar"
    members = _a_tar(good, photos)
    blob = good.read_bytes()
    third = members[4]  # 000000002.jpg
    bad = tmp_path / "bad.tar"
    if cut == "image data":
        bad.write_bytes(blob[:third.offset_data + third.size // 2])
        member = third.name
    elif cut == "header":
        bad.write_bytes(blob[:third.offset + 300])
        member = members[3].name
    elif cut == "member boundary":
        bad.write_bytes(blob[:third.offset])
        member = members[3].name
    elif cut == "padding":
        bad.write_bytes(blob[:third.offset_data + third.size + 1])
        member = third.name
    else:
        bad.write_bytes(blob[:third.offset] + os.urandom(512) + blob[third.offset + 512:])
        member = members[3].name
    (inp,) = resolve_inputs([str(bad)])
    with pytest.raises(CorpusSourceError) as err:
        list(iter_samples(inp, with_images=cut != "image data"))
    message = str(err.value)
    assert message.startswith(f"{bad}: member {member}: truncated tar") and "\n" not in message
    assert len(list(iter_samples(resolve_inputs([str(good)])[0]))) == 4


def test_not_a_tar_and_an_empty_tar(tmp_path):
    (tmp_path / "junk.tar").write_bytes(os.urandom(3000))
    with pytest.raises(CorpusSourceError, match=r"junk\.tar: not a readable tar file"):
        list(iter_samples(resolve_inputs([str(tmp_path / "junk.tar")])[0]))
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    assert list(iter_samples(resolve_inputs([str(tmp_path / "empty.tar")])[0])) == []


# -- Hugging Face Parquet and CSV (hand-made) --------------------------------------------------
def test_hf_parquet_saved_with_paths_only_is_an_error_naming_the_row(tmp_path, photos):
    import datasets

    folder, pairs = photos
    ds = datasets.Dataset.from_dict({"image": [str(folder / n) for n, _ in pairs[:3]],
                                     "caption": [c for _, c in pairs[:3]]}).cast_column("image", datasets.Image())
    ds.to_parquet(str(tmp_path / "paths.parquet"))  # no embed_table_storage: {bytes: null, path}
    (inp,) = resolve_inputs([str(tmp_path / "paths.parquet")])
    assert inp.format == "hf-parquet"
    with pytest.raises(CorpusSourceError, match=r"paths\.parquet: row 1: image bytes not embedded .*embed_table_storage"):
        list(iter_samples(inp))


def test_hf_parquet_image_column_and_ext_from_path_or_bytes(tmp_path, photos):
    folder, pairs = photos
    jpg = (folder / pairs[0][0]).read_bytes()
    png = io.BytesIO()
    Image.open(folder / pairs[1][0]).save(png, format="PNG")
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"text": ["one", None, "three"],
                      "picture": pa.array([{"bytes": jpg, "path": "x/one.JPEG"}, {"bytes": png.getvalue(), "path": None},
                                           None], type=struct)})
    pq.write_table(table, tmp_path / "hf.parquet", row_group_size=2)
    (inp,) = resolve_inputs([str(tmp_path / "hf.parquet")], image_column="picture", caption_column="text")
    got = list(iter_samples(inp, image_column="picture", caption_column="text"))
    assert [(s.caption, s.ext, s.where) for s in got] == [("one", "jpg", "row 1"), (None, "png", "row 2"),
                                                         ("three", None, "row 3")]
    assert read_images(inp, ["1", "0"], image_column="picture") == [png.getvalue(), jpg]
    with pytest.raises(CorpusSourceError, match=r"hf\.parquet: no caption column 'caption' \(columns: text, picture\)"):
        resolve_inputs([str(tmp_path / "hf.parquet")])


def test_csv_and_tsv_paths_relative_absolute_and_missing(tmp_path, photos):
    folder, pairs = photos
    sub = tmp_path / "lists"
    sub.mkdir()
    shutil.copy(folder / pairs[0][0], sub / "local.jpg")
    rows = [("local.jpg", "beside the csv"), (str(folder / pairs[1][0]), "absolute, with \"quotes\", and commas"),
            (f"file://{folder / pairs[2][0]}", "a file URL"), ("", "no image")]
    (sub / "a.csv").write_text("image,caption\n" + "".join(
        f'{p},"{c.replace(chr(34), chr(34) * 2)}"\n' for p, c in rows), encoding="utf-8")
    (sub / "b.tsv").write_text("caption\tpath\n" + "".join(f"{c}\t{p}\n" for p, c in rows[:1]), encoding="utf-8")
    (inp,) = resolve_inputs([str(sub / "a.csv")])
    got = list(iter_samples(inp))
    assert [s.caption for s in got] == [c for _, c in rows]
    expected = [(sub / "local.jpg").read_bytes(), (folder / pairs[1][0]).read_bytes(), (folder / pairs[2][0]).read_bytes()]
    assert [s.image for s in got[:3]] == expected and got[3].image is None and got[3].ext is None
    assert got[0].locator == str(sub / "local.jpg") and got[0].where == "row 1: image local.jpg"
    assert read_images(inp, [got[2].locator, got[0].locator]) == [expected[2], expected[0]]
    (tsv,) = resolve_inputs([str(sub / "b.tsv")], image_column="path")
    assert tsv.format == "tsv" and [s.image for s in iter_samples(tsv, image_column="path")] == expected[:1]
    with pytest.raises(CorpusSourceError, match=r"b\.tsv: no image column 'image' in the header \(columns: caption, path\)"):
        resolve_inputs([str(sub / "b.tsv")])
    (sub / "missing.csv").write_text("image,caption\nlocal.jpg,ok\ngone.jpg,a photo that is gone\n")
    (missing,) = resolve_inputs([str(sub / "missing.csv")])
    with pytest.raises(CorpusSourceError, match=rf"missing\.csv: row 2: image {sub}/gone\.jpg not found"):
        list(iter_samples(missing))
    assert [s.caption for s in iter_samples(missing, with_images=False)] == ["ok", "a photo that is gone"]


# -- resolve_inputs errors ---------------------------------------------------------------------
def test_resolve_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    (tmp_path / "notes" / ".hidden.tar").write_bytes(b"")
    (tmp_path / "notes" / "00000_stats.json").write_text("{}")
    pq.write_table(pa.table({"caption": ["a"], "url": ["u"]}), tmp_path / "captions.parquet")
    (tmp_path / "x.zip").write_bytes(b"PK")
    cases = {
        str(tmp_path / "nope.tar"): "nope.tar: no such file or folder",
        str(tmp_path / "empty"): "empty: the folder holds no corpus file",
        str(tmp_path / "notes"): "notes: the folder holds no corpus file",
        str(tmp_path / "*.tar"): r"\*\.tar: the pattern matches no corpus file",
        str(tmp_path / "shard-{0..1}.tar"): "shard-0.tar: no such file or folder",
        str(tmp_path / "captions.parquet"): r"captions\.parquet: no image column.*columns: caption, url\)",
        str(tmp_path / "x.zip"): r"x\.zip: cannot tell the corpus format",
    }
    for source, needle in cases.items():
        with pytest.raises(CorpusSourceError, match=needle):
            resolve_inputs([source])
    with pytest.raises(CorpusSourceError, match="unknown corpus format 'zip'"):
        resolve_inputs([str(tmp_path / "x.zip")], fmt="zip")


def test_a_folder_of_parquets_and_of_csvs(tmp_path, photos):
    folder, pairs = photos
    jpg = (folder / pairs[0][0]).read_bytes()
    for name in ("b", "a"):
        pq.write_table(pa.table({"caption": [name], "jpg": [jpg], "status": ["success"]}), tmp_path / f"{name}.parquet")
    (tmp_path / "c.csv").write_text("image,caption\n")
    got = resolve_inputs([str(tmp_path)])
    assert [Path(i.url).name for i in got] == ["a.parquet", "b.parquet"]
    assert [Path(i.url).name for i in resolve_inputs([str(tmp_path)], fmt="csv")] == ["c.csv"]
    assert [s.caption for s in iter_samples(got[0])] == ["a"]


# -- image checks ------------------------------------------------------------------------------
def test_check_image_catches_truncated_random_and_empty_bytes(photos):
    folder, pairs = photos
    jpg = (folder / pairs[0][0]).read_bytes()
    size = Image.open(io.BytesIO(jpg)).size
    encoded = {}
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        Image.open(io.BytesIO(jpg)).save(buf, format=fmt)
        encoded[fmt] = buf.getvalue()
    assert check_image(jpg, "w") == size == check_image(jpg, "w", full_decode=True)
    assert check_image(jpg + b"\x00" * 7, "w") == size  # zero padding after the end marker
    assert check_image(jpg + b"trailing bytes", "w") == size  # legal trailing data: a full decode decides
    assert check_image(encoded["PNG"], "w") == check_image(encoded["WEBP"], "w") == size
    assert [sniff_ext(jpg), sniff_ext(encoded["PNG"]), sniff_ext(encoded["WEBP"]), sniff_ext(b"xx")] == \
        ["jpg", "png", "webp", None]
    bad = {"half jpeg": (jpg[: len(jpg) // 2], "truncated image"),
           "half png": (encoded["PNG"][: len(encoded["PNG"]) // 2], "truncated image"),
           "half webp": (encoded["WEBP"][: len(encoded["WEBP"]) // 2], "truncated image"),
           "random": (os.urandom(2048), "undecodable image"),
           "jpeg magic then junk": (b"\xff\xd8\xff\xe0 not a jpeg at all", "undecodable image"),
           "empty": (b"", "undecodable image")}
    for name, (data, kind) in bad.items():
        with pytest.raises(CorpusSourceError, match=rf"^x\.tar: member 7\.jpg: {kind}") as err:
            check_image(data, "x.tar: member 7.jpg")
        assert "\n" not in str(err.value), name
