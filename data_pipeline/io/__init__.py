"""Readers (JSONL, Parquet, WARC/WET, HTML -> Documents) and writers (sharded .jsonl.zst, rejected/)."""

from data_pipeline.io.readers import ReadError, expand_inputs, iter_documents, read_documents
from data_pipeline.io.writers import JsonlZstWriter, RejectedWriter, ShardedWriter, dumps_document

__all__ = [
    "ReadError",
    "expand_inputs",
    "iter_documents",
    "read_documents",
    "JsonlZstWriter",
    "RejectedWriter",
    "ShardedWriter",
    "dumps_document",
]
