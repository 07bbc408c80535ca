"""The callboard image as built (issue 14): no package manager, pip or compiler; safe ports only.

It reads the OCI archive ``tests/support/realnode/images.sh`` builds from operator/Dockerfile
(the one the real-node tier runs), applies its layers in order (whiteouts included) and
looks at the resulting file system and image config, with nothing but ``tarfile``: what a
shell in a compromised container could find there is what is checked.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.support import kube as kh
from tests.support.realnode import cluster as rn

#: File names that are a package manager, pip or a compiler wherever they are.
FORBIDDEN_NAMES = re.compile(
    r"^(apt|apt-get|apt-cache|apt-key|aptitude|dpkg(-\w+)?|debconf(-\w+)?|pip(\d[\d.]*)?|"
    r"easy_install(-[\d.]+)?|(\w+-)*gcc(-\d+)?|cc|c\+\+|(\w+-)*g\+\+(-\d+)?|cpp(-\d+)?|"
    r"tcc|clang(-\d+)?|ld|as)$"
)
#: Directories whose presence means the same: dpkg's and apt's state, pip and its wheels.
FORBIDDEN_DIRS = re.compile(
    r"(^|/)(var/lib/dpkg|var/lib/apt|etc/apt|usr/lib/apt|usr/share/python-wheels|usr/lib/gcc)$"
    r"|/(site|dist)-packages/pip$|/python3[\d.]*/ensurepip$"
)


def _blob(archive: tarfile.TarFile, digest: str) -> bytes:
    algo, _, hexdigest = digest.partition(":")
    member = archive.extractfile(f"blobs/{algo}/{hexdigest}")
    assert member is not None, digest
    return member.read()


def _image(path: Path) -> tuple[set[str], dict[str, Any]]:
    """The paths of the image's file system (layers applied in order) and its config."""
    files: set[str] = set()
    with tarfile.open(path) as archive:
        index = json.loads(_blob_named(archive, "index.json"))
        manifest = json.loads(_blob(archive, index["manifests"][0]["digest"]))
        config = json.loads(_blob(archive, manifest["config"]["digest"]))
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(_blob(archive, layer["digest"]))) as tar:
                for member in tar:
                    name = PurePosixPath("/", member.name)
                    if name.name == ".wh..wh..opq":  # opaque directory: drop what lower layers had
                        prefix = f"{name.parent}/"
                        files = {f for f in files if not f.startswith(prefix)}
                    elif name.name.startswith(".wh."):
                        gone = str(name.parent / name.name.removeprefix(".wh."))
                        files = {f for f in files if f != gone and not f.startswith(f"{gone}/")}
                    else:
                        files.add(str(name))
    return files, config


def _blob_named(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    assert member is not None, name
    return member.read()


@pytest.fixture(scope="module")
def callboard_image() -> tuple[set[str], dict[str, Any]]:
    if kh.existing_kubeconfig():
        pytest.skip("with $KUBECONFIG the images come from your registry; this reads the local build")
    archive = rn.images_dir() / "callboard.tar"
    assert archive.is_file(), f"{archive} was not built (tests/support/realnode/images.sh)"
    return _image(archive)


def test_final_image_has_no_package_manager_pip_or_compiler(
    callboard_image: tuple[set[str], dict[str, Any]],
) -> None:
    files, _ = callboard_image
    # What the image is for is there (so an empty or unreadable archive cannot pass) ...
    assert "/opt/callboard/bin/callboard" in files
    assert any(re.fullmatch(r"/opt/callboard/lib/python3[\d.]*/site-packages/kopf", f) for f in files)
    assert any(re.fullmatch(r"/usr(/local)?/bin/python3", f) for f in files)
    # ... and nothing that installs or builds software.
    named = sorted(f for f in files if FORBIDDEN_NAMES.match(PurePosixPath(f).name) and "/bin/" in f)
    dirs = sorted(f for f in files if FORBIDDEN_DIRS.search(f))
    assert named == [] and dirs == [], (named, dirs)


def test_final_image_exposes_only_the_safe_ports_and_runs_as_the_chart_user(
    callboard_image: tuple[set[str], dict[str, Any]],
) -> None:
    _, config = callboard_image
    settings = config["config"]
    # Operator liveness and metrics, the sidecar's probe port; never the session API (8555).
    assert sorted(settings.get("ExposedPorts") or {}) == ["8080/tcp", "8556/tcp", "9090/tcp"]
    assert settings["User"] == "10001:10001"
    assert settings["Entrypoint"] == ["callboard"]
    # One layer: the package manager removed below it would still be in a lower layer.
    assert len([h for h in config["history"] if not h.get("empty_layer")]) == 1, config["history"]
