"""Builders for hub-like test folders: tokenizers trained on the fly, and complete checkpoints.

No binary fixtures are committed: a SentencePiece unigram model with SigLIP's c4 id layout (pad 0, eos 1, unk 2,
no bos) and a Gemma-shaped BPE ``tokenizer.json`` are trained from a generated corpus, and random-weight models
are written by transformers, so every folder has exactly the files and keys the hub stores.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def corpus(n: int = 2500, seed: int = 0) -> list[str]:
    """Multilingual-ish lines: English, accents, CJK, Cyrillic, Arabic, emoji, made-up words, punctuation."""
    rng = random.Random(seed)
    words = (
        "the real mountain view zürich san francisco picture of a laptop with lockscreen cup cappuccino salt "
        "pepper grinders window reveals lake alps city background photo cat cats dog dogs blue circle red green "
        "café naïve résumé straße ångström 東京 北京 猫 犬 写真 こんにちは 世界 안녕하세요 москва привет γειά σου "
        "مرحبا שלום नमस्ते 🙂 🐱 🚀 👍🏽 2 2023 1.5"
    ).split()
    syllables = ["ka", "to", "ri", "mon", "ste", "lu", "ver", "ing", "tion", "al", "pre", "ex", "qu", "zy"]
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    punct = [".", ",", "!", "?", "'s", "-", "...", ":", ";", "(", ")", '"']
    lines = []
    for _ in range(n):
        line = []
        for _ in range(rng.randint(1, 14)):
            word = rng.choice(words)
            word = word.upper() if rng.random() < 0.1 else word.capitalize() if rng.random() < 0.2 else word
            line.append(word + (rng.choice(punct) if rng.random() < 0.15 else ""))
        lines.append(" ".join(line))
    return lines


def special_token(content: str, strip: bool) -> dict:
    return {
        "content": content,
        "lstrip": strip,
        "normalized": False,
        "rstrip": strip,
        "single_word": False,
        "special": True,
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def train_sentencepiece(lines: list[str], **options) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=700,
        model_type="unigram",
        pad_id=0,
        pad_piece="<pad>",
        eos_id=1,
        eos_piece="</s>",
        unk_id=2,
        unk_piece="<unk>",
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
        **options,
    )
    return model.getvalue()


def write_siglip_tokenizer(folder: Path, lines: list[str], model_bytes: bytes | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "spiece.model").write_bytes(model_bytes or train_sentencepiece(lines))
    write_json(
        folder / "tokenizer_config.json",
        {
            "added_tokens_decoder": {"1": special_token("</s>", True), "2": special_token("<unk>", True)},
            "additional_special_tokens": [],
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "eos_token": "</s>",
            "model_input_names": ["input_ids"],
            "model_max_length": 64,
            "pad_token": "</s>",
            "processor_class": "SiglipProcessor",
            "sp_model_kwargs": {},
            "tokenizer_class": "SiglipTokenizer",
            "unk_token": "<unk>",
        },
    )
    write_json(
        folder / "special_tokens_map.json",
        {
            "eos_token": special_token("</s>", True),
            "pad_token": special_token("</s>", True),
            "unk_token": special_token("<unk>", True),
        },
    )
    write_json(folder / "config.json", {"model_type": "siglip"})


def gemma_tokenizer_json(lines: list[str]) -> dict:
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=GEMMA_SPECIALS + byte_tokens, show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <eos>:0", pair="$A:0 <eos>:0 $B:1 <eos>:1", special_tokens=[("<eos>", 1)]
    )
    data = json.loads(tok.to_str())
    # Gemma keeps its byte tokens in the model vocabulary, not among the added tokens.
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in GEMMA_SPECIALS]
    return data


def write_gemma_tokenizer(folder: Path, tokenizer_json: dict, model_type: str) -> None:
    folder.mkdir(parents=True)
    write_json(folder / "tokenizer.json", tokenizer_json)
    write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_eos_token": True,
            "added_tokens_decoder": {str(i): special_token(c, False) for i, c in enumerate(GEMMA_SPECIALS)},
            "bos_token": "<bos>",
            "clean_up_tokenization_spaces": False,
            "do_lower_case": True,
            "eos_token": "<eos>",
            "mask_token": "<mask>",
            "model_input_names": ["input_ids"],
            "model_max_length": 64,
            "pad_token": "<pad>",
            "padding_side": "right",
            "processor_class": "SiglipProcessor",
            "tokenizer_class": "GemmaTokenizer",
            "unk_token": "<unk>",
        },
    )
    write_json(folder / "config.json", {"model_type": model_type})


# ------------------------------------------------------------------------------------------------------------
# Complete checkpoint folders (weights + tokenizer + image processor), as the hub stores them
# ------------------------------------------------------------------------------------------------------------

_TOKENIZER_CACHE: dict[str, object] = {}


def _cached(name: str, build):
    if name not in _TOKENIZER_CACHE:
        _TOKENIZER_CACHE[name] = build()
    return _TOKENIZER_CACHE[name]


def _preprocessor_config(family: str, image_size: int, patch_size: int, max_num_patches: int) -> dict:
    common = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "rescale_factor": 0.00392156862745098,
    }
    if family == "siglip2":
        return {
            **common,
            "do_convert_rgb": None,
            "image_processor_type": "Siglip2ImageProcessorFast",
            "max_num_patches": max_num_patches,
            "patch_size": patch_size,
            "processor_class": "Siglip2Processor",
            "resample": 2,
        }
    return {
        **common,
        "image_processor_type": "SiglipImageProcessor",
        "processor_class": "SiglipProcessor",
        "resample": 3 if family == "siglip" else 2,
        "size": {"height": image_size, "width": image_size},
    }


def write_checkpoint(
    folder: Path,
    family: str = "siglip",
    *,
    text: dict | None = None,
    vision: dict | None = None,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int | None = None,
    max_num_patches: int = 256,
) -> Path:
    """A complete random-weight checkpoint folder written by transformers plus a trained tokenizer.

    ``family``: "siglip" (SentencePiece, bicubic FixRes), "fixres" (SigLIP2 FixRes: model_type siglip, Gemma
    tokenizer, bilinear) or "siglip2" (NaFlex: model_type siglip2, Gemma tokenizer, patchified inputs; 16-px
    patches and 256 of them by default, the values Siglip2Processor imposes).
    """
    if patch_size is None:
        patch_size = 16 if family == "siglip2" else 8
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = _cached("corpus", corpus)
    if family == "siglip":
        spm = _cached("spm", lambda: train_sentencepiece(lines))
        tmp = folder / "_tok"
        write_siglip_tokenizer(tmp, lines, model_bytes=spm)
    else:
        gemma = _cached("gemma", lambda: gemma_tokenizer_json(lines))
        tmp = folder / "_tok"
        write_gemma_tokenizer(tmp, gemma, "siglip2" if family == "siglip2" else "siglip")
    for file in tmp.iterdir():
        if file.name != "config.json":
            file.replace(folder / file.name)
    for file in tmp.iterdir():
        file.unlink()
    tmp.rmdir()
    text = {
        "vocab_size": 1000,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        **(text or {}),
    }
    torch.manual_seed(seed)
    if family == "siglip2":
        vision = {
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": patch_size,
            "num_patches": 16,
            **(vision or {}),
        }
        model = transformers.Siglip2Model(transformers.Siglip2Config(text_config=text, vision_config=vision))
    else:
        vision = {
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": patch_size,
            "image_size": image_size,
            **(vision or {}),
        }
        model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-1.0)
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.dim() == 1 and p.numel() > 1:
                p.normal_(0.0, 0.2)
    model.eval().save_pretrained(folder)
    write_json(
        folder / "preprocessor_config.json", _preprocessor_config(family, image_size, patch_size, max_num_patches)
    )
    return folder


def joint_inputs(family: str, batch: int = 3, seed: int = 0) -> dict:
    """Joint-model inputs: ids with an attention mask (last rows padded), and images (NaFlex: mixed grids)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1000, (batch, 64), generator=g)
    mask = torch.ones(batch, 64, dtype=torch.long)
    mask[1:, 40:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if family == "siglip":
        out["pixel_values"] = torch.randn(batch, 3, 32, 32, generator=g)
        return out
    shapes = [(16, 16), (7, 30), (1, 100), (12, 5)][:batch]
    pixels = torch.zeros(batch, 256, 768)
    patch_mask = torch.zeros(batch, 256, dtype=torch.int32)
    for i, (h, w) in enumerate(shapes):
        pixels[i, : h * w] = torch.randn(h * w, 768, generator=g)
        patch_mask[i, : h * w] = 1
    out.update(pixel_values=pixels, pixel_attention_mask=patch_mask, spatial_shapes=torch.tensor(shapes))
    return out


def install_in_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Copy a folder into a Hugging Face hub cache as huggingface_hub lays it out (blobs, snapshot, refs/main)."""
    import os
    import shutil

    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in Path(source).iterdir():
        blob = repo / "blobs" / (file.name + ".blob")
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def resave_tokenizer_with_transformers(folder: Path, padding_side: str | None = None) -> Path:
    """Replace a checkpoint's Gemma tokenizer with one built and saved by transformers' ``Siglip2Tokenizer``
    with its class defaults (left padding, ``model_input_names`` ["input_ids", "attention_mask"]), as a user's
    ``Siglip2Tokenizer(vocab, merges).save_pretrained(...)`` writes it; ``padding_side`` overrides the side."""
    import transformers

    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    options = {"padding_side": padding_side} if padding_side else {}
    tokenizer = transformers.Siglip2Tokenizer(vocab=model["vocab"], merges=merges, **options)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
    return folder
