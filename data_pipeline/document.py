"""Document: the one record type that moves through curation.

Provenance is always set: `source` is the file a document came from and `offset` its position
there (byte offset for WARC/WET records, line number for JSON Lines, row for Parquet), so every
kept or dropped document can be traced back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    offset: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON Lines form: id and text first, metadata flattened beside them."""
        out: dict[str, Any] = {"id": self.id, "text": self.text}
        for key, value in self.metadata.items():
            if key not in out:
                out[key] = value
        return out
