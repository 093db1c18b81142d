"""The committed study's ``results/`` where there is no clone: on Colab, the package is pip-installed from git.

A clone of the repository has the committed ``results/`` folder, which chapters 3 to 7 read in the ``cpu``
profile (and chapter 3 its ``results/tuning/`` in ``cpu-pretrained``). ``pip install "hybrid-batch-tutorials @
git+..."`` installs only the package, so on Colab :func:`hybrid_utils.notebook.setup` calls
:func:`ensure_committed_results`, which downloads the repository's archive (the branch the badges open) and
extracts its ``results/`` folder, and nothing else, into the working folder.

* An existing folder is never touched: nothing is downloaded, overwritten or deleted.
* The files land in a temporary folder next to the target first and are renamed into place only when all
  arrived, so an interrupted download leaves no half folder that would look like the committed study.
* ``$HYBRID_RESULTS_URL`` replaces the source: another archive URL, a local ``.tar.gz`` (path or ``file://``
  URL), or a local folder holding ``results/`` (a clone), e.g. for a machine without internet.
* Offline or when the download fails, it raises :class:`CommittedResultsUnavailable`, whose message says what
  to do instead: clone the repository, or compute the results with ``python -m hybrid_utils reproduce``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from .repository import REPOSITORY_BRANCH, REPOSITORY_URL

#: Environment variable that replaces the download's source (an archive URL, a local archive or a clone).
RESULTS_URL_ENV = "HYBRID_RESULTS_URL"
#: The repository's folder of committed results.
COMMITTED_FOLDER = "results"
#: The profiles whose chapters read the committed results: ``cpu`` is the committed study, ``cpu-pretrained``
#: reads ``results/tuning/`` (its per-method tuning).
COMMITTED_PROFILES = ("cpu", "cpu-pretrained")
#: Seconds without an answer from the server before the download gives up.
TIMEOUT = 60


class CommittedResultsUnavailable(RuntimeError):
    """The committed results are not there and could not be fetched; the message says what to do."""


def archive_url(repository: str = REPOSITORY_URL, branch: str = REPOSITORY_BRANCH) -> str:
    """GitHub's ``.tar.gz`` archive of ``branch`` of ``repository`` (every file the branch commits)."""
    return f"{repository}/archive/refs/heads/{branch}.tar.gz"


def results_source() -> str:
    """Where the committed results come from: ``$HYBRID_RESULTS_URL``, else :func:`archive_url`."""
    return os.environ.get(RESULTS_URL_ENV) or archive_url()


def what_to_do(target: str | os.PathLike = COMMITTED_FOLDER) -> str:
    """The advice every failure message ends with."""
    return (f"clone the repository (git clone {REPOSITORY_URL}) and open the notebooks there, or set "
            f"{RESULTS_URL_ENV} to a copy of its archive or of a clone, or compute {Path(target)}/ here with "
            f"`python -m hybrid_utils reproduce` (hours on a CPU)")


def ensure_committed_results(results_dir: str | os.PathLike = COMMITTED_FOLDER, source: str | None = None,
                             log=print) -> Path:
    """Make sure ``results_dir`` exists: if it is missing, fetch the repository's committed ``results/`` into it.

    Args:
        results_dir: Where the chapters read the committed results (relative to the working folder).
        source: An archive URL (``https://...tar.gz``), a local ``.tar.gz`` (path or ``file://`` URL), or a
            local folder holding ``results/``. Defaults to :func:`results_source`.
        log: Called with one line when files were fetched; None for silence.

    Returns:
        Path: ``results_dir``, untouched when it already existed.

    Raises:
        CommittedResultsUnavailable: The folder is missing and the source could not be read (offline, no
            such URL, not an archive, an archive without ``results/``); nothing was created.
    """
    target = Path(results_dir)
    if target.exists():
        return target
    source = source or results_source()
    try:
        count = fetch_results(source, target)
    except (OSError, tarfile.TarError, ValueError, EOFError, zlib.error) as err:  # urllib's errors are OSErrors
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise CommittedResultsUnavailable(
            f"{target}/ is missing and the committed results could not be fetched from {source} ({reason}). "
            f"To read the committed study, {what_to_do(target)}.") from err
    if log is not None:
        log(f"fetched the committed results: {count} files into {target}/ from {source}")
    return target


def fetch_results(source: str, target: str | os.PathLike, folder: str = COMMITTED_FOLDER) -> int:
    """Copy ``folder/`` of ``source`` (see :func:`ensure_committed_results`) to the missing ``target``.

    Returns the number of files. Raises ``FileExistsError`` if ``target`` exists.
    """
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists: it is left as it is")
    created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]  # deepest first
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    done = False
    try:
        local = local_path(source)
        if local is not None and local.is_dir():
            count = _copy_folder(local, folder, staging)
        else:
            with _open_source(source, local) as stream:
                count = _extract_folder(stream, folder, staging)
        if count == 0:
            raise ValueError(f"no files under {folder}/ in {source}")
        if target.exists():  # appeared meanwhile (another kernel): keep it
            raise FileExistsError(f"{target} appeared during the download: it is left as it is")
        staging.rename(target)
        done = True
        return count
    finally:
        if staging.exists():  # only the staging folder this call created
            shutil.rmtree(staging, ignore_errors=True)
        for folder in created if not done else ():  # and the (still empty) parents it created
            try:
                folder.rmdir()
            except OSError:
                break


def local_path(source: str) -> Path | None:
    """The local path a source names (a plain path or a ``file://`` URL); None for a remote URL."""
    parsed = urllib.parse.urlparse(str(source))
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (one letter: a Windows drive)
        return Path(source).expanduser()
    return None


def _open_source(source: str, local: Path | None):
    if local is not None:
        return open(local, "rb")
    request = urllib.request.Request(source, headers={"User-Agent": "hybrid-batch-tutorials"})
    return urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310 - http(s) or a file the user chose


def _copy_folder(clone: Path, folder: str, staging: Path) -> int:
    origin = clone / folder
    if not origin.is_dir():
        raise ValueError(f"{clone} has no {folder}/ folder")
    shutil.copytree(origin, staging, dirs_exist_ok=True)
    return sum(1 for path in staging.rglob("*") if path.is_file())


def member_path(name: str, folder: str = COMMITTED_FOLDER) -> PurePosixPath | None:
    """Where an archive member goes inside ``folder/``: None if it is not in it.

    Members are ``folder/...`` or, in GitHub's archives, ``<repository>-<branch>/folder/...``. Absolute
    paths and ``..`` raise ``ValueError``.
    """
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if parts and parts[0] == folder:
        rest = parts[1:]
    elif len(parts) > 1 and parts[1] == folder:
        rest = parts[2:]
    else:
        return None
    if name.startswith("/") or ".." in rest:
        raise ValueError(f"unsafe path in the archive: {name!r}")
    return PurePosixPath(*rest) if rest else PurePosixPath(".")


def _extract_folder(stream, folder: str, staging: Path) -> int:
    """Extract the regular files under ``folder/`` of a (streamed, compressed or not) tar archive."""
    count = 0
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for member in archive:
            relative = member_path(member.name, folder)
            if relative is None or not member.isfile():  # directories follow from files; links are skipped
                continue
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as data, open(destination, "wb") as out:
                shutil.copyfileobj(data, out)
            count += 1
    return count
