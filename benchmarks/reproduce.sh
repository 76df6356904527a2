#!/usr/bin/env bash
# The commands behind the numbers quoted in the README and the project's notes.
# Run from the repository root after `pip install -e ".[test]"`; each writes runs/<name>/report.md.
# Times are for two CPU cores.
set -euo pipefail

# Main job (README): every strategy and each view alone, 3 seeds, with missing modalities.
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

# The real suite (Results page): eleven multi-view sets, mfeat fou,mor and AV-digits with unseen
# speakers, 3 seeds, every strategy at its defaults and the default's presets (hours on two
# cores; --suite-datasets runs a few of them, finished runs are skipped on a rerun).
altmodal benchmark --suite real \
  --strategies "mla,mla:preset=fast,mla:preset=paper,joint,ume,ogm_ge,qmf,mmpareto,dgl,gblend,inforeg,aug,reconboost,midas" \
  --jobs 2 --out runs/suite-real

# The default against scikit-learn's reference rows, and the Results page's figures drawn from it
# (the real suite's files: ALTMODAL_DATA or --media-root, see docs/data.md).
altmodal benchmark --suite real --strategies "mla,joint,sklearn:linear,sklearn:svm,sklearn:boosted" \
  --jobs 2 --out runs/benchmark-real
python benchmarks/against_references.py runs/benchmark-real
python benchmarks/results_plots.py runs/benchmark-real docs/img

# Training with severely missing modalities, SMIL's protocol, on AV-digits (~2 h).
python benchmarks/smil_protocol.py

# The newest peers' departures from their papers (the released code's forms) against their defaults.
altmodal benchmark --suite real --suite-datasets bbcsport,3sources,mfeat-fou-mor,movies --jobs 2 --out runs/suite-departures \
  --strategies "aug,aug:aug_score=ensemble:aug_step=modality:aug_new=frozen:aug_check_first=true,reconboost,reconboost:reconboost_boost_epochs=4:reconboost_rectify_epochs=4,midas,midas:midas_partner=shuffle:midas_alpha=sign"
python benchmarks/smil_protocol.py --shares 0.1 --out runs/smil-protocol \
  --strategies "shaspec,shaspec:shaspec_fill=first:shaspec_pairs=cyclic:shaspec_aux_absent=true,smil,smil:smil_outer=code:smil_perturb=missing:smil_weights=softplus:smil_kl=0"

# MLA's head projection: what it guarantees and what leaks, by target and forgetting (~20 min).
python benchmarks/hgm.py --datasets mfeat,../shared/data/multiview/mnist4.npz

# Demo & Refine's k-means purity: the spread over seeds with one start and with ten.
python benchmarks/purity_noise.py
