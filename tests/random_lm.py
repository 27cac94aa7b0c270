"""The small random decoder-only LMs the method tests drive from embeddings (Llama; Qwen2 with grouped keys)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def random_lm(arch: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random model; float64 gives the same weights (drawn in fp32, cast exactly) as the exact reference."""
    common = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "max_position_embeddings": 1024,
    }
    if arch == "llama":
        config, cls = LlamaConfig(num_key_value_heads=4, **common), LlamaForCausalLM
    else:
        config, cls = Qwen2Config(num_key_value_heads=2, **common), Qwen2ForCausalLM
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.to(dtype)
