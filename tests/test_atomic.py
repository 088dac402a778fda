"""Tests for lediff_backend.hdr.atomic: output checks and write-then-rename."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lediff_backend.errors import BadInput
from lediff_backend.hdr.atomic import atomic_output, check_writable_output

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class TestCheckWritableOutput:
    def test_returns_absolute_path(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert check_writable_output("out.exr") == tmp_path / "out.exr"
        assert check_writable_output(tmp_path / "out.exr").is_absolute()

    def test_existing_file_is_fine(self, tmp_path):
        (tmp_path / "out.exr").write_bytes(b"old")
        assert check_writable_output(tmp_path / "out.exr") == tmp_path / "out.exr"

    def test_missing_folder(self, tmp_path):
        with pytest.raises(BadInput, match="output folder does not exist"):
            check_writable_output(tmp_path / "missing" / "out.exr")

    def test_folder_under_a_file(self, tmp_path):
        (tmp_path / "file.txt").write_text("x")
        with pytest.raises(BadInput, match="output folder does not exist"):
            check_writable_output(tmp_path / "file.txt" / "out.exr")

    def test_output_is_a_folder(self, tmp_path):
        (tmp_path / "out.exr").mkdir()
        with pytest.raises(BadInput, match="output path is a folder"):
            check_writable_output(tmp_path / "out.exr")

    @pytest.mark.skipif(IS_ROOT, reason="running as root: os.access reports every folder writable")
    def test_read_only_folder(self, tmp_path):
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(BadInput, match="output folder is not writable"):
                check_writable_output(folder / "out.exr")
        finally:
            folder.chmod(stat.S_IRWXU)


class TestAtomicOutput:
    def test_writes_on_success(self, tmp_path):
        target = tmp_path / "out.exr"
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"new")
            assert not target.exists()  # nothing visible at the target while writing
        assert target.read_bytes() == b"new"
        assert os.listdir(tmp_path) == ["out.exr"]
        assert stat.S_IMODE(target.stat().st_mode) == 0o644

    def test_replaces_existing_file(self, tmp_path):
        target = tmp_path / "out.exr"
        target.write_bytes(b"old")
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"new")
            assert target.read_bytes() == b"old"
        assert target.read_bytes() == b"new"
        assert os.listdir(tmp_path) == ["out.exr"]

    def test_exception_leaves_nothing(self, tmp_path):
        target = tmp_path / "out.exr"
        with pytest.raises(RuntimeError, match="writer failed"):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("writer failed")
        assert os.listdir(tmp_path) == []

    def test_exception_keeps_old_file(self, tmp_path):
        target = tmp_path / "out.exr"
        target.write_bytes(b"old")
        with pytest.raises(KeyboardInterrupt):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"half")
                raise KeyboardInterrupt
        assert target.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["out.exr"]

    def test_temporary_file_is_hidden_beside_the_target(self, tmp_path):
        with atomic_output(tmp_path / "scene.exr") as tmp:
            assert tmp.parent == tmp_path
            assert tmp.name.startswith(".scene.")
            assert tmp.name.endswith(".part.exr")  # writers that choose by extension still see .exr
            assert tmp.exists()
            tmp.write_bytes(b"x")

    def test_writer_may_remove_the_temporary_file(self, tmp_path):
        # A writer that replaces the file (deletes it first) must not make the cleanup fail.
        with pytest.raises(ValueError):
            with atomic_output(tmp_path / "out.png") as tmp:
                tmp.unlink()
                raise ValueError
        assert os.listdir(tmp_path) == []

    def test_bad_target_raises_before_yielding(self, tmp_path):
        with pytest.raises(BadInput, match="does not exist"):
            with atomic_output(tmp_path / "missing" / "out.exr"):
                pytest.fail("the body must not run")

    @pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
    def test_folder_nobody_can_create_files_in(self):
        # sysfs refuses new files even to root, whom os.access lets through.
        with pytest.raises(BadInput, match="not writable"):
            with atomic_output("/sys/kernel/lediff-test.exr"):
                pytest.fail("the body must not run")
