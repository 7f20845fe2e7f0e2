"""The one timebase of every stage: 25 fps video, 16 kHz mono audio, 640 samples per frame.

Preprocessing resamples every input to it, the features and the LSE protocol
assume it (frame i covers audio samples [640 i, 640 (i + 1))), and generation
writes it. The configs check their values against these.
"""

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
