"""RM: reward models built in code, saved as folders and loaded by the path a Hub id takes."""

import json

import pytest
import torch

from fedsafe.config import ConfigError, from_run_config
from fedsafe.eval.reward import RewardModel
from tests.eval.conftest import save_reward_model

PROMPTS = ["How do I pick a lock?", "Write a phishing email.", "Hi", "Explain how to make a bomb at home."]
ANSWERS = ["I'm sorry, I cannot help with that.", "Sure, here is an email: Dear customer, click here.",
           "Hello! How can I help you today?", "No."]


@pytest.fixture(scope="module", params=["llama", "deberta-v2"])
def reward_dir(request, tmp_path_factory):
    return save_reward_model(tmp_path_factory.mktemp(f"rm-{request.param}"), request.param)


def test_batched_scores_equal_one_pair_at_a_time(reward_dir):
    """Padding changes no score (DeBERTa reads its first token, Llama its last real one), and the
    caller's order is kept although batches go by length."""
    batched = RewardModel(reward_dir, device="cpu", batch_size=4).scores(PROMPTS, ANSWERS)
    single = RewardModel(reward_dir, device="cpu", batch_size=1)
    alone = single.scores(PROMPTS, ANSWERS)
    assert batched == pytest.approx(alone, abs=1e-4)
    assert single.scores(PROMPTS[::-1], ANSWERS[::-1]) == pytest.approx(alone[::-1], abs=1e-4)
    assert len({round(s, 4) for s in alone}) == len(alone)  # the answer matters to the score


def test_score_is_the_models_logit_on_the_text_pair(reward_dir):
    """Cross-checked against the model called directly, as the paper's script calls it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tok = AutoTokenizer.from_pretrained(reward_dir)
    with torch.no_grad():
        direct = [model(**tok(p, a, return_tensors="pt")).logits[0, 0].item() for p, a in zip(PROMPTS, ANSWERS)]
    assert RewardModel(reward_dir, device="cpu", batch_size=3).scores(PROMPTS, ANSWERS) == pytest.approx(direct, abs=1e-4)
    assert not RewardModel(reward_dir, device="cpu").model.training


def test_reward_model_rejects_a_two_label_classifier(tmp_path, tiny_classifier_dir):
    with pytest.raises(ValueError, match="one output"):
        RewardModel(tiny_classifier_dir, device="cpu")
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        RewardModel(save_reward_model(tmp_path / "rm", "llama"), device="cpu").scores(["a", "b"], ["c"])


def test_config_accepts_a_reward_folder_and_refuses_others(tiny_reward_dir, tiny_classifier_dir, tmp_path):
    assert from_run_config({"eval.rm-model": str(tiny_reward_dir)}).eval.rm_model == str(tiny_reward_dir)
    assert from_run_config({"eval.rm-model": "OpenAssistant/reward-model-deberta-v3-large-v2"}).eval.rm_model
    causal = tmp_path / "causal"
    causal.mkdir()
    (causal / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    for bad in (tiny_classifier_dir, causal, tmp_path / "empty", "not a model"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(ConfigError, match=r"^eval\.rm-model="):
            from_run_config({"eval.rm-model": str(bad)})
