"""Proto comments by full name, from a descriptor set compiled here with source info (protoc from grpc_tools)."""

from __future__ import annotations

import pytest
from grpc_tools import protoc

from techno_edge.adapters.proto_docs import ProtoDocs

PROTO = """
syntax = "proto3";
package docs.testing.v1;

// Shelves keeps things.
//
// A second paragraph.
service Shelves {
  // GetThing returns one thing.
  rpc GetThing(Thing) returns (Thing);
}

// Thing is a thing.
message Thing {
  string name = 1;  // Its name (a trailing comment).
  // Where it sits.
  Place place = 2;

  // Place is nested.
  message Place {
    // The shelf's number.
    int32 shelf = 1;
  }

  // Color is a nested enum.
  enum Color {
    // No color given.
    COLOR_UNSPECIFIED = 0;
  }
}

enum Size {
  SIZE_UNSPECIFIED = 0;
  // Fits in a hand.
  SIZE_SMALL = 1;
}
"""


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> ProtoDocs:
    directory = tmp_path_factory.mktemp("protos")
    (directory / "things.proto").write_text(PROTO)
    out = directory / "set.binpb"
    arguments = ["protoc", f"-I{directory}", "--include_source_info", f"--descriptor_set_out={out}", "things.proto"]
    assert protoc.main(arguments) == 0
    return ProtoDocs.from_descriptor_set(out.read_bytes())


@pytest.mark.parametrize(
    ("name", "comment"),
    [
        ("docs.testing.v1.Shelves", "Shelves keeps things.\n\nA second paragraph."),
        ("docs.testing.v1.Shelves.GetThing", "GetThing returns one thing."),
        ("docs.testing.v1.Thing", "Thing is a thing."),
        ("docs.testing.v1.Thing.name", "Its name (a trailing comment)."),
        ("docs.testing.v1.Thing.place", "Where it sits."),
        ("docs.testing.v1.Thing.Place", "Place is nested."),
        ("docs.testing.v1.Thing.Place.shelf", "The shelf's number."),
        ("docs.testing.v1.Thing.Color", "Color is a nested enum."),
        ("docs.testing.v1.Thing.Color.COLOR_UNSPECIFIED", "No color given."),
        ("docs.testing.v1.Size.SIZE_SMALL", "Fits in a hand."),
        ("docs.testing.v1.Size", ""),  # no comment
        ("docs.testing.v1.Size.SIZE_UNSPECIFIED", ""),
        ("docs.testing.v1.Missing", ""),
    ],
)
def test_comments_by_full_name(docs: ProtoDocs, name: str, comment: str) -> None:
    assert docs.of(name) == comment
