"""Reading a vae-lab run's TensorBoard events back as TensorBoard shows them (test tooling).

Used by the tests and the kill harness to check that a killed and resumed run's curves are
those of an uninterrupted run; the product only writes events (runtime/tensorboard.py).
"""
from __future__ import annotations

import os
import struct
from typing import Any

from runtime.tensorboard import AXIS_FOLDERS


def _records(path: str):
    """The records of one TFRecord file; a torn last record (a killed writer) ends the file.

    Only the 8-byte length header's CRC is checked: a kill can only cut the file short, and
    the pure-Python CRC of every payload would cost ~0.3 s per MB.
    """
    from tensorboardX.record_writer import masked_crc32c

    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        end = pos + 12 + length + 4
        if header_crc != masked_crc32c(header) or end > len(data):
            return
        yield data[pos + 12:pos + 12 + length]
        pos = end


READERS = ("accumulator", "dataserver", "raw")


def read_run(folder: str, reader: str = "accumulator") -> dict[str, list[tuple[int, Any]]]:
    """What TensorBoard shows of one run folder (its own event files, not sub-folders).

    Returns tag -> [(step, value)] in file order: a float for scalars, ``None`` for images.
    Files are read in name order, as TensorBoard does. ``reader`` picks whose rules hide the
    events of a killed run:

    * ``accumulator`` (TensorBoard's Python loader, ``--load_fast=false``): a
      ``SessionLog.START`` at step P drops every earlier event of the folder with step >= P;
    * ``dataserver`` (the Rust data server, ``--load_fast=true``): an event at step s drops
      the earlier events *of its tag* with step >= s;
    * ``raw``: nothing is hidden (every event on disk).
    """
    from tensorboardX.proto import event_pb2

    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    out: dict[str, list[tuple[int, Any]]] = {}

    def add(tag: str, step: int, value: Any) -> None:
        vals = out.setdefault(tag, [])
        if reader == "dataserver":
            vals[:] = [(s, v) for s, v in vals if s < step]
        vals.append((step, value))

    files = sorted(n for n in os.listdir(folder) if "tfevents" in n and os.path.isfile(os.path.join(folder, n)))
    for name in files:
        version = 0.0
        for payload in _records(os.path.join(folder, name)):
            ev = event_pb2.Event()
            ev.ParseFromString(payload)
            if ev.HasField("file_version"):
                version = float(ev.file_version.split(":")[-1])
            if reader == "accumulator" and version >= 2 and ev.HasField("session_log") \
                    and ev.session_log.status == event_pb2.SessionLog.START:
                out = {tag: [(s, v) for s, v in vals if s < ev.step] for tag, vals in out.items()}
            for v in ev.summary.value:
                if v.HasField("image"):
                    add(v.tag, ev.step, None)
                elif v.WhichOneof("value") == "simple_value":
                    add(v.tag, ev.step, v.simple_value)
    return out


def read_logdir(logdir: str, reader: str = "accumulator") -> dict[str, list[tuple[int, Any]]]:
    """:func:`read_run` of every axis folder of a vae-lab run, merged by tag."""
    out: dict[str, list[tuple[int, Any]]] = {}
    for sub in AXIS_FOLDERS.values():
        folder = os.path.join(logdir, sub)
        if os.path.isdir(folder):
            for tag, vals in read_run(folder, reader).items():
                out.setdefault(tag, []).extend(vals)
    return out
