"""Peak memory of `sixview scan` over a folder of oversized images.

Builds (in a temporary folder) a decompression bomb (a small PNG declaring
50000x50000), a real 20000x15000 PNG (about 0.9 MB: 300 megapixels of mostly
black), and --photos VOC photos (or synthetic ones), then runs the scan in a
child process and reads its peak resident memory (`wait4`, as
`/usr/bin/time -v` reports it). Both oversized images must be refused from
their headers, so the peak stays that of the runtime itself.

    python -m benchmarks.memory            # shipped models -> benchmarks/results/<machine>/memory.*
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from benchmarks._common import DEFAULT_MODELS, REPO, VOC_IMAGES, machine_md, out_dir, scratch_dir, write_results
from edge.stats import machine_info


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (its pixel data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def build_folder(folder: Path, photos: int) -> None:
    """The bomb, the 300-megapixel PNG and `photos` ordinary photos."""
    (folder / "bomb.png").write_bytes(png_declaring(50000, 50000))
    big = np.zeros((15000, 20000, 3), np.uint8)
    big[::50] = 255
    ok, buf = cv2.imencode(".png", big, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    (folder / "huge_20000x15000.png").write_bytes(buf.tobytes())
    del big, buf
    sources = sorted(VOC_IMAGES.glob("*.jpg"))[:photos] if VOC_IMAGES.is_dir() else []
    for i, src in enumerate(sources):
        (folder / f"photo_{i:03d}.jpg").write_bytes(src.read_bytes())
    for i in range(len(sources), photos):
        cv2.imwrite(str(folder / f"photo_{i:03d}.png"), np.full((375, 500, 3), 60 + i, np.uint8))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="models folder (default: models/)")
    p.add_argument("--photos", type=int, default=20, help="ordinary photos beside the oversized ones")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results/<machine>/)")
    args = p.parse_args(argv)
    tmp = scratch_dir("sixview-memory-")
    folder = tmp / "images"
    folder.mkdir()
    # built in a child process: this process stays small, so nothing of it can count in the scan's peak
    subprocess.run([sys.executable, "-c", f"from benchmarks.memory import build_folder; from pathlib import Path; "
                    f"build_folder(Path({str(folder)!r}), {args.photos})"], cwd=REPO, check=True, timeout=600)
    results = tmp / "r.jsonl"
    code = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"
    with open(tmp / "scan.log", "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", code, "scan", str(folder), "--models", str(args.models),
                                  "--out", str(results)], cwd=REPO, stdout=log, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, as /usr/bin/time -v reports it
    exit_code = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024
    recs = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    errors = {Path(r["path"]).name: r["error"] for r in recs if r["error"]}
    result = {"benchmark": "memory", "machine": machine_info(), "exit_code": exit_code,
              "images": len(recs), "errors": errors, "peak_rss_mb": round(peak_mb, 1)}
    md = (f"# Peak memory of a scan over oversized images\n\n{machine_md(result['machine'])}\n"
          f"`sixview scan` over {len(recs)} images (a 50000x50000 decompression bomb, a real 20000x15000 PNG,"
          f" {args.photos} photos): exit code {exit_code}, peak resident memory **{peak_mb:.0f} MB**.\n\n"
          + "".join(f"- `{k}`: {v}\n" for k, v in errors.items()))
    out = out_dir(args.out, quick=False)
    write_results(out, "memory", result, md)
    print(f"peak RSS {peak_mb:.0f} MB, exit {exit_code}, {len(recs)} records; wrote {out / 'memory.json'}",
          file=sys.stderr)
    return 0 if exit_code in (0, 1) and len(errors) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
