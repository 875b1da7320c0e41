"""Synthetic Korean speech: generated sentences (clinical and everyday) spoken by espeak-ng's Korean voice with
speed, pitch and noise variation, as 16 kHz float32 audio with its transcript.

Every sentence belongs to exactly one side: ``held_out`` sentences (a fixed 20 % of the sentence space, chosen
by hash) never appear in training, so fine-tuning must generalise rather than memorise. espeak-ng's voice is
robotic: good for a fine-tuning demo and smoke tests, not a benchmark of real speech.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import numpy as np

SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050

PEOPLE = ["환자", "의사", "간호사", "보호자", "친구", "동생", "어머니", "아버지", "선생님", "학생", "직원", "손님"]
PLACES = ["병원", "약국", "응급실", "검사실", "회사", "학교", "시장", "도서관", "식당", "공원", "은행", "집"]
TIMES = ["오늘", "어제", "내일", "아침", "저녁", "주말", "오후", "새벽", "지난주", "다음 달"]
SYMPTOMS = ["두통", "기침", "열", "복통", "어지럼증", "허리 통증", "호흡 곤란", "가슴 통증", "불면증", "알레르기"]
TESTS = ["혈압", "혈당", "체온", "맥박", "심전도", "엑스레이", "혈액 검사", "소변 검사", "초음파", "시력"]
ACTIONS = ["측정했습니다", "확인했습니다", "기록했습니다", "설명했습니다", "다시 검사했습니다", "예약했습니다"]
STATES = ["좋아졌습니다", "나빠졌습니다", "괜찮습니다", "심해졌습니다", "정상입니다", "조금 높습니다"]
THINGS = ["커피", "점심", "책", "우산", "버스표", "선물", "약", "물", "사과", "신문"]
VERBS = ["샀습니다", "먹었습니다", "읽었습니다", "주었습니다", "찾았습니다", "가져왔습니다"]

# "{slot:을}" attaches the particle that fits the word: 을/를, 이/가, 은/는 by whether it ends in a consonant.
TEMPLATES = [
    "{time} {person}의 {test:을} {action}",
    "{person:은} {time}부터 {symptom:이} {state}",
    "{time} {place}에서 {person:을} 만났습니다",
    "{person:이} {place}에서 {thing:을} {verb}",
    "{symptom} 때문에 {time} {place}에 갔습니다",
    "{test} 결과는 {state}",
    "{person}에게 {symptom}에 대해 물었습니다",
    "{time} {thing:을} {verb} 그리고 {place}에 갔습니다",
]
SLOTS = {
    "person": PEOPLE,
    "place": PLACES,
    "time": TIMES,
    "symptom": SYMPTOMS,
    "test": TESTS,
    "action": ACTIONS,
    "state": STATES,
    "thing": THINGS,
    "verb": VERBS,
}
PARTICLES = {"을": ("을", "를"), "이": ("이", "가"), "은": ("은", "는")}
SLOT = re.compile(r"\{(\w+)(?::(\w))?\}")


def has_final_consonant(word: str) -> bool:
    """Whether the last Hangul syllable has a final consonant (batchim)."""
    code = ord(word[-1]) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def fill(template: str, words: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        word = words[m.group(1)]
        if m.group(2) is None:
            return word
        after_consonant, after_vowel = PARTICLES[m.group(2)]
        return word + (after_consonant if has_final_consonant(word) else after_vowel)

    return SLOT.sub(one, template)


def is_held_out(sentence: str) -> bool:
    """A fixed fifth of all sentences, chosen by hash: the same on every machine and for every seed."""
    return hashlib.sha256(sentence.encode()).digest()[0] % 5 == 0


def sentences(n: int, seed: int, held_out: bool, terms: tuple[str, ...] = ()) -> list[str]:
    """``n`` distinct sentences from one side of the split (with ``terms``: only sentences holding one)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(200 * n + 1000):
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        text = fill(template, {k: v[rng.integers(len(v))] for k, v in SLOTS.items()})
        if text not in seen and is_held_out(text) == held_out and (not terms or any(t in text for t in terms)):
            seen.add(text)
            out.append(text)
            if len(out) == n:
                return out
    raise ValueError(f"could not draw {n} distinct {'held-out' if held_out else 'training'} sentences")


def speak(text: str, rng: np.random.Generator) -> np.ndarray:
    """espeak-ng's Korean voice at a random speed and pitch, with noise -> float32 mono 16 kHz."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is not installed: `apt-get install espeak-ng` (make setup does it)")
    speed, pitch = int(rng.integers(120, 181)), int(rng.integers(30, 71))
    wav = subprocess.run(
        ["espeak-ng", "-v", "ko", "-s", str(speed), "-p", str(pitch), "--stdout", text], capture_output=True, check=True
    ).stdout
    pcm = np.frombuffer(wav[44:], dtype="<i2").astype(np.float32) / 32768.0  # streamed WAV: fixed 44-byte header
    audio = resample_poly(pcm, 320, 441).astype(np.float32)  # 22,050 Hz -> 16,000 Hz
    snr_db = rng.uniform(15, 40)
    noise = rng.normal(0, 1, audio.shape).astype(np.float32) * np.sqrt(np.mean(audio**2) / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1, 1)


def generate(
    n: int, seed: int = 0, held_out: bool = False, terms: tuple[str, ...] = ()
) -> tuple[list[np.ndarray], list[str]]:
    """``n`` (audio, transcript) pairs; ``held_out`` draws only sentences training never sees; ``terms`` only
    sentences that hold one of them."""
    rng = np.random.default_rng(seed + 7919)
    texts = sentences(n, seed, held_out, terms)
    return [speak(t, rng) for t in texts], texts
