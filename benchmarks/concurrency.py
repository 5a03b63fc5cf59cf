"""Throughput of one loaded model called from 2 Python threads: a virtual machine per thread (what
`qcompile.load` does) against one VM behind a lock, and against one thread calling.

    python benchmarks/concurrency.py [--shared ../shared] [--calls 40]

Each call runs the model on one TVM thread (TVM_NUM_THREADS=1, set before TVM starts), so that two calling threads
use the machine's two cores; calls/s over all threads, best of 3 rounds.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent


def calls_per_second(call, threads: int, calls: int) -> float:
    errors = []

    def worker():
        try:
            for _ in range(calls // threads):
                call()
        except Exception as err:  # noqa: BLE001 - raised below, in the measuring thread
            errors.append(err)

    best = 0.0
    for _ in range(3):
        workers = [threading.Thread(target=worker) for _ in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise errors[0]
        best = max(best, calls // threads * threads / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    import numpy as np

    import qcompile

    models = {"tiny_cnn (examples/)": (HERE.parent / "examples" / "tiny_cnn.onnx", HERE.parent / "examples" /
                                       "samples.npz", "tf"),
              "MobileNet v1 0.75": (args.shared / "models" / "mobilenet_v1_0.75_224_keras.onnx",
                                    args.shared / "data" / "imagenet-sample", "tf")}
    print(f"Command: `python benchmarks/concurrency.py --calls {args.calls}`; {os.cpu_count()} CPUs, INT8 builds, "
          f"TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}\n")
    print("| model | 1 thread | 2 threads, one VM behind a lock | 2 threads, a VM each |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="qcompile-concurrency-") as folder:
        for name, (model, calib, preprocess) in models.items():
            library = Path(folder) / f"{model.stem}.so"
            qcompile.build(model, library, calib=calib, calib_count=8, preprocess=preprocess)
            loaded = qcompile.load(library)
            x = np.random.default_rng(0).standard_normal(loaded.inputs[0].shape).astype(np.float32)
            lock = threading.Lock()

            def locked():
                with lock:
                    loaded(x)

            rates = [calls_per_second(lambda: loaded(x), 1, args.calls), calls_per_second(locked, 2, args.calls),
                     calls_per_second(lambda: loaded(x), 2, args.calls)]
            print(f"| {name} | " + " | ".join(f"{r:.1f} calls/s" for r in rates) + " |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
