"""How adapters travel: packed into one Array on the wire, one Array per tensor everywhere else.

flwr 1.42 moves a message between ServerApp, SuperLink, SuperNode and ClientApp as a tree of
objects with one HTTP request per object, and every tensor of an ArrayRecord is two objects (the
Array and its chunk). The default adapter (SmolLM2-135M, LoRA r=16 on q,k,v,o) is 240 tensors,
so ~480 requests per hop: measured 6-10 s per hop here, about 25 s of a 32 s deployment round.
Packed into one Array (flwr still chunks it at 5 MB), a hop takes 0.1-0.2 s.

The server packs what it sends and unpacks what comes back (`PackedGrid` around its Grid); the
client does the same (`packed_arrays`, a ClientApp mod). Strategies, aggregators and handlers
only ever see ordinary ArrayRecords. Both steps are idempotent, so a message packed twice or
unpacked when nothing was packed passes unchanged; an ArrayRecord of one array is left alone.
PackedGrid also notices replies every POLL_SECONDS instead of flwr's HttpGrid's 3 s.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

PACKED, INDEX = "fedsafe.packed", "fedsafe.index"
POLL_SECONDS = 0.25


def pack_record(record: ArrayRecord) -> ArrayRecord:
    """n Arrays -> 2: their serialized bytes back to back, and an index to cut them apart."""
    if len(record) <= 1 or PACKED in record:
        return record
    index = [[key, a.dtype, list(a.shape), a.stype, len(a.data)] for key, a in record.items()]
    blob = b"".join(a.data for a in record.values())
    return ArrayRecord(OrderedDict([
        (PACKED, Array(np.frombuffer(blob, dtype=np.uint8))),
        (INDEX, Array(np.frombuffer(json.dumps(index).encode(), dtype=np.uint8))),
    ]))


def unpack_record(record: ArrayRecord) -> ArrayRecord:
    if PACKED not in record:
        return record
    blob = record[PACKED].numpy().tobytes()
    arrays, start = OrderedDict(), 0
    for key, dtype, shape, stype, size in json.loads(record[INDEX].numpy().tobytes()):
        arrays[key] = Array(dtype=dtype, shape=tuple(shape), stype=stype, data=blob[start:start + size])
        start += size
    return ArrayRecord(arrays)


def _map_arrays(content: RecordDict, fn, done: dict) -> RecordDict:
    """A new RecordDict (the original may be shared by several messages) with fn applied to each
    ArrayRecord; `done` reuses one result per input record across messages."""
    out = RecordDict()
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            if id(record) not in done:
                done[id(record)] = (record, fn(record))  # keep `record` alive: its id stays unique
            record = done[id(record)][1]
        out[key] = record
    return out


def _map_messages(messages: Iterable[Message], fn) -> list[Message]:
    """In place: the grid sets each message's id on these very objects."""
    messages, done = list(messages), {}
    for msg in messages:
        if msg.has_content():
            msg.content = _map_arrays(msg.content, fn, done)
    return messages


def pack(messages: Iterable[Message]) -> list[Message]:
    return _map_messages(messages, pack_record)


def unpack(messages: Iterable[Message]) -> list[Message]:
    return _map_messages(messages, unpack_record)


def packed_arrays(msg: Message, context, call_next) -> Message:
    """ClientApp mod: the handler gets the message unpacked; its reply leaves packed."""
    reply = call_next(unpack([msg])[0], context)
    return pack([reply])[0]


class PackedGrid(Grid):
    """The ServerApp's Grid, packing on the way out and unpacking on the way back."""

    def __init__(self, grid: Grid):
        self.grid = grid

    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(pack(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return unpack(self.grid.pull_messages(message_ids))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = pack(messages)
        try:
            pending = {i for i in self.grid.push_messages(messages) if i}
        except NotImplementedError:  # a grid that only sends and receives (the tests' in-process one)
            return unpack(self.grid.send_and_receive(messages, timeout=timeout))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            got = list(self.grid.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(POLL_SECONDS)
        return unpack(replies)
