"""Regenerate the checked-in message module from ``fedpharma_v1.proto``.

Run ``python -m fedpharma.transport.grpc.regenerate`` (needs ``grpcio-tools``) after editing the
proto. Only the messages are generated: the service's stub and method table are written by hand
in :mod:`fedpharma.transport.grpc.methods`, which frames data chunks without copying them.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "fedpharma_v1.proto"
HEADERS = {
    "fedpharma_v1_pb2.py": "# ruff: noqa\n# mypy: ignore-errors\n",
    "fedpharma_v1_pb2.pyi": "# ruff: noqa\n# mypy: ignore-errors\n",
}


def main() -> int:
    from grpc_tools import protoc  # dev-only dependency, needed only here

    status = protoc.main(
        [
            "protoc",
            f"-I{HERE}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            str(HERE / PROTO),
        ]
    )
    if status != 0:
        return int(status)
    for name, header in HEADERS.items():
        path = HERE / name
        path.write_text(header + path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
