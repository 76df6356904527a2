#!/usr/bin/env bash
# The commands behind the numbers quoted in the README and the project's notes.
# Run from the repository root after `pip install -e ".[test]"`; each writes runs/<name>/report.md.
# Times are for two CPU cores.
set -euo pipefail

# Main job (README): every strategy, each view alone, the MLA ablation, missing modalities (~3 min).
altmodal benchmark --dataset mfeat

# Every strategy and fusion module on two and on three mfeat views (~2-3 min each).
ALL=joint,joint:fusion=sum,joint:fusion=film,joint:fusion=gated,ume,ogm_ge,ogm_ge:ogm_noise=false,qmf,mla
altmodal benchmark --dataset mfeat --modalities fou,mor --strategies "$ALL" --ablation none \
  --train-missing-rates "" --out runs/strategies-mfeat-fou-mor
altmodal benchmark --dataset mfeat --modalities fou,zer,mor --strategies "$ALL" --ablation none \
  --train-missing-rates "" --out runs/strategies-mfeat-fou-zer-mor

# MLA's options, each against the defaults (the evidence for the defaults), 5 seeds (~4 min).
altmodal benchmark --dataset mfeat --modalities fou,mor --strategies mla --ablation full \
  --train-missing-rates "" --missing-rates "" --seeds 0,1,2,3,4 --out runs/ablation-mfeat-fou-mor
altmodal benchmark --dataset mfeat --modalities fou,zer,mor --strategies joint,mla --ablation full \
  --train-missing-rates "" --missing-rates "" --out runs/ablation-mfeat-fou-zer-mor

# A synthetic setting in which m0 dominates (strengths 2.0 / 0.6, 80% of samples carry both) (~4 min).
altmodal benchmark --dataset synthetic --out runs/benchmark-synthetic

# Real audio-visual data with held-out speakers (needs ../shared/data; ~15 min).
altmodal prepare avdigits --root ../shared/data --out runs/cache-avdigits
altmodal benchmark --dataset avdigits --data-dir runs/cache-avdigits --dataset-option split=speaker \
  --strategies joint,ume,mla --ablation none --train-missing-rates "" --out runs/benchmark-avdigits-speaker
altmodal benchmark --dataset avdigits --data-dir runs/cache-avdigits --dataset-option split=speaker \
  --dataset-option val_speakers=1 --strategies joint,ume,mla --ablation none --train-missing-rates "" \
  --missing-rates "" --out runs/benchmark-avdigits-speaker-valspk

# Data-parallel equality: 1 vs 2 processes, same global batch (prints max |dP| and max |dW|).
python benchmarks/ddp_equality.py
