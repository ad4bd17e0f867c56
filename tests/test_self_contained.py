"""The repository stands on its own: nothing tracked reads or cites a path outside it.

A clone from GitHub has no design notes or reference folder beside it, so a test that
reads one fails for every user, and a comment that cites one points nowhere. Samples
and the SMF DTD the tests need are in tests/fixtures/ with their public sources.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# Spelled in pieces so that this file does not match itself.
FORBIDDEN = (
    "../" + "shared",
    "DESIGN" + ".md",
    "reference" + "/",
    # the notes that folder held, cited without the folder name
    "illumos-interfaces" + ".md",
    "dtrace-consumer" + ".md",
    "anchors-smartos" + ".md",
    "anchors-fifo" + ".md",
    "ecosystem" + ".md",
)


def tracked_files(repo: Path) -> list[Path]:
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True
    ).stdout
    return [repo / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_refers_outside_the_repository(repo_root: Path) -> None:
    offenders = []
    for path in tracked_files(repo_root):
        if not path.is_file():
            continue  # deleted in the work tree, not yet committed
        text = path.read_bytes().decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for needle in FORBIDDEN:
                if needle in line:
                    offenders.append(f"{path.relative_to(repo_root)}:{lineno}: {needle}")
    assert not offenders, "cite the public source instead:\n" + "\n".join(offenders)


def test_the_check_sees_a_citation(tmp_path: Path) -> None:
    # The scan above must be able to fail: run it on a repository that cites the notes.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.py").write_text("# see " + "../" + "shared/notes/x.txt\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.py"], check=True)
    try:
        test_no_tracked_file_refers_outside_the_repository(tmp_path)
    except AssertionError as e:
        assert "a.py:1" in str(e)
    else:
        raise AssertionError("a citation of a path outside the repository went unseen")


def test_every_sample_names_its_public_source(repo_root: Path) -> None:
    samples = repo_root / "tests" / "fixtures" / "samples"
    readme = (samples / "README.md").read_text(encoding="utf-8")
    for sample in sorted(samples.glob("*.txt")):
        first = sample.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# source: "), sample.name
        assert f"`{sample.name}`" in readme, f"{sample.name} is not in samples/README.md"
