"""Every technique's options, as params.yaml sets them under `technique.<name>`, with their
checks, one module per technique; OPTIONS maps each technique's name to its options class. Only
the standard library and stages.errors: every stage validates params.yaml with these, without
any technique's code. Checks that need the model's preset (distill's student, built to count its
parameters) run where the technique applies."""

from __future__ import annotations

from stages.techniques.options import batching, distill, fp16, fuse, identity, int8, prune, slowdown

# technique name -> its options class (the catalog's order)
OPTIONS: dict[str, type] = {
    "int8_dynamic": int8.DynamicOptions,
    "int8_static": int8.StaticOptions,
    "prune_magnitude": prune.MagnitudeOptions,
    "prune_channels": prune.ChannelOptions,
    "distill": distill.Options,
    "fp16": fp16.Options,
    "fuse": fuse.Options,
    "batching": batching.Options,
    "identity": identity.Options,
    "slowdown": slowdown.Options,
}
