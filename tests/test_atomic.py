"""atomic_write / atomic_path: the target is the old file or the new one, never half of one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from edge.atomic import atomic_path, atomic_write


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_text_and_bytes(tmp_path):
    p = tmp_path / "a.json"
    assert atomic_write(p, "héllo\n") is None
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    with atomic_write(p) as fh:
        fh.write("one\n")
        fh.write("two\n")
    assert p.read_text() == "one\ntwo\n"
    with atomic_write(tmp_path / "b.bin", binary=True) as fh:
        fh.write(b"xyz")
    assert (tmp_path / "b.bin").read_bytes() == b"xyz" and _leftovers(tmp_path) == []


def test_mode_of_a_new_file_and_kept_mode_of_an_old_one(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write(tmp_path / "new.txt", "x")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    old = tmp_path / "old.txt"
    old.write_text("x")
    old.chmod(0o600)
    atomic_write(old, "y")
    assert old.stat().st_mode & 0o777 == 0o600 and old.read_text() == "y"


def test_an_exception_keeps_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(p) as fh:
        fh.write("new, half")
        raise RuntimeError("stop")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("new")
        raise RuntimeError("stop")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []


def test_atomic_path_keeps_the_suffix_only_when_asked(tmp_path):
    p = tmp_path / "m.keras"
    with atomic_path(p) as tmp:  # by default no glob for the target's suffix (*.keras) finds a temporary
        assert tmp.parent == tmp_path and tmp.suffix == ".tmp" and tmp.name.startswith(".m.keras.")
        tmp.write_bytes(b"one")
    with atomic_path(p, keep_suffix=True) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".keras" and tmp.name.startswith(".m.keras.")
        tmp.write_bytes(b"model")
    assert p.read_bytes() == b"model" and _leftovers(tmp_path) == []


def test_a_write_killed_midway_keeps_the_old_file(tmp_path):
    p = tmp_path / "report.json"
    p.write_text('{"old": true}\n')
    script = textwrap.dedent(f"""
        import os, signal
        from edge.atomic import atomic_write
        with atomic_write({str(p)!r}) as fh:
            fh.write('{{"new": ')
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True)
    assert res.returncode == -9
    assert p.read_text() == '{"old": true}\n'
    left = _leftovers(tmp_path)
    assert len(left) == 1 and left[0].startswith(".report.json.")  # the killed write's temporary, beside it
