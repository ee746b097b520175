"""Container images without a Docker engine: lint the Dockerfiles with hadolint, check their shape, and run
their install step (images/install.sh, the same script and locks the Dockerfiles COPY) into fresh venvs: the
results must work — `terrasnap --version`, the operator's modules, a real `terrasnap snapshot` on sample data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sampledata import make_demo

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
COMPONENTS = ("operator", "worker")
UV = REPO / ".venv" / "bin" / "uv"
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


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
    for stage in (build, final):
        assert re.fullmatch(r"FROM \$\{PYTHON_IMAGE\}@\$\{PYTHON_DIGEST\}( AS \w+)?", stage[0]), stage[0]
    assert "ARG PYTHON_DIGEST" in dockerfile.read_text()
    # The install steps are the shared script with this component's lock.
    assert f"COPY images/{component}/requirements.txt images/{component}/" in build
    assert f"RUN sh images/install.sh {component} /opt/terrasnap /src" in build
    # The final stage: the venv from the build stage, a numeric non-root user, terrasnap as the entrypoint,
    # and no build tools.
    assert "COPY --from=build /opt/terrasnap /opt/terrasnap" in final
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    assert final[-2:] == [l for l in final if l.startswith(("ENTRYPOINT", "CMD"))]  # noqa: E741
    assert 'ENTRYPOINT ["terrasnap"]' in final
    text = " ".join(final)
    for tool in ("gcc", "g++", "build-essential", "make ", "-dev ", "cmake", "cargo"):
        assert tool not in text, f"{tool} in the final stage of {component}"
    assert "pip uninstall" in text  # no installer left in the final image


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


def _install(component: str, dest: Path, uv: bool = True) -> Path:
    env = {**os.environ, "PYTHON": str(BASE_PYTHON)}
    env.pop("UV", None)
    if uv:
        env["UV"] = str(UV)
    p = subprocess.run(["sh", str(IMAGES / "install.sh"), component, str(dest), str(REPO)], env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].endswith("0.1.0"), p.stdout  # `terrasnap --version`
    return dest / "bin"


def _clean_env(bin_dir: Path, tmp: Path) -> dict[str, str]:
    """Only the fresh venv on PATH (plus git and the base system), like the image."""
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8", "USER": "terrasnap",
            "DVC_NO_ANALYTICS": "1", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


@pytest.mark.timeout(900)
def test_operator_install_steps_give_a_working_operator(tmp_path: Path) -> None:
    bin_dir = _install("operator", tmp_path / "venv")
    env = _clean_env(bin_dir, tmp_path)
    p = subprocess.run([str(bin_dir / "python"), "-m", "terrasnap.controller", "--help"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0 and "--peering" in p.stdout, p.stderr
    # every module the operator imports is there; the engine's heavy stack is not (a slim image)
    code = ("import terrasnap.controller.handlers, terrasnap.controller.run, kopf, prometheus_client\n"
            "import importlib.util as u\n"
            "print([m for m in ('rasterio', 'pyogrio', 'dvc', 'geopandas') if u.find_spec(m)])")
    p = subprocess.run([str(bin_dir / "python"), "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.timeout(900)
def test_operator_install_steps_with_pip_as_in_the_docker_build(tmp_path: Path) -> None:
    """The Dockerfiles' build stage has no uv: the same script with pip (the user's pip cache makes reruns quick)."""
    bin_dir = _install("operator", tmp_path / "venv", uv=False)
    assert not (bin_dir / "pip").exists()  # no installer left behind
    p = subprocess.run([str(bin_dir / "python"), "-m", "terrasnap.controller", "--help"],
                       env=_clean_env(bin_dir, tmp_path), capture_output=True, text=True)
    assert p.returncode == 0 and "--peering" in p.stdout, p.stderr


@pytest.mark.timeout(900)
def test_worker_install_steps_give_a_working_engine(tmp_path: Path) -> None:
    bin_dir = _install("worker", tmp_path / "venv")
    env = _clean_env(bin_dir, tmp_path)
    p = subprocess.run([str(bin_dir / "python"), "-c", "import rasterio, pyogrio; print(rasterio.__gdal_version__,"
                        " pyogrio.__gdal_version_string__)"], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split()[0].startswith("3."), p.stderr  # GDAL from the wheels
    data = make_demo(tmp_path / "demo")
    result = tmp_path / "result.json"
    work = tmp_path / "work"
    p = subprocess.run([str(bin_dir / "terrasnap"), "snapshot", str(data), "--store", f"file://{tmp_path / 'store'}",
                        "--name", "demo", "--namespace", "images", "--invalid-geometry", "repair",
                        "--result-file", str(result), "--workdir", str(work)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = json.loads(result.read_text())
    assert out["ok"] is True and out["snapshotID"].startswith("sha256:")
    assert out["summary"]["files"] >= 5 and out["summary"]["rasters"] == 2
    assert Path(out["manifest"].removeprefix("file://")).is_file()
