"""2 Ray Train workers (DDP, gloo) vs 1 worker vs one process: wall time of one SFT stage on the tiny model.

Run from the repo root: STUDY_DATA_DIR=... python bench/multi_worker.py [steps] [repeats] [examples]
Prints each configuration's stage time inside the worker, TorchTrainer.fit wall time and final
loss, and the ratio 2 workers / 1 worker (median stage seconds) measured in this one run.
"""
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
sys.path.insert(0, os.getcwd())
os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
from study.cluster import connect
from tests.test_multi_worker import STAGE, _fit, _load_ranks, run_sft_stage
from tests.mirror import mirror_dir
from trainables.tiny_model import ensure_tiny_model

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
stage = {**STAGE, "steps": steps}
n_examples = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
data = mirror_dir()
root = Path(tempfile.mkdtemp(prefix="mwbench-"))
model = ensure_tiny_model(str(data), root / "models")
connect(num_cpus=2, dashboard=False)
rows = []
for rep in range(repeats):
    for label, workers, cpus in (("2 workers x 1 CPU", 2, 1.0), ("1 worker x 2 CPUs", 1, 2.0), ("1 worker x 1 CPU", 1, 1.0)):
        out = root / f"{rep}-{workers}x{cpus:g}"
        fit, _ = _fit(workers, cpus, model, data, out, stage=stage, n_examples=n_examples)
        rec = _load_ranks(out, workers)[0]
        rows.append((label, rec["stage_seconds"], fit, rec["losses"][-1]))
    for threads in (2, 1):
        rec = run_sft_stage(str(model), str(data), root / f"{rep}-p{threads}", threads=threads, stage=stage, n_examples=n_examples)
        rows.append((f"one process, {threads} threads", rec["stage_seconds"], float("nan"), rec["losses"][-1]))
print(f"\nSFT stage: tiny model, {n_examples} toxigen_qa examples, global batch {stage['batch_size']}, {steps} steps; load avg {os.getloadavg()}")
print("| run | stage seconds (in worker), each repeat | median | TorchTrainer.fit wall s, each repeat | final loss |")
print("|---|---|---|---|---|")
for label in dict.fromkeys(r[0] for r in rows):
    mine = [r for r in rows if r[0] == label]
    print(f"| {label} | {', '.join(f'{r[1]:.1f}' for r in mine)} | {statistics.median(r[1] for r in mine):.1f} | "
          f"{', '.join(f'{r[2]:.1f}' for r in mine)} | {', '.join(f'{r[3]:.4f}' for r in mine)} |")
median = {label: statistics.median(r[1] for r in rows if r[0] == label) for label in dict.fromkeys(r[0] for r in rows)}
print(f"\nratio 2 workers x 1 CPU / 1 worker x 1 CPU (median stage seconds): "
      f"{median['2 workers x 1 CPU'] / median['1 worker x 1 CPU']:.2f}  (no speed-up is expected on 2 cores)")
shutil.rmtree(root, ignore_errors=True)
