"""The images' sources: hadolint on the Dockerfiles, their shape, the locks, and the chart's defaults agreeing
with what `make images` tags. The built images themselves are run by tests/images and the cluster tier.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
COMPONENTS = ("operator", "worker")


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) grouped by build stage."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


@pytest.fixture(scope="module")
def hadolint() -> str:
    p = subprocess.run(["bash", str(REPO / "tests" / "chart" / "tools.sh"), "hadolint"], stdout=subprocess.PIPE,
                       text=True, check=True)
    return p.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("component", COMPONENTS)
def test_hadolint_is_clean(hadolint: str, component: str) -> None:
    p = subprocess.run([hadolint, "--failure-threshold", "style", str(IMAGES / component / "Dockerfile")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and not p.stdout.strip(), p.stdout + p.stderr


def test_hadolint_catches_what_it_should(hadolint: str, tmp_path: Path) -> None:
    """The linter is really looking: a Dockerfile with the usual mistakes is refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nUSER root\nENTRYPOINT terrasnap\n")
    p = subprocess.run([hadolint, str(bad)], capture_output=True, text=True)
    assert p.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3002", "DL3025"):
        assert rule in p.stdout, p.stdout


@pytest.mark.parametrize("component", COMPONENTS)
def test_dockerfile_shape(component: str) -> None:
    dockerfile = IMAGES / component / "Dockerfile"
    build, final = stages(dockerfile)  # multi-stage: exactly a build stage and the final one
    assert build[0] == "FROM ${BUILD_BASE} AS build" and final[0] == "FROM ${BASE}"
    text = dockerfile.read_text()
    # the bases are build arguments (make images: the mmdebstrap bases; elsewhere: Docker Hub's Python)
    assert "ARG BUILD_BASE=docker.io/library/python:3.11-slim-bookworm" in text
    assert "ARG BASE=docker.io/library/python:3.11-slim-bookworm" in text
    # The install steps are the shared script with this component's lock.
    assert f"COPY images/{component}/requirements.txt images/{component}/" in build
    assert any(f"sh images/install.sh {component} /opt/terrasnap /src" in line for line in build)
    # The final stage: the runtime step (bound, not copied), the venv from the build stage, a numeric
    # non-root user, terrasnap as the entrypoint, and no build tools.
    assert f"RUN --mount=type=bind,source=images/runtime.sh,target=/tmp/runtime.sh sh /tmp/runtime.sh {component}" in final
    assert "COPY --from=build /opt/terrasnap /opt/terrasnap" in final
    assert not [line for line in final if line.startswith(("COPY", "ADD")) and "--from=build" not in line]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    assert final[-2:] == [l for l in final if l.startswith(("ENTRYPOINT", "CMD"))]  # noqa: E741
    assert 'ENTRYPOINT ["terrasnap"]' in final
    line = " ".join(final)
    for tool in ("gcc", "g++", "build-essential", "make ", "-dev ", "cmake", "cargo"):
        assert tool not in line, f"{tool} in the final stage of {component}"
    assert "pip uninstall" in (IMAGES / "runtime.sh").read_text()  # no installer left in the final image


@pytest.mark.parametrize("component", COMPONENTS)
def test_dockerignore_sends_what_the_dockerfile_copies(component: str) -> None:
    ignore = (IMAGES / component / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in stages(IMAGES / component / "Dockerfile")[0]:
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert any(src.rstrip("/") == a or re.fullmatch(a.replace("*", "[^/]+"), src) for a in allowed), src


@pytest.mark.parametrize("component", COMPONENTS)
def test_locks_are_pinned_and_hashed(component: str) -> None:
    text = (IMAGES / component / "requirements.txt").read_text()
    reqs = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)(==[^ \\]+)?", text, flags=re.M)
    assert reqs and all(pin for _, pin in reqs), [r for r, pin in reqs if not pin]
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.strip()):
        assert "--hash=sha256:" in block, block.splitlines()[0]
