"""``python -m training.base_compare <task> [--bases packaged,e5] [--peers] [--out FILE.json] [--key value ...]``:
the keyphrase tagger on each encoder base, same data, seed and budget.

Trains the task's tagger once per base (``packaged``: the English all-MiniLM-L6-v2; ``e5``: multilingual-e5-small
with its vocabulary trimmed, see :mod:`training.tagger`; any ``--base`` value), with the task's demo defaults
unless flags override them (the flags are those of ``python -m training``; ``--base`` is what varies), measures
each on the same held-out abstracts (F1@5, F1@10, F1@M overall, English and Korean), and writes
``benchmarks/results/<task>-bases.{json,md}`` (or ``--out``) with the seconds, the model's size on disk and the
default the criterion picks: the multilingual base if its Korean F1@5 is higher and its English F1@5 is not lower
by more than 2 points, otherwise the better base per language. ``--peers`` also measures YAKE and KeyBERT (once:
they do not depend on the base). Nothing goes to the model store.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from training.__main__ import parse_args

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MULTILINGUAL = "e5"
ENGLISH_TOLERANCE = 0.02  # "English not worse by more than 2 points" (F1@5)


def disk_size(result) -> int:
    """Bytes of the files a store entry holds for this model (``save_pretrained`` of model and tokenizer)."""
    with tempfile.TemporaryDirectory() as tmp:
        result.model.save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)
        return sum(p.stat().st_size for p in Path(tmp).iterdir() if p.is_file())


def tokens_per_doc(tokenizer, docs, language: str) -> float:
    lengths = [len(tokenizer(d.text, add_special_tokens=False)["input_ids"]) for d in docs if d.language == language]
    return round(sum(lengths) / max(len(lengths), 1), 1)


def decide(rows: list[dict]) -> dict:
    """The default by the criterion (see the module's docstring), from the rows of the MiniLM and the e5 base."""
    by = {r["base"]: r for r in rows}
    multi = next((r for r in rows if r["base"].partition(":")[0] == MULTILINGUAL), None)
    english = by.get("packaged")
    if multi is None or english is None:
        return {"default": None, "reason": "needs both the packaged MiniLM and an e5 base"}
    ko = multi["ko"]["f1@5"] - english["ko"]["f1@5"]
    en = multi["en"]["f1@5"] - english["en"]["f1@5"]
    out = {"korean_f1@5_gain": round(ko, 4), "english_f1@5_change": round(en, 4), "tolerance": ENGLISH_TOLERANCE}
    if ko > 0 and en >= -ENGLISH_TOLERANCE:
        return {**out, "default": multi["base"], "reason": "Korean F1@5 higher, English within 2 points"}
    per = {lang: max((english, multi), key=lambda r: (r[lang]["f1@5"], r is english))["base"] for lang in ("en", "ko")}
    why = "Korean F1@5 not higher" if ko <= 0 else "English F1@5 lower by more than 2 points"
    return {**out, "default": english["base"], "per_language": per, "reason": why}


def compare(argv: list[str]) -> dict:
    from tasks import get_task
    from tasks.kinds import TOKEN_TAGGING, kind_of
    from training.store import git_commit
    from training.tagger import load_docs, train

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--bases", default=f"packaged,{MULTILINGUAL}")
    extra.add_argument("--peers", action="store_true")
    extra.add_argument("--out", type=Path, default=None)
    opts, rest = extra.parse_known_args(argv)
    task, cfg = parse_args(rest)
    spec = get_task(task)
    if kind_of(spec) is not TOKEN_TAGGING:  # the study varies the tagger's encoder
        raise SystemExit(f"error: {task} is not a {TOKEN_TAGGING.name} task")
    rows, peers, source = [], None, None
    for n, base in enumerate(opts.bases.split(",")):
        start = time.perf_counter()
        result = train(spec, replace(cfg, base=base), peers=opts.peers and n == 0)
        seconds = time.perf_counter() - start
        m, source = result.metrics, result.source
        if opts.peers and n == 0:
            peers = {k: m[k] for k in ("yake", "keybert")}
        test = load_docs(spec, cfg).test  # the held-out documents train() measured on
        vocab = result.base.get("vocabulary", {})
        rows.append(
            {
                "base": base,
                "model": result.base.get("name", base),
                "vocab_size": vocab.get("vocab_size", len(result.tokenizer)),
                "vocab_trimmed": vocab.get("trimmed", False),
                "parameters": sum(p.numel() for p in result.model.parameters()),
                "size_mb": round(disk_size(result) / 2**20, 1),
                **{k: m["tagger"][k] for k in ("f1@5", "f1@10", "f1@M")},
                "en": m["tagger"].get("en", {}),
                "ko": m["tagger"].get("ko", {}),
                "tokens_per_doc": {lang: tokens_per_doc(result.tokenizer, test, lang) for lang in ("en", "ko")},
                "train_seconds": round(result.fit.seconds, 1),
                "seconds": round(seconds, 1),  # conversion / trimming, tokenising, training and evaluation
                "best_epoch": result.fit.best_epoch,
                "epochs_run": result.fit.epochs_run,
                "test_size": m["n"],
                "base_record": result.base,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "base_record"}), flush=True)
    return {
        "task": task,
        "config": {k: v for k, v in vars(cfg).items() if k != "base"},
        "data": source,
        "commit": git_commit(),
        "command": "python -m training.base_compare " + " ".join(argv),
        "rows": rows,
        "peers": peers,
        "decision": decide(rows),
        "out": str(opts.out or RESULTS / f"{task}-bases.json"),
    }


def _scores(s: dict) -> str:
    return " | ".join(f"{s.get(k, float('nan')):.4f}" for k in ("f1@5", "f1@10", "f1@M"))


def markdown(doc: dict) -> str:
    c = doc["config"]
    lines = [
        f"# Encoder bases for {doc['task']}",
        "",
        f"Command: `{doc['command']}` (commit `{doc['commit'][:12]}`). Same data ({doc['data']}), seed "
        f"{c['seed']} and budget ({c['epochs']} epochs at most, batch {c['batch_size']}, lr {c['lr']}, early "
        f"stopping on validation F1@M) for every base. F1 at 5, 10 and M (all predictions) on the held-out "
        "abstracts, whose keyphrases use vocabulary training never saw.",
        "",
        "| base | vocabulary | parameters | size (MB) | all F1@5 | F1@10 | F1@M | English F1@5 | F1@10 | F1@M "
        "| Korean F1@5 | F1@10 | F1@M | tokens / doc (en, ko) | best epoch | train s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        vocab = f"{r['vocab_size']:,}" + (" (trimmed)" if r["vocab_trimmed"] else "")
        t = r["tokens_per_doc"]
        lines.append(
            f"| {r['base']} ({r['model']}) | {vocab} | {r['parameters']:,} | {r['size_mb']} | {_scores(r)} | "
            f"{_scores(r['en'])} | {_scores(r['ko'])} | {t['en']}, {t['ko']} | {r['best_epoch']} | "
            f"{r['train_seconds']} | {r['seconds']} |"
        )
    if doc["peers"]:
        for name, s in doc["peers"].items():
            lines.append(
                f"| {name} (peer) | | | | {_scores(s)} | {_scores(s.get('en', {}))} | {_scores(s.get('ko', {}))} "
                "| | | | |"
            )
    d = doc["decision"]
    lines += ["", f"Decision: default `{d.get('default')}`: {d.get('reason')}."]
    if "korean_f1@5_gain" in d:
        lines[-1] += (
            f" Korean F1@5 {d['korean_f1@5_gain']:+.4f}, English F1@5 {d['english_f1@5_change']:+.4f} "
            f"(tolerance -{d['tolerance']})."
        )
    if "per_language" in d:
        lines[-1] += " Better per language: " + ", ".join(f"{k} `{v}`" for k, v in d["per_language"].items()) + "."
    for r in doc["rows"]:
        b = r["base_record"]
        if "weights" in b:
            w, v = b["weights"], b["vocabulary"]
            kept = f"{v['vocab_size']:,} of {v.get('original_vocab_size', v['vocab_size']):,} pieces"
            lines += [
                "",
                f"`{r['base']}`: weights `{w['package']}` {w['version']} (`{w['member']}`, sha256 "
                f"`{w['sha256'][:12]}`), 4-bit quantised, dequantised to fp32; vocabulary "
                + (
                    f"trimmed to {kept} (scripts kept whole: {', '.join(v['scripts']) or 'none'})"
                    if v["trimmed"]
                    else kept
                )
                + ".",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    doc = compare(argv)
    from training.freezing import write_results

    write_results(Path(doc.pop("out")), doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
