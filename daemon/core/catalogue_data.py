"""Bundled catalogue of model architectures, keyed by Xinference's built-in model names.

Lets the GPU-memory estimator get a model's real parameter count and the ``config.json`` fields
that decide weight bytes and KV-cache bytes per token, without downloading anything.

Sources: names, sizes and repos come from Xinference's spec files (``xinference/model/llm/
llm_family.json``, ``embedding/model_spec.json``, ``rerank/model_spec.json``, xorbitsai/inference
commit 7ecec16b); sizes written ``"1_5"`` there are numbers here, and embedding/rerank specs have no
size, hence ``None``. ``"in_xinference": False`` marks models missing from that spec (``gemma-2-it``
was built in until commit 0e3516a1, 2025-04-29). ``config`` holds the Hugging Face repo's
``config.json`` values under its own keys (multimodal Gemma 3: ``text_config`` flattened, with
Transformers' defaults written out). ``params_billions`` is the total count (embeddings included,
all experts for MoE), computed from the shapes and checked against the model cards.
"""

from __future__ import annotations

# fmt: off
CATALOGUE: tuple[dict[str, object], ...] = (
    # --- Qwen2.5-Instruct (qwen2.5-instruct)
    {
        "xinference_name": "qwen2.5-instruct",
        "size_in_billions": 0.5,
        "hf_repo": "Qwen/Qwen2.5-0.5B-Instruct",
        "model_type": "LLM",
        "params_billions": 0.494,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 24, "hidden_size": 896,
            "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
            "vocab_size": 151936, "max_position_embeddings": 32768, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-instruct",
        "size_in_billions": 1.5,
        "hf_repo": "Qwen/Qwen2.5-1.5B-Instruct",
        "model_type": "LLM",
        "params_billions": 1.54,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 1536,
            "num_attention_heads": 12, "num_key_value_heads": 2, "intermediate_size": 8960,
            "vocab_size": 151936, "max_position_embeddings": 32768, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-instruct",
        "size_in_billions": 3,
        "hf_repo": "Qwen/Qwen2.5-3B-Instruct",
        "model_type": "LLM",
        "params_billions": 3.09,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 36, "hidden_size": 2048,
            "num_attention_heads": 16, "num_key_value_heads": 2, "intermediate_size": 11008,
            "vocab_size": 151936, "max_position_embeddings": 32768, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-instruct",
        "size_in_billions": 7,
        "hf_repo": "Qwen/Qwen2.5-7B-Instruct",
        "model_type": "LLM",
        "params_billions": 7.62,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584,
            "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
            "vocab_size": 152064, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-instruct",
        "size_in_billions": 14,
        "hf_repo": "Qwen/Qwen2.5-14B-Instruct",
        "model_type": "LLM",
        "params_billions": 14.77,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 48, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 13824,
            "vocab_size": 152064, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-instruct",
        "size_in_billions": 32,
        "hf_repo": "Qwen/Qwen2.5-32B-Instruct",
        "model_type": "LLM",
        "params_billions": 32.76,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 64, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648,
            "vocab_size": 152064, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-instruct",
        "size_in_billions": 72,
        "hf_repo": "Qwen/Qwen2.5-72B-Instruct",
        "model_type": "LLM",
        "params_billions": 72.71,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 80, "hidden_size": 8192,
            "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 29568,
            "vocab_size": 152064, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    # --- Qwen2.5-Coder-Instruct (qwen2.5-coder-instruct)
    {
        "xinference_name": "qwen2.5-coder-instruct",
        "size_in_billions": 7,
        "hf_repo": "Qwen/Qwen2.5-Coder-7B-Instruct",
        "model_type": "LLM",
        "params_billions": 7.62,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584,
            "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
            "vocab_size": 152064, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-coder-instruct",
        "size_in_billions": 14,
        "hf_repo": "Qwen/Qwen2.5-Coder-14B-Instruct",
        "model_type": "LLM",
        "params_billions": 14.77,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 48, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 13824,
            "vocab_size": 152064, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen2.5-coder-instruct",
        "size_in_billions": 32,
        "hf_repo": "Qwen/Qwen2.5-Coder-32B-Instruct",
        "model_type": "LLM",
        "params_billions": 32.76,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 64, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648,
            "vocab_size": 152064, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    # --- Qwen3 (qwen3; dense and the 30B-A3B MoE)
    {
        "xinference_name": "qwen3",
        "size_in_billions": 0.6,
        "hf_repo": "Qwen/Qwen3-0.6B",
        "model_type": "LLM",
        "params_billions": 0.596,
        "config": {
            "model_type": "qwen3", "num_hidden_layers": 28, "hidden_size": 1024,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 3072, "vocab_size": 151936, "max_position_embeddings": 40960,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen3",
        "size_in_billions": 1.7,
        "hf_repo": "Qwen/Qwen3-1.7B",
        "model_type": "LLM",
        "params_billions": 1.72,
        "config": {
            "model_type": "qwen3", "num_hidden_layers": 28, "hidden_size": 2048,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 6144, "vocab_size": 151936, "max_position_embeddings": 40960,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen3",
        "size_in_billions": 4,
        "hf_repo": "Qwen/Qwen3-4B",
        "model_type": "LLM",
        "params_billions": 4.02,
        "config": {
            "model_type": "qwen3", "num_hidden_layers": 36, "hidden_size": 2560,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 9728, "vocab_size": 151936, "max_position_embeddings": 40960,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen3",
        "size_in_billions": 8,
        "hf_repo": "Qwen/Qwen3-8B",
        "model_type": "LLM",
        "params_billions": 8.19,
        "config": {
            "model_type": "qwen3", "num_hidden_layers": 36, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 12288, "vocab_size": 151936, "max_position_embeddings": 40960,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen3",
        "size_in_billions": 14,
        "hf_repo": "Qwen/Qwen3-14B",
        "model_type": "LLM",
        "params_billions": 14.77,
        "config": {
            "model_type": "qwen3", "num_hidden_layers": 40, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 17408, "vocab_size": 151936, "max_position_embeddings": 40960,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "qwen3",
        "size_in_billions": 32,
        "hf_repo": "Qwen/Qwen3-32B",
        "model_type": "LLM",
        "params_billions": 32.76,
        "config": {
            "model_type": "qwen3", "num_hidden_layers": 64, "hidden_size": 5120,
            "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 25600, "vocab_size": 151936, "max_position_embeddings": 40960,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        # MoE: 128 experts, 8 active per token (about 3.3B active parameters).
        "xinference_name": "qwen3",
        "size_in_billions": 30,
        "hf_repo": "Qwen/Qwen3-30B-A3B",
        "model_type": "LLM",
        "params_billions": 30.53,
        "config": {
            "model_type": "qwen3_moe", "num_hidden_layers": 48, "hidden_size": 2048,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
            "intermediate_size": 6144, "vocab_size": 151936, "max_position_embeddings": 40960,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
            "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
            "decoder_sparse_step": 1,
        },
    },
    # --- QwQ (QwQ-32B)
    {
        "xinference_name": "QwQ-32B",
        "size_in_billions": 32,
        "hf_repo": "Qwen/QwQ-32B",
        "model_type": "LLM",
        "params_billions": 32.76,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 64, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648,
            "vocab_size": 152064, "max_position_embeddings": 40960, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    # --- Llama 3.1 / 3.2 / 3.3 Instruct
    {
        "xinference_name": "llama-3.1-instruct",
        "size_in_billions": 8,
        "hf_repo": "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "model_type": "LLM",
        "params_billions": 8.03,
        "config": {
            "model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
            "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
    },
    {
        "xinference_name": "llama-3.1-instruct",
        "size_in_billions": 70,
        "hf_repo": "meta-llama/Meta-Llama-3.1-70B-Instruct",
        "model_type": "LLM",
        "params_billions": 70.55,
        "config": {
            "model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192,
            "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672,
            "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
    },
    {
        # Xinference only ships the 3.2 *vision* models (llama-3.2-vision-instruct 11B/90B).
        "xinference_name": "llama-3.2-instruct",
        "size_in_billions": 1,
        "hf_repo": "meta-llama/Llama-3.2-1B-Instruct",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 1.24,
        "config": {
            "model_type": "llama", "num_hidden_layers": 16, "hidden_size": 2048,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
            "intermediate_size": 8192, "vocab_size": 128256, "max_position_embeddings": 131072,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        },
    },
    {
        "xinference_name": "llama-3.2-instruct",
        "size_in_billions": 3,
        "hf_repo": "meta-llama/Llama-3.2-3B-Instruct",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 3.21,
        "config": {
            "model_type": "llama", "num_hidden_layers": 28, "hidden_size": 3072,
            "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 8192, "vocab_size": 128256, "max_position_embeddings": 131072,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        },
    },
    {
        "xinference_name": "llama-3.3-instruct",
        "size_in_billions": 70,
        "hf_repo": "meta-llama/Llama-3.3-70B-Instruct",
        "model_type": "LLM",
        "params_billions": 70.55,
        "config": {
            "model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192,
            "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672,
            "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
    },
    # --- DeepSeek-R1-Distill-Qwen (deepseek-r1-distill-qwen)
    {
        # Built on Qwen2.5-Math-1.5B: unlike Qwen2.5-1.5B-Instruct its embeddings are NOT tied.
        "xinference_name": "deepseek-r1-distill-qwen",
        "size_in_billions": 1.5,
        "hf_repo": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "model_type": "LLM",
        "params_billions": 1.78,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 1536,
            "num_attention_heads": 12, "num_key_value_heads": 2, "intermediate_size": 8960,
            "vocab_size": 151936, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "deepseek-r1-distill-qwen",
        "size_in_billions": 7,
        "hf_repo": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "model_type": "LLM",
        "params_billions": 7.62,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584,
            "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
            "vocab_size": 152064, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "deepseek-r1-distill-qwen",
        "size_in_billions": 14,
        "hf_repo": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
        "model_type": "LLM",
        "params_billions": 14.77,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 48, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 13824,
            "vocab_size": 152064, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    {
        "xinference_name": "deepseek-r1-distill-qwen",
        "size_in_billions": 32,
        "hf_repo": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "model_type": "LLM",
        "params_billions": 32.76,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 64, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648,
            "vocab_size": 152064, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "use_sliding_window": False,
        },
    },
    # --- DeepSeek-R1-Distill-Llama (deepseek-r1-distill-llama)
    {
        "xinference_name": "deepseek-r1-distill-llama",
        "size_in_billions": 8,
        "hf_repo": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "model_type": "LLM",
        "params_billions": 8.03,
        "config": {
            "model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
            "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
    },
    {
        "xinference_name": "deepseek-r1-distill-llama",
        "size_in_billions": 70,
        "hf_repo": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
        "model_type": "LLM",
        "params_billions": 70.55,
        "config": {
            "model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192,
            "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672,
            "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
    },
    # --- GLM-4 (glm4-chat)
    {
        # Xinference now points at the Transformers-native "-hf" repo (model_type "glm"). Before
        # commit f0db4c6b it used THUDM/glm-4-9b-chat, whose "chatglm" config spells the same shape
        # num_layers / multi_query_group_num / ffn_hidden_size / padded_vocab_size / seq_length.
        "xinference_name": "glm4-chat",
        "size_in_billions": 9,
        "hf_repo": "zai-org/glm-4-9b-chat-hf",
        "model_type": "LLM",
        "params_billions": 9.40,
        "config": {
            "model_type": "glm", "num_hidden_layers": 40, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 128,
            "intermediate_size": 13696, "vocab_size": 151552, "max_position_embeddings": 131072,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "partial_rotary_factor": 0.5,
        },
    },
    # --- Mistral / Mixtral
    {
        "xinference_name": "mistral-instruct-v0.3",
        "size_in_billions": 7,
        "hf_repo": "mistralai/Mistral-7B-Instruct-v0.3",
        "model_type": "LLM",
        "params_billions": 7.25,
        "config": {
            "model_type": "mistral", "num_hidden_layers": 32, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
            "vocab_size": 32768, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "sliding_window": None,
        },
    },
    {
        "xinference_name": "mistral-nemo-instruct",
        "size_in_billions": 12,
        "hf_repo": "mistralai/Mistral-Nemo-Instruct-2407",
        "model_type": "LLM",
        "params_billions": 12.25,
        "config": {
            "model_type": "mistral", "num_hidden_layers": 40, "hidden_size": 5120,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 14336, "vocab_size": 131072, "max_position_embeddings": 1024000,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "sliding_window": None,
        },
    },
    {
        "xinference_name": "mistral-small-instruct",
        "size_in_billions": 24,
        "hf_repo": "mistralai/Mistral-Small-24B-Instruct-2501",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 23.57,
        "config": {
            "model_type": "mistral", "num_hidden_layers": 40, "hidden_size": 5120,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 32768, "vocab_size": 131072, "max_position_embeddings": 32768,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "sliding_window": None,
        },
    },
    {
        # MoE: 8 experts, 2 active per token (about 12.9B active parameters).
        "xinference_name": "mixtral-instruct-v0.1",
        "size_in_billions": 46.7,
        "hf_repo": "mistralai/Mixtral-8x7B-Instruct-v0.1",
        "model_type": "LLM",
        "params_billions": 46.70,
        "config": {
            "model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
            "vocab_size": 32000, "max_position_embeddings": 32768, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "sliding_window": None, "num_local_experts": 8,
            "num_experts_per_tok": 2,
        },
    },
    # --- Gemma 2 (gemma-2-it; no longer built in)
    # Layers alternate local (sliding_window) and global attention; config.json states this only
    # through model_type "gemma2" (cache_implementation "hybrid"), not with a pattern key.
    {
        "xinference_name": "gemma-2-it",
        "size_in_billions": 2,
        "hf_repo": "google/gemma-2-2b-it",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 2.61,
        "config": {
            "model_type": "gemma2", "num_hidden_layers": 26, "hidden_size": 2304,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
            "intermediate_size": 9216, "vocab_size": 256000, "max_position_embeddings": 8192,
            "tie_word_embeddings": True, "torch_dtype": "float32", "sliding_window": 4096,
            "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    },
    {
        "xinference_name": "gemma-2-it",
        "size_in_billions": 9,
        "hf_repo": "google/gemma-2-9b-it",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 9.24,
        "config": {
            "model_type": "gemma2", "num_hidden_layers": 42, "hidden_size": 3584,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
            "intermediate_size": 14336, "vocab_size": 256000, "max_position_embeddings": 8192,
            "tie_word_embeddings": True, "torch_dtype": "float32", "sliding_window": 4096,
            "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    },
    {
        "xinference_name": "gemma-2-it",
        "size_in_billions": 27,
        "hf_repo": "google/gemma-2-27b-it",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 27.23,
        "config": {
            "model_type": "gemma2", "num_hidden_layers": 46, "hidden_size": 4608,
            "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
            "intermediate_size": 36864, "vocab_size": 256000, "max_position_embeddings": 8192,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "sliding_window": 4096,
            "query_pre_attn_scalar": 144, "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    },
    # --- Gemma 3 (gemma-3-1b-it text-only; gemma-3-it multimodal)
    # Five local (sliding_window) layers per global one: sliding_window_pattern 6.
    {
        "xinference_name": "gemma-3-1b-it",
        "size_in_billions": 1,
        "hf_repo": "google/gemma-3-1b-it",
        "model_type": "LLM",
        "params_billions": 1.00,
        "config": {
            "model_type": "gemma3_text", "num_hidden_layers": 26, "hidden_size": 1152,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "intermediate_size": 6912, "vocab_size": 262144, "max_position_embeddings": 32768,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "sliding_window": 512,
            "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
        },
    },
    {
        # text_config flattened; params include the ~0.42B SigLIP vision tower.
        "xinference_name": "gemma-3-it",
        "size_in_billions": 4,
        "hf_repo": "google/gemma-3-4b-it",
        "model_type": "LLM",
        "params_billions": 4.30,
        "config": {
            "model_type": "gemma3", "num_hidden_layers": 34, "hidden_size": 2560,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
            "intermediate_size": 10240, "vocab_size": 262208, "max_position_embeddings": 131072,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "sliding_window": 1024,
            "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
        },
    },
    {
        "xinference_name": "gemma-3-it",
        "size_in_billions": 12,
        "hf_repo": "google/gemma-3-12b-it",
        "model_type": "LLM",
        "params_billions": 12.19,
        "config": {
            "model_type": "gemma3", "num_hidden_layers": 48, "hidden_size": 3840,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
            "intermediate_size": 15360, "vocab_size": 262208, "max_position_embeddings": 131072,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "sliding_window": 1024,
            "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
        },
    },
    {
        "xinference_name": "gemma-3-it",
        "size_in_billions": 27,
        "hf_repo": "google/gemma-3-27b-it",
        "model_type": "LLM",
        "params_billions": 27.43,
        "config": {
            "model_type": "gemma3", "num_hidden_layers": 62, "hidden_size": 5376,
            "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
            "intermediate_size": 21504, "vocab_size": 262208, "max_position_embeddings": 131072,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "sliding_window": 1024,
            "sliding_window_pattern": 6, "query_pre_attn_scalar": 168,
        },
    },
    # --- Phi-3 / Phi-4
    {
        # The 4k model's config declares a 2047-token sliding window on every layer.
        "xinference_name": "phi-3-mini-4k-instruct",
        "size_in_billions": 4,
        "hf_repo": "microsoft/Phi-3-mini-4k-instruct",
        "model_type": "LLM",
        "params_billions": 3.82,
        "config": {
            "model_type": "phi3", "num_hidden_layers": 32, "hidden_size": 3072,
            "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 8192,
            "vocab_size": 32064, "max_position_embeddings": 4096, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "sliding_window": 2047,
        },
    },
    {
        "xinference_name": "phi-3-mini-128k-instruct",
        "size_in_billions": 4,
        "hf_repo": "microsoft/Phi-3-mini-128k-instruct",
        "model_type": "LLM",
        "params_billions": 3.82,
        "config": {
            "model_type": "phi3", "num_hidden_layers": 32, "hidden_size": 3072,
            "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 8192,
            "vocab_size": 32064, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "sliding_window": 262144,
        },
    },
    {
        "xinference_name": "phi-3-medium-4k-instruct",
        "size_in_billions": 14,
        "hf_repo": "microsoft/Phi-3-medium-4k-instruct",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 13.96,
        "config": {
            "model_type": "phi3", "num_hidden_layers": 40, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 10, "intermediate_size": 17920,
            "vocab_size": 32064, "max_position_embeddings": 4096, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "sliding_window": 2047,
        },
    },
    {
        "xinference_name": "phi-3-medium-128k-instruct",
        "size_in_billions": 14,
        "hf_repo": "microsoft/Phi-3-medium-128k-instruct",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 13.96,
        "config": {
            "model_type": "phi3", "num_hidden_layers": 40, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 10, "intermediate_size": 17920,
            "vocab_size": 32064, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "sliding_window": 131072,
        },
    },
    {
        "xinference_name": "phi-4",
        "size_in_billions": 14,
        "hf_repo": "microsoft/phi-4",
        "model_type": "LLM",
        "in_xinference": False,
        "params_billions": 14.66,
        "config": {
            "model_type": "phi3", "num_hidden_layers": 40, "hidden_size": 5120,
            "num_attention_heads": 40, "num_key_value_heads": 10, "intermediate_size": 17920,
            "vocab_size": 100352, "max_position_embeddings": 16384, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "sliding_window": None,
        },
    },
    # --- DeepSeek-V3 (deepseek-v3; MLA + MoE)
    {
        # MLA caches one kv_lora_rank latent + qk_rope_head_dim key part per token and layer.
        # 256 routed + 1 shared expert, 8 routed active; the first 3 layers are dense.
        # 671B main model (the HF repo also holds a 14B multi-token-prediction layer, 685B in all).
        # Weights ship as FP8 (block-wise e4m3) even though torch_dtype says bfloat16.
        "xinference_name": "deepseek-v3",
        "size_in_billions": 671,
        "hf_repo": "deepseek-ai/DeepSeek-V3",
        "model_type": "LLM",
        "params_billions": 671.0,
        "config": {
            "model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168,
            "num_attention_heads": 128, "num_key_value_heads": 128, "intermediate_size": 18432,
            "vocab_size": 129280, "max_position_embeddings": 163840, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "kv_lora_rank": 512, "q_lora_rank": 1536,
            "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
            "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
            "moe_intermediate_size": 2048, "first_k_dense_replace": 3, "moe_layer_freq": 1,
            "num_nextn_predict_layers": 1,
            "quantization_config": {
                "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": [128, 128],
            },
        },
    },
    # --- Embedding models
    {
        "xinference_name": "bge-m3",
        "size_in_billions": None,
        "hf_repo": "BAAI/bge-m3",
        "model_type": "embedding",
        "params_billions": 0.568,
        "config": {
            "model_type": "xlm-roberta", "num_hidden_layers": 24, "hidden_size": 1024,
            "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 250002,
            "max_position_embeddings": 8194, "type_vocab_size": 1, "torch_dtype": "float32",
        },
    },
    {
        "xinference_name": "bge-large-en-v1.5",
        "size_in_billions": None,
        "hf_repo": "BAAI/bge-large-en-v1.5",
        "model_type": "embedding",
        "params_billions": 0.335,
        "config": {
            "model_type": "bert", "num_hidden_layers": 24, "hidden_size": 1024,
            "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 30522,
            "max_position_embeddings": 512, "type_vocab_size": 2, "torch_dtype": "float32",
        },
    },
    {
        "xinference_name": "bge-base-en-v1.5",
        "size_in_billions": None,
        "hf_repo": "BAAI/bge-base-en-v1.5",
        "model_type": "embedding",
        "params_billions": 0.109,
        "config": {
            "model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768,
            "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 30522,
            "max_position_embeddings": 512, "type_vocab_size": 2, "torch_dtype": "float32",
        },
    },
    {
        "xinference_name": "bge-small-en-v1.5",
        "size_in_billions": None,
        "hf_repo": "BAAI/bge-small-en-v1.5",
        "model_type": "embedding",
        "params_billions": 0.0334,
        "config": {
            "model_type": "bert", "num_hidden_layers": 12, "hidden_size": 384,
            "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522,
            "max_position_embeddings": 512, "type_vocab_size": 2, "torch_dtype": "float32",
        },
    },
    {
        # A Qwen2 decoder used as an encoder (last-token pooling); loaded without its lm_head,
        # so params count the Qwen2Model trunk only.
        "xinference_name": "gte-Qwen2",
        "size_in_billions": None,
        "hf_repo": "Alibaba-NLP/gte-Qwen2-7B-instruct",
        "model_type": "embedding",
        "params_billions": 7.07,
        "config": {
            "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584,
            "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
            "vocab_size": 151646, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "float32", "use_sliding_window": False,
        },
    },
    {
        # XLM-RoBERTa with rotary positions and task LoRA adapters (custom code, trust_remote_code).
        "xinference_name": "jina-embeddings-v3",
        "size_in_billions": None,
        "hf_repo": "jinaai/jina-embeddings-v3",
        "model_type": "embedding",
        "params_billions": 0.572,
        "config": {
            "model_type": "xlm-roberta", "num_hidden_layers": 24, "hidden_size": 1024,
            "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 250002,
            "max_position_embeddings": 8194, "type_vocab_size": 1, "torch_dtype": "bfloat16",
            "position_embedding_type": "rotary", "lora_rank": 4,
        },
    },
    # --- Rerank models
    {
        "xinference_name": "bge-reranker-v2-m3",
        "size_in_billions": None,
        "hf_repo": "BAAI/bge-reranker-v2-m3",
        "model_type": "rerank",
        "params_billions": 0.568,
        "config": {
            "model_type": "xlm-roberta", "num_hidden_layers": 24, "hidden_size": 1024,
            "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 250002,
            "max_position_embeddings": 8194, "type_vocab_size": 1, "torch_dtype": "float32",
        },
    },
    {
        "xinference_name": "bge-reranker-large",
        "size_in_billions": None,
        "hf_repo": "BAAI/bge-reranker-large",
        "model_type": "rerank",
        "params_billions": 0.560,
        "config": {
            "model_type": "xlm-roberta", "num_hidden_layers": 24, "hidden_size": 1024,
            "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 250002,
            "max_position_embeddings": 514, "type_vocab_size": 1, "torch_dtype": "float32",
        },
    },
    {
        "xinference_name": "bge-reranker-base",
        "size_in_billions": None,
        "hf_repo": "BAAI/bge-reranker-base",
        "model_type": "rerank",
        "params_billions": 0.278,
        "config": {
            "model_type": "xlm-roberta", "num_hidden_layers": 12, "hidden_size": 768,
            "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 250002,
            "max_position_embeddings": 514, "type_vocab_size": 1, "torch_dtype": "float32",
        },
    },
)
# fmt: on
