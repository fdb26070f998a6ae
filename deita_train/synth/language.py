"""The language of an instruction, by `langdetect` (its profiles ship inside the package: nothing is downloaded).

`DetectorFactory.seed = 0` makes each detection deterministic. The code is ISO 639-1: langdetect's regional
variants (`zh-cn`, `zh-tw`) are cut to the language (`zh`). No language is guessed: the reason is `empty` for
blank text and `undetectable` when langdetect finds no letters to read (digits, punctuation, emoji only).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass
class LanguageResult:
    """One ISO 639-1 code per text (None when undetected) and the reason for each None."""

    codes: list[str | None]
    reasons: list[str | None]

    def failures(self) -> Counter[str]:
        """How many texts had no language, for each reason."""
        return Counter(r for r in self.reasons if r is not None)


def detect_languages(texts: list[str]) -> LanguageResult:
    """The most probable language of each text."""
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError as error:
        message = "synth.tags.language needs langdetect, a dependency of deita-train: pip install langdetect"
        raise ImportError(message) from error
    DetectorFactory.seed = 0
    codes: list[str | None] = []
    reasons: list[str | None] = []
    for text in texts:
        code, reason = None, None
        if not text.strip():
            reason = "empty"
        else:
            try:
                code = detect(text).split("-")[0]
            except LangDetectException:
                reason = "undetectable"
        codes.append(code)
        reasons.append(reason)
    return LanguageResult(codes, reasons)
