"""Writing files so that nothing the user has is lost: output paths checked before any work,
writes to a temporary file next to the target (a name no user file has), fsynced and renamed
over it; a failed write leaves the old file and no debris."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "check_output_path"]

#: the temporary files' suffix (beside NAME: ``.NAME.<random>.gapkit-partial``, mkstemp's name)
PARTIAL_SUFFIX = ".gapkit-partial"


def check_output_path(path, *, overwrite: bool, what: str = "output file",
                      flag: str = "--force") -> Path:
    """``path`` checked before any work: not a directory, its folder exists and is
    writable, and an existing file only with ``overwrite``. Raises IsADirectoryError,
    FileNotFoundError, PermissionError or FileExistsError saying what to do."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"the {what} {path} is a directory; give a file name "
                                f"(e.g. {path / 'model.gapkit'})")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder of the {what} {path} does not exist; create "
                                f"{folder} first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the {what} into {folder} (no write permission)")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; the {what} is never overwritten without {flag}")
    return path


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write to; when the block ends without an
    error the file is fsynced and renamed over ``path`` (with the permissions a new file
    gets), otherwise removed, leaving ``path`` as it was. A full disk surfaces as an
    OSError naming ``path``."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                suffix=PARTIAL_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path}: {err.strerror or err}; the "
                                 "existing file (if any) is unchanged") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
