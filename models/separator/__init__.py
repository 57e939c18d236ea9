"""Query-conditioned mask separator (ClearSep / CLAPSep design).

Modules: `config` (SeparatorConfig), `stft`, `film`, `tiny` and `clapsep` (the two presets), `presets` (factory),
`checkpoint` (validated checkpoints), `data` (indexable sample sources over `storage`'s shard reader, crops, query
sides), `train` (`train_separator`, step budgets, deterministic draws, DDP when distributed), `infer` (the batch API
`Separator`), `evaluate` (SDR / SDRi / SI-SDRi / Silence-SDR report). Import the submodules directly; this package
imports nothing heavy. (Ray Train lives in engine/ray_train.py.)
"""
