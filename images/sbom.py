"""An image's software bill of materials, as CycloneDX 1.5 JSON on stdout: every Debian package (from dpkg's
status file) and every Python distribution in the image's venv, with versions and package URLs.

images/build.sh runs it inside the image it just built (`--entrypoint /opt/terrasnap/bin/python`, no
network), so the list is what the image holds, not what the build meant to install. Standard library only.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import urllib.parse
from pathlib import Path

DPKG_STATUS = Path("/var/lib/dpkg/status")


def debian_packages() -> list[dict[str, str]]:
    out = []
    for block in DPKG_STATUS.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line[0].isspace())
        if not fields.get("Package") or fields.get("Status", "").split()[-1:] != ["installed"]:
            continue
        name, version, arch = fields["Package"], fields["Version"], fields.get("Architecture", "all")
        purl = f"pkg:deb/debian/{name}@{urllib.parse.quote(version, safe='')}?arch={arch}&distro=bookworm"
        out.append({"type": "library", "name": name, "version": version, "purl": purl, "bom-ref": purl})
    return out


def python_packages() -> list[dict[str, str]]:
    out = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        norm = name.lower().replace("_", "-").replace(".", "-")
        purl = f"pkg:pypi/{norm}@{dist.version}"
        entry = {"type": "library", "name": name, "version": dist.version, "purl": purl, "bom-ref": purl}
        if dist.metadata.get("License-Expression") or dist.metadata.get("License"):
            lic = (dist.metadata.get("License-Expression") or dist.metadata["License"]).splitlines()[0][:200]
            entry["licenses"] = [{"expression": lic}] if dist.metadata.get("License-Expression") else [
                {"license": {"name": lic}}]
        out[norm] = entry
    return [out[k] for k in sorted(out)]


def main() -> None:
    component, version = sys.argv[1], sys.argv[2]
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"type": "container", "name": f"terrasnap/{component}", "version": version}},
        "components": debian_packages() + python_packages(),
    }
    json.dump(bom, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
