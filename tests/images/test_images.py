"""The built images, run for real with podman (images/build.sh; `make images`, which `make test` runs first).

Each image: its version is the checkout's, its user is numeric and non-root, it holds no compiler or installer,
it stays inside its size budget, its labels record its inputs, and its SBOM lists what it really holds. The
worker snapshots sample data the way a restricted pod runs it — read-only root filesystem, user 65532, every
capability dropped, no network, the data mounted read-only, a `file://` store mounted — and `terrasnap fetch`
in a second container gets every file back, verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.images import podman
from tests.support.sampledata import make_demo

REPO = images.REPO
CACHE = Path(os.environ.get("TERRASNAP_CACHE", Path.home() / ".cache" / "terrasnap")) / "images"
# Size budgets in MB, unpacked in the store and as the compressed archive a registry would serve. The worker
# carries two GDAL stacks (the rasterio and pyogrio wheels each bundle theirs), pyarrow, pandas, DVC with three
# clouds' SDKs and the Kubernetes client (the cluster GC); measured 1006 / 320 MB.
BUDGET_MB = {"worker": (1050, 360), "operator": (330, 90)}
# The pod's security settings, as the runtime applies them (the snapshot Job's securityContext).
RESTRICTED = ["--network", "none", "--read-only", "--user", "65532:65532", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges", "--tmpfs", "/tmp"]


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, Any]]:
    """Both images (built by `make images`; a cache hit costs seconds) and what images/build.sh recorded."""
    p = subprocess.run(["bash", str(REPO / "images" / "build.sh")], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    out = {}
    for line in p.stdout.splitlines():
        m = re.match(r"images/build.sh: localhost/terrasnap/(\w+):\S+ \((\w+)\)", line)
        if m:
            out[m[1]] = json.loads((CACHE / f"{m[1]}-{m[2]}.json").read_text())
    assert set(out) == set(images.COMPONENTS), p.stdout
    return out


@pytest.mark.parametrize("component", images.COMPONENTS)
def test_version_is_the_checkouts(built: dict[str, dict[str, Any]], component: str) -> None:
    p = podman("run", "--rm", *RESTRICTED, images.ref(component), "--version")
    assert p.stdout.strip() == f"terrasnap, version {images.version()}"


@pytest.mark.parametrize("component", images.COMPONENTS)
def test_image_is_small_numeric_non_root_and_records_its_inputs(built: dict[str, dict[str, Any]], component: str) -> None:
    info = json.loads(podman("image", "inspect", images.ref(component)).stdout)[0]
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["terrasnap"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == images.version()
    assert labels["io.terrasnap.inputs"] == built[component]["inputs"]
    lock = (REPO / "images" / component / "requirements.txt").read_bytes()
    assert labels["io.terrasnap.requirements"] == "sha256:" + hashlib.sha256(lock).hexdigest()
    assert labels["io.terrasnap.base"].startswith(f"localhost/terrasnap/base-{component}:")
    # the commit it was built from (a later commit with the same inputs reuses the image, label and all)
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", labels["org.opencontainers.image.revision"])
    size_mb = info["Size"] / 1e6
    archive_mb = (CACHE / f"{component}-{built[component]['inputs']}.oci.tar").stat().st_size / 1e6
    budget, budget_archive = BUDGET_MB[component]
    assert size_mb < budget, f"{component}: {size_mb:.0f} MB unpacked (budget {budget} MB)"
    assert archive_mb < budget_archive, f"{component}: {archive_mb:.0f} MB compressed (budget {budget_archive} MB)"


@pytest.mark.parametrize("component", images.COMPONENTS)
def test_no_compiler_package_manager_installer_or_setuid_file(built: dict[str, dict[str, Any]], component: str) -> None:
    tools = "gcc cc c++ g++ make ld as apt apt-get pip pip3 curl wget sudo useradd"
    script = (f"for t in {tools}; do command -v $t; done; /opt/terrasnap/bin/python -c 'import pip' 2>/dev/null"
              " && echo pip-module; find / -xdev -type f -perm /6000; true")  # and no setuid/setgid file
    p = podman("run", "--rm", *RESTRICTED, "--entrypoint", "sh", images.ref(component), "-c", script)
    assert p.stdout.strip() == "", f"found in the {component} image: {p.stdout.split()}"
    # the probe itself works: the same loop finds what is there
    p = podman("run", "--rm", *RESTRICTED, "--entrypoint", "sh", images.ref(component), "-c", "for t in sh python3.11; do command -v $t; done")
    assert len(p.stdout.split()) == 2, p.stdout


def test_operator_image_has_the_controller_and_none_of_the_engine_stack(built: dict[str, dict[str, Any]]) -> None:
    code = ("import terrasnap.controller.handlers, terrasnap.controller.run, kopf, prometheus_client\n"
            "import importlib.util as u\n"
            "print([m for m in ('rasterio', 'pyogrio', 'dvc', 'geopandas', 'pyarrow') if u.find_spec(m)])")
    p = podman("run", "--rm", *RESTRICTED, "--entrypoint", "/opt/terrasnap/bin/python", images.ref("operator"), "-c", code)
    assert p.stdout.strip() == "[]"
    p = podman("run", "--rm", *RESTRICTED, "--entrypoint", "/opt/terrasnap/bin/python", images.ref("operator"),
               "-m", "terrasnap.controller", "--help")
    assert "--peering" in p.stdout


def test_worker_image_imports_every_store_and_format_it_serves(built: dict[str, dict[str, Any]]) -> None:
    """What a snapshot of sample data does not reach: the S3 and Azure remotes, the cluster GC's client."""
    code = ("import rasterio, pyogrio, pyarrow.parquet, pyarrow.dataset, shapely, pyproj, geopandas, dvc.repo\n"
            "import gcsfs, s3fs, adlfs, dvc_gs, dvc_s3, dvc_azure, kubernetes.client, terrasnap.engine.gc.cluster\n"
            "print(rasterio.__gdal_version__, pyogrio.__gdal_version_string__)")
    p = podman("run", "--rm", *RESTRICTED, "--entrypoint", "/opt/terrasnap/bin/python", images.ref("worker"), "-c", code)
    assert re.fullmatch(r"3\.\d+\.\d+ 3\.\d+\.\d+", p.stdout.strip()), p.stdout + p.stderr


def _lock_pins(component: str) -> dict[str, str]:
    text = (REPO / "images" / component / "requirements.txt").read_text()
    return {n.lower().replace("_", "-").replace(".", "-"): v for n, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


@pytest.mark.parametrize("component", images.COMPONENTS)
def test_sbom_lists_what_the_image_holds(built: dict[str, dict[str, Any]], component: str) -> None:
    sbom = json.loads((CACHE / f"{component}-{built[component]['inputs']}.sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    purls = [c["purl"] for c in sbom["components"]]
    pypi = {p.split("/", 1)[1].split("@")[0]: p.split("@")[1] for p in purls if p.startswith("pkg:pypi/")}
    debs = {p.split("/")[2].split("@")[0] for p in purls if p.startswith("pkg:deb/")}
    # every locked distribution is in the image at its locked version, and terrasnap itself
    pins = _lock_pins(component)
    assert {n: pypi.get(n) for n in pins} == pins
    assert pypi["terrasnap"] == images.version()
    assert "pip" not in pypi
    # the Debian packages are the base's, as installed (images/base.sh's record of them)
    base = built[component]["labels"]["io.terrasnap.base"].rsplit(":", 1)[1]
    installed = (CACHE / f"base-{component}-{base}.versions").read_text().split()
    assert debs == {line.split("=")[0] for line in installed}
    assert "python3.11" in debs and ("git" in debs) == (component == "worker")


def _sha256_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A host folder the container's user 65532 may write: the store, the workdir, the results."""
    for name in ("store", "work", "out"):
        (tmp_path / name).mkdir()
        os.chown(tmp_path / name, 65532, 65532)
    # the path to tmp_path must be traversable by the container's user (the bind mounts are under it)
    yield tmp_path


@pytest.mark.timeout(900)
def test_worker_snapshots_in_a_restricted_container_and_fetch_verifies(built: dict[str, dict[str, Any]],
                                                                        shared: Path) -> None:
    data = make_demo(shared / "data")
    source_hashes = _sha256_tree(data)
    mounts = ["-v", f"{data}:/data:ro", "-v", f"{shared / 'store'}:/store", "-v", f"{shared / 'work'}:/workspace",
              "-v", f"{shared / 'out'}:/out"]
    p = podman("run", "--rm", *RESTRICTED, *mounts, images.ref("worker"), "snapshot", "/data",
               "--store", "file:///store", "--name", "demo", "--namespace", "images", "--invalid-geometry", "repair",
               "--result-file", "/out/result.json", "--workdir", "/workspace/snap", timeout=900)
    result = json.loads((shared / "out" / "result.json").read_text())
    assert result["ok"] is True, p.stdout[-3000:] + p.stderr[-3000:]
    assert result["snapshotID"].startswith("sha256:")
    assert result["summary"]["files"] >= 5 and result["summary"]["rasters"] == 2
    assert result["manifest"].startswith("file:///store/")
    assert _sha256_tree(data) == source_hashes  # the source is untouched (and was mounted read-only)

    # A second container, nothing shared but the store: fetch every raw file back and check the snapshot id.
    p = podman("run", "--rm", *RESTRICTED, "-v", f"{shared / 'store'}:/store:ro", "-v", f"{shared / 'out'}:/out",
               images.ref("worker"), "fetch", result["manifest"], "/out/fetched", "--role", "raw",
               "--expect", result["snapshotID"], timeout=600)
    fetched = _sha256_tree(shared / "out" / "fetched")
    assert fetched, p.stdout + p.stderr
    for rel, digest in fetched.items():
        assert source_hashes[rel.removeprefix("raw/")] == digest, rel
    assert len(fetched) == len(source_hashes)

    # And --expect really checks: a wrong id fails.
    wrong = "sha256:" + "0" * 64
    p = podman("run", "--rm", *RESTRICTED, "-v", f"{shared / 'store'}:/store:ro", images.ref("worker"), "fetch",
               result["manifest"], "/tmp/x", "--expect", wrong, check=False)
    assert p.returncode != 0
