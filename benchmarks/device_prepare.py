"""Prepare what a CUDA host without network needs for the device check, in loads one call carries.

    python -m benchmarks.device_prepare [--out runs/device] [--load-mib N]

The host's image already has Python 3.12 with torch (CUDA 13), numpy, pyarrow, onnx, numba,
llvmlite, psutil, hypothesis, scikit-learn, tqdm, typer and pytest, and the CPU build of
onnxruntime. It lacks polars, onnxruntime-gpu and fastText: this downloads their cp312 wheels,
unpacks them into one tree (a wheel is a zip; these have no ``.data`` folder, so unpacking is
installing), packs that tree as one xz-compressed tar (about 3/4 of the wheels' size: the CUDA
provider library compresses better under xz than under a wheel's deflate) and cuts the archive
into loads of at most ``--load-mib`` MiB. One call carries 64 MiB in all, the project's tree
included (by default a load is what that leaves beside the reviews). Each load is a folder
(``runs/device/load-N``); ``benchmarks/device_install.sh`` joins them on the host, unpacks the
tree onto ``PYTHONPATH`` (so onnxruntime-gpu shadows the image's CPU onnxruntime rather than
being installed beside it) and runs the check. The reference reviews, which live outside the
checkout, are copied to ``runs/device/data`` to travel too.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from benchmarks.common import DEFAULT_REVIEWS, DEFAULT_SPLIT, REPO

# fastText is the quality benchmark's peer (its tests run on the host too).
WHEELS = [
    "polars==2.1.0",
    "polars-runtime-32==2.1.0",
    "onnxruntime-gpu==1.31.1",
    "fasttext-numpy2==0.10.4",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64"]
ARCHIVE = "site.tar.xz"


def download(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--python-version", "3.12", "--implementation", "cp", *platforms, "--no-deps",
        "-d", str(target), *WHEELS,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    names = [w.split("==")[0].replace("-", "_") for w in WHEELS]
    return [next(target.glob(f"{name}-*.whl")) for name in names]


def pack(wheels: list[Path], archive: Path) -> None:
    """One xz tar of the wheels' unpacked contents (multi-threaded xz where the CLI exists)."""
    stage = archive.parent / "site"
    shutil.rmtree(stage, ignore_errors=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            if any(".data/" in n for n in zf.namelist()):
                raise SystemExit(f"{wheel.name} has a .data folder: unpacking is not installing")
            zf.extractall(stage)
    if shutil.which("xz"):
        tar = subprocess.Popen(["tar", "cf", "-", "-C", str(stage), "."], stdout=subprocess.PIPE)
        with archive.open("wb") as out:
            subprocess.run(["xz", "-T0", "-6"], stdin=tar.stdout, stdout=out, check=True)
        if tar.wait():
            raise SystemExit("tar failed")
    else:
        with lzma.open(archive, "wb", preset=6) as out, tarfile.open(fileobj=out, mode="w") as tf:
            tf.add(stage, arcname=".")
    shutil.rmtree(stage)


def cut(archive: Path, out: Path, load_bytes: int) -> list[Path]:
    """``load-N/<archive>.part-NN`` folders, each under ``load_bytes``."""
    folders = []
    with archive.open("rb") as src:
        while chunk := src.read(load_bytes):
            folder = out / f"load-{len(folders)}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / f"{archive.name}.part-{len(folders):02d}").write_bytes(chunk)
            folders.append(folder)
    return folders


CALL_MIB = 64  # what one device call carries in all
MARGIN_MIB = 2  # for files added before the call


def tree_bytes(repo: Path = REPO) -> int:
    """What every call sends besides its carried paths: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = (repo / name for name in listed.split("\0") if name)
    return sum(p.stat().st_size for p in paths if p.is_file())


def default_load_mib() -> int:
    """The largest load that still travels beside the tree and the reference reviews (the run
    call carries the last load and the data; the bundled model alone is over 20 MiB)."""
    data = sum(f.stat().st_size for f in (DEFAULT_REVIEWS, DEFAULT_SPLIT) if f.is_file())
    spare = CALL_MIB - (tree_bytes() + data) / (1 << 20) - MARGIN_MIB
    if spare < 8:
        raise SystemExit(f"the project's tree leaves {spare:.0f} MiB a call: too little for loads")
    return int(spare)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "device")
    parser.add_argument(
        "--load-mib",
        type=int,
        default=None,
        help="one load's size (default: 64 less the project's tree and the reference reviews)",
    )
    args = parser.parse_args(argv)
    load_mib = args.load_mib or default_load_mib()
    wheels = download(args.out / "wheels")
    archive = args.out / ARCHIVE
    pack(wheels, archive)
    for folder in cut(archive, args.out, load_mib << 20):
        size = sum(f.stat().st_size for f in folder.iterdir()) / (1 << 20)
        print(f"{folder}: {size:.1f} MiB")
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for source in (DEFAULT_REVIEWS, DEFAULT_SPLIT):
        if source.is_file():
            shutil.copyfile(source, data / source.name)
    print(f"{data}: the reference reviews, to carry with the run")


if __name__ == "__main__":
    main()
