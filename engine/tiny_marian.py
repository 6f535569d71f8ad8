"""An offline translation model of the real MarianMT class (the Helsinki-NLP/opus-mt-* family), tiny
and random, for tests of Atelier's request translation.

Its SentencePiece vocabularies are learnt here from a few lines of Chinese and English; its weights are
random except for the output bias, which makes greedy decoding answer "black cat" to any input (and the
saved generation config forbids repeating a word, so the answer ends there). That keeps the tests about
Atelier's handling of a translation deterministic, while every line of the real tokenizer, loading and
``generate`` code runs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from engine.tiny import save_atomically

log = logging.getLogger(__name__)

ANSWER = ("▁black", "▁cat")
_SOURCE = """\
一只黑猫坐在窗台上
雪地里的红狐狸
黄昏时悬崖上的灯塔
云端之上的城堡
雨中的红色自行车
一碗热腾腾的拉面
"""
_TARGET = """\
a black cat sitting on a windowsill
a red fox in the snow
a lighthouse on a cliff at dusk
a castle above the clouds
a red bicycle in the rain
a bowl of hot ramen
"""


def _train_spm(text: str, prefix: Path, vocab_size: int) -> None:
    import sentencepiece

    corpus = prefix.with_suffix(".txt")
    corpus.write_text(text * 20, encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        character_coverage=1.0,
        model_type="word",
        hard_vocab_limit=False,
        minloglevel=2,
    )


def build_tiny_marian(out_dir: Path, *, seed: int = 0) -> Path:
    """Build (once) and save the tiny model and its tokenizer; returns the directory from_pretrained takes."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    log.info("building the tiny translation model in %s", out_dir)

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as work_dir:
            work = Path(work_dir)
            _train_spm(_SOURCE, work / "source", 40)
            _train_spm(_TARGET, work / "target", 40)
            pieces = ["</s>", "<unk>", "<pad>"]
            for name in ("source", "target"):
                for line in (work / f"{name}.vocab").read_text(encoding="utf-8").splitlines():
                    piece = line.split("\t")[0]
                    if piece not in pieces and piece not in ("<s>",):
                        pieces.append(piece)
            vocab = {piece: i for i, piece in enumerate(pieces)}
            (work / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            tokenizer = MarianTokenizer(
                str(work / "source.model"),
                str(work / "target.model"),
                str(work / "vocab.json"),
                source_lang="zh",
                target_lang="en",
            )
            tmp.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(tmp)
        config = MarianConfig(
            vocab_size=len(vocab),
            decoder_vocab_size=len(vocab),
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            pad_token_id=vocab["<pad>"],
            eos_token_id=vocab["</s>"],
            decoder_start_token_id=vocab["<pad>"],
            forced_eos_token_id=vocab["</s>"],
        )
        torch.manual_seed(seed)
        model = MarianMTModel(config)
        with torch.no_grad():
            for rank, piece in enumerate(ANSWER):
                model.final_logits_bias[0, vocab[piece]] = 60.0 - rank
            model.final_logits_bias[0, vocab["</s>"]] = 50.0
        model.generation_config = GenerationConfig(
            decoder_start_token_id=vocab["<pad>"],
            eos_token_id=vocab["</s>"],
            pad_token_id=vocab["<pad>"],
            bad_words_ids=[[vocab["<pad>"]]],
            no_repeat_ngram_size=1,
            num_beams=1,
        )
        model.save_pretrained(tmp)

    return save_atomically(out_dir, write)
