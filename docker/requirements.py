"""Prints the requirement lines of the project and some of its extras, read from pyproject.toml.

Used by the Dockerfiles to install the dependencies in a layer of their own (before the sources
are copied, so that editing the code does not re-install torch). Standard library only: it runs
in the image's fresh venv, before anything is installed.

    python requirements.py pyproject.toml pytorch,data
"""

import sys
import tomllib


def requirements(pyproject: str, extras: str) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    lines = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in filter(None, (e.strip() for e in extras.split(","))):
        if extra not in optional:
            sys.exit(f"{pyproject} has no extra {extra!r} (it has: {', '.join(sorted(optional))}).")
        lines += optional[extra]
    return lines


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")))
