"""fedsafe/federation/transport.py: adapters packed into one Array on the wire come back bit for bit, in
order; packing is idempotent; the grid wrapper packs out, unpacks back and polls for replies."""

import time
from collections import OrderedDict

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, Metadata, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedsafe import models
from fedsafe.federation.transport import INDEX, PACKED, PackedGrid, pack, pack_record, packed_arrays, unpack, unpack_record


def _state(n=12):
    g = torch.Generator().manual_seed(0)
    return OrderedDict((f"layer.{i}.lora_{'AB'[i % 2]}.weight", torch.randn(4, 3 + i, generator=g)) for i in range(n))


def _message(content, dst=7, message_id=""):
    return Message(content=content, metadata=Metadata(
        run_id=1, message_id=message_id, src_node_id=1, dst_node_id=dst, reply_to_message_id="", group_id="1",
        created_at=time.time(), ttl=600, message_type="train"))


def test_pack_roundtrip_is_exact_and_ordered():
    state = _state()
    packed = pack_record(models.to_arrays(state))
    assert list(packed.keys()) == [PACKED, INDEX]
    back = models.from_arrays(unpack_record(packed))
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert pack_record(packed) is packed and unpack_record(models.to_arrays(state)).keys() == state.keys()
    single = ArrayRecord(torch_state_dict={"w": torch.ones(2)})
    assert pack_record(single) is single  # nothing to gain


def test_messages_sharing_one_record_are_packed_once_without_touching_it():
    record = RecordDict({"arrays": models.to_arrays(_state(240)), "config": ConfigRecord({"lr": 0.1})})
    messages = pack([_message(record, dst) for dst in (1, 2, 3)])
    assert list(record["arrays"].keys())[0].startswith("layer.0")  # the strategy's record is unchanged
    assert messages[0].content["arrays"] is messages[2].content["arrays"]
    assert messages[0].content["config"]["lr"] == 0.1
    assert len(get_all_nested_objects(messages[0])) < 12 < len(get_all_nested_objects(_message(record)))
    assert list(unpack(messages)[1].content["arrays"].keys()) == list(record["arrays"].keys())


def test_client_mod_unpacks_for_the_handler_and_packs_the_reply():
    state = _state()
    seen = {}

    def handler(msg, context):
        seen["keys"] = list(msg.content["arrays"].keys())
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    incoming = pack([_message(RecordDict({"arrays": models.to_arrays(state)}))])[0]
    reply = packed_arrays(incoming, None, handler)
    assert seen["keys"] == list(state)
    assert list(reply.content["arrays"].keys()) == [PACKED, INDEX]


class _FakeGrid:
    """Pushes record what went out; replies arrive on the second pull."""

    def __init__(self):
        self.pushed, self.pulls = [], 0

    def push_messages(self, messages):
        self.pushed = list(messages)
        return [f"id{i}" for i in range(len(self.pushed))]

    def pull_messages(self, ids):
        self.pulls += 1
        if self.pulls < 2:
            return []
        out = []
        for i, msg in enumerate(self.pushed):
            source = _message(RecordDict(), message_id=f"id{i}")
            if i == 0:
                out.append(Message(Error(code=5, reason="node unavailable"), reply_to=source))
            else:
                out.append(Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=source))
        return out


def test_grid_packs_out_unpacks_back_and_polls():
    state = _state()
    fake = _FakeGrid()
    sent = [_message(RecordDict({"arrays": models.to_arrays(state)}), dst) for dst in (1, 2)]
    started = time.monotonic()
    replies = PackedGrid(fake).send_and_receive(sent, timeout=30)
    assert time.monotonic() - started < 2  # polled again after POLL_SECONDS, not flwr's 3 s
    assert list(fake.pushed[0].content["arrays"].keys()) == [PACKED, INDEX]
    assert fake.pushed[0] is sent[0]  # packed in place: the caller's messages get the grid's ids
    assert replies[0].has_error()
    assert list(replies[1].content["arrays"].keys()) == list(state)


@pytest.mark.parametrize("timeout", [0.0, 0.3])
def test_grid_gives_up_at_the_timeout(timeout):
    class Silent(_FakeGrid):
        def pull_messages(self, ids):
            return []

    started = time.monotonic()
    assert PackedGrid(Silent()).send_and_receive([_message(RecordDict())], timeout=timeout) == []
    assert time.monotonic() - started < timeout + 1


def test_a_second_array_record_travels_packed_both_ways():
    """SCAFFOLD's control variates ride next to the adapter: the mod unpacks both for the handler
    and packs both in the reply; the node worker's wire format carries them bit for bit."""
    from fedsafe.federation.node_worker import _pack, _unpack

    state = _state()
    control = OrderedDict((k, -2 * v) for k, v in state.items())
    seen = {}

    def handler(msg, context):
        seen.update({k: models.from_arrays(msg.content[k]) for k in ("arrays", "scaffold")})
        return Message(RecordDict({"arrays": msg.content["arrays"], "scaffold": msg.content["scaffold"]}),
                       reply_to=msg)

    incoming = pack([_message(RecordDict({"arrays": models.to_arrays(state),
                                          "scaffold": models.to_arrays(control)}))])[0]
    assert list(incoming.content["scaffold"].keys()) == [PACKED, INDEX]
    content, _ = _unpack(_pack(incoming.content, RecordDict()))  # through a node worker's socket
    reply = packed_arrays(_message(content), None, handler)
    assert all(torch.equal(seen["scaffold"][k], control[k]) for k in control)
    assert all(list(reply.content[k].keys()) == [PACKED, INDEX] for k in ("arrays", "scaffold"))
    back = models.from_arrays(unpack_record(reply.content["scaffold"]))
    assert list(back) == list(control) and all(torch.equal(back[k], control[k]) for k in control)
