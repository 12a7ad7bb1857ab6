"""Copy the googleapis protos our protos import into build/protodeps, for buf.

They come from the installed googleapis-common-protos wheel (the same files the Python code is generated
against), so buf needs no network and no third-party proto is committed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from google.api import annotations_pb2

ROOT = Path(__file__).resolve().parent.parent
IMPORTED = ["google/api/annotations.proto", "google/api/http.proto", "google/api/field_behavior.proto"]


def main() -> None:
    source = Path(annotations_pb2.__file__).parent.parent.parent
    target = ROOT / "build" / "protodeps"
    for name in IMPORTED:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)


if __name__ == "__main__":
    main()
