"""The exact PyTorch reference of MiniVLM: one module per architectural part (see docs/ARCHITECTURE.md §9).

Imports only torch, numpy, safetensors and tokenizers; never the SDK or a converter backend.
"""
