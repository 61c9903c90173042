"""Pin the images' Python packages: write docker/constraints.txt from the versions installed in this environment.

    .venv/bin/python docker/constraints.py            # rewrite docker/constraints.txt (extras cpu, gpu, serve)
    .venv/bin/python docker/constraints.py --check    # exit 1, with the differences, when the file is out of date

The file holds `name==version` for sixview's runtime requirements and theirs, all the way down (markers read for
Linux), at the versions this environment has: the images install with `pip install -c constraints.txt`, so a
rebuild next month gets the packages that were tested, not whatever PyPI has then. A requirement not installed
here (onnxruntime-gpu in a CPU environment) is listed in a comment and left to pyproject.toml's own pin.
Run it in the environment the tests passed in (`make test-fast` installs the extras), after changing pyproject.toml.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

HERE = Path(__file__).resolve().parent
EXTRAS = ("cpu", "gpu", "serve")
SKIP = {"pip", "setuptools", "wheel"}  # the venv's own tools, not requirements


def top_level(pyproject: Path, extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(r) for r in wanted]


def applies(req: Requirement, extras: set[str]) -> bool:
    """Whether a requirement's marker holds here (Linux) for any of the extras its parent was asked with."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))


def resolve(roots: list[Requirement]) -> tuple[dict[str, str], list[str]]:
    """{canonical name: installed version} for the roots and their requirements, and the roots not installed."""
    pins: dict[str, str] = {}
    missing: list[str] = []
    todo = [r for r in roots if applies(r, set())]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in SKIP or name in pins:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            missing.append(str(req))
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"constraints.py: {req.name} {dist.version} is installed, but {req} is required")
        pins[name] = dist.version
        for dep in dist.requires or []:
            child = Requirement(dep)
            if applies(child, set(req.extras)):
                todo.append(child)
    return pins, missing


def render(pins: dict[str, str], missing: list[str], extras: tuple[str, ...]) -> str:
    head = [f"# sixview's runtime packages (extras {', '.join(extras)}), pinned to the versions the tests passed with.",
            "# Written by docker/constraints.py from the development environment: do not edit by hand.",
            f"# Python {sys.version_info.major}.{sys.version_info.minor}, Linux."]
    head += [f"# not installed where this was written, left to pyproject.toml: {m}" for m in sorted(missing)]
    return "\n".join(head + [f"{n}=={v}" for n, v in sorted(pins.items())]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    ap.add_argument("--out", type=Path, default=HERE / "constraints.txt")
    ap.add_argument("--pyproject", type=Path, default=HERE.parent / "pyproject.toml")
    args = ap.parse_args(argv)
    pins, missing = resolve(top_level(args.pyproject, EXTRAS))
    text = render(pins, missing, EXTRAS)
    if not args.check:
        args.out.write_text(text)
        print(f"{args.out}: {len(pins)} packages pinned")
        return 0
    old = args.out.read_text() if args.out.is_file() else ""
    if old == text:
        print(f"{args.out}: up to date ({len(pins)} packages)")
        return 0
    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(args.out), "here"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
