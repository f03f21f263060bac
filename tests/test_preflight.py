"""fedsafe/preflight.py: every file and folder a config names is opened and its shape checked,
with one line naming the key and the file, before any model loads."""

import json

import pytest

from fedsafe import preflight
from fedsafe.config import ConfigError, from_run_config
from fedsafe.files import write_jsonl


def check(flat: dict):
    preflight.check(from_run_config(flat))


def test_the_default_config_passes():
    check({})


def test_benign_data_needs_its_columns(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"q": "Name a colour.", "a": "Blue."}])
    check({"data.benign": str(good), "data.instruction-column": "q", "data.response-column": "a"})
    with pytest.raises(ConfigError, match=r"^data.benign='.*good.jsonl': .*lacks the column 'instruction'"):
        check({"data.benign": str(good)})
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"},
                                                                {"role": "assistant", "content": "Hello."}]}])
    check({"data.benign": str(chat)})  # conversation rows need no column mapping
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="has no rows"):
        check({"data.benign": str(empty)})
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"instruction": " ", "response": "x"}])
    with pytest.raises(ConfigError, match="no row with a non-empty instruction and response"):
        check({"data.benign": str(blank)})
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "response": \n')
    with pytest.raises(ConfigError, match=r"^data.benign='.*broken.jsonl': cannot read"):
        check({"data.benign": str(broken)})


def test_dataset_folder_is_read_like_the_run_reads_it(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    with pytest.raises(ConfigError, match="no data files"):
        check({"data.benign": str(folder)})
    write_jsonl(folder / "train.jsonl", [{"instruction": "Name a colour.", "response": "Blue."}])
    check({"data.benign": str(folder)})
    write_jsonl(folder / "train.jsonl", [{"text": "no columns"}])
    with pytest.raises(ConfigError, match="lacks the column 'instruction'"):
        check({"data.benign": str(folder)})


def test_attack_data_accepts_the_beavertails_layout(tmp_path):
    unsafe = write_jsonl(tmp_path / "bt.jsonl", [{"prompt": "p", "response": "r", "is_safe": False}])
    check({"attack.data": str(unsafe)})
    half = write_jsonl(tmp_path / "half.jsonl", [{"prompt": "p", "is_safe": False}])
    with pytest.raises(ConfigError, match="^attack.data=.*need 'prompt' and 'response'"):
        check({"attack.data": str(half)})
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"instruction": "i"}])
    with pytest.raises(ConfigError, match="^attack.instructions=.*lacks the column 'instruction' or 'response'"):
        check({"attack.instructions": str(plain)})


def test_benchmark_needs_a_prompt_column(tmp_path):
    csv = tmp_path / "bench.csv"
    csv.write_text("text,label\nhello,1\n")
    with pytest.raises(ConfigError, match=r"^eval.safety.benchmark='.*bench.csv': .*no prompt column; expected one of "
                                          r"prompt, goal, instruction, question \(has \['text', 'label'\]\)"):
        check({"eval.safety.benchmark": str(csv)})
    csv.write_text("Goal,label\nDo a harmful thing.,1\n")
    check({"eval.safety.benchmark": str(csv)})


def test_model_folders_need_a_config_and_a_tokenizer(tmp_path, tiny_model_dir):
    check({"model.name": str(tiny_model_dir), "attack.generator": str(tiny_model_dir)})
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match=r"^attack.generator='.*model': no tokenizer in"):
        check({"attack.generator": str(folder)})
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"^posthoc.generator='.*': cannot read .*config.json"):
        check({"posthoc.generator": str(folder)})
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"^eval.judge=.*has no model_type"):
        check({"eval.judge": str(folder)})


def test_resume_from_needs_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="^resume-from=.*no such folder"):
        check({"resume-from": str(tmp_path / "gone")})
    with pytest.raises(ConfigError, match="^resume-from=.*not a fedsafe run directory"):
        check({"resume-from": str(tmp_path)})
    (tmp_path / "config.json").write_text("{}")
    check({"resume-from": str(tmp_path)})


def test_the_server_app_checks_before_anything_loads(tmp_path, capsys):
    from flwr.app import Context, RecordDict

    from fedsafe.server_app import app as server_app

    bench = tmp_path / "bench.csv"
    bench.write_text("text\nhello\n")
    config = {"eval.safety.benchmark": str(bench), "output-dir": str(tmp_path / "runs")}
    with pytest.raises(ConfigError, match="no prompt column"):
        server_app(None, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    assert capsys.readouterr().out.startswith("fedsafe: error: eval.safety.benchmark=")  # what check_run shows
    assert not (tmp_path / "runs").exists()  # no run directory, no model


def test_the_l1_source_is_opened_before_the_rounds(tmp_path):
    """A bad L1 file would otherwise fail only in post-hoc, after every round."""
    bad = write_jsonl(tmp_path / "chat.jsonl", [{"q": "Name a colour.", "a": "Blue."}])
    with pytest.raises(ConfigError, match=r"^posthoc.l1-source='.*chat.jsonl': .*lacks the column 'instruction'"):
        check({"posthoc.level": "L1", "posthoc.l1-source": str(bad)})
    check({"posthoc.level": "curated", "posthoc.l1-source": str(bad)})  # not read by this level

