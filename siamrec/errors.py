"""User-facing errors: raised with one line that names the file or setting and says what to do."""


class SiamrecError(Exception):
    """A problem with the user's input or configuration; the CLI prints its message as one line, no traceback."""


def first_line(exc: BaseException) -> str:
    """The gist of a (possibly chained, multi-line) Hydra/OmegaConf error, on one line."""
    while not str(exc).strip() and exc.__cause__ is not None:
        exc = exc.__cause__
    lines = []
    for line in str(exc).splitlines():
        if line.startswith("Config search path") or line.strip().startswith("full_key"):
            break
        if line.strip():
            lines.append(line.strip())
    return (" ".join(lines)[:400] if lines else type(exc).__name__).replace(":;", ":")


DISK_ERRNOS = {"ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EFBIG"}  # a full, read-only or forbidden disk


def disk_errno_codes() -> set[int]:
    """The errno numbers of DISK_ERRNOS on this system."""
    import errno

    return {getattr(errno, name) for name in DISK_ERRNOS if hasattr(errno, name)}
