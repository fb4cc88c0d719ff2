"""Generates the committed gRPC code in aptmesh/v1/ from proto/aptmesh/v1/*.proto.

`--check` regenerates into a scratch directory and fails if the committed code
differs, so CI proves the generated code is current.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = Path("aptmesh") / "v1"


def generate(out_root: Path) -> None:
    bin_dir = Path(sys.executable).parent
    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / OUT_PACKAGE).glob("*.proto")
    )
    include = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / OUT_PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / OUT_PACKAGE / "__init__.py").write_text(
        '"""Generated gRPC code for package aptmesh.v1 (see proto/generate.py)."""\n'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    if not args.check:
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, committed = Path(tmp) / OUT_PACKAGE, ROOT / OUT_PACKAGE
        names = {p.name for p in fresh.iterdir()} | {
            p.name for p in committed.glob("*") if p.is_file() and p.suffix in {".py", ".pyi"}
        }
        stale = sorted(
            n
            for n in names
            if not (fresh / n).exists()
            or not (committed / n).exists()
            or not filecmp.cmp(fresh / n, committed / n, shallow=False)
        )
    if stale:
        print(
            f"generated gRPC code is stale: {', '.join(stale)}; run `make proto`", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
