"""Real Korean sentences from text that ships in packages, for speech that the generator did not make.

Sources (each a set of documents; the split is by document, so no document has sentences on two sides):

- ``konlpy`` 0.6.0 (PyPI; the package is GPL-3.0, its corpus is public-sector text): ``kolaw/constitution.txt``
  (the Constitution of the Republic of Korea, one document per chapter) and ``kobill/*.txt`` (ten bills of the
  National Assembly, 2010). Read as data files: konlpy is not imported (it needs a JVM).
- ``debian-faq-ko`` 11.1 (Debian; GPL-2+): the Korean Debian FAQ, one document per chapter (``*.ko.html``).
- ``libreoffice-help-ko`` 7.4 (Debian; MPL-2.0): LibreOffice's Korean help, one document per page (about 2,500).

The two Debian packages are data: ``python -m training.datasets.korean_text --fetch`` (``make setup`` runs it)
downloads them with ``apt-get download`` and unpacks them under ``~/.cache/inference-suite/korean-text``
without installing them or their dependencies (LibreOffice's help would pull in LibreOffice).

Sentences are cleaned to what a speaker would read and a transcript can match: parenthesised asides, quotes
and list numbering dropped; only sentences of Hangul and spaces (no digits, Latin or Hanja, which espeak-ng and a
transcript would spell differently) of 8-60 syllables kept. Each document falls, by a hash of its name, into
``train`` (70 %), ``val`` (10 %) or ``test`` (20 %): ``test`` documents are only ever evaluated.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import html
import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path.home() / ".cache" / "inference-suite" / "korean-text"
DEBIAN_PACKAGES = {  # package -> folder of its Korean HTML pages inside the package
    "debian-faq-ko": "usr/share/doc/debian/FAQ/ko",
    "libreoffice-help-ko": "usr/share/libreoffice/help/ko/text",
}
SPLITS = ("train", "val", "test")
MIN_SYLLABLES, MAX_SYLLABLES = 8, 60

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_SPEAKABLE = re.compile(r"[\uac00-\ud7a3 ,]+[.?!]")  # a whole sentence: its end mark kept
_ASIDE = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|<[^<>]*>")
_QUOTES = re.compile(r"[\"'“”‘’「」『』]")
_NUMBERING = re.compile(r"^\s*(?:\d+(?:\.\d+)*\.?|[①-⑳]|[가-하]\.|제\s*\d+\s*[조항호장절]\S*)\s*")


@dataclass(frozen=True)
class Sentence:
    text: str
    document: str  # "source/name": the unit of the split
    split: str


def document_split(document: str) -> str:
    """``train`` / ``val`` / ``test`` by a hash of the document's name: the same on every machine."""
    bucket = hashlib.sha256(document.encode()).digest()[0] % 10
    return "test" if bucket < 2 else "val" if bucket == 2 else "train"


def konlpy_corpus() -> Path | None:
    """konlpy's corpus folder, found without importing konlpy (None when it is not installed)."""
    spec = importlib.util.find_spec("konlpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "corpus"
    return folder if folder.is_dir() else None


def fetch(dest: Path = DATA_DIR, packages: tuple[str, ...] = tuple(DEBIAN_PACKAGES)) -> None:
    """Download and unpack the Debian text packages that ``dest`` lacks (``apt-get download``: no install, no
    root needed; the package lists are refreshed once if the first try finds nothing)."""
    import subprocess
    import tempfile

    for package in packages:
        if (dest / f"{package}.version").is_file():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for attempt in range(2):
                r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
                if r.returncode == 0 or attempt:
                    break
                subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            debs = list(Path(tmp).glob(f"{package}_*.deb"))
            if r.returncode != 0 or not debs:
                raise RuntimeError(f"apt-get download {package} failed: {r.stderr.strip()[-500:]}")
            (dest / package).mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(dest / package)], check=True)
            version = subprocess.run(
                ["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True, text=True, check=True
            ).stdout.strip()
        (dest / f"{package}.version").write_text(version + "\n")
        print(f"{package} {version} -> {dest / package}")


def source_versions(dest: Path = DATA_DIR) -> dict[str, str]:
    """The version of each text source found (for the store entry)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    with contextlib.suppress(PackageNotFoundError):
        out["konlpy"] = version("konlpy")
    for package in DEBIAN_PACKAGES:
        stamp = dest / f"{package}.version"
        if stamp.is_file():
            out[package] = stamp.read_text().strip()
    return out


def documents(konlpy: Path | None = None, data: Path = DATA_DIR) -> dict[str, str]:
    """``{"source/name": raw text}`` of every document found (sources not installed are skipped)."""
    out: dict[str, str] = {}
    konlpy = konlpy or konlpy_corpus()
    if konlpy is not None:
        for path in sorted((konlpy / "kobill").glob("*.txt")):
            out[f"kobill/{path.stem}"] = unwrap(path.read_text(encoding="utf-8", errors="replace"))
        law = konlpy / "kolaw" / "constitution.txt"
        if law.is_file():  # one document per chapter (제N장), so the Constitution spans all three splits
            chapters = re.split(r"\n(?=\s*제\s*\d+\s*장)", law.read_text(encoding="utf-8", errors="replace"))
            for i, chapter in enumerate(chapters):
                out[f"kolaw/constitution-{i:02d}"] = chapter
    faq = data / "debian-faq-ko" / DEBIAN_PACKAGES["debian-faq-ko"]
    for path in sorted(faq.glob("*.ko.html")):
        out[f"debian-faq/{path.name.split('.')[0]}"] = html_text(path.read_bytes())
    help_pages = data / "libreoffice-help-ko" / DEBIAN_PACKAGES["libreoffice-help-ko"]
    for path in sorted(help_pages.rglob("*.html")):
        out[f"libreoffice-help/{path.relative_to(help_pages).with_suffix('')}"] = html_text(path.read_bytes())
    return out


def unwrap(text: str) -> str:
    """The bills' fixed-width lines joined: a line that ends without a space was cut inside a word."""
    lines = [line for line in text.splitlines() if line.strip()]
    out = lines[:1]
    for line in lines[1:]:
        out.append(line if out[-1].endswith((" ", ".", ":")) else "\x00" + line)
    return " ".join(out).replace(" \x00", "")


def html_text(raw: bytes) -> str:
    """Visible text of an HTML page, paragraphs separated by blank lines (scripts, styles, code dropped)."""
    text = raw.decode("utf-8", errors="replace")
    if raw[:2] == b"\x1f\x8b":
        text = gzip.decompress(raw).decode("utf-8", errors="replace")
    # code and file names leave a mark that makes their sentence unspeakable (not a sentence with a hole)
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    text = re.sub(r"(?is)<(pre|code|tt|kbd|samp|var)\b.*?</\1>", " \u00a7 ", text)
    text = re.sub(r"(?i)</?(p|div|li|h\d|dt|dd|br|tr|td|table|ul|ol|dl)\b[^>]*>", "\n\n", text)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


def clean(sentence: str) -> str | None:
    """A sentence as it would be read aloud, or None when it is not speakable Korean of a usable length."""
    s = _QUOTES.sub("", _ASIDE.sub(" ", sentence))
    s = _NUMBERING.sub("", s.replace("\u00b7", " ").replace("․", " "))
    s = re.sub(r"\s+([.?!,])", r"\1", re.sub(r"\s+", " ", s)).strip(" ,")
    if not _SPEAKABLE.fullmatch(s):
        return None
    syllables = len(_HANGUL.findall(s))
    return s if MIN_SYLLABLES <= syllables <= MAX_SYLLABLES else None


def split_sentences(text: str) -> list[str]:
    """Raw document text -> candidate sentences, each ending at its end mark."""
    out = []
    for paragraph in re.split(r"\n\s*\n(?:\s*\n)*", text):
        joined = re.sub(r"\s+", " ", paragraph)
        out += [p for p in re.split(r"(?<=[.?!])\s+", joined) if p.strip()]
    return out


@cache
def corpus() -> tuple[Sentence, ...]:
    """Every distinct speakable sentence, each with its document and split; a sentence seen in two documents
    stays only on the side that sorts first (test, then val, then train), so no sentence crosses the split."""
    found: dict[str, Sentence] = {}
    for doc, text in documents().items():
        split = document_split(doc)
        for raw in split_sentences(text):
            s = clean(raw)
            if s is None:
                continue
            key = s.rstrip(".?!").replace(" ", "")
            if key not in found or SPLITS.index(split) > SPLITS.index(found[key].split):
                found[key] = Sentence(s, doc, split)
    return tuple(found.values())


def sentences(split: str, n: int | None = None, seed: int = 0, terms: tuple[str, ...] = ()) -> list[Sentence]:
    """``n`` sentences (all when None) of one split in a seeded order (with ``terms``: only those holding one)."""
    import numpy as np

    if split not in SPLITS:
        raise ValueError(f"split {split!r}: one of {', '.join(SPLITS)}")
    pool = [s for s in corpus() if s.split == split and (not terms or any(t in s.text for t in terms))]
    if not pool and not terms:
        raise FileNotFoundError(
            "no real Korean text found: `make setup` installs konlpy and fetches the Debian text packages"
        )
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[: len(pool) if n is None else n]]


def speak_all(chosen: list[Sentence], seed: int = 0) -> tuple[list, list[str]]:
    """The sentences spoken like the training clips (espeak-ng, varied speed, pitch, noise)."""
    import numpy as np
    from tqdm.auto import tqdm

    from training.datasets.korean_speech import speak

    rng = np.random.default_rng(seed + 104_729)
    texts = [s.text for s in chosen]
    return [speak(t, rng) for t in tqdm(texts, desc="speak real text", unit="clip", leave=False)], texts


def generate(n: int, seed: int = 0, split: str = "test") -> tuple[list, list[str]]:
    """``n`` real sentences of ``split``, spoken (the speech generator's interface)."""
    chosen = sentences(split, n, seed)
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} real sentences in split {split!r}, asked for {n}")
    return speak_all(chosen, seed)


def main(argv: list[str] | None = None) -> None:
    import argparse
    from collections import Counter

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fetch", action="store_true", help="download and unpack the Debian text packages")
    args = parser.parse_args(argv)
    if args.fetch:
        fetch()
    counts = Counter(s.split for s in corpus())
    docs = Counter(document_split(d) for d in documents())
    print(", ".join(f"{k}: {counts[k]} sentences from {docs[k]} documents" for k in SPLITS), source_versions())


if __name__ == "__main__":
    main()
