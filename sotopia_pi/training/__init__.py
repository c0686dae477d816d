"""Training: LoRA fine-tuning on curated snapshots and turning the result into adapters the
runtime can load (a PEFT directory for transformers, a GGUF LoRA for llama.cpp).

Nothing here imports Textual; torch and peft are imported only by the modules that train.
"""
