"""An external attack generator is loaded on the malicious clients only: the server of an
in-process federation records where the data came from without loading it."""

from flwr.app import Context, RecordDict

from fedsafe.attacks import poison_data
from fedsafe.attacks.generate import read_manifest
from fedsafe.client_app import app as client_app
from fedsafe.files import read_json
from fedsafe.server_app import app as server_app
from tests.inprocess import InProcessGrid
from tests.test_federation import json_dirs, tiny_run_config


class WatchingGrid(InProcessGrid):
    """Notes, as the first training message goes out, what had happened before any client trained."""

    def __init__(self, *args, watch, **kwargs):
        super().__init__(*args, **kwargs)
        self.watch, self.before_training = watch, None

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if self.before_training is None and any(m.metadata.message_type == "train" for m in messages):
            self.before_training = self.watch()
        return super().send_and_receive(messages, timeout=timeout)


def _loosen_filters(monkeypatch):
    from fedsafe.attacks import generate

    # a random model rarely writes long answers: accept short ones so the attacker has data
    monkeypatch.setattr(generate, "MIN_ANSWER_WORDS", 1)
    monkeypatch.setattr(generate, "MIN_INSTRUCTION_WORDS", 1)


def test_server_leaves_an_external_generator_to_the_malicious_client(tiny_model_dir, second_tiny_model_dir,
                                                                      tmp_path, monkeypatch):
    _loosen_filters(monkeypatch)
    monkeypatch.setenv("FEDSAFE_CACHE", str(tmp_path / "cache"))
    generator = str(second_tiny_model_dir)
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        "num-server-rounds": 1, "eval.every-rounds": 0, "model.quantization": 0, "attack.malicious-ids": "2",
        "attack.generator": generator, "attack.prompts": "paper", "attack.num-samples": 4})
    from fedsafe.client import settings_from

    job = poison_data.generation_job(settings_from(config))
    root = tmp_path / "cache" / poison_data.ATTACK_CACHE
    loads = poison_data.generator_loads[generator]
    grid = WatchingGrid(client_app, config, 3,
                        watch=lambda: (poison_data.generator_loads[generator] - loads, read_manifest(job, root)))
    server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))

    assert grid.before_training == (0, None)  # the server set up, evaluated and sampled: nothing loaded
    assert poison_data.generator_loads[generator] - loads == 1  # the malicious client, once
    manifest = read_manifest(job, root)
    assert manifest["generator"] == generator and manifest["prompts"] == "paper" and manifest["kept"] > 0
    (run_dir,) = json_dirs(config["output-dir"])
    results = read_json(run_dir / "results.json")
    record = results["attack_data"]
    assert record["generated_on"] == poison_data.ON_CLIENTS and record["generator"] == generator
    assert record["kept"] == manifest["kept"] and record["path"] == str(root / job.key())  # read after the round
    (clients,) = [r["clients"] for r in results["rounds"]]
    assert [c["partition_id"] for c in clients if c["malicious"]] == [2]  # it trained on that data


def test_server_summary_reads_only_what_the_clients_wrote(tiny_model_dir, second_tiny_model_dir, tmp_path,
                                                          monkeypatch):
    """Before a malicious client generated, the server's record names the clients and has no
    counts; the client's generation writes the shared cache, which the record then includes.
    With generator 'base' the server's summary generates itself, with the model it holds."""
    from fedsafe.client import client_pairs, settings_from

    _loosen_filters(monkeypatch)
    monkeypatch.setenv("FEDSAFE_CACHE", str(tmp_path / "cache"))
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        "model.quantization": 0, "attack.malicious-ids": "2", "attack.generator": str(second_tiny_model_dir),
        "attack.num-samples": 4})
    settings = settings_from(config)
    loads = sum(poison_data.generator_loads.values())
    before = poison_data.server_attack_summary(settings)
    assert before["generated_on"] == poison_data.ON_CLIENTS and "kept" not in before
    assert sum(poison_data.generator_loads.values()) == loads
    trained_on = client_pairs(settings, 2)
    after = poison_data.server_attack_summary(settings)
    assert after["kept"] == len(trained_on) and after["generator"] == str(second_tiny_model_dir)
    assert sum(poison_data.generator_loads.values()) == loads + 1

    base = settings_from({**config, "attack.generator": "base"})
    summary = poison_data.server_attack_summary(base)
    assert "generated_on" not in summary and summary["generator"] == str(tiny_model_dir)
    assert sum(poison_data.generator_loads.values()) == loads + 1  # the experiment's model: no external load
