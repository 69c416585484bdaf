"""Read back an offline W&B run (the `run-*.wandb` transaction log) to check what a run logged.

The log is a 7-byte header (":W&B", magic 0xBEE1, version) then 32 KiB blocks of chunks, each with
a 7-byte header (checksum, length, type: 1 full, 2 first, 3 middle, 4 last) holding serialized
`wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """Every logged history row as {key: value}."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            )
    return rows


def config(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "config":
            merged |= {i.key: json.loads(i.value_json) for i in record.config.update}
    return merged


def exit_code(path: Path) -> int | None:
    codes = [r.exit.exit_code for r in records(path) if r.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None


def summary(path: Path) -> dict[str, Any]:
    """The run summary (values set with `run.summary[...]`, and the last logged value of each key)."""
    merged: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            merged |= {
                "/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update
            }
    return merged
