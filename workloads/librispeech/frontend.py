"""The log-mel front end of both LibriSpeech models, as plain numpy (framework-free).

The reference computes the features inside the model (init2winit's LibriSpeech preprocessor): the
16-bit samples scaled by 2**-15, 25 ms frames every 10 ms (401 samples: one extra for the
pre-emphasis), HTK-flavoured pre-emphasis 0.97, a periodic Hann window of 400 samples, the power
spectrum of a 512-point FFT, an 80-bin HTK mel filterbank between 125 Hz and 7.6 kHz
(`tf.signal.linear_to_mel_weight_matrix`), the log floored at 1e-5, then the per-bin mean and
standard deviation measured on LibriSpeech. Frames are never padded at the end; a frame counts as
padding only if every one of its samples is padding.

The PyTorch module (`workloads/librispeech/torch_modules.py`) computes the same thing on the
device; `log_mel` here is its plain reference, and the constants live here once.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16_000
FRAME_SIZE_MS, FRAME_STEP_MS = 25, 10
FRAME_STEP = SAMPLE_RATE * FRAME_STEP_MS // 1000  # 160 samples
FRAME_SIZE = SAMPLE_RATE * FRAME_SIZE_MS // 1000 + 1  # 401: one sample more for the pre-emphasis
FFT_SIZE = 2 ** math.ceil(math.log2(FRAME_SIZE))  # 512
NUM_BINS = 80
LOWER_EDGE_HZ, UPPER_EDGE_HZ = 125.0, 7600.0
PREEMPHASIS = 0.97
OUTPUT_FLOOR = 1e-5
INPUT_SCALE = 2.0**-15  # 16-bit samples to [-1, 1)

# Per-bin mean and standard deviation of the log-mel features over LibriSpeech (the reference's).
LIBRISPEECH_MEAN = (
    -7.6047816276550293, -7.1206226348876953, -6.8864245414733887, -6.8705768585205078,
    -6.9667720794677734, -7.1084094047546387, -6.9528026580810547, -6.783994197845459,
    -6.6195521354675293, -6.4876265525817871, -6.4120659828186035, -6.394047737121582,
    -6.4244871139526367, -6.3993711471557617, -6.5158271789550781, -6.7137999534606934,
    -6.8476877212524414, -6.9885001182556152, -6.9221386909484863, -7.146148681640625,
    -7.2040400505065918, -7.0537552833557129, -7.3140382766723633, -7.1223249435424805,
    -7.30251407623291, -7.1212143898010254, -7.2425732612609863, -7.1730537414550781,
    -7.0979413986206055, -7.088747501373291, -6.9849910736083984, -6.8787732124328613,
    -6.7602753639221191, -6.6300945281982422, -6.5145769119262695, -6.4245057106018066,
    -6.356513500213623, -6.31787633895874, -6.2660770416259766, -6.2468328475952148,
    -6.2821526527404785, -6.1908388137817383, -6.2484354972839355, -6.1472640037536621,
    -6.0924725532531738, -6.0171003341674805, -5.9250402450561523, -5.8535833358764648,
    -5.8209109306335449, -5.8118929862976074, -5.80783748626709, -5.7714629173278809,
    -5.7453732490539551, -5.7705655097961426, -5.7765641212463379, -5.7831673622131348,
    -5.7954087257385254, -5.7994823455810547, -5.8023476600646973, -5.8047118186950684,
    -5.8168182373046875, -5.8844799995422363, -5.9727106094360352, -6.0444660186767578,
    -6.1284866333007812, -6.2257585525512695, -6.3157496452331543, -6.39061164855957,
    -6.4928598403930664, -6.5498456954956055, -6.6054320335388184, -6.6508378982543945,
    -6.66917610168457, -6.6726889610290527, -6.684234619140625, -6.6974577903747559,
    -6.75471830368042, -6.7949142456054688, -6.8634209632873535, -6.94186544418335,
)  # fmt: skip
LIBRISPEECH_STDDEV = (
    3.4353282451629639, 3.5962932109832764, 3.7012472152709961, 3.7369205951690674,
    3.7535104751586914, 3.693629264831543, 3.6922497749328613, 3.7641522884368896,
    3.8419716358184814, 3.8999848365783691, 3.9294240474700928, 3.9317409992218018,
    3.9139585494995117, 3.9031598567962646, 3.8691999912261963, 3.8155081272125244,
    3.7644970417022705, 3.7099106311798096, 3.6965086460113525, 3.6003766059875488,
    3.5493226051330566, 3.5465121269226074, 3.45003604888916, 3.4712812900543213,
    3.4084610939025879, 3.4408135414123535, 3.4104881286621094, 3.4217638969421387,
    3.4312851428985596, 3.4199209213256836, 3.4305806159973145, 3.4382665157318115,
    3.4580366611480713, 3.4817991256713867, 3.4958710670471191, 3.5036792755126953,
    3.5047574043273926, 3.4988734722137451, 3.493056058883667, 3.4822943210601807,
    3.459430456161499, 3.4612770080566406, 3.4559063911437988, 3.4755423069000244,
    3.4971549510955811, 3.5326557159423828, 3.5705199241638184, 3.5920312404632568,
    3.596907377243042, 3.5913500785827637, 3.5865931510925293, 3.5826809406280518,
    3.5837743282318115, 3.5895791053771973, 3.5819313526153564, 3.5837869644165039,
    3.5861184597015381, 3.5889589786529541, 3.592214822769165, 3.5939455032348633,
    3.5856630802154541, 3.5884113311767578, 3.5921022891998291, 3.5870490074157715,
    3.5806570053100586, 3.5731067657470703, 3.5617532730102539, 3.54980731010437,
    3.5527374744415283, 3.5475366115570068, 3.5387849807739258, 3.5256178379058838,
    3.5031836032867432, 3.4922726154327393, 3.4879646301269531, 3.4725594520568848,
    3.4558389186859131, 3.4351828098297119, 3.4284293651580811, 3.4299170970916748,
)  # fmt: skip


def num_frames(num_samples: int) -> int:
    """Frames of a signal of `num_samples` (no end padding: a partial last frame is dropped)."""
    return max(0, (num_samples - FRAME_SIZE) // FRAME_STEP + 1)


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """The HTK mel scale: 1127 ln(1 + f / 700)."""
    return np.asarray(1127.0 * np.log(1.0 + np.asarray(hertz, dtype=np.float64) / 700.0))


def mel_weight_matrix(num_spectrogram_bins: int = FFT_SIZE // 2 + 1) -> np.ndarray:
    """(num_spectrogram_bins, 80) triangular filters, linear in mel; the DC bin gets no weight."""
    linear_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, num_spectrogram_bins)[1:]
    bins_mel = hertz_to_mel(linear_hz)[:, None]
    edges = np.linspace(hertz_to_mel(LOWER_EDGE_HZ), hertz_to_mel(UPPER_EDGE_HZ), NUM_BINS + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(np.minimum(rising, falling), 0.0)
    return np.concatenate([np.zeros((1, NUM_BINS)), weights]).astype(np.float32)


def hann_window(length: int = FRAME_SIZE - 1) -> np.ndarray:
    """The periodic Hann window (tf.signal.hann_window(periodic=True)) of an even length."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


def log_mel(audio: np.ndarray, paddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, samples) 16-bit-scale audio and 0/1 paddings -> ((N, frames, 80) features, (N, frames))."""
    audio = np.asarray(audio, np.float64) * (1.0 - paddings) * INPUT_SCALE
    t = num_frames(audio.shape[1])
    index = np.arange(t)[:, None] * FRAME_STEP + np.arange(FRAME_SIZE)[None, :]
    frames = audio[:, index]  # (N, frames, 401)
    emphasised = np.concatenate(
        [frames[..., :1] * (1.0 - PREEMPHASIS), frames[..., 1:-1] - PREEMPHASIS * frames[..., :-2]],
        -1,
    )
    power = np.abs(np.fft.rfft(emphasised * hann_window(), FFT_SIZE, axis=-1)) ** 2
    mel = power @ mel_weight_matrix(power.shape[-1]).astype(np.float64)
    features = (np.log(np.maximum(mel, OUTPUT_FLOOR)) - np.asarray(LIBRISPEECH_MEAN)) / np.asarray(
        LIBRISPEECH_STDDEV
    )
    frame_paddings = np.asarray(paddings)[:, index].min(axis=-1)
    return features.astype(np.float32), frame_paddings.astype(np.float32)
