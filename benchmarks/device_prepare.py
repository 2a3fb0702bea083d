"""Prepare the wheels a CUDA host without network needs for the device check.

    python -m benchmarks.device_prepare [--out runs/device]

The host has Python 3.12 with torch (CUDA 13), numpy, pyarrow, onnx, tqdm, typer and pytest;
this downloads the rest for cp312 manylinux (polars, numba, llvmlite, psutil, hypothesis and
its dependencies, onnxruntime-gpu 1.31.1) and cuts every file into pieces of at most 60 MiB,
grouped into loads of at most 60 MiB: one device call carries 64 MiB at most. Each load is a
folder (``runs/device/load-N``) to carry in one call; ``benchmarks/device_install.sh`` joins
the pieces on the host, installs them into a target folder and runs the check.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.common import REPO

PIECE = 60 << 20
WHEELS = [
    "polars",
    "polars-runtime-32",
    "numba",
    "llvmlite",
    "psutil",
    "hypothesis",
    "attrs",
    "sortedcontainers",
    "onnxruntime-gpu==1.31.1",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64"]


def download(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--python-version", "3.12", *platforms, "--no-deps", "-d", str(target), *WHEELS,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return sorted(target.glob("*.whl"))


def pieces(wheel: Path) -> list[tuple[str, bytes]]:
    data = wheel.read_bytes()
    if len(data) <= PIECE:
        return [(wheel.name, data)]
    return [
        (f"{wheel.name}.part-{i:02d}", data[start : start + PIECE])
        for i, start in enumerate(range(0, len(data), PIECE))
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "device")
    args = parser.parse_args(argv)
    wheels = download(args.out / "wheels")
    loads: list[list[tuple[str, bytes]]] = [[]]
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size):
        for name, data in pieces(wheel):
            if sum(len(d) for _, d in loads[-1]) + len(data) > PIECE:
                loads.append([])
            loads[-1].append((name, data))
    for index, load in enumerate(loads):
        folder = args.out / f"load-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in load:
            (folder / name).write_bytes(data)
        size = sum(len(d) for _, d in load) / (1 << 20)
        print(f"{folder}: {len(load)} files, {size:.1f} MiB")


if __name__ == "__main__":
    main()
