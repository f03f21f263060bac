"""A whole federation in one process: a Grid that hands each message straight to the real
ClientApp with that node's Context. No Ray, no SuperLink; everything else is the real code."""

from __future__ import annotations

from flwr.app import Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 1


class InProcessGrid(Grid):
    def __init__(self, client_app, run_config: dict, num_nodes: int, fail: dict[int, int] | None = None,
                 reverse_replies: bool = False):
        """`fail`: {partition id: round} makes that client raise in that round; `reverse_replies`
        returns a round's replies last-sent first, as a SuperLink may."""
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, 0
        self.client_app = client_app
        self.fail = fail or {}
        self.reverse_replies = reverse_replies
        self.contexts = {
            1000 + k: Context(run_id=RUN_ID, node_id=1000 + k, state=RecordDict(), run_config=dict(run_config),
                              node_config={"partition-id": k, "num-partitions": num_nodes})
            for k in range(num_nodes)
        }
        self.sent: list[Message] = []
        self.replies: list[Message] = []  # every train reply, as it came back

    def set_run(self, run) -> None:  # the in-process federation has one fixed run
        pass

    @property
    def run(self):
        raise NotImplementedError("no Run object in the in-process grid")

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError("use send_and_receive")

    def pull_messages(self, message_ids):
        raise NotImplementedError("use send_and_receive")

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            self.sent.append(msg)
            context = self.contexts[msg.metadata.dst_node_id]
            pid = context.node_config["partition-id"]
            try:
                if msg.metadata.message_type == "train" and self.fail.get(pid) == msg.content["config"]["server-round"]:
                    raise RuntimeError(f"client {pid} crashed on purpose")
                replies.append(self.client_app(msg, context))
            except Exception as err:  # what Flower does: the exception becomes an error reply
                replies.append(Message(Error(code=0, reason=f"{type(err).__name__}: {err}"), reply_to=msg))
        self.replies += [r for r in replies if r.metadata.message_type == MessageType.TRAIN]
        return replies[::-1] if self.reverse_replies else replies


def scripted_app(answer):
    """A stand-in for the ClientApp: it tells the strategy each node's partition id and answers
    each train message with `answer(message, partition_id)` instead of training."""

    def app(msg: Message, context: Context) -> Message:
        pid = context.node_config["partition-id"]
        if msg.metadata.message_type == MessageType.QUERY:
            return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)
        return answer(msg, pid)

    return app
