"""Speech and phoneme timings from espeak-ng's C API (libespeak-ng.so.1) via ctypes.

The command line cannot give phoneme timings without MBROLA voices, but the
library reports an ``espeakEVENT_PHONEME`` event (start time in ms and the
phoneme mnemonic) for every phoneme when initialised with
``espeakINITIALIZE_PHONEME_EVENTS``. Struct layouts follow
``/usr/include/espeak-ng/speak_lib.h`` (API revision 12).

espeak-ng keeps one global synthesiser per process, so calls are serialised
with a lock and the library is initialised once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

import numpy as np

from daetalker.errors import DaetalkerError

# speak_lib.h enums
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4

ESPEAK_FIX = "install it with: apt-get install espeak-ng libespeak-ng1"


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),  # phoneme mnemonic, NUL-terminated unless 8 bytes
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this espeak_Synth call
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class Utterance:
    """One synthesised sentence at espeak's native rate."""

    samples: np.ndarray  # (S,) int16 mono at ``sample_rate``
    sample_rate: int  # 22050 for espeak-ng
    phonemes: list[tuple[float, str]]  # (start_s, espeak mnemonic); '_' names are pauses


class _Engine:
    """Process-wide espeak-ng instance (the library itself is a singleton)."""

    def __init__(self) -> None:
        name = "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            found = ctypes.util.find_library("espeak-ng")
            if not found:
                raise DaetalkerError(f"{name}: espeak-ng library not found; {ESPEAK_FIX}") from None
            lib = ctypes.CDLL(found)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS
        )
        if self.sample_rate <= 0:
            raise DaetalkerError(f"{name}: espeak_Initialize failed (espeak-ng-data missing?); {ESPEAK_FIX}")
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._cb = _Callback(self._on_audio)  # keep a reference: C holds only the pointer
        lib.espeak_SetSynthCallback(self._cb)
        self._voice: str | None = None
        self.lock = threading.Lock()

    def _on_audio(self, wav, n: int, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append((ev.audio_position, name))
            i += 1
        return 0  # continue synthesis

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int) -> Utterance:
        with self.lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise DaetalkerError(
                        f"espeak-ng voice {voice!r} not found (list voices with: espeak-ng --voices)"
                    )
                self._voice = voice
            for param, value in (
                (_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch),
                (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, 100),
            ):
                self._lib.espeak_SetParameter(param, int(value), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise DaetalkerError(f"espeak_Synth failed with code {err} for text {text!r}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            phonemes = [(ms / 1000.0, name) for ms, name in self._events]
        return Utterance(samples=samples.astype(np.int16), sample_rate=self.sample_rate, phonemes=phonemes)


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 175, pitch: int = 50,
               pitch_range: int = 50) -> Utterance:
    """Speak ``text`` with espeak-ng; return int16 samples and phoneme start times."""
    return engine().synth(text, voice, rate_wpm, pitch, pitch_range)


def is_pause(phoneme: str) -> bool:
    """espeak marks pauses with '_' mnemonics ('_', '_:', '_!', ...)."""
    return phoneme.startswith("_") or phoneme == ""
