"""``python -m training.asr_sets [--key value ...]``: the seed's two speech set-ups side by side.

Set A: a small set that emphasises domain terms (``--terms``: the generator's sentences that hold one of the terms
in :data:`TERMS`, plus every real training sentence that holds one). Set B: everything (the generator's clips
and ``real_text`` real sentences from the training documents). Both fine-tune the packaged Whisper base with the
same epochs and learning rate and are scored, with the stock model, on the same two held-out sets (60 clips
each, as the demo entry's): the generator's held-out sentences and real text from documents never trained on.

Flags are those of ``python -m training asr`` and apply to both; ``--set-a`` / ``--set-b`` take a quoted string
of flags for one set only; ``--sets A`` runs one (a set measured again replaces its own row). Set B's defaults
are the demo model's (``make models``): ``--set-b store`` takes its row from the store entry ``asr:latest``
instead of training it again (the entry holds the same held-out scores; the row says which entry). Writes
``benchmarks/results/asr-sets.{json,md}``; nothing goes to the model store.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from training.freezing import RESULTS, write_results

ROOT = Path(__file__).resolve().parents[1]
TERMS = (ROOT / "training" / "datasets" / "clinical_terms.txt").relative_to(ROOT)  # run from the repository root
SET_A = f"--synthetic 150 --real-text 0 --test-size 60 --terms {TERMS}"
SET_B = "--synthetic 300 --real-text 300 --test-size 60"


def run(label: str, flags: list[str]) -> dict:
    from tasks import get_task
    from training.__main__ import parse_args
    from training.asr import train

    _, cfg = parse_args(["asr", *flags])
    result = train(get_task("asr"), cfg)
    m = result.metrics
    return {
        "set": label,
        "flags": " ".join(flags),
        "train_clips": result.train_size,
        "generator": {"n": m["n"], "zero_shot": m["zero_shot"], "fine_tuned": m["fine_tuned"]},
        "real_text": {k: m["real_text"][k] for k in ("n", "documents", "zero_shot", "fine_tuned")},
        "examples": m["real_text"]["examples"][:3],
        "best_epoch": result.fit.best_epoch,
        "epochs_run": result.fit.epochs_run,
        "seconds": round(result.fit.seconds, 1),
        "real_text_sets": result.real_text,
    }


def from_store(label: str) -> dict:
    """A set's row from the store entry ``asr:latest`` (the demo build), with the flags it was trained with."""
    import bentoml

    entry = bentoml.models.get("asr:latest")
    meta = entry.info.metadata
    m, cfg = meta["metrics"]["test"], meta["config"]
    return {
        "set": label,
        "flags": f"store entry {entry.tag} (synthetic {cfg['synthetic']}, real_text {cfg.get('real_text', 0)})",
        "train_clips": meta["training"]["train_size"],
        "generator": {"n": m["n"], "zero_shot": m["zero_shot"], "fine_tuned": m["fine_tuned"]},
        "real_text": {k: m["real_text"][k] for k in ("n", "documents", "zero_shot", "fine_tuned")},
        "examples": m["real_text"]["examples"][:3],
        "best_epoch": meta["training"].get("best_epoch"),
        "epochs_run": meta["training"].get("epochs_run"),
        "seconds": meta["training"].get("seconds"),
        "real_text_sets": meta["dataset"]["real_text"],
    }


def markdown(doc: dict) -> str:
    def cell(d: dict) -> str:
        return f"{d['cer']:.3f} / {d['wer']:.3f}"

    first = doc["sets"][0]
    lines = [
        "# Korean speech: Set A (domain terms) vs Set B (everything)",
        "",
        "Whisper base (the packaged multilingual model) fine-tuned twice with the same budget, and the stock model, "
        "on the same held-out clips: the generator's held-out sentences, and real Korean sentences from documents "
        "never trained on (konlpy's laws and bills, the Debian FAQ, LibreOffice's help), all spoken by espeak-ng's "
        "Korean voice with varied speed, pitch and noise. CER / WER, punctuation removed, CER without spaces; greedy "
        "decoding with the repetition guard, the same for every row.",
        "",
        "| model | train clips | generator held-out CER / WER | real-text held-out CER / WER | best / run epochs "
        "| seconds |",
        "|---|---|---|---|---|---|",
        f"| stock Whisper base (zero-shot) | 0 | {cell(first['generator']['zero_shot'])} | "
        f"{cell(first['real_text']['zero_shot'])} | - | - |",
    ]
    for s in doc["sets"]:
        lines.append(
            f"| Set {s['set']} (`{s['flags']}`) | {s['train_clips']} | {cell(s['generator']['fine_tuned'])} | "
            f"{cell(s['real_text']['fine_tuned'])} | {s['best_epoch']} / {s['epochs_run']} | {s['seconds']} |"
        )
    lines += [
        "",
        f"Held-out: generator n={first['generator']['n']}; real text n={first['real_text']['n']} sentences from "
        f"{first['real_text']['documents']} documents. Sources: {first['real_text_sets']['sources']}.",
        "",
        *(f"- Set {s['set']}: `{s['command']}` (commit `{s['commit'][:12]}`)." for s in doc["sets"]),
        "",
        f"Host: {doc['host']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import host_description
    from training.store import git_commit

    parser = argparse.ArgumentParser(description="Set A vs Set B for Korean speech", add_help=True)
    parser.add_argument("--set-a", default=SET_A, help=f"flags of Set A (default: {SET_A})")
    parser.add_argument("--set-b", default=SET_B, help=f"flags of Set B (default: {SET_B}), or 'store'")
    parser.add_argument("--sets", default="A,B", help="which sets to run (default: A,B)")
    args, common = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    path = RESULTS / "asr-sets.json"
    kept = {s["set"]: s for s in json.loads(path.read_text())["sets"]} if path.is_file() else {}
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    for label in args.sets.split(","):
        own = {"A": args.set_a, "B": args.set_b}[label.strip().upper()]
        row = from_store(label) if own == "store" else run(label, [*shlex.split(own), *common])
        row.update(command=f"python -m training.asr_sets {argv_text}".strip(), commit=git_commit())
        kept[row["set"]] = row
        print(json.dumps({k: row[k] for k in ("set", "train_clips", "generator", "real_text")}), flush=True)
    doc = {"host": host_description("cpu"), "sets": [kept[k] for k in sorted(kept)]}
    write_results(path, doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
