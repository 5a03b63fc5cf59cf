"""Silero VAD (conv encoder + LSTM) in INT8: per-frame speech probabilities of qcompile FP32/INT8 and onnxruntime
`quantize_static` INT8 against onnxruntime FP32, on speech synthesized with espeak-ng, mixed with silence and noise.

    python benchmarks/vad.py [--shared ../shared]      (needs `apt-get install espeak-ng`)

Prints a Markdown section for benchmarks/RESULTS.md.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RATE, HOP, CONTEXT, FRAMES = 16000, 512, 64, 64  # 64 frames of 32 ms per call: 2.05 s
CALIBRATION_TEXT = [
    "The quick brown fox jumps over the lazy dog.", "Please call Stella and ask her to bring these things.",
    "A deployment engineer compiles the model for the board.", "It rained all night, and the river rose.",
    "Seven slender swans swam silently south.", "Numbers like four hundred and twelve are read aloud.",
]
EVALUATION_TEXT = [
    "Voice activity detection marks where somebody speaks.", "The train to the airport leaves at half past nine.",
    "She sells sea shells by the sea shore.", "Integer kernels keep the answer close to the float one.",
    "Turn left at the second light, then keep going straight.", "How much wood would a woodchuck chuck?",
    "Bring a coat; the evening will be cold.", "Every sentence here is spoken by a synthetic voice.",
]
VOICES = ["en", "en-us", "en-gb-x-rp", "en+f3", "en-us+m3", "en+f2"]


def speech(text: str, voice: str, folder: Path) -> np.ndarray:
    """espeak-ng's rendering of `text` at 16 kHz in [-1, 1]."""
    from scipy.signal import resample_poly

    wav = folder / "utterance.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
    with wave.open(str(wav)) as f:
        rate, data = f.getframerate(), np.frombuffer(f.readframes(f.getnframes()), np.int16)
    audio = data.astype(np.float32) / 32768
    return resample_poly(audio, RATE, rate).astype(np.float32) if rate != RATE else audio


def stream(texts: list[str], seed: int, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Utterances separated by 0.3-1.2 s of silence, with background noise at 1e-3 (-60 dBFS) and a random
    gain per utterance; returned as calls of FRAMES frames [calls, FRAMES, CONTEXT + HOP] and the speech mask per
    frame (where the synthesizer's signal is above -50 dBFS), for reference."""
    rng = np.random.default_rng(seed)
    parts, truth = [], []
    for i, text in enumerate(texts):
        gap = np.zeros(int(rng.uniform(0.3, 1.2) * RATE), np.float32)
        voiced = speech(text, VOICES[(i + seed) % len(VOICES)], folder) * rng.uniform(0.3, 0.9)
        parts += [gap, voiced]
        truth += [np.zeros(len(gap), bool), np.abs(voiced) > 3e-3]
    audio = np.concatenate(parts)
    audio = audio + rng.normal(0, 1e-3, audio.shape).astype(np.float32)
    calls = len(audio) // (HOP * FRAMES)
    audio = np.concatenate([np.zeros(CONTEXT, np.float32), audio[:calls * HOP * FRAMES]])
    frames = np.stack([audio[k * HOP:k * HOP + CONTEXT + HOP] for k in range(calls * FRAMES)])
    voiced = np.concatenate(truth)[:calls * HOP * FRAMES].reshape(-1, HOP).mean(1) > 0.2
    return frames.reshape(calls, FRAMES, CONTEXT + HOP), voiced


def run_stream(engine, calls: np.ndarray) -> tuple[np.ndarray, list]:
    """Per-frame probabilities over consecutive calls, the LSTM state carried from call to call; and the (h, c)
    each call started from."""
    h = c = np.zeros((1, 1, 128), np.float32)
    probabilities, states = [], []
    for x in calls:
        states.append((h, c))
        p, h, c = engine(x, h, c)
        probabilities.append(p)
    return np.concatenate(probabilities), states


def quantize_with_onnxruntime(model: Path, feeds: list[dict], out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    args = parser.parse_args()
    import onnxruntime as ort

    import qcompile

    model = args.shared / "models" / "silero_vad_16k_sequence.onnx"
    with tempfile.TemporaryDirectory(prefix="qcompile-vad-") as name:
        folder = Path(name)
        calib_calls, _ = stream(CALIBRATION_TEXT, 1, folder)
        eval_calls, voiced = stream(EVALUATION_TEXT, 2, folder)
        reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

        def ort_engine(session):
            return lambda x, h, c: session.run(None, {"input": x, "h": h, "c": c})

        _, states = run_stream(ort_engine(reference), calib_calls)  # calibrate on the states speech leads to
        feeds = [{"input": x, "h": h, "c": c} for x, (h, c) in zip(calib_calls, states)]
        calib = folder / "calib.npz"
        np.savez(calib, **{k: np.stack([f[k] for f in feeds]) for k in ("input", "h", "c")})
        engines = {"onnxruntime FP32": ort_engine(reference)}
        quantized = quantize_with_onnxruntime(model, feeds, folder / "vad_qdq.onnx")
        engines["onnxruntime INT8 (quantize_static)"] = ort_engine(
            ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]))
        # INT8 of every layer, and INT8 with the convs (the STFT and the encoder over its magnitudes) kept in FP32
        variants = {"FP32": ("fp32", ()), "INT8": ("int8", ()), "INT8, convs in FP32": ("int8", ("Conv",))}
        counts = {}
        for key, (precision, exclude) in variants.items():
            library = folder / f"vad_{len(counts)}.so"
            report = folder / f"report_{len(counts)}.md" if precision == "int8" else None
            # unverified: the table measures what each build computes, the INT8 of every layer included
            qcompile.build(model, library, precision=precision, calib=calib, calib_count=len(feeds),
                           input_shapes={"input": (FRAMES, CONTEXT + HOP)}, report=report, exclude=exclude,
                           verify=False)
            engines[f"qcompile {key}"] = lambda x, h, c, m=qcompile.load(library): m(x, h, c)
            if report:
                counts[key] = json.loads(report.with_suffix(".json").read_text())
        probabilities = {k: run_stream(e, eval_calls)[0] for k, e in engines.items()}
        latency = {}
        for key, exclude in (("INT8", []), ("INT8, convs in FP32", ["--exclude-nodes", "Conv"])):
            latency[key] = subprocess.run(
                [sys.executable, "-m", "qcompile", "bench", model, "--input-shape", f"input:{FRAMES}x{CONTEXT + HOP}",
                 "--calib", calib, "--calib-count", str(len(feeds)), *exclude, "--compare", "onnxruntime",
                 "--threads", "1", "--repeat", "20", "-q"], capture_output=True, text=True, check=True).stdout

    base = probabilities["onnxruntime FP32"]
    sys.path.insert(0, str(HERE))
    from latency import machine

    print("## Silero VAD in INT8 (`benchmarks/vad.py`)\n")
    print(machine() + "\n")
    print(f"Command: `python benchmarks/vad.py`. Speech: espeak-ng (voices {', '.join(VOICES)}), resampled to "
          f"16 kHz, sentences separated by 0.3-1.2 s of silence, noise at -60 dBFS. Calibration: "
          f"{len(calib_calls)} calls of {FRAMES} frames ({len(CALIBRATION_TEXT)} sentences), each with the LSTM "
          f"state onnxruntime FP32 reached before it; evaluation: {len(eval_calls) * FRAMES} frames of "
          f"{len(EVALUATION_TEXT)} other sentences, every engine carrying its own state from call to call "
          f"(a streaming VAD). Threshold 0.5 for the speech decision; {voiced.mean():.0%} of the evaluated frames "
          "carry the synthesizer's signal.\n")
    rows = ["| engine | max abs diff of per-frame probability vs ORT FP32 | mean abs diff | decision agreement "
            "vs ORT FP32 | decision agreement vs the signal mask |", "|---|---|---|---|---|"]
    for key, p in probabilities.items():
        rows.append(f"| {key} | {np.abs(p - base).max():.2e} | {np.abs(p - base).mean():.2e} | "
                    f"{np.mean((p > 0.5) == (base > 0.5)):.3f} | {np.mean((p > 0.5) == voiced):.3f} |")
    print("\n".join(rows) + "\n")
    for key, count in counts.items():
        print(f"qcompile {key}: {count['integer_anchors']} conv/matmul layers in integer arithmetic (the LSTM's "
              f"input MatMul and its {FRAMES} recurrent MatMuls among them), {count['float_anchors']} in FP32.\n")
    for key, table in latency.items():
        command = "" if key == "INT8" else " --exclude-nodes Conv"
        print(f"Latency of one call ({FRAMES} frames), 1 thread, untuned, qcompile {key} "
              f"(`qcompile bench{command} --compare onnxruntime`):\n")
        print(table)


if __name__ == "__main__":
    main()
