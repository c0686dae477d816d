"""A tiny random Llama with a real chat tokenizer, built offline in a fraction of a second.

Tests that need a Hugging Face model (the transformers backend, LoRA training, GGUF conversion,
adapter hot-swap) use this instead of downloading one. It is a genuine `LlamaForCausalLM` with
the architecture of SmolLM2 in miniature (grouped-query attention, tied embeddings, rotary
positions) and a byte-level BPE tokenizer that speaks ChatML, so every code path that works on a
real model runs on it unchanged; only the weights are random, so its text is gibberish.

    from tests.tiny_model import make_tiny_model
    model_dir = make_tiny_model(tmp_path / "tiny")   # config.json, model.safetensors, tokenizer

The result is deterministic: the same `seed` gives bit-identical weights and the same tokenizer.
"""

from __future__ import annotations

from pathlib import Path

# Token ids 0, 1 and 2 follow SmolLM2's layout: padding/unknown, turn start, turn end (= eos).
PAD_TOKEN = "<|endoftext|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, TURN_START, TURN_END]

VOCAB_SIZE = 400

# ChatML. The {% generation %} markers let TRL's assistant_only_loss find the assistant tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A small corpus in the register the agents use, so that common words become single tokens.
TRAINING_TEXT = [
    "system user assistant",
    "You are Mia Chen, a nurse who wants to borrow her neighbour's ladder.",
    "Your goal is to convince Leo to share the last slice of cake with you.",
    "Hello, how are you today? I was hoping we could talk about the rent.",
    "I understand, but I really need the money back by Friday.",
    "She smiles and nods, then leaves the room without a word.",
    '{"action_type": "speak", "argument": "Sure, let us meet at noon."}',
    '{"action_type": "none", "argument": ""}',
    '{"action_type": "leave", "argument": ""}',
    "non-verbal communication action speak leave none",
    "believability relationship knowledge secret social_rules goal",
    "The two friends negotiate over dinner and agree to split the bill.",
]


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (about VOCAB_SIZE tokens) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=TURN_START,
        eos_token=TURN_END,
        pad_token=PAD_TOKEN,
        unk_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )


def build_tiny_llama(vocab_size: int, *, seed: int = 0, max_positions: int = 512):
    """A randomly initialised two-layer Llama (about 100k parameters) for the given vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        # The default 0.02 makes greedy decoding collapse into one repeated token; 0.1 gives
        # varied output, so that tests can tell two models (or an adapter) apart by their text.
        initializer_range=0.1,
        pad_token_id=SPECIAL_TOKENS.index(PAD_TOKEN),
        bos_token_id=SPECIAL_TOKENS.index(TURN_START),
        eos_token_id=SPECIAL_TOKENS.index(TURN_END),
    )
    # fork_rng keeps the caller's global random state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def make_tiny_model(directory: str | Path, *, seed: int = 0, max_positions: int = 512) -> Path:
    """Write a tiny Llama and its tokenizer to `directory` as a Hugging Face model directory.

    The directory loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`
    and as `hf:DIRECTORY` in sotopia-pi. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer), seed=seed, max_positions=max_positions)
    tokenizer.model_max_length = max_positions
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
