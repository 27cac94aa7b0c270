"""Loading LLaVA-style models (HF or original format, or tiny random ones) and building their inputs."""

from pdrop_eval.models.batch import VLMBatch, build_batch, decode, image_token_count
from pdrop_eval.models.loaded import LoadedVLM
from pdrop_eval.models.loading import load_vlm
from pdrop_eval.models.tiny import TINY_MODELS

__all__ = ["TINY_MODELS", "LoadedVLM", "VLMBatch", "build_batch", "decode", "image_token_count", "load_vlm"]
