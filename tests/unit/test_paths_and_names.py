"""The one name check (engine/paths.py), the Kubernetes name rules (api/contract.py) and redaction (pure)."""

from __future__ import annotations

import os

import pytest

from terrasnap.api import contract
from terrasnap.engine import paths, redact


@pytest.mark.parametrize("name, why", [
    ("", "is empty"),
    ("../x", "contains '..'"),
    ("a/../../x", "contains '..'"),
    ("/etc/passwd", "is absolute"),
    ("a//b", "has an empty segment"),
    ("a/", "has an empty segment"),
    ("./a", "contains a '.' segment"),
    ("a\x00b", "contains a NUL byte"),
    ("a\nb", "contains a control character"),
    ("a\\..\\b", "contains a backslash"),
    (os.fsdecode(b"caf\xe9"), "is not valid UTF-8"),
])
def test_unsafe_names(name: str, why: str) -> None:
    assert (paths.problem(name) or "").startswith(why)
    with pytest.raises(ValueError, match="object"):
        paths.check_relpath(name, "object")


@pytest.mark.parametrize("name", ["a", "raw/labels/b.geojson", "a..b/c", ".hidden/x", "données/x.tif"])
def test_safe_names(name: str) -> None:
    assert paths.problem(name) is None and paths.check_relpath(name, "x") == name


def test_non_utf8_names_are_shown_escaped() -> None:
    assert paths.quoted(os.fsdecode(b"caf\xe9.tif")) == "'caf\\xe9.tif'"


@pytest.mark.parametrize("oid, ok", [("d41d8cd98f00b204e9800998ecf8427e", True),
                                     ("d41d8cd98f00b204e9800998ecf8427e.dir", True),
                                     ("D41D8CD98F00B204E9800998ECF8427E", False), ("../../x", False),
                                     ("d41d8cd98f00b204e9800998ecf8427e/..", False)])
def test_dvc_object_ids(oid: str, ok: bool) -> None:
    assert bool(paths.DVC_OBJECT_ID.fullmatch(oid)) is ok


@pytest.mark.parametrize("name, ok", [("buildings", True), ("b.v2", True), ("a" * 253, True), ("a" * 254, False),
                                      ("../../x", False), ("A", False), ("-a", False), ("a/b", False), ("", False)])
def test_object_names(name: str, ok: bool) -> None:
    if ok:
        assert contract.check_object_name(name) == name
    else:
        with pytest.raises(ValueError, match="DNS-1123 subdomain"):
            contract.check_object_name(name)


@pytest.mark.parametrize("ns, ok", [("default", True), ("ml-team", True), ("a" * 63, True), ("a" * 64, False),
                                    ("..", False), ("a.b", False), ("Default", False)])
def test_namespaces(ns: str, ok: bool) -> None:
    if ok:
        assert contract.check_namespace(ns) == ns
    else:
        with pytest.raises(ValueError, match="DNS-1123 label"):
            contract.check_namespace(ns)


def test_strip_userinfo_keeps_everything_else() -> None:
    assert redact.strip_userinfo("git+https://u:p@h:8443/r.git@main#subdirectory=d") == \
        "git+https://h:8443/r.git@main#subdirectory=d"
    assert redact.strip_userinfo("https://TOKEN@github.com/a/b") == "https://github.com/a/b"
    assert redact.strip_userinfo("gs://bucket/a@b") == "gs://bucket/a@b"
    assert redact.redact("see https://h/x and mail a@b") == "see https://h/x and mail a@b"
