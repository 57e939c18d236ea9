"""Query-conditioned mask separator (ClearSep / CLAPSep design).

Modules: `config` (SeparatorConfig), `stft`, `film`, `tiny` and `clapsep` (the two presets), `presets` (factory),
`checkpoint` (validated checkpoints), `data` (sample streams, shard reading, crops, query sides), `train`
(`train_separator`), `infer` (the batch API `Separator`), `evaluate` (SDR / SDRi / SI-SDRi / Silence-SDR report),
`synthetic` (procedural mixtures for tests). Import the submodules directly; this package imports nothing heavy.
"""
