"""The config schema (protobuf).

The ``*_pb2.py`` modules and their ``*_pb2.pyi`` type stubs (read by mypy) are generated from the
``.proto`` files beside this file and are never committed or edited by hand. In a source checkout,
``python -m recforge.protos`` (run by the README's set-up command and by CI) regenerates them, and
importing this package regenerates any that are missing or older than their ``.proto`` source, so
a fresh checkout works without a separate build step. A wheel carries them already: ``setup.py``'s
``build_py`` generates them at build time, and an installed package never writes into its own
folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PROTO_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PROTO_DIR.parent.parent


def _proto_files() -> list[Path]:
    return sorted(_PROTO_DIR.rglob("*.proto"))


def _generated_paths(proto: Path) -> tuple[Path, ...]:
    return (proto.with_name(proto.stem + "_pb2.py"), proto.with_name(proto.stem + "_pb2.pyi"))


def _stale() -> list[Path]:
    stale = []
    for proto in _proto_files():
        mtime = proto.stat().st_mtime
        if any(not g.exists() or g.stat().st_mtime < mtime for g in _generated_paths(proto)):
            stale.append(proto)
    return stale


def compile_protos(force: bool = False, out_dir: Path | None = None) -> list[Path]:
    """Generates ``*_pb2.py`` and ``*_pb2.pyi`` for every ``.proto`` newer than either output.

    Args:
        force: regenerate every file, stale or not.
        out_dir: the folder that receives the ``recforge/protos/...`` tree of generated modules
            (the checkout itself by default; a wheel build's staging folder for ``setup.py``).
            Given one, every file is compiled.

    Returns:
        The ``.proto`` files that were compiled.

    Raises:
        RuntimeError: protoc rejected a file (its message names the file and line).

    """
    from grpc_tools import protoc  # imported lazily: only needed when something is stale

    todo = _proto_files() if force or out_dir is not None else _stale()
    if not todo:
        return []
    out = Path(out_dir) if out_dir is not None else _REPO_ROOT
    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    args = ["protoc", f"-I{_REPO_ROOT}", f"-I{include}", f"--python_out={out}"]
    args.append(f"--pyi_out={out}")  # type stubs for mypy
    args += [str(p.relative_to(_REPO_ROOT)) for p in todo]
    # protoc writes to a temp file per output, so concurrent imports (DataLoader workers,
    # torchrun ranks) never read a half-written module.
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed ({code}) compiling {', '.join(map(str, todo))}")
    for sub in {out / p.parent.relative_to(_REPO_ROOT) for p in todo}:
        (sub / "__init__.py").touch(exist_ok=True)
    return todo


def _in_source_checkout() -> bool:
    return (_REPO_ROOT / "pyproject.toml").is_file() and (_REPO_ROOT / "recforge").is_dir()


if os.environ.get("RECFORGE_SKIP_PROTO_BUILD") != "1" and _in_source_checkout() and _stale():
    compile_protos()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
