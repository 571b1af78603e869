"""The repository's copy of the real-format fixtures is complete and unchanged: every file listed in
SHA256SUMS is there with its checksum, nothing else is, and (where the team's shared/ folder sits beside the
checkout) each file equals the original byte for byte."""

import hashlib

from tests.shared import REAL_FORMATS, ROOT


def _files(root):
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_every_fixture_file_has_its_recorded_checksum():
    listed = {}
    for line in (REAL_FORMATS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    assert _files(REAL_FORMATS) - {"SHA256SUMS"} == set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((REAL_FORMATS / name).read_bytes()).hexdigest() == digest, name


def test_the_copy_equals_the_shared_originals_where_they_are_present():
    shared = ROOT.parent / "shared" / "fixtures" / "real-formats"
    if not shared.is_dir():  # a clone alone: the checksums above are the check
        return
    assert _files(shared) <= _files(REAL_FORMATS)
    for name in _files(shared):
        assert (shared / name).read_bytes() == (REAL_FORMATS / name).read_bytes(), name
