"""Print the requirements of sixview and the extras named, one a line, from pyproject.toml.

The images install them in a layer of their own, before the source is copied in, so a code change does not
download or reinstall the dependencies:  python requirements.py pyproject.toml cpu serve > requirements.txt
"""

import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the TOML reader pip carries
    from pip._vendor import tomli as tomllib


def main(pyproject: str, *extras: str) -> None:
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    print("\n".join(wanted))


if __name__ == "__main__":
    main(*sys.argv[1:])
