"""Synthetic Korean speech: disjoint training / held-out sentences, real audio from espeak-ng."""

from __future__ import annotations

import numpy as np

from training.datasets.korean_speech import SAMPLE_RATE, generate, is_held_out, sentences


def test_held_out_sentences_never_appear_in_training():
    train = set(sentences(300, seed=0, held_out=False)) | set(sentences(300, seed=1, held_out=False))
    test = set(sentences(100, seed=0, held_out=True))
    assert not train & test
    assert all(is_held_out(s) for s in test) and not any(is_held_out(s) for s in train)
    assert sentences(5, seed=3, held_out=False) == sentences(5, seed=3, held_out=False)
    words = {w for s in train for w in s.split()}
    assert {"환자", "혈압을"} & words and len(words) > 80  # clinical and everyday, varied


def test_audio_is_16k_speech_of_plausible_length():
    audio, texts = generate(2, seed=4, held_out=True)
    assert len(audio) == len(texts) == 2
    for a, t in zip(audio, texts, strict=True):
        seconds = len(a) / SAMPLE_RATE
        assert a.dtype == np.float32 and 0.5 < seconds < 3 * len(t) / 4  # Korean: ~4 syllables a second or more
        assert np.abs(a).max() > 0.05 and np.abs(a).max() <= 1.0  # speech, not silence, not clipped away
    again, _ = generate(2, seed=4, held_out=True)
    assert np.array_equal(audio[0], again[0])  # deterministic


def test_particles_follow_the_final_consonant():
    from training.datasets.korean_speech import fill

    assert fill("{p:을} {q:을}", {"p": "학생", "q": "의사"}) == "학생을 의사를"
    assert fill("{p:이} {q:은}", {"p": "두통", "q": "간호사"}) == "두통이 간호사는"
