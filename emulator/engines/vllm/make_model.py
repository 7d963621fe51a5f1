"""Generate the emulator's tiny R1-style model: deterministic, offline, a few seconds on 2 cores.

Runs inside the engine venv (it needs torch, transformers and tokenizers, which the orchestrator's
venv does not carry): ``<engine python> make_model.py OUT_DIR``. The model is a Llama with the real
8B model's head dim (128, which vLLM's CPU attention kernels support), a byte-level BPE tokenizer in
which ``<think>``/``</think>`` are ordinary added tokens (as in DeepSeek's tokenizer, so vLLM's
``deepseek_r1`` reasoning parser sees them after special tokens are skipped), and R1's chat template.
A short training run on templated dialogues teaches it to think, close ``</think>`` and answer, so
reasoning and answer really come back separated. Its words are nonsense; vLLM's behaviour is real.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 0
VOCAB_SIZE = 512
DIALOGUES = 400
STEPS = 300
BATCH = 16
LEARNING_RATE = 3e-3
MAX_POSITIONS = 8192  # as long as production's --max-model-len, so that flag works unchanged

BOS, EOS, USER, ASSISTANT = "<s>", "</s>", "<｜User｜>", "<｜Assistant｜>"
THINK, END_THINK = "<think>", "</think>"
# Fixed last words of the thinking and of the answer: the tiny model learns to end each part only
# after them, which keeps it from stopping mid-thought (an empty answer) when sampling.
CLOSE_THINKING, CLOSE_ANSWER = "Now I can answer.", "Hope this helps!"

# DeepSeek-R1's template, reduced: earlier answers lose their reasoning, the prompt ends at the
# assistant marker and the model opens <think> itself (vLLM's parser handles both variants).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<｜Assistant｜>' + message['content'].split('</think>')[-1].lstrip() + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)

SUBJECTS = ["summer", "winter", "tea", "coffee", "cats", "dogs", "rain", "snow", "books", "films",
            "trains", "planes", "the sea", "the hills", "bread", "rice"]
QUALITIES = ["warm", "calm", "bright", "quiet", "useful", "simple", "cheap", "fast"]
# Filler for free-form questions, so that any prompt (a load test's, a smoke test's, a person's)
# still gets the R1 shape: think, close </think>, answer.
WORDS = ("what how why which when who where is are was do does can could should would the a an of "
         "to in on for with and or not if then explain write describe compare list give show me you "
         "I we it this that step each time cost price train shop sells euros km hours code function "
         "string number sort parse test deploy server model data network memory error cause effect "
         "Python Rust SQL Bash hello thanks please summary reason answer").split()
PUNCTUATION = ["", "", ",", ".", "?", ":", " *", " +", " -", " =", "!"]


def dialogue(rng: random.Random) -> tuple[str, str, str]:
    """One (question, reasoning, answer) triple from a few templates."""
    a, b = rng.sample(SUBJECTS, 2)
    x, y = rng.randint(1, 40), rng.randint(1, 40)
    quality = rng.choice(QUALITIES)
    kind = rng.randrange(6)  # half the questions are free-form (kinds 2, 4, 5)
    # Short on purpose: a CPU decodes slowly, and a smoke or load test with a small max_tokens
    # (32 in profiles/local-vllm.env) must still see the answer after the thinking.
    if kind == 0:
        return (
            f"Which is better, {a} or {b}?",
            f"The user compares {a} and {b}. It depends on taste.",
            f"Both have merits: {a} is {quality}.",
        )
    if kind == 1:
        return (f"What is {x} plus {y}?", f"{x} + {y} = {x + y}.", f"{x} plus {y} is {x + y}.")
    if kind != 3:
        return (free_text(rng), f"I know little about this. {a.capitalize()} is {quality}.",
                f"I can only say that {a} is {quality}.")
    return (f"Tell me about {a}.", f"The user asks about {a}.", f"{a.capitalize()} is {quality}.")


def free_text(rng: random.Random) -> str:
    """A question of random words, numbers, unknown words and punctuation, 1-40 words long."""
    words = []
    for _ in range(rng.randint(1, 40)):
        roll = rng.random()
        if roll < 0.15:
            word = str(rng.randint(0, 9999))
        elif roll < 0.3:
            word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
        else:
            word = rng.choice(WORDS)
        words.append(word + rng.choice(PUNCTUATION))
    return " ".join(words)


def render(question: str, reasoning: str, answer: str) -> str:
    """The exact text the model sees: prompt by the chat template, then R1's answer format."""
    return (f"{BOS}{USER}{question}{ASSISTANT}{THINK}\n{reasoning} {CLOSE_THINKING}\n{END_THINK}\n\n"
            f"{answer} {CLOSE_ANSWER}{EOS}")


def train_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in (BOS, EOS, USER, ASSISTANT)])
    # Ordinary added tokens, never special: vLLM skips special tokens when it detokenizes, and the
    # reasoning parser would then never see the end of the thinking.
    tok.add_tokens([AddedToken(THINK, special=False), AddedToken(END_THINK, special=False)])
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def train_model(tokenizer: PreTrainedTokenizerFast, corpus: list[str]) -> tuple[LlamaForCausalLM, float]:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    encoded = tokenizer(corpus, add_special_tokens=False, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    # Learn the answer only: the question is given, and its random numbers cannot be predicted.
    in_prompt = (ids == tokenizer.convert_tokens_to_ids(ASSISTANT)).int().cumsum(dim=1) == 0
    labels = ids.masked_fill((mask == 0) | in_prompt, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    loss = float("nan")
    for _ in range(STEPS):
        batch = torch.randint(0, len(corpus), (BATCH,), generator=generator)
        width = int(mask[batch].sum(dim=1).max())  # right-padded: cut the columns no row uses
        step_loss = model(input_ids=ids[batch, :width], attention_mask=mask[batch, :width],
                          labels=labels[batch, :width]).loss
        step_loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        loss = step_loss.item()
    return model.eval(), loss


def main(out_dir: Path) -> None:
    started = time.monotonic()
    random.seed(SEED)
    torch.manual_seed(SEED)
    # One thread: on a shared 2-core machine, two OpenMP threads spinning against other processes
    # made training ~6x slower, and one thread keeps float reductions in a fixed order.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(SEED)
    corpus = [render(*dialogue(rng)) for _ in range(DIALOGUES)]
    tokenizer = train_tokenizer(corpus)
    model, loss = train_model(tokenizer, corpus)
    # DeepSeek's recommended sampling for R1, as its generation_config.json ships it; vLLM takes
    # these as the defaults for requests that do not say.
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.95)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    summary = {"final_loss": round(loss, 4), "train_seconds": round(time.monotonic() - started, 1),
               "vocab_size": len(tokenizer), "parameters": model.num_parameters()}
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_model.py OUT_DIR")
    main(Path(sys.argv[1]))
