"""LLaVA-format instruction data -> model inputs with answer-only labels.

A data set is a JSON list of records
  {"id": ..., "image": "relative/or/absolute.png",
   "conversations": [{"from": "human", "value": "<image>\\nQ1"},
                     {"from": "gpt", "value": "A1"}, ...]}
(llava_v1_5_mix665k.json has this form; its text-only records, without
"image", are skipped: the recipe trains the image path).

The text follows the prompt the C engine uses (AVQ-SPEC 8), extended to
several turns the way LLaVA-1.5 (conv "vicuna_v1") does:

  [system + " "]USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>

BOS first; <image> expands to image_seq_length (576) image tokens. Labels
are -100 everywhere except the answer tokens and their </s>: the LLaVA loss.
"""

from __future__ import annotations

import json
import os
import random

import torch

IGNORE = -100


def load_records(path: str, image_folder: str | None = None) -> list[dict]:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records")
    base = image_folder if image_folder is not None else os.path.dirname(os.path.abspath(path))
    out = []
    for rec in data:
        if "image" not in rec or not rec.get("conversations"):
            continue
        img = rec["image"]
        if not os.path.isabs(img):
            img = os.path.join(base, img)
        out.append({"id": rec.get("id"), "image": img, "conversations": rec["conversations"]})
    if not out:
        raise ValueError(f"{path}: no record with an image and a conversation")
    return out


def _strip_image_tag(text: str) -> str:
    t = text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "")
    return t.strip()


def build_text(conversations: list[dict], system_prompt: str | None = None):
    """The conversation as text and the character spans of the answers."""
    text = (system_prompt + " ") if system_prompt else ""
    spans = []
    first = True
    turns = list(conversations)
    if turns and turns[0].get("from") not in ("human", "user"):
        turns = turns[1:]
    for i in range(0, len(turns) - 1, 2):
        h, g = turns[i], turns[i + 1]
        if h.get("from") not in ("human", "user") or g.get("from") not in ("gpt", "assistant"):
            raise ValueError("conversations must alternate human / gpt")
        q = _strip_image_tag(h["value"])
        text += "USER: " + ("<image>\n" if first else "") + q + " ASSISTANT:"
        first = False
        start = len(text)
        text += " " + g["value"].strip() + "</s>"
        spans.append((start, len(text)))
    if first:
        raise ValueError("a record needs at least one human/gpt pair")
    return text, spans


class Tokenized:
    def __init__(self, tokenizer, image_token_id: int, image_seq_length: int, max_length: int | None):
        self.tok = tokenizer
        self.image_token_id = image_token_id
        self.image_seq_length = image_seq_length
        self.max_length = max_length

    def expand_image(self, ids: list[int], labels: list[int] | None = None):
        """Replace the single <image> token by image_seq_length copies."""
        pos = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(pos) != 1:
            raise ValueError(f"expected one <image> token, found {len(pos)}")
        p = pos[0]
        n = self.image_seq_length
        ids = ids[:p] + [self.image_token_id] * n + ids[p + 1:]
        if labels is not None:
            labels = labels[:p] + [IGNORE] * n + labels[p + 1:]
        return ids, labels

    def prompt_ids(self, question: str, system_prompt: str | None = None) -> list[int]:
        """Ids of the generation prompt, exactly as `avq ask` builds it."""
        text = (system_prompt + " " if system_prompt else "") + "USER: <image>\n" + question + " ASSISTANT:"
        ids = self.tok(text).input_ids
        return self.expand_image(ids)[0]

    def __call__(self, conversations, system_prompt=None):
        text, spans = build_text(conversations, system_prompt)
        enc = self.tok(text, return_offsets_mapping=True)
        ids = list(enc.input_ids)
        labels = []
        for t, (s, e) in zip(ids, enc.offset_mapping):
            inside = any(a <= s < b for a, b in spans) and e > s
            labels.append(t if inside else IGNORE)
        ids, labels = self.expand_image(ids, labels)
        if self.max_length is not None and len(ids) > self.max_length:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        return ids, labels


class LlavaDataset(torch.utils.data.Dataset):
    def __init__(self, records, tokenized: Tokenized, image_processor, system_prompt=None,
                 cache_images: bool = True):
        self.records = records
        self.tokenized = tokenized
        self.image_processor = image_processor
        self.system_prompt = system_prompt
        self.cache = {} if cache_images else None

    def __len__(self):
        return len(self.records)

    def pixels(self, path: str) -> torch.Tensor:
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        from PIL import Image

        with Image.open(path) as im:
            pv = self.image_processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        if self.cache is not None:
            self.cache[path] = pv
        return pv

    def __getitem__(self, i):
        rec = self.records[i]
        ids, labels = self.tokenized(rec["conversations"], self.system_prompt)
        return {"input_ids": ids, "labels": labels, "pixel_values": self.pixels(rec["image"])}


def collate(batch, pad_id: int):
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for j, b in enumerate(batch):
        L = len(b["input_ids"])
        ids[j, :L] = torch.tensor(b["input_ids"])
        labels[j, :L] = torch.tensor(b["labels"])
        mask[j, :L] = 1
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
    }


class EpochSampler:
    """Seeded shuffled order, resumable at any position."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = seed

    def order(self, epoch: int) -> list[int]:
        idx = list(range(self.n))
        random.Random(self.seed * 1000003 + epoch).shuffle(idx)
        return idx
