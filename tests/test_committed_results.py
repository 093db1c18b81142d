"""The committed ``results/`` on Colab (no clone): fetched from an archive, offline here (local fixtures only)."""

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from hybrid_utils import committed_results
from hybrid_utils.committed_results import (
    RESULTS_URL_ENV, CommittedResultsUnavailable, archive_url, ensure_committed_results, member_path,
)
from hybrid_utils.notebook import REPOSITORY_URL, committed_results_note, setup
from hybrid_utils.profiles import PROFILE_ENV, get_profile

ROOT = Path(__file__).resolve().parents[1]

#: A stand-in for GitHub's archive of the branch: everything under one ``<repository>-<branch>/`` folder.
FILES = {
    "hybrid-batch-tutorials-main/README.md": b"# readme\n",
    "hybrid-batch-tutorials-main/notebooks/05_evaluation.ipynb": b"{}",
    "hybrid-batch-tutorials-main/hybrid_utils/results.py": b"# not a result\n",
    "hybrid-batch-tutorials-main/results/summary.csv": b"model,method\nbundled,hybrid\n",
    "hybrid-batch-tutorials-main/results/tuning/mlqa-r.json": b'{"steps": 120}',
}
# an unreachable address: nothing listens on port 9 of this machine, so the connection is refused at once
UNREACHABLE = "http://127.0.0.1:9/hybrid-batch-tutorials/archive/refs/heads/main.tar.gz"


def make_archive(path, files=FILES, extra=()):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info)
    return path


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def archive(tmp_path):
    return make_archive(tmp_path / "main.tar.gz")


def test_the_default_source_is_the_branch_archive_of_the_repository(monkeypatch):
    monkeypatch.delenv(RESULTS_URL_ENV, raising=False)
    assert committed_results.results_source() == f"{REPOSITORY_URL}/archive/refs/heads/main.tar.gz" == archive_url()
    monkeypatch.setenv(RESULTS_URL_ENV, "file:///somewhere/else.tar.gz")
    assert committed_results.results_source() == "file:///somewhere/else.tar.gz"


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_a_missing_folder_gets_only_the_results_of_the_archive(tmp_path, archive, as_url):
    target = tmp_path / "work" / "results"
    lines = []
    got = ensure_committed_results(target, source=archive.as_uri() if as_url else str(archive), log=lines.append)
    assert got == target
    assert listing(target) == ["summary.csv", "tuning/mlqa-r.json"]
    assert (target / "summary.csv").read_bytes() == FILES["hybrid-batch-tutorials-main/results/summary.csv"]
    assert listing(tmp_path / "work") == ["results/summary.csv", "results/tuning/mlqa-r.json"]  # no leftovers
    assert len(lines) == 1 and "2 files" in lines[0]


def test_the_environment_variable_chooses_the_source_and_a_clone_works_too(tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    (clone / "results" / "figures").mkdir(parents=True)
    (clone / "results" / "figures" / "a.png").write_bytes(b"png")
    (clone / "notebooks").mkdir()
    (clone / "notebooks" / "01.ipynb").write_text("{}")
    monkeypatch.setenv(RESULTS_URL_ENV, str(clone))
    target = tmp_path / "results"
    ensure_committed_results(target, log=None)
    assert listing(target) == ["figures/a.png"]
    assert (clone / "results" / "figures" / "a.png").exists()  # the source is copied, not moved


def test_an_archive_without_a_prefix_folder_works(tmp_path):
    source = make_archive(tmp_path / "plain.tar.gz", {"results/summary.csv": b"x", "other/file": b"y"})
    ensure_committed_results(tmp_path / "results", source=str(source), log=None)
    assert listing(tmp_path / "results") == ["summary.csv"]


def test_an_existing_folder_is_left_untouched_and_nothing_is_fetched(tmp_path, monkeypatch):
    target = tmp_path / "results"
    target.mkdir()
    (target / "mine.csv").write_text("my own results")
    monkeypatch.setattr(committed_results, "fetch_results",
                        lambda *a, **k: pytest.fail("an existing folder must not be fetched again"))
    assert ensure_committed_results(target, source=UNREACHABLE) == target
    assert listing(target) == ["mine.csv"] and (target / "mine.csv").read_text() == "my own results"
    # the lower level refuses an existing target too, and still does not touch it
    monkeypatch.undo()
    with pytest.raises(FileExistsError):
        committed_results.fetch_results(str(make_archive(tmp_path / "a.tar.gz")), target)
    assert listing(target) == ["mine.csv"]


def test_an_unreachable_url_says_what_to_do_and_creates_nothing(tmp_path):
    target = tmp_path / "results"
    with pytest.raises(CommittedResultsUnavailable) as raised:
        ensure_committed_results(target, source=UNREACHABLE)
    message = str(raised.value)
    assert UNREACHABLE in message and "git clone" in message and "python -m hybrid_utils reproduce" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no target, no staging folder


@pytest.mark.parametrize("content", [b"not an archive", None], ids=["garbage", "missing-file"])
def test_a_bad_local_source_says_what_to_do(tmp_path, content):
    source = tmp_path / "source.tar.gz"
    if content is not None:
        source.write_bytes(content)
    with pytest.raises(CommittedResultsUnavailable, match="git clone"):
        ensure_committed_results(tmp_path / "results", source=str(source))
    assert not (tmp_path / "results").exists()


def test_an_archive_without_results_fails_and_leaves_nothing(tmp_path):
    source = make_archive(tmp_path / "a.tar.gz", {"repo-main/README.md": b"x"})
    with pytest.raises(CommittedResultsUnavailable, match="no files under results/"):
        ensure_committed_results(tmp_path / "work" / "results", source=str(source))
    assert list(tmp_path.iterdir()) == [source]  # not even the parent folder it made for the target


def test_unsafe_members_are_refused_and_links_skipped(tmp_path):
    assert member_path("repo-main/results/a/b.csv") .as_posix() == "a/b.csv"
    assert member_path("repo-main/notebooks/results.csv") is None
    with pytest.raises(ValueError, match="unsafe"):
        member_path("repo-main/results/../../etc/passwd")
    link = tarfile.TarInfo("repo-main/results/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    source = make_archive(tmp_path / "a.tar.gz", extra=[link])
    ensure_committed_results(tmp_path / "results", source=str(source), log=None)
    assert listing(tmp_path / "results") == ["summary.csv", "tuning/mlqa-r.json"]
    evil = make_archive(tmp_path / "evil.tar.gz", {"repo-main/results/../../x": b"x"})
    with pytest.raises(CommittedResultsUnavailable, match="unsafe"):
        ensure_committed_results(tmp_path / "elsewhere", source=str(evil))
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git clone")
def test_the_archive_of_this_commit_gives_exactly_the_committed_results(tmp_path):
    """``git archive`` writes what GitHub's archive URL serves (a ``<repository>-<branch>/`` prefix, a pax header)."""
    source = tmp_path / "main.tar.gz"
    subprocess.run(["git", "archive", "--format=tar.gz", "--prefix=hybrid-batch-tutorials-main/", "-o", str(source),
                    "HEAD"], cwd=ROOT, check=True)
    committed = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD", "results/"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
    ensure_committed_results(tmp_path / "results", source=source.as_uri(), log=None)
    assert committed and listing(tmp_path / "results") == sorted(p.removeprefix("results/") for p in committed)


# --------------------------------------------------------------------------- notebook.setup()

def test_setup_fetches_for_the_cpu_profile_outside_a_clone_in_one_line(tmp_path, monkeypatch, archive, capsys):
    work = tmp_path / "content"  # Colab's working folder: no clone
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv(PROFILE_ENV, "smoke")  # setup() sets it; restored afterwards
    monkeypatch.setenv(RESULTS_URL_ENV, str(archive))
    setup("cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("profile: cpu") and "fetched the committed results" in out
    assert listing(work / "results") == ["summary.csv", "tuning/mlqa-r.json"]


def test_setup_offline_still_runs_and_says_what_to_do_in_its_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PROFILE_ENV, "smoke")  # setup() sets it; restored afterwards
    monkeypatch.setenv(RESULTS_URL_ENV, UNREACHABLE)
    setup("cpu-pretrained")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "git clone" in out and "python -m hybrid_utils reproduce" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["smoke profile", "folder exists", "in a clone"])
def test_setup_fetches_nothing_otherwise(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(committed_results, "fetch_results", lambda *a, **k: pytest.fail("nothing to fetch"))
    profile = get_profile("smoke" if case == "smoke profile" else "cpu")
    if case == "folder exists":
        (tmp_path / "results").mkdir()
    if case == "in a clone":
        (tmp_path / "pyproject.toml").write_text("[project]\n")
        (tmp_path / "hybrid_utils").mkdir()
    assert committed_results_note(profile) == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == {"smoke profile": [], "folder exists": ["results"],
                                                          "in a clone": ["hybrid_utils", "pyproject.toml"]}[case]
