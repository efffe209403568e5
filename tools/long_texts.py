"""Real long inputs for the long-input benchmark: SQuAD contexts cut to exactly L tokens.

    python tools/long_texts.py SQUAD_JSON TOKENIZER_DIR OUTPUT_DIR [--lengths 128,256,384,512] [--count 32]

For each L writes OUTPUT_DIR/ctx<L>.txt: one text per line whose encoding with the model's tokenizer
(CLS ... SEP) is exactly L tokens. Paragraphs are read in file order; an article's consecutive
paragraphs are joined until the text is long enough, then cut at a token boundary (the tokenizer's
character offsets). Each file holds `count` texts from different starting paragraphs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer

from onnx_tokprune.data.squad import is_squad_json


def cut_to_tokens(tokenizer: Tokenizer, text: str, length: int) -> str | None:
    """`text` cut so that it encodes to exactly `length` tokens (specials included), or None if too short."""
    encoding = tokenizer.encode(text)
    content = [i for i, special in enumerate(encoding.special_tokens_mask) if not special]
    specials = len(encoding.ids) - len(content)
    if len(content) < length - specials:
        return None
    for keep in range(length - specials, 0, -1):
        candidate = text[: encoding.offsets[content[keep - 1]][1]].strip().replace("\n", " ")
        if len(tokenizer.encode(candidate).ids) == length:
            return candidate
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad")
    parser.add_argument("tokenizer_dir")
    parser.add_argument("output")
    parser.add_argument("--lengths", default="128,256,384,512")
    parser.add_argument("--count", type=int, default=32)
    args = parser.parse_args()
    data = json.loads(Path(args.squad).read_text(encoding="utf-8"))
    if not is_squad_json(data):
        raise SystemExit(f"{args.squad} is not a SQuAD JSON file")
    tokenizer = Tokenizer.from_file(str(Path(args.tokenizer_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for length in (int(x) for x in args.lengths.split(",")):
        texts = []
        for article in data["data"]:
            paragraphs = [p["context"] for p in article["paragraphs"]]
            for start in range(len(paragraphs)):
                joined = " ".join(paragraphs[start : start + 8])
                cut = cut_to_tokens(tokenizer, joined, length)
                if cut is not None:
                    texts.append(cut)
                    break  # one text per article: different topics
            if len(texts) == args.count:
                break
        if len(texts) < args.count:
            raise SystemExit(f"only {len(texts)} texts of {length} tokens could be made; lower --count")
        target = out / f"ctx{length}.txt"
        if target.exists():
            raise SystemExit(f"{target} exists: remove it first")
        target.write_text("\n".join(texts) + "\n", encoding="utf-8")
        print(f"{target}: {len(texts)} texts of {length} tokens")


if __name__ == "__main__":
    main()
