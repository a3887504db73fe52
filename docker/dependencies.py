"""Print the runtime dependencies declared in a pyproject.toml, one requirement a line, so the
image installs them before it copies the code (see the Dockerfile)."""

import sys
import tomllib
from pathlib import Path


def dependencies(pyproject: Path) -> list[str]:
    return tomllib.loads(pyproject.read_text())["project"]["dependencies"]


if __name__ == "__main__":
    print("\n".join(dependencies(Path(sys.argv[1]))))
