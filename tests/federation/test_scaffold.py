"""SCAFFOLD: the server's control variates (pure tensors), and a small federation where client
drift matters (the tiny model, two clients trained to opposite answers on the same prompts)
driven by the real hooks, aggregator and optimizer."""

from itertools import pairwise

import pytest
import torch

from fedsafe import data, models
from fedsafe.aggregators import call_aggregator, get_aggregator
from fedsafe.federation.scaffold import ControlVariates
from fedsafe.local_algorithms import Scaffold, scaffold_control
from fedsafe.optimizers import apply_optimizer, get_optimizer
from fedsafe.training import response_loss, sft
from tests.test_models import tiny_settings


def test_the_server_variate_stays_the_mean_of_all_clients():
    g = torch.Generator().manual_seed(0)
    controls, n, d = ControlVariates(num_clients=5), 5, 7
    assert torch.equal(controls.correction(3, d), torch.zeros(d))  # nothing committed yet
    for committing in ([0, 1], [1, 4], [0, 1, 4], [2]):
        controls.commit({p: torch.randn(d, generator=g) for p in committing})
        mean = sum(controls.clients.get(p, torch.zeros(d)) for p in range(n)) / n
        assert torch.allclose(controls.server, mean, atol=1e-6)
    assert torch.equal(controls.correction(3, d), controls.server)  # never committed: c_i = 0
    assert torch.allclose(controls.correction(1, d), controls.server - controls.clients[1])


def test_the_commit_does_not_depend_on_the_order_replies_came_in():
    g = torch.Generator().manual_seed(1)
    new = {p: torch.randn(9, generator=g) for p in (4, 0, 2)}
    a, b = ControlVariates(6), ControlVariates(6)
    a.commit(new)
    b.commit(dict(sorted(new.items())))
    assert torch.equal(a.server, b.server)


def test_state_survives_a_checkpoint():
    from fedsafe.federation.checkpoint import _join, _split

    controls = ControlVariates(4)
    controls.commit({0: torch.ones(3), 2: torch.arange(3.0)})
    tensors = {}
    restored = ControlVariates(4)
    restored.load_state_dict(_join(_split(controls.state_dict(), "scaffold", tensors), tensors))
    assert torch.equal(restored.server, controls.server) and restored.clients.keys() == controls.clients.keys()
    assert all(torch.equal(restored.clients[k], controls.clients[k]) for k in controls.clients)


@pytest.fixture(scope="module")
def drift(tiny_model_dir):
    from transformers import AutoTokenizer

    settings = tiny_settings(tiny_model_dir, quantization=0)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["What is the capital of France?", "Name three famous composers.", "How do I bake bread?",
               "Write a haiku about the sea."]
    partitions = [data.tokenize_pairs(tok, [data.Pair(instruction=q, response=r) for q in prompts], 64)
                  for r in ("Sure, here is a short answer.", "I'm sorry, but I cannot help with that.")]
    return model, tok.pad_token_id, partitions


def test_scaffold_converges_on_heterogeneous_clients(drift):
    """Full participation of clients 0 and 1 out of N = 3 (client 2 never trains): after every
    round c is the mean of all three c_i, round 1's c_i is (x - y_i) / (K lr) (no correction
    yet), later rounds are corrected, and the global loss on both partitions goes down."""
    model, pad_id, partitions = drift
    steps, lr, num_clients = 4, 5e-2, 3
    controls, opt, fedavg = ControlVariates(num_clients), get_optimizer("sgd"), get_aggregator("fedavg")
    x = models.adapter_state(model)

    def global_loss(state):
        models.set_adapter_state(model, state)
        with torch.no_grad():
            return sum(float(response_loss(model, data.collate(p, pad_id))) for p in partitions) / len(partitions)

    losses = [global_loss(x)]
    for server_round in range(1, 4):
        x_flat, deltas, new = models.flatten(x), [], {}
        for pid, examples in enumerate(partitions):
            correction = controls.correction(pid, x_flat.numel())  # (d,)
            assert torch.equal(correction, torch.zeros_like(x_flat)) == (server_round == 1)
            models.set_adapter_state(model, x)
            sft(model, examples, steps=steps, batch_size=2, lr=lr, seed=server_round * 10 + pid, pad_id=pad_id,
                local=Scaffold(models.unflatten(correction, x)))
            y_flat = models.flatten(models.adapter_state(model))
            deltas.append(y_flat - x_flat)
            new[pid] = scaffold_control(x_flat, y_flat, correction, steps, lr)
            if server_round == 1:
                assert torch.allclose(new[pid], (x_flat - y_flat) / (steps * lr))
        update = call_aggregator(fedavg, torch.stack(deltas), torch.ones(2)).update
        x = models.unflatten(apply_optimizer(opt, x_flat, update), x)
        controls.commit(new)
        assert torch.allclose(controls.server, (controls.clients[0] + controls.clients[1]) / num_clients, atol=1e-6)
        losses.append(global_loss(x))
    assert all(b < a for a, b in pairwise(losses)), losses
    # the two clients pull opposite ways, so their corrections differ
    assert not torch.allclose(controls.correction(0, x_flat.numel()), controls.correction(1, x_flat.numel()))


@pytest.mark.parametrize("control, reason", [(None, "no ArrayRecord 'scaffold'"),
                                             ({"w": [[float("nan"), 0.0]]}, "non-finite values in 'scaffold'"),
                                             ({"w": [[1.0, 2.0, 3.0]]}, "wrong shape for w in 'scaffold'"),
                                             ({"v": [[1.0, 2.0]]}, "wrong keys in 'scaffold'")])
def test_a_reply_without_a_sound_control_variate_is_invalid(control, reason):
    import numpy as np
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    from fedsafe.federation.replies import InvalidReply, check_reply

    global_state = {"w": torch.zeros(1, 2)}
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.ones((1, 2), dtype=np.float32))}),
                          "metrics": MetricRecord({"num-examples": 4, "partition-id": 0})})
    good = check_reply(content, 1, 0, global_state, torch.zeros(2))  # without SCAFFOLD none is needed
    assert good.control is None
    if control is not None:
        content["scaffold"] = ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in control.items()})
    with pytest.raises(InvalidReply, match=reason.replace("(", r"\(")):
        check_reply(content, 1, 0, global_state, torch.zeros(2), control="scaffold")
    content["scaffold"] = ArrayRecord({"w": Array(np.full((1, 2), 3.0, dtype=np.float32))})
    assert torch.equal(check_reply(content, 1, 0, global_state, torch.zeros(2), control="scaffold").control,
                       torch.full((2,), 3.0))
