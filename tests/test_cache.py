"""The resize cache: exact area averages of the source, resumable, rebuilt only on change."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from monai_cxr.data import cache as cache_mod
from monai_cxr.data.cache import build_cache, open_cache
from monai_cxr.data.images import FileImages, make_square
from monai_cxr.data.resize import area_resize
from monai_cxr.errors import CxrError


def _images(folder, n=10, size=(40, 40), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        if mode == "I;16":
            img = Image.fromarray(rng.integers(100, 4000, size[::-1], dtype=np.uint16))
        else:
            shape = size[::-1] + ((3,) if mode == "RGB" else ())
            img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
        paths.append(str(folder / f"{i:03d}.png"))
        img.save(paths[-1])
    return pd.DataFrame({"image_id": [f"{i:03d}.png" for i in range(n)], "path": paths})


def test_values_equal_a_direct_area_resize_of_the_source(tmp_path):
    index = _images(tmp_path / "img", n=5, size=(40, 40))
    build_cache(index, tmp_path / "cache", [8, 20, 40], workers=1, progress=False)
    for r in (8, 20, 40):
        cached = open_cache(tmp_path / "cache", r)
        assert cached.shape == (5, r, r) and cached.dtype == np.uint8
        for row, path in enumerate(index["path"]):
            source = np.asarray(Image.open(path))
            # 40 -> 8 and 20 are 5x5 and 2x2 block means (exact in float), rounded half to even
            f = 40 // r
            direct = np.rint(source.astype(float).reshape(r, f, r, f).mean(axis=(1, 3)))
            np.testing.assert_array_equal(cached[row], direct)


def test_parallel_workers_give_the_same_bytes(tmp_path):
    index = _images(tmp_path / "img", n=150)
    build_cache(index, tmp_path / "one", [16], workers=1, progress=False)
    build_cache(index, tmp_path / "two", [16], workers=2, progress=False)
    np.testing.assert_array_equal(open_cache(tmp_path / "one", 16), open_cache(tmp_path / "two", 16))


@pytest.mark.parametrize("policy", ["pad", "crop"])
def test_non_square_sources(tmp_path, policy):
    img = Image.fromarray(np.full((30, 60), 200, dtype=np.uint8))
    square = np.asarray(make_square(img, policy))
    if policy == "pad":
        assert square.shape == (60, 60)
        assert (square[:15] == 0).all() and (square[15:45] == 200).all() and (square[45:] == 0).all()
    else:
        assert square.shape == (30, 30) and (square == 200).all()


def test_16_bit_and_rgb_sources_become_8_bit(tmp_path):
    for mode in ("I;16", "RGB"):
        index = _images(tmp_path / mode.replace(";", ""), n=2, mode=mode)
        build_cache(index, tmp_path / f"c{mode[:1]}", [40], workers=1, progress=False)
        cached = open_cache(tmp_path / f"c{mode[:1]}", 40)
        assert cached.dtype == np.uint8
        if mode == "I;16":  # min-max scaled per image to the full 8-bit range
            assert cached[0].min() == 0 and cached[0].max() == 255
        else:
            rgb = np.asarray(Image.open(index["path"][0]).convert("L"))
            np.testing.assert_array_equal(cached[0], rgb)


def test_not_rebuilt_when_unchanged_and_rebuilt_when_inputs_change(tmp_path, log_lines):
    index = _images(tmp_path / "img", n=4)
    build_cache(index, tmp_path / "cache", [10, 20], workers=1, progress=False)
    stamp = (tmp_path / "cache" / "r10.npy").stat().st_mtime_ns
    messages = log_lines
    build_cache(index, tmp_path / "cache", [10, 20], workers=1, progress=False)
    assert "up to date" in messages[-1]
    assert (tmp_path / "cache" / "r10.npy").stat().st_mtime_ns == stamp
    # a new resolution is added without redoing the old ones
    build_cache(index, tmp_path / "cache", [10, 20, 30], workers=1, progress=False)
    assert (tmp_path / "cache" / "r10.npy").stat().st_mtime_ns == stamp
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(index["path"][1])
    build_cache(index, tmp_path / "cache", [10], workers=1, progress=False)
    assert "rebuilding" in messages[-2]
    assert open_cache(tmp_path / "cache", 10)[1].max() == 0
    with pytest.raises(CxrError, match="resolution 20 is not in the cache"):
        open_cache(tmp_path / "cache", 20)


def test_a_killed_build_resumes_without_redoing_finished_chunks(tmp_path, monkeypatch, log_lines):
    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    index = _images(tmp_path / "img", n=20)
    good = Image.open(index["path"][13]).copy()
    (tmp_path / "img" / "013.png").write_bytes(b"not a png")
    with pytest.raises(CxrError, match="cannot read image .*013.png"):
        build_cache(index, tmp_path / "cache", [8, 16], workers=1, progress=False)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["complete"] == [] and manifest["building"]["done"] == [0, 1, 2]
    good.save(index["path"][13])
    # the repaired file changes the fingerprint, so restore the recorded one: a resume, not a rebuild
    manifest["fingerprint"] = cache_mod.fingerprint(index, "pad", FileImages(index["path"], "pad"))
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    built = []
    real = cache_mod._build_chunk
    monkeypatch.setattr(cache_mod, "_build_chunk", lambda job: built.append(job[0]) or real(job))
    messages = log_lines
    messages.clear()
    build_cache(index, tmp_path / "cache", [8, 16], workers=1, progress=False)
    assert sorted(built) == [3, 4] and "resuming" in messages[0]
    for row, path in enumerate(index["path"]):
        direct = area_resize(np.asarray(Image.open(path)), [8])[8]
        np.testing.assert_array_equal(open_cache(tmp_path / "cache", 8)[row], direct)


def test_too_large_resolution_names_the_source_size(tmp_path):
    index = _images(tmp_path / "img", n=2, size=(40, 30))
    with pytest.raises(CxrError, match=r"resolution 64 exceeds the source size .*\(40 px"):
        build_cache(index, tmp_path / "cache", [16, 64], workers=1, progress=False)


def test_a_failed_rebuild_leaves_the_cache_as_it_was(tmp_path):
    index = _images(tmp_path / "img", n=3, size=(40, 40))
    build_cache(index, tmp_path / "cache", [16], workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()}
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(index["path"][0])  # now too small
    with pytest.raises(CxrError, match="exceeds the source size"):
        build_cache(index, tmp_path / "cache", [16], workers=1, progress=False)
    # refused before anything changed: the manifest lists exactly the arrays that are there
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()} == before
    assert cache_mod.complete_resolutions(tmp_path / "cache") == [16]


def test_a_cache_of_the_previous_format_is_rebuilt_with_exact_area_means(tmp_path, log_lines):
    index = _images(tmp_path / "img", n=3, size=(40, 40))
    build_cache(index, tmp_path / "cache", [30], workers=1, progress=False)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    manifest["format"] = 1  # PIL's BOX values: off by grey levels at 40 -> 30
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    old = np.load(tmp_path / "cache" / "r30.npy", mmap_mode="r+")
    old[:] = [np.asarray(Image.open(p).resize((30, 30), Image.BOX)) for p in index["path"]]
    old.flush()
    log_lines.clear()
    build_cache(index, tmp_path / "cache", [30], workers=1, progress=False)
    assert "rebuilding" in log_lines[0]
    for row, path in enumerate(index["path"]):
        np.testing.assert_array_equal(
            open_cache(tmp_path / "cache", 30)[row], area_resize(np.asarray(Image.open(path)), [30])[30]
        )


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_rebuild_that_fails_midway_leaves_the_old_cache_byte_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    index = _images(tmp_path / "img", n=10)
    build_cache(index, tmp_path / "cache", [8, 16], workers=1, progress=False)
    before = _hashes(tmp_path / "cache")
    (tmp_path / "img" / "007.png").write_bytes(Path(index["path"][7]).read_bytes()[:100])  # not the first row
    with pytest.raises(CxrError, match="cannot read image .*007.png"):
        build_cache(index, tmp_path / "cache", [8, 16], workers=1, progress=False)
    assert _hashes(tmp_path / "cache") == before and cache_mod.complete_resolutions(tmp_path / "cache") == [8, 16]
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(index["path"][7])
    build_cache(index, tmp_path / "cache", [8, 16], workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "img"]  # swapped in: no cache.new, no cache.old
    assert open_cache(tmp_path / "cache", 16)[7].max() == 0
    direct = area_resize(np.asarray(Image.open(index["path"][6])), [16])[16]
    np.testing.assert_array_equal(open_cache(tmp_path / "cache", 16)[6], direct)


def test_a_killed_rebuild_resumes_in_its_staging_folder(tmp_path, monkeypatch, log_lines):
    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    index = _images(tmp_path / "img", n=20)
    build_cache(index, tmp_path / "cache", [8], workers=1, progress=False)
    before = _hashes(tmp_path / "cache")
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(index["path"][1])
    real = cache_mod._build_chunk

    def killed_at_chunk_3(job):
        if job[0] == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(cache_mod, "_build_chunk", killed_at_chunk_3)
    with pytest.raises(KeyboardInterrupt):
        build_cache(index, tmp_path / "cache", [8], workers=1, progress=False)
    assert _hashes(tmp_path / "cache") == before
    staged = json.loads((tmp_path / "cache.new" / "manifest.json").read_text())
    assert staged["fingerprint"] == cache_mod.fingerprint(index, "pad", FileImages(index["path"], "pad"))
    assert staged["building"]["done"] == [0, 1, 2]
    built = []
    monkeypatch.setattr(cache_mod, "_build_chunk", lambda job: built.append(job[0]) or real(job))
    log_lines.clear()
    build_cache(index, tmp_path / "cache", [8], workers=1, progress=False)
    assert sorted(built) == [3, 4] and "resuming, 3 of 5 chunks" in log_lines[1]
    assert not (tmp_path / "cache.new").exists() and open_cache(tmp_path / "cache", 8)[1].max() == 0


def test_too_little_space_for_both_caches_rebuilds_in_place(tmp_path, monkeypatch, log_lines):
    index = _images(tmp_path / "img", n=3)
    build_cache(index, tmp_path / "cache", [16], workers=1, progress=False)
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(index["path"][1])
    # one byte short of the new array: it fits only with the old array given back
    monkeypatch.setattr(cache_mod, "_allocated", lambda path: path.stat().st_size if path.exists() else 0)
    monkeypatch.setattr(cache_mod, "_free_bytes", lambda folder: cache_mod._size(3, 16) - 1)
    log_lines.clear()
    build_cache(index, tmp_path / "cache", [16], workers=1, progress=False)
    assert "no room for a new cache beside the old one" in log_lines[0] and len(log_lines) == 2
    assert not (tmp_path / "cache.new").exists() and open_cache(tmp_path / "cache", 16)[1].max() == 0
    Image.fromarray(np.full((40, 40), 9, dtype=np.uint8)).save(index["path"][1])
    before = _hashes(tmp_path / "cache")
    with pytest.raises(CxrError, match="not enough free space for the resize cache"):  # not even in place
        build_cache(index, tmp_path / "cache", [16, 20], workers=1, progress=False)
    assert _hashes(tmp_path / "cache") == before


def test_a_swap_killed_between_its_renames_is_finished(tmp_path, log_lines):
    index = _images(tmp_path / "img", n=3)
    build_cache(index.iloc[:2], tmp_path / "cache", [16], workers=1, progress=False)
    build_cache(index, tmp_path / "cache.new", [16], workers=1, progress=False)  # a complete staged cache
    (tmp_path / "cache").rename(tmp_path / "cache.old")  # the old cache renamed away, the new one not yet in
    log_lines.clear()
    build_cache(index, tmp_path / "cache", [16], workers=1, progress=False)
    assert "up to date" in log_lines[-1] and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "img"]
    assert open_cache(tmp_path / "cache", 16).shape == (3, 16, 16)
