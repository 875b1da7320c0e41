"""Whisper fine-tuning for :class:`~tasks.spec.SpeechSpec` tasks (openai-whisper, teacher forcing).

Data: synthetic speech (held-out sentences never trained on), KsponSpeech (``--data`` folder of ``.pcm``), or a
manifest (``--data file.csv|.jsonl``); ``--real-text N`` mixes in N real Korean sentences from the training
documents of :mod:`training.datasets.korean_text` (spoken by the same voice), and ``--terms FILE`` keeps only the
sentences that hold a domain term (the seed's Set A). Every run is scored on two held-out sets: the generator's
(or the corpus's) and real text from documents never trained on, zero-shot and fine-tuned; early stopping
watches the real-text validation split, so the model that keeps the language wins, not the one that best
learned the generator's word lists. Loss: cross-entropy on the transcript tokens after the
``<|startoftranscript|><|ko|><|transcribe|>`` prompt, half the clips with ``<|notimestamps|>`` and half with
start and end timestamp tokens around the text; half the batches see the encoder's 30-second window, half the
short context the fast path serves (:meth:`~tasks.spec.SpeechSpec.context_frames`). Options: frozen encoder
(its outputs are then computed once and cached, which makes CPU fine-tuning practical), SpecAugment-style
masks, gradient accumulation, fp16 on a GPU, early stopping on validation CER. Evaluation: CER (spaces removed) and WER
(jiwer), zero-shot and fine-tuned, on the same held-out clips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.spec import SpeechSpec, resolve
from training.config import TrainConfig
from training.fit import FitResult, fit, pick_device, schedule

_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """What is scored: punctuation dropped (a transcript's full stops and commas are not speech), spaces folded."""
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def cer(refs: list[str], hyps: list[str]) -> float:
    """Character error rate (corpus level) with punctuation and spaces removed (Korean spacing is
    inconsistent), in [0, inf)."""
    import jiwer

    refs_ns = [normalise(r).replace(" ", "") or "-" for r in refs]
    return float(jiwer.cer(refs_ns, [normalise(h).replace(" ", "") for h in hyps]))


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate (corpus level), punctuation removed."""
    import jiwer

    return float(jiwer.wer([normalise(r) or "-" for r in refs], [normalise(h) for h in hyps]))


def scores(refs: list[str], hyps: list[str]) -> dict[str, float]:
    return {"cer": cer(refs, hyps), "wer": wer(refs, hyps)}


def load_base(spec: SpeechSpec, base: str | None, device: str):
    """The model to fine-tune: the packaged Whisper base (converted once), a checkpoint file, or a name."""
    import whisper

    base = base or spec.base
    if base == "packaged":
        from training.whisper_ct2 import convert, packaged_model_dir

        cache = Path.home() / ".cache" / "inference-suite"
        path = cache / "whisper-base.pt"
        if not path.is_file():
            convert(packaged_model_dir(cache), path)
        base = str(path)
    elif not Path(base).is_file() and base not in whisper.available_models():
        raise FileNotFoundError(f"Whisper base {base!r}: not a checkpoint file nor an openai-whisper model name")
    return whisper.load_model(base, device=device)


def log_mel(audio: np.ndarray, n_mels: int) -> torch.Tensor:
    """16 kHz float32 audio -> (n_mels, 3000) log-mel of the 30-second window, as Whisper sees it."""
    import whisper

    return whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), n_mels=n_mels)


def short_mel(audio: np.ndarray, n_mels: int, spec: SpeechSpec) -> torch.Tensor:
    """(n_mels, F) log-mel of the short audio context, exactly as the fast path encodes it: faster-whisper's
    features of the clip, zero-padded to ``spec.context_frames`` instead of to 30 seconds."""
    from faster_whisper.feature_extractor import FeatureExtractor

    features = FeatureExtractor(feature_size=n_mels)(audio)[:, :-1][:, : spec.window_s * 100]
    out = np.zeros((n_mels, spec.context_frames(features.shape[1])), np.float32)
    out[:, : features.shape[1]] = features
    return torch.from_numpy(out)


def encode(model, mel: torch.Tensor) -> torch.Tensor:
    """Whisper's encoder on (B, n_mels, F) for any F <= 3000 frames (openai-whisper's asserts exactly 3000):
    the positional embedding is cut to the input, as CTranslate2 does."""
    enc = model.encoder
    x = torch.nn.functional.gelu(enc.conv1(mel))
    x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
    x = (x + enc.positional_embedding[: x.shape[1]]).to(x.dtype)
    for block in enc.blocks:
        x = block(x)
    return enc.ln_post(x)


@torch.no_grad()
def encode_all(model, mels: list[torch.Tensor], desc: str, batch_size: int = 8) -> list[torch.Tensor]:
    """The encoder's outputs for same-length log-mels, in batches (a frozen encoder's features, computed once)."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for start in tqdm(range(0, len(mels), batch_size), desc=f"encode {desc} (frozen)", unit="batch", leave=False):
        out += list(encode(model, torch.stack(mels[start : start + batch_size]).to(device)).cpu())
    return out


def spec_augment(mel: torch.Tensor, rng: np.random.Generator, frames: int) -> torch.Tensor:
    """Two frequency masks (<= 15 bins) and two time masks (<= 5 % of the speech) set to the mel's mean."""
    mel = mel.clone()
    fill = mel.mean()
    for _ in range(2):
        f = int(rng.integers(0, 16))
        f0 = int(rng.integers(0, mel.shape[0] - f + 1))
        mel[f0 : f0 + f] = fill
        t = int(rng.integers(0, max(1, frames // 20) + 1))
        t0 = int(rng.integers(0, max(1, frames - t) + 1))
        mel[:, t0 : t0 + t] = fill
    return mel


@dataclass
class Clips:
    audio: list[np.ndarray]
    text: list[str]
    mels: list[torch.Tensor] = field(default_factory=list)  # 30-second windows (openai-whisper's view)
    short: list[torch.Tensor] = field(default_factory=list)  # the fast path's short context


def load_clips(spec: SpeechSpec, cfg: TrainConfig) -> tuple[Clips, Clips, Clips, str]:
    """Train / validation / test clips and a description of where they came from."""
    if cfg.synthetic > 0:
        generate = resolve(spec.synthetic)
        audio, text = generate(cfg.synthetic, seed=cfg.seed, **({"terms": read_terms(cfg)} if cfg.terms else {}))
        n_val = max(2, int(cfg.synthetic * cfg.val_fraction))
        n_test = cfg.test_size or max(4, cfg.synthetic // 5)
        test_audio, test_text = generate(n_test, seed=cfg.test_seed, held_out=True)
        source = (
            f"synthetic:{spec.synthetic}(n={cfg.synthetic}, seed={cfg.seed}; held-out sentences n={n_test}, "
            f"seed={cfg.test_seed})"
        )
        return (
            Clips(audio[n_val:], text[n_val:]),
            Clips(audio[:n_val], text[:n_val]),
            Clips(test_audio, test_text),
            source,
        )
    from training.datasets import kspon

    data = Path(cfg.data)
    pairs = kspon.read_manifest(data) if data.is_file() else kspon.list_kspon(data)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(pairs))
    n_test = max(1, int(len(pairs) * cfg.test_fraction))
    n_val = max(1, int(len(pairs) * cfg.val_fraction))

    def clips(idx) -> Clips:
        audio = [_read_audio(pairs[i][0]) for i in tqdm(idx, desc="read audio", unit="clip", leave=False)]
        return Clips(audio, [pairs[i][1] for i in idx])

    source = f"{'manifest' if data.is_file() else 'kspon'}:{data} ({len(pairs)} clips)"
    return (clips(order[n_test + n_val :]), clips(order[n_test : n_test + n_val]), clips(order[:n_test]), source)


def read_terms(cfg: TrainConfig) -> tuple[str, ...]:
    """The domain terms of ``--terms FILE`` (one per line; blank lines and ``#`` comments skipped)."""
    lines = Path(cfg.terms).read_text(encoding="utf-8").splitlines()
    terms = tuple(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#"))
    if not terms:
        raise ValueError(f"{cfg.terms}: no terms (one per line)")
    return terms


def real_text_clips(cfg: TrainConfig, n_val: int, n_test: int) -> tuple[Clips, Clips, Clips, dict]:
    """Real-text clips: ``cfg.real_text`` for training (plus, with ``--terms``, every training sentence that holds
    a term), ``n_val`` for early stopping and ``n_test`` held out, each from its own documents."""
    from training.datasets import korean_text

    terms = read_terms(cfg) if cfg.terms else ()
    chosen = korean_text.sentences("train", cfg.real_text, cfg.seed)
    if terms:
        chosen += [s for s in korean_text.sentences("train", None, cfg.seed, terms) if s not in chosen]
    sets = [
        chosen,
        korean_text.sentences("val", n_val, cfg.seed),
        korean_text.sentences("test", n_test, cfg.test_seed),
    ]
    seeds = (cfg.seed, cfg.seed, cfg.test_seed)
    clips = [Clips(*korean_text.speak_all(one, seed)) for one, seed in zip(sets, seeds, strict=True)]
    info = {
        "sources": korean_text.source_versions(),
        **{
            split: {"sentences": len(one), "documents": len({s.document for s in one})}
            for split, one in zip(korean_text.SPLITS, sets, strict=True)
        },
        "terms": list(terms),
    }
    return *clips, info


def _read_audio(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".pcm":
        from training.datasets.kspon import read_pcm

        return read_pcm(path)
    import whisper

    return whisper.load_audio(str(path))  # ffmpeg: wav, flac, mp3, ...


def transcribe(model, mels: list[torch.Tensor], language: str, batch_size: int = 16) -> list[str]:
    """Greedy decoding without timestamps, the same options and repetition guard zero-shot and fine-tuned.
    ``mels``: 30-second log-mels, or the encoder's outputs for them (a frozen encoder's, computed once)."""
    import whisper

    from tasks.speech import stop_repetition

    options = whisper.DecodingOptions(language=language, without_timestamps=True, fp16=False, temperature=0.0)
    out: list[str] = []
    for start in range(0, len(mels), batch_size):
        batch = torch.stack(mels[start : start + batch_size]).to(next(model.parameters()).device)
        out += [stop_repetition(r.text.strip()) for r in whisper.decode(model, batch, options)]
    return out


@dataclass
class SpeechResult:
    model: object
    fit: FitResult
    metrics: dict
    source: str
    train_size: int
    seconds: float = 0.0
    real_text: dict = field(default_factory=dict)  # the real-text sets: sources, sentences and documents per split

    def cleanup(self) -> None:
        """Nothing on disk to remove."""


def train(spec: SpeechSpec, cfg: TrainConfig) -> SpeechResult:
    from whisper.tokenizer import get_tokenizer

    if cfg.freeze not in ("none", "encoder"):
        raise ValueError("--freeze for speech: none (train everything) or encoder")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device).type
    model = load_base(spec, cfg.base, device)
    n_mels = model.dims.n_mels
    train_set, gen_val, test_set, source = load_clips(spec, cfg)
    real_train, val_set, real_test, real_info = real_text_clips(cfg, max(4, len(gen_val.text)), len(test_set.text))
    train_set = Clips(train_set.audio + real_train.audio, train_set.text + real_train.text)
    if not train_set.text:
        raise ValueError("no training clips: the --terms file matches no sentence; add terms or --real-text N")
    for clips in (train_set, gen_val, val_set, test_set, real_test):
        clips.mels = [log_mel(a, n_mels) for a in tqdm(clips.audio, desc="log-mel", unit="clip", leave=False)]
    train_set.short = [short_mel(a, n_mels, spec) for a in train_set.audio]
    tokenizer = get_tokenizer(
        model.is_multilingual, num_languages=model.num_languages, language=spec.language, task="transcribe"
    )
    # Half the clips are taught with timestamps (the service asks for segment times), half without: Whisper's
    # own recipe, so that fine-tuning keeps both modes.
    plain, timed = list(tokenizer.sot_sequence_including_notimestamps), list(tokenizer.sot_sequence)
    freeze_encoder = cfg.freeze == "encoder"
    if freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        model.encoder.eval()  # a frozen encoder without SpecAugment gives the same features every epoch
        short: list[torch.Tensor | None] = [None] * len(train_set.short)
        for length in sorted({m.shape[1] for m in train_set.short}):  # short contexts batch by length
            idx = [i for i, m in enumerate(train_set.short) if m.shape[1] == length]
            for i, f in zip(idx, encode_all(model, [train_set.short[i] for i in idx], "train short"), strict=True):
                short[i] = f
        features = {"window": encode_all(model, train_set.mels, "train windows"), "short": short}
        # the held-out sets' encoder outputs too, once: decoding then runs the decoder only, every epoch
        for clips in (gen_val, val_set, test_set, real_test):
            clips.mels = encode_all(model, clips.mels, "held-out")
    zero_shot = transcribe(model, test_set.mels, spec.language)
    real_zero_shot = transcribe(model, real_test.mels, spec.language)
    prompts, targets = [], []
    for i, (audio, text) in enumerate(zip(train_set.audio, train_set.text, strict=True)):
        tokens = tokenizer.encode(" " + text)[: spec.max_target_tokens]
        if i % 2:
            end = min(len(audio) / spec.sample_rate, spec.window_s)
            stamps = [tokenizer.timestamp_begin, tokenizer.timestamp_begin + round(end / 0.02)]
            prompts.append(timed)
            targets.append([stamps[0], *tokens, stamps[1], tokenizer.eot])
        else:
            prompts.append(plain)
            targets.append([*tokens, tokenizer.eot])
    rng = np.random.default_rng(cfg.seed)

    def batches():
        """Each batch one view: 30-second windows or, as often, short contexts of one length (so that they
        stack); clips of one context length are batched together."""
        order = rng.permutation(len(targets))
        order = order[np.argsort([train_set.short[i].shape[1] for i in order], kind="stable")]
        starts = rng.permutation(range(0, len(order), cfg.batch_size))
        for n, start in enumerate(starts):
            if cfg.limit_batches and n >= cfg.limit_batches:
                return
            idx = order[start : start + cfg.batch_size]
            lengths = [train_set.short[i].shape[1] for i in idx]
            view = "short" if rng.random() < 0.5 else "window"
            yield view, idx[np.array(lengths) == lengths[0]] if view == "short" else idx

    def loss_fn(m, batch) -> tuple[torch.Tensor, int]:
        view, idx = batch
        if freeze_encoder:
            audio_features = torch.stack([features[view][i] for i in idx]).to(device)
        else:
            source = train_set.short if view == "short" else train_set.mels
            mels = [
                spec_augment(source[i], rng, len(train_set.audio[i]) // 160) if cfg.augment else source[i] for i in idx
            ]
            audio_features = encode(m, torch.stack(mels).to(device))
        seqs = [(prompts[i], prompts[i] + targets[i]) for i in idx]
        width = max(len(s) for _, s in seqs) - 1
        tokens = torch.full((len(idx), width), tokenizer.eot, dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        for row, (prompt, s) in enumerate(seqs):
            tokens[row, : len(s) - 1] = torch.tensor(s[:-1])
            labels[row, len(prompt) - 1 : len(s) - 1] = torch.tensor(s[len(prompt) :])
        logits = m.decoder(tokens.to(device), audio_features)
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.to(device), ignore_index=-100), len(idx)

    def validate(m) -> dict[str, float]:
        """Early stopping on the real-text validation split; the generator's validation CER is logged beside it."""
        score = cer(val_set.text, transcribe(m, val_set.mels, spec.language))
        gen = cer(gen_val.text, transcribe(m, gen_val.mels, spec.language))
        return {"val_cer": score, "val_cer_generator": gen, "score": score}

    def train_mode(m) -> None:
        m.train()
        if freeze_encoder:
            m.encoder.eval()

    steps = -(-len(targets) // cfg.batch_size)
    if cfg.limit_batches:
        steps = min(steps, cfg.limit_batches)
    result = fit(
        model,
        batches,
        None,
        steps_per_epoch=steps,
        device=torch.device(device),
        set_train_mode=train_mode,
        desc=spec.name,
        loss_fn=loss_fn,
        validate=validate,
        amp=device == "cuda",
        **schedule(cfg),
    )
    tuned = transcribe(model, test_set.mels, spec.language)
    real_tuned = transcribe(model, real_test.mels, spec.language)
    metrics = {  # the top level: the generator's (or the corpus's own) held-out clips
        "n": len(test_set.text),
        "zero_shot": scores(test_set.text, zero_shot),
        "fine_tuned": scores(test_set.text, tuned),
        "examples": examples(test_set.text, zero_shot, tuned),
        "real_text": {  # sentences never trained on, from documents never trained on; zero-shot is the stock model
            "n": len(real_test.text),
            "documents": real_info["test"]["documents"],
            "zero_shot": scores(real_test.text, real_zero_shot),
            "fine_tuned": scores(real_test.text, real_tuned),
            "examples": examples(real_test.text, real_zero_shot, real_tuned),
        },
    }
    return SpeechResult(model.cpu().eval(), result, metrics, source, len(targets), result.seconds, real_info)


def examples(refs: list[str], zero_shot: list[str], tuned: list[str], n: int = 5) -> list[dict[str, str]]:
    rows = list(zip(refs, zero_shot, tuned, strict=True))[:n]
    return [{"reference": r, "zero_shot": z, "fine_tuned": f} for r, z, f in rows]
