"""``make data``'s package cache: a package added to the list after a first run is unpacked on the next."""
import shutil
import subprocess

import pytest

from training import prepare_data

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")


def build_deb(tmp_path, name, path, content):
    root = tmp_path / f"src-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n")
    target = root / path
    target.parent.mkdir(parents=True)
    target.write_text(content)
    deb = tmp_path / "cache" / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-Znone", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)


def test_a_package_added_to_the_cache_later_is_unpacked(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(prepare_data, "DEBS", ())  # nothing to download: the cache holds the packages
    build_deb(tmp_path, "first", "usr/share/a.txt", "a")
    extract = prepare_data.fetch_debs(cache)
    assert (extract / "usr/share/a.txt").read_text() == "a"

    build_deb(tmp_path, "second", "usr/share/b.txt", "b")
    (extract / "usr/share/a.txt").write_text("changed")
    prepare_data.fetch_debs(cache)
    assert (extract / "usr/share/b.txt").read_text() == "b"
    assert (extract / "usr/share/a.txt").read_text() == "changed"  # the first is not unpacked again
